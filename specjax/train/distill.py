"""Draft alignment by white-box KD: `distill(cfg, out)`, the glue behind `specjax distill`.

    cfg = load_config(DistillConfig, "configs/distill/tvdpp.yaml", ["target=ckpt/smollm2", "student=runs/pre/final",
                                                                    "data.path=data/distill"])
    distill(cfg, "runs/tvdpp")       # rerun with the same folder to resume

The student (a pretrained drafter checkpoint) is trained teacher-forced on a make-data dataset with a loss
from `specjax.losses.distill.LOSSES`; the teacher (the target that generated the data) runs inside the
same jitted step as a frozen argument (never donated, never differentiated). AdaSPEC is two runs: a
reference model (loss=fkl from the same pretrained drafter), then `loss=adaspec reference=REF/final`,
whose reference params are a second frozen argument. An EAGLE student reads the teacher's features
instead from a cache computed once per run (`eagle.cache`, `specjax.train.teacher_cache`): the step
then runs only the target's head.

Periodically (`spec_eval.every`, and at the end) the held-out prompts are decoded with the compiled
speculative decoder (target + current drafter, gamma `spec_eval.gamma`, at each temperature of
`spec_eval.temperatures`): `spec_t{T}_acceptance_rate` and `spec_t{T}_block_efficiency` go to
metrics.jsonl next to `eval_expected_acceptance` (teacher-forced, held-out) and the training metrics.

On-policy mixing (DistillSpec / GKD): with probability `on_policy.fraction` a step's responses are sampled
from the current drafter (autoregressive, `on_policy.temperature`) for the batch's prompts, and the
teacher scores them in the step; otherwise the dataset's responses are used. The draw depends only on the
seed and the step, so a resumed run makes the same choices.

Every setting (the hooks' too) is checked before anything is written to the run folder; speculative
evaluation needs held-out prompts (`data.eval_examples`), and AdaSPEC's reference must be a `loss=fkl`
run from the same student against the same target (`specjax.train.reference`).

Layout: this module only assembles a run. What a loss needs (a reference model, an rng) is its `Loss`
record (`specjax.losses.distill.REGISTRY`); what differs between kinds of draft (checks, objective,
metric keys, teacher cache, decoding mode) is its `DraftKind` (`specjax.train.draft_kinds`: "decoder",
"eagle"); the hooks are `specjax.train.hooks`. A new draft kind (say Medusa heads) is one strategy file in
`specjax/train/draft_kinds/` plus its decoder file in `specjax/decode/`; a new loss is one record.

Output folder: like `specjax pretrain` (run_config.json, checkpoints/, metrics.jsonl, tensorboard/, and
final/ = the aligned drafter as a specjax checkpoint).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from specjax.errors import SpecjaxError
from specjax.losses.distill import get_loss
from specjax.models.config import resolve_dtype
from specjax.train import draft_kinds, reference
from specjax.train.draft_kinds.eagle import EagleTrainConfig
from specjax.train.hooks import OnPolicy, OnPolicyConfig, SpecEval, SpecEvalConfig
from specjax.train.loop import LoopResult
from specjax.train.trainer import Trainer, TrainerConfig

__all__ = ["DistillConfig", "EagleTrainConfig", "OnPolicyConfig", "SpecEvalConfig", "distill", "make_distill_loss"]


@dataclasses.dataclass(frozen=True)
class DistillDataConfig:
  path: str | None = None  # a make-data output folder
  seq_len: int = 512  # examples are truncated / right-padded to this many tokens
  batch_size: int = 16
  eval_examples: int = 32  # held-out samples (teacher-forced eval + prompts for real decoding)
  eval_batches: int = 2
  seed: int = 0
  loss_on: str = "response"  # response: positions predicting a response token; all: the prompt's too


@dataclasses.dataclass(frozen=True)
class DistillConfig(TrainerConfig):
  """TrainerConfig (steps, seed, optim, mesh, checkpoint, logging) plus the models, loss, data and hooks."""

  target: str | None = None  # the target's specjax checkpoint (the teacher; must have made the data)
  student: str | None = None  # the pretrained drafter checkpoint to start from
  reference: str | None = None  # AdaSPEC only: the FKL-distilled reference checkpoint
  loss: str = "fkl"  # fkl | rkl | jsd | tvd | tvdpp | adaspec
  loss_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {beta: 0.5}, {norm: batch}, {k: 0.4}
  dtype: str = "auto"  # compute dtype of student and teacher; auto: bfloat16 on GPU/TPU, float32 on CPU
  # (params and optimizer state keep their own dtype; logits and losses are float32)
  remat: bool = False  # recompute the student's blocks in the backward pass: memory for compute (the 8B
  # teacher's step at batch 16 x 2048 fits 16 GiB per device with it, scripts/plan_memory.py)
  data: DistillDataConfig = DistillDataConfig()
  spec_eval: SpecEvalConfig = SpecEvalConfig()
  on_policy: OnPolicyConfig = OnPolicyConfig()
  eagle: EagleTrainConfig = EagleTrainConfig()


def _require(value: str | None, name: str, hint: str) -> str:
  if not value:
    raise SpecjaxError(f"{name} is not set; {hint}")
  return value


def check_vocab(student_cfg, target_cfg, student_path: str, target_path: str) -> None:
  if student_cfg.vocab_size != target_cfg.vocab_size:
    raise SpecjaxError(
      f"the drafter {student_path} has vocabulary {student_cfg.vocab_size} but the target {target_path} has "
      f"{target_cfg.vocab_size}; the drafter must use the target's tokenizer, whatever its model family"
    )


def make_distill_loss(student_cfg, target_cfg, loss: str, options: dict, settings: Any = None):
  """`loss_fn(params, batch, rng, frozen)` for `specjax.train.step.make_train_step`: the objective of the
  student's draft kind (`specjax.train.draft_kinds`) with loss `loss`; `settings` is the kind's config
  section (e.g. an `EagleTrainConfig`; None: its defaults).

  `frozen` = {"target": teacher params, "reference": reference params (losses that need one)}.
  """
  kind = draft_kinds.get(student_cfg.kind)
  return kind.objective(student_cfg, target_cfg, get_loss(loss), dict(options), settings)


def _load_reference(cfg: DistillConfig, loss, s_cfg, shardings, student_path: str, target_fp: str):
  """The reference params, refused unless they are the student's start distilled with the loss's
  `reference_loss` against this target (`specjax.train.reference`)."""
  from specjax.checkpoint.orbax_io import load_checkpoint, read_config
  from specjax.train.pretrain import SHAPE_FIELDS

  r_cfg, r_meta = read_config(cfg.reference)
  if any(getattr(r_cfg, f) != getattr(s_cfg, f) for f in SHAPE_FIELDS):
    raise SpecjaxError(f"reference {cfg.reference} is not the student's model size; distil it from the same drafter")
  reference.check_meta(loss, cfg.reference, r_meta, student_path)
  params = load_checkpoint(cfg.reference, shardings=shardings, config=s_cfg).params
  r_fp = reference.fingerprint(cfg.reference, r_cfg, params)
  reference.check_origin(
    loss, cfg.reference, r_meta, r_fp, student_path, reference.fingerprint(student_path), target_fp
  )
  return params


def _hooks(cfg: DistillConfig, kind, data, target, s_cfg, eos_ids) -> tuple[SpecEval | None, OnPolicy]:
  """The speculative evaluation (None when off) and on-policy hooks, every setting checked now."""
  spec = None
  if cfg.spec_eval.enabled:
    prompts = data.eval_prompts(cfg.spec_eval.prompts)
    spec = SpecEval(cfg.spec_eval, target.config, target.params, s_cfg, prompts, eos_ids, kind.decode_mode)
  engine = bool(cfg.on_policy.fraction)  # no sampler to build when no step can be on-policy
  policy = OnPolicy(cfg.on_policy, s_cfg, eos_ids, cfg.seed, cfg.data.batch_size, engine=engine)
  if engine:
    policy.check(data.longest_train_prompt())
  return spec, policy


def distill(cfg: DistillConfig, out: str | Path, stop_at: int | None = None) -> LoopResult:
  """Run (or resume) distillation into `out`; see the module docstring."""
  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer, read_config, save_checkpoint
  from specjax.data.distill_batches import ExampleBatches
  from specjax.data.distill_data import check_same_target, load_distill_data

  out = Path(out)
  cfg = dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype))  # once, as run_config.json records it
  target_path = _require(cfg.target, "target", "set target=PATH to the target's specjax checkpoint")
  student_path = _require(cfg.student, "student", "set student=PATH to a pretrained drafter checkpoint")
  data_path = _require(cfg.data.path, "data.path", "set data.path=DIR to a `specjax make-data` output")
  loss, options = get_loss(cfg.loss), dict(cfg.loss_options)
  loss.bind(**options)  # validates the option names and values (e.g. k in (0, 1])
  reference.check_setting(loss, cfg.reference)

  s_saved, _ = read_config(student_path)
  t_cfg, _ = read_config(target_path)
  check_vocab(s_saved, t_cfg, student_path, target_path)
  kind = draft_kinds.get(s_saved.kind)
  draft_kinds.check_settings(kind, cfg, loss, student_path)
  kind.check(cfg, s_saved, t_cfg, student_path, target_path)
  settings = kind.settings(cfg)
  s_cfg = s_saved.replace(dtype=cfg.dtype, remat=cfg.remat)
  t_cfg = t_cfg.replace(dtype=cfg.dtype, remat=False)
  ds, meta = load_distill_data(data_path)
  data = ExampleBatches.from_config(ds, cfg.data)  # its settings are checked before anything is written
  trainer = Trainer(cfg, out, batch_size=cfg.data.batch_size, stop_at=stop_at)
  t_sh = trainer.param_shardings(t_cfg)
  target = load_checkpoint(target_path, shardings=t_sh, config=t_cfg)
  check_same_target(meta, target.config, target.params, data_path)
  target_fp = meta["target"]["fingerprint"]
  frozen, frozen_sh = {"target": target.params}, {"target": t_sh}
  if loss.needs_reference:
    frozen_sh["reference"] = trainer.param_shardings(s_cfg)
    frozen["reference"] = _load_reference(cfg, loss, s_cfg, frozen_sh["reference"], student_path, target_fp)
  tokenizer = load_tokenizer(target_path)
  eos_ids = tuple({int(e) for e in (tokenizer.eos_token_id, t_cfg.eos_token_id) if e is not None})
  spec_eval, policy = _hooks(cfg, kind, data, target, s_cfg, eos_ids)

  trainer.check_run_config(cfg, s_cfg)  # the first write to `out`
  if kind.uses_teacher_cache(settings):
    from specjax.data.distill_data import stored_features
    from specjax.train.teacher_cache import TeacherCache

    data.extras = TeacherCache.build(
      out / "teacher_cache",
      t_cfg,
      target.params,
      data.tokens,
      data.rows_read(cfg.steps),
      cfg.data.seq_len,
      target_fp,
      stored=stored_features(data_path, meta),
    )
  loss_fn = kind.objective(s_cfg, t_cfg, loss, options, settings)
  trainer.set_objective(s_cfg, loss_fn, frozen=frozen, frozen_shardings=frozen_sh)
  trainer.add_eval(data.eval_batches(), keys=kind.metric_keys(s_cfg, settings))
  if spec_eval is not None:
    trainer.add_hook(spec_eval, cfg.spec_eval.every)
  trainer.add_batch_hook(policy.hook)

  def export(final, params, steps):
    meta_out = {
      "source": reference.SOURCE,
      "loss": cfg.loss,
      "loss_options": options,
      "steps": steps,
      "student": student_path,
      "target": target_path,
      "data": data_path,
      "student_fingerprint": reference.fingerprint(student_path),  # what a later AdaSPEC run checks
      "target_fingerprint": target_fp,
    }
    save_checkpoint(final, s_saved, params, tokenizer=tokenizer, meta=meta_out)

  return trainer.run(
    data,
    tokens_per_step=cfg.data.batch_size * cfg.data.seq_len,
    init_params=lambda: load_checkpoint(student_path, config=s_cfg).params,
    export=export,
  )
