"""Draft alignment by white-box KD: `distill(cfg, out)`, the glue behind `specjax distill`.

    cfg = load_config(DistillConfig, "configs/distill/tvdpp.yaml", ["target=ckpt/smollm2", "student=runs/pre/final",
                                                                    "data.path=data/distill"])
    distill(cfg, "runs/tvdpp")       # rerun with the same folder to resume

The student (a pretrained drafter checkpoint) is trained teacher-forced on a make-data dataset with a loss
from `specjax.losses.distill.LOSSES`; the teacher (the target that generated the data) runs inside the
same jitted step as a frozen argument (never donated, never differentiated). AdaSPEC is two runs: a
reference model (loss=fkl from the same pretrained drafter), then `loss=adaspec reference=REF/final`,
whose reference params are a second frozen argument.

Periodically (`spec_eval.every`, and at the end) the held-out prompts are decoded with the compiled
speculative decoder (target + current drafter, gamma `spec_eval.gamma`, at each temperature of
`spec_eval.temperatures`): `spec_t{T}_acceptance_rate` and `spec_t{T}_block_efficiency` go to
metrics.jsonl next to `eval_expected_acceptance` (teacher-forced, held-out) and the training metrics.

On-policy mixing (DistillSpec / GKD): with probability `on_policy.fraction` a step's responses are sampled
from the current drafter (autoregressive, `on_policy.temperature`) for the batch's prompts, and the
teacher scores them in the step; otherwise the dataset's responses are used. The draw depends only on the
seed and the step, so a resumed run makes the same choices.

Output folder: like `specjax pretrain` (run_config.json, checkpoints/, metrics.jsonl, tensorboard/, and
final/ = the aligned drafter as a specjax checkpoint).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import jax
import numpy as np

from specjax.config import config_to_dict
from specjax.errors import SpecjaxError
from specjax.losses.distill import make_loss
from specjax.parallel.sharding import MeshConfig, batch_divisor, initialize_distributed, make_mesh, put_batch
from specjax.train.loop import CheckpointConfig, LogConfig, LoopResult, gather_params, run_loop
from specjax.train.optim import OptimConfig, make_optimizer


@dataclasses.dataclass(frozen=True)
class DistillDataConfig:
  path: str | None = None  # a make-data output folder
  seq_len: int = 512  # examples are truncated / right-padded to this many tokens
  batch_size: int = 16
  eval_examples: int = 32  # held-out samples (teacher-forced eval + prompts for real decoding)
  eval_batches: int = 2
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class SpecEvalConfig:
  every: int = 0  # measure real speculative decoding every N steps (0: only at the end; -1: never)
  prompts: int = 16  # held-out prompts decoded
  gamma: int = 4
  max_new_tokens: int = 64
  temperatures: tuple[float, ...] = (0.0, 1.0)
  batch_size: int = 8


@dataclasses.dataclass(frozen=True)
class OnPolicyConfig:
  fraction: float = 0.0  # lambda: probability that a step's responses come from the current drafter
  temperature: float = 1.0
  max_new_tokens: int = 128


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  target: str | None = None  # the target's specjax checkpoint (the teacher; must have made the data)
  student: str | None = None  # the pretrained drafter checkpoint to start from
  reference: str | None = None  # AdaSPEC only: the FKL-distilled reference checkpoint
  loss: str = "fkl"  # fkl | rkl | jsd | tvd | tvdpp | adaspec
  loss_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {beta: 0.5}, {norm: batch}, {k: 0.4}
  steps: int = 1000
  seed: int = 0
  dtype: str = "float32"  # compute dtype of student and teacher (params keep their own dtype)
  data: DistillDataConfig = DistillDataConfig()
  optim: OptimConfig = OptimConfig()
  mesh: MeshConfig = MeshConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  logging: LogConfig = LogConfig()
  spec_eval: SpecEvalConfig = SpecEvalConfig()
  on_policy: OnPolicyConfig = OnPolicyConfig()


def _require(value: str | None, name: str, hint: str) -> str:
  if not value:
    raise SpecjaxError(f"{name} is not set; {hint}")
  return value


def check_vocab(student_cfg, target_cfg, student_path: str, target_path: str) -> None:
  if student_cfg.vocab_size != target_cfg.vocab_size:
    raise SpecjaxError(
      f"the drafter {student_path} has vocabulary {student_cfg.vocab_size} but the target {target_path} has "
      f"{target_cfg.vocab_size}; distillation needs a drafter built for the target's tokenizer"
    )


def make_distill_loss(student_cfg, target_cfg, loss: str, options: dict):
  """`loss_fn(params, batch, rng, frozen)` for `specjax.train.step.make_train_step`.

  `frozen` = {"target": teacher params, "reference": AdaSPEC reference params (adaspec only)}.
  """
  from specjax.models.llama import Llama

  fn = make_loss(loss, **options)
  student, teacher = Llama(student_cfg), Llama(target_cfg)
  sampled = loss == "tvdpp" and options.get("norm") == "sampled"

  def loss_fn(params, batch, rng, frozen):
    tokens, positions, mask = batch["tokens"], batch["positions"], batch["loss_mask"]
    s_logits, _ = student.apply({"params": params}, tokens, positions)
    t_logits, _ = teacher.apply({"params": frozen["target"]}, tokens, positions)
    extra = {}
    if loss == "adaspec":
      extra["reference_logits"], _ = student.apply({"params": frozen["reference"]}, tokens, positions)
    if sampled:
      extra["rng"] = rng
    value, metrics = fn(s_logits, t_logits, mask, **extra)
    return value, dict(metrics, tokens=metrics["num_tokens"])

  return loss_fn


class SpecEval:
  """Real speculative decoding of held-out prompts with the current drafter (compiled once per setting)."""

  def __init__(self, cfg: SpecEvalConfig, target_cfg, target_params, student_cfg, prompts, eos_ids):
    from specjax.decode.engine import Engine

    self.cfg, self.prompts = cfg, prompts
    self.engine = Engine(target_cfg, target_params, student_cfg, None, eos_ids=eos_ids)

  def __call__(self, params) -> dict[str, float]:
    from specjax.decode.sampling import SamplingConfig

    self.engine.draft_params = params
    out: dict[str, float] = {}
    for t in self.cfg.temperatures:
      run = self.engine.run(
        self.prompts,
        "spec",
        max_new_tokens=self.cfg.max_new_tokens,
        sampling=SamplingConfig(temperature=float(t)),
        gamma=self.cfg.gamma,
        batch_size=self.cfg.batch_size,
        seed=0,
      )
      tag = f"spec_t{t:g}"
      for k in ("acceptance_rate", "block_efficiency"):
        if run.metrics.get(k) is not None:
          out[f"{tag}_{k}"] = float(run.metrics[k])
    return out


def teacher_forced_eval(eval_step, params, batches, frozen, mesh) -> dict[str, float]:
  """Token-weighted means of the loss metrics over held-out batches (prefixed eval_)."""
  sums: dict[str, float] = {}
  weight = 0.0
  for b in batches:
    m = {k: float(v) for k, v in jax.device_get(eval_step(params, put_batch(b, mesh), frozen)).items()}
    w = m.get("num_tokens", 1.0)
    weight += w
    for k in ("expected_acceptance", "loss"):
      if k in m:
        sums[k] = sums.get(k, 0.0) + m[k] * w
  return {f"eval_{k}": v / max(weight, 1e-9) for k, v in sums.items()}


class OnPolicy:
  """Replaces a batch's responses with the current drafter's samples with probability `fraction`."""

  def __init__(self, cfg: OnPolicyConfig, student_cfg, eos_ids, seed: int, batch_size: int, engine: bool = True):
    self.cfg, self.seed, self.batch_size = cfg, seed, batch_size
    if engine:  # engine=False: only the (seeded) draws, e.g. to predict which steps were on-policy
      from specjax.decode.engine import Engine
      from specjax.decode.sampling import SamplingConfig

      self.engine = Engine(student_cfg, None, eos_ids=eos_ids)
      self.sampling = SamplingConfig(temperature=cfg.temperature)

  def draw(self, step: int) -> bool:
    return self.cfg.fraction > 0 and random.Random(f"on-policy:{self.seed}:{step}").random() < self.cfg.fraction

  def __call__(self, params, batch: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
    from specjax.data.distill_batches import empty_batch, fill_row, prompt_length

    B, T = batch["tokens"].shape
    prompts = [batch["tokens"][i, : max(prompt_length(batch["response_mask"][i]), 1)].tolist() for i in range(B)]
    self.engine.target_params = params
    run = self.engine.run(
      prompts,
      "ar",
      max_new_tokens=self.cfg.max_new_tokens,
      sampling=self.sampling,
      batch_size=self.batch_size,
      seed=step,
    )
    out = empty_batch(B, T)
    for i, (p, row) in enumerate(zip(prompts, run.rows, strict=True)):
      fill_row(out, i, p + list(row.tokens), [0] * len(p) + [1] * len(row.tokens))
    return out


def distill(cfg: DistillConfig, out: str | Path, stop_at: int | None = None) -> LoopResult:
  """Run (or resume) distillation into `out`; see the module docstring."""
  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer, read_config, save_checkpoint
  from specjax.data.distill_batches import ExampleBatches
  from specjax.data.distill_data import check_same_target, load_distill_data
  from specjax.train.pretrain import _check_run_config
  from specjax.train.step import (
    abstract_state,
    create_state,
    make_eval_step,
    make_train_step,
    param_shardings,
    state_shardings,
  )

  if cfg.mesh.distributed:
    initialize_distributed()
  out = Path(out)
  target_path = _require(cfg.target, "target", "set target=PATH to the target's specjax checkpoint")
  student_path = _require(cfg.student, "student", "set student=PATH to a pretrained drafter checkpoint")
  data_path = _require(cfg.data.path, "data.path", "set data.path=DIR to a `specjax make-data` output")
  if stop_at is not None and stop_at < 1:
    raise SpecjaxError(f"--stop-at must be >= 1, got {stop_at}")
  options = dict(cfg.loss_options)
  make_loss(cfg.loss, **options)  # validates the name, option names and values (e.g. k in (0, 1])
  if cfg.loss == "adaspec" and not cfg.reference:
    raise SpecjaxError("loss=adaspec needs reference=PATH: first distil a reference model with loss=fkl")
  if cfg.loss != "adaspec" and cfg.reference:
    raise SpecjaxError(f"reference is only used by loss=adaspec, not {cfg.loss}; remove it")
  if not 0.0 <= cfg.on_policy.fraction <= 1.0:
    raise SpecjaxError(f"on_policy.fraction must be in [0, 1], got {cfg.on_policy.fraction}")

  s_saved, _ = read_config(student_path)
  t_cfg, _ = read_config(target_path)
  check_vocab(s_saved, t_cfg, student_path, target_path)
  s_cfg = s_saved.replace(dtype=cfg.dtype, remat=False)
  t_cfg = t_cfg.replace(dtype=cfg.dtype, remat=False)
  ds, meta = load_distill_data(data_path)
  mesh = make_mesh(cfg.mesh)
  div = batch_divisor(mesh) * cfg.optim.grad_accum
  if cfg.data.batch_size % div:
    raise SpecjaxError(
      f"data.batch_size ({cfg.data.batch_size}) must be a multiple of data x fsdp devices x optim.grad_accum ({div})"
    )
  t_sh = param_shardings(t_cfg, mesh)
  target = load_checkpoint(target_path, shardings=t_sh, config=t_cfg)
  check_same_target(meta, target.config, target.params, data_path)
  frozen = {"target": target.params}
  frozen_sh = {"target": t_sh}
  if cfg.reference:
    from specjax.train.pretrain import SHAPE_FIELDS

    r_cfg, _ = read_config(cfg.reference)
    if any(getattr(r_cfg, f) != getattr(s_cfg, f) for f in SHAPE_FIELDS):
      raise SpecjaxError(f"reference {cfg.reference} is not the student's model size; distil it from the same drafter")
    frozen["reference"] = load_checkpoint(cfg.reference, shardings=param_shardings(s_cfg, mesh), config=s_cfg).params
    frozen_sh["reference"] = param_shardings(s_cfg, mesh)

  _check_run_config(out, config_to_dict(cfg))
  data = ExampleBatches(
    ds, cfg.data.batch_size, cfg.data.seq_len, cfg.data.seed, cfg.data.eval_examples, cfg.data.eval_batches
  )
  tokenizer = load_tokenizer(target_path)
  eos_ids = tuple({int(e) for e in (tokenizer.eos_token_id, t_cfg.eos_token_id) if e is not None})

  tx, schedule = make_optimizer(cfg.optim, cfg.steps)
  shardings = state_shardings(s_cfg, tx, mesh)
  loss_fn = make_distill_loss(s_cfg, t_cfg, cfg.loss, options)
  train_step = make_train_step(loss_fn, tx, schedule, mesh, shardings, frozen_sh, grad_accum=cfg.optim.grad_accum)
  eval_step = make_eval_step(loss_fn, mesh, shardings.params, frozen_sh)
  eval_batches = data.eval_batches()
  spec = None
  if cfg.spec_eval.every >= 0 and cfg.spec_eval.prompts > 0:
    spec = SpecEval(cfg.spec_eval, t_cfg, target.params, s_cfg, data.eval_prompts(cfg.spec_eval.prompts), eos_ids)
  policy = OnPolicy(cfg.on_policy, s_cfg, eos_ids, cfg.seed, cfg.data.batch_size) if cfg.on_policy.fraction else None

  def step_with_hooks(state, batch, frozen_):
    step = int(jax.device_get(state.step))
    on_policy = policy is not None and policy.draw(step)
    if on_policy:
      host = {k: np.asarray(jax.device_get(v)) for k, v in batch.items()}
      batch = put_batch(policy(state.params, host, step), mesh)
    state, metrics = train_step(state, batch, frozen_)
    metrics = dict(metrics, on_policy=float(on_policy))
    done = step + 1
    final = done == cfg.steps
    every = cfg.logging.eval_every
    if eval_batches and (final or (every and done % every == 0)):
      metrics.update(teacher_forced_eval(eval_step, state.params, eval_batches, frozen_, mesh))
    if spec is not None and (final or (cfg.spec_eval.every and done % cfg.spec_eval.every == 0)):
      metrics.update(spec(state.params))
    return state, metrics

  def init_state():
    return create_state(s_cfg, tx, shardings, cfg.seed, params=load_checkpoint(student_path, config=s_cfg).params)

  def final_export(state):
    final = out / "final"
    if final.exists():
      return
    params = gather_params(state.params)  # every process joins; process 0 writes
    if params is None:
      return
    meta_out = {
      "source": "specjax distill",
      "loss": cfg.loss,
      "loss_options": options,
      "steps": int(state.step),
      "student": student_path,
      "target": target_path,
      "data": data_path,
    }
    save_checkpoint(final, s_saved, params, tokenizer=tokenizer, meta=meta_out)
    print(f"wrote specjax checkpoint {final}", flush=True)

  return run_loop(
    out=out,
    init_state=init_state,
    abstract_state=abstract_state(s_cfg, tx, shardings),
    train_step=step_with_hooks,  # evaluates the held-out batches itself (the loop must not do it again)
    data=data,
    mesh=mesh,
    frozen=frozen,
    total_steps=cfg.steps,
    tokens_per_step=cfg.data.batch_size * cfg.data.seq_len,
    stop_at=stop_at,
    checkpoint=cfg.checkpoint,
    logging=cfg.logging,
    final_export=final_export,
  )
