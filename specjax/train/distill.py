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

Output folder: like `specjax pretrain` (run_config.json, checkpoints/, metrics.jsonl, tensorboard/, and
final/ = the aligned drafter as a specjax checkpoint).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np

from specjax.errors import SpecjaxError
from specjax.losses.distill import make_loss
from specjax.train.loop import LoopResult
from specjax.train.trainer import Trainer, TrainerConfig


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
class EagleTrainConfig:
  """Only for a student of kind "eagle" (`specjax eagle-init`)."""

  feature_weight: float = 1.0  # weight of the smooth-L1 regression of the predicted next feature
  feature_noise: float = 0.0  # U(-a, a) noise added to the target features the draft reads (EAGLE: 0.1)
  steps: int = 1  # draft steps unrolled per position (training-time test): step j reads step j-1's prediction
  cache: bool = True  # run the teacher once per row read (`specjax.train.teacher_cache`), not in every step


@dataclasses.dataclass(frozen=True)
class DistillConfig(TrainerConfig):
  """TrainerConfig (steps, seed, optim, mesh, checkpoint, logging) plus the models, loss, data and hooks."""

  target: str | None = None  # the target's specjax checkpoint (the teacher; must have made the data)
  student: str | None = None  # the pretrained drafter checkpoint to start from
  reference: str | None = None  # AdaSPEC only: the FKL-distilled reference checkpoint
  loss: str = "fkl"  # fkl | rkl | jsd | tvd | tvdpp | adaspec
  loss_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. {beta: 0.5}, {norm: batch}, {k: 0.4}
  dtype: str = "float32"  # compute dtype of student and teacher (params keep their own dtype)
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


def make_distill_loss(student_cfg, target_cfg, loss: str, options: dict, eagle: EagleTrainConfig = EagleTrainConfig()):
  """`loss_fn(params, batch, rng, frozen)` for `specjax.train.step.make_train_step`.

  `frozen` = {"target": teacher params, "reference": AdaSPEC reference params (adaspec only)}.

  An EAGLE student (kind "eagle") reads the teacher's features: its position t is the pair (f_t,
  x_{t+1}) and it is scored against the teacher's distribution at t + 1 (the token after x_{t+1}),
  plus `eagle.feature_weight` times the smooth-L1 distance of its predicted feature to f_{t+1}.
  """
  import jax
  import jax.numpy as jnp

  from specjax.data.vocab_map import restrict_teacher
  from specjax.models.llama import head_logits
  from specjax.models.registry import model_for

  fn = make_loss(loss, **options)
  student, teacher = model_for(student_cfg), model_for(target_cfg)
  head_ids = student_cfg.head_ids  # reduced draft vocabulary: the teacher restricted to it, renormalised
  sampled = loss == "tvdpp" and options.get("norm") == "sampled"
  is_eagle = student_cfg.kind == "eagle"

  def _eagle_unrolled(params, tokens, positions, mask, teacher_arrays, feats, rng):
    """The draft's J = eagle.steps unrolled steps in one call (`specjax.models.eagle.unrolled_mask`):
    step j (0-based) at index t reads (step j-1's predicted feature, or f_t for j = 0, x_{t+j+1}) and is
    scored against the teacher at t+j+1. Returns student logits, predicted features and the matching
    teacher arrays (a tuple of [B, T, ...] or None), true features and loss mask, steps concatenated
    along the length axis."""
    from specjax.models.eagle import unrolled_mask

    J, T = eagle.steps, tokens.shape[1] - eagle.steps
    feats = jax.lax.stop_gradient(feats)
    inputs = feats[:, :T]
    if eagle.feature_noise:
      noise = jax.random.uniform(
        jax.random.fold_in(rng, 1), inputs.shape, inputs.dtype, -eagle.feature_noise, eagle.feature_noise
      )
      inputs = inputs + noise
    attn = jnp.asarray(unrolled_mask(T, J))
    toks = jnp.concatenate([tokens[:, j + 1 : j + 1 + T] for j in range(J)], axis=1)
    pos = jnp.concatenate([positions[:, j + 1 : j + 1 + T] for j in range(J)], axis=1)
    ins = inputs
    for j in range(J):  # call j computes steps 0..j; its last block gives the next step's input features
      n = (j + 1) * T
      mask_j = jnp.broadcast_to(attn[:n, :n], (tokens.shape[0], n, n))
      s_logits, _, g = student.apply(
        {"params": params}, toks[:, :n], pos[:, :n], attn_mask=mask_j, features=ins, return_features=True
      )
      if j + 1 < J:
        ins = jnp.concatenate([ins, jax.lax.stop_gradient(g[:, j * T :])], axis=1)

    def pick(x):  # each step's positions t+j+1, steps concatenated
      return None if x is None else jnp.concatenate([x[:, j + 1 : j + 1 + T] for j in range(J)], axis=1)

    return s_logits, g, tuple(pick(x) for x in teacher_arrays), pick(feats), pick(mask)

  def teacher_outputs(batch, frozen):
    """(logits over the draft's columns, full-vocabulary log-sum-exp or None, features or None); from the
    teacher cache's features by the target's head alone when the batch carries them."""
    tokens, positions = batch["tokens"], batch["positions"]
    if "features" in batch:
      feats = batch["features"]
      return head_logits(target_cfg, frozen["target"], feats, head_ids), batch["teacher_lse"], feats
    if is_eagle:
      t_logits, _, feats = teacher.apply({"params": frozen["target"]}, tokens, positions, return_features=True)
    else:
      (t_logits, _), feats = teacher.apply({"params": frozen["target"]}, tokens, positions), None
    lse = None if head_ids is None else jax.nn.logsumexp(t_logits.astype(jnp.float32), axis=-1)
    return restrict_teacher(t_logits, head_ids), lse, feats

  def loss_fn(params, batch, rng, frozen):
    tokens, positions, mask = batch["tokens"], batch["positions"], batch["loss_mask"]
    feature_loss = None
    t_logits, t_lse, feats = teacher_outputs(batch, frozen)
    if is_eagle:
      s_logits, g, (t_logits, t_lse), feats, mask = _eagle_unrolled(
        params, tokens, positions, mask, (t_logits, t_lse), feats, rng
      )
      m = mask.astype(jnp.float32)
      err = jnp.abs(g.astype(jnp.float32) - feats.astype(jnp.float32))
      smooth = jnp.where(err < 1.0, 0.5 * err * err, err - 0.5).mean(axis=-1)
      feature_loss = jnp.sum(smooth * m) / jnp.maximum(jnp.sum(m), 1.0)
    else:
      s_logits, _ = student.apply({"params": params}, tokens, positions)
    full = None
    if head_ids is not None:  # the true acceptance: sum over the K tokens of min(p, q), p over all tokens
      p_in = jnp.exp(t_logits.astype(jnp.float32) - t_lse[..., None])
      both = jnp.minimum(jax.lax.stop_gradient(jax.nn.softmax(s_logits.astype(jnp.float32), axis=-1)), p_in)
      m = mask.astype(jnp.float32)
      full = jnp.sum(jnp.sum(both, axis=-1) * m) / jnp.maximum(jnp.sum(m), 1.0)
    extra = {}
    if loss == "adaspec":
      extra["reference_logits"], _ = student.apply({"params": frozen["reference"]}, tokens, positions)
    if sampled:
      extra["rng"] = rng
    value, metrics = fn(s_logits, t_logits, mask, **extra)
    if full is not None:
      metrics = dict(metrics, expected_acceptance_full=full)
    if feature_loss is not None:
      value = value + eagle.feature_weight * feature_loss
      metrics = dict(metrics, feature_loss=feature_loss)
      if eagle.steps > 1:  # teacher-forced acceptance of each unrolled step (step 1 reads true features)
        both = jnp.minimum(jax.nn.softmax(s_logits.astype(jnp.float32), -1), jax.nn.softmax(t_logits, -1)).sum(-1)
        m = mask.astype(jnp.float32)
        T = mask.shape[1] // eagle.steps
        for j in range(eagle.steps):
          mj = m[:, j * T : (j + 1) * T]
          metrics[f"expected_acceptance_step{j + 1}"] = jnp.sum(both[:, j * T : (j + 1) * T] * mj) / jnp.maximum(
            jnp.sum(mj), 1.0
          )
    return value, dict(metrics, tokens=metrics["num_tokens"])

  return loss_fn


class SpecEval:
  """Real speculative decoding of held-out prompts with the current drafter (compiled once per setting)."""

  def __init__(self, cfg: SpecEvalConfig, target_cfg, target_params, student_cfg, prompts, eos_ids):
    from specjax.decode.engine import Engine

    self.cfg, self.prompts = cfg, prompts
    self.mode = "eagle" if student_cfg.kind == "eagle" else "spec"
    self.engine = Engine(target_cfg, target_params, student_cfg, None, eos_ids=eos_ids)

  def __call__(self, params, step: int = 0) -> dict[str, float]:
    """A trainer hook: spec_t{T}_acceptance_rate / _block_efficiency of the current drafter."""
    from specjax.decode.sampling import SamplingConfig

    del step

    self.engine.set_params(draft=params)
    out: dict[str, float] = {}
    for t in self.cfg.temperatures:
      run = self.engine.run(
        self.prompts,
        self.mode,
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

  def hook(self, params, batch: dict[str, np.ndarray], step: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """A trainer batch hook: the batch of step `step` + 1 (drafter samples when drawn) and `on_policy`."""
    on = self.draw(step)
    return (self(params, batch, step) if on else batch), {"on_policy": float(on)}

  def __call__(self, params, batch: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
    from specjax.data.distill_batches import empty_batch, fill_row, prompt_length

    B, T = batch["tokens"].shape
    prompts = [batch["tokens"][i, : max(prompt_length(batch["response_mask"][i]), 1)].tolist() for i in range(B)]
    self.engine.set_params(target=params)
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

  out = Path(out)
  target_path = _require(cfg.target, "target", "set target=PATH to the target's specjax checkpoint")
  student_path = _require(cfg.student, "student", "set student=PATH to a pretrained drafter checkpoint")
  data_path = _require(cfg.data.path, "data.path", "set data.path=DIR to a `specjax make-data` output")
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
  if s_saved.kind == "eagle":
    if s_saved.hidden_size != t_cfg.hidden_size:
      raise SpecjaxError(
        f"the eagle draft {student_path} reads features of width {s_saved.hidden_size} but the target {target_path} "
        f"has hidden size {t_cfg.hidden_size}; build the draft for this target with `specjax eagle-init`"
      )
    if cfg.loss == "adaspec" or cfg.on_policy.fraction:
      raise SpecjaxError("an eagle draft cannot generate alone: adaspec and on_policy are not available for it")
    if not 1 <= cfg.eagle.steps < cfg.data.seq_len // 2:
      raise SpecjaxError(f"eagle.steps must be in 1..{cfg.data.seq_len // 2 - 1}, got {cfg.eagle.steps}")
  elif cfg.eagle != EagleTrainConfig():
    raise SpecjaxError(f"the eagle section only applies to an eagle draft; {student_path} is a {s_saved.kind}")
  s_cfg = s_saved.replace(dtype=cfg.dtype, remat=False)
  t_cfg = t_cfg.replace(dtype=cfg.dtype, remat=False)
  ds, meta = load_distill_data(data_path)
  data = ExampleBatches.from_config(ds, cfg.data)  # its settings are checked before anything is written
  trainer = Trainer(cfg, out, batch_size=cfg.data.batch_size, stop_at=stop_at)
  t_sh = trainer.param_shardings(t_cfg)
  target = load_checkpoint(target_path, shardings=t_sh, config=t_cfg)
  check_same_target(meta, target.config, target.params, data_path)
  frozen = {"target": target.params}
  frozen_sh = {"target": t_sh}
  if cfg.reference:
    from specjax.train.pretrain import SHAPE_FIELDS

    r_cfg, _ = read_config(cfg.reference)
    if any(getattr(r_cfg, f) != getattr(s_cfg, f) for f in SHAPE_FIELDS):
      raise SpecjaxError(f"reference {cfg.reference} is not the student's model size; distil it from the same drafter")
    frozen_sh["reference"] = trainer.param_shardings(s_cfg)
    frozen["reference"] = load_checkpoint(cfg.reference, shardings=frozen_sh["reference"], config=s_cfg).params

  trainer.check_run_config(cfg, s_cfg)
  if s_cfg.kind == "eagle" and cfg.eagle.cache:
    from specjax.data.distill_data import stored_features
    from specjax.train.teacher_cache import TeacherCache

    data.extras = TeacherCache.build(
      out / "teacher_cache",
      t_cfg,
      target.params,
      data.tokens,
      data.rows_read(cfg.steps),
      cfg.data.seq_len,
      meta["target"]["fingerprint"],
      stored=stored_features(data_path, meta),
    )
  tokenizer = load_tokenizer(target_path)
  eos_ids = tuple({int(e) for e in (tokenizer.eos_token_id, t_cfg.eos_token_id) if e is not None})

  loss_fn = make_distill_loss(s_cfg, t_cfg, cfg.loss, options, cfg.eagle)
  trainer.set_objective(s_cfg, loss_fn, frozen=frozen, frozen_shardings=frozen_sh)
  keys = ("loss", "expected_acceptance") + (("expected_acceptance_full",) if s_cfg.head_ids else ())
  if s_cfg.kind == "eagle":
    keys += ("feature_loss",) + tuple(
      f"expected_acceptance_step{j + 1}" for j in range(cfg.eagle.steps if cfg.eagle.steps > 1 else 0)
    )
  trainer.add_eval(data.eval_batches(), keys=keys)
  if cfg.spec_eval.every >= 0 and cfg.spec_eval.prompts > 0:
    prompts = data.eval_prompts(cfg.spec_eval.prompts)
    trainer.add_hook(SpecEval(cfg.spec_eval, t_cfg, target.params, s_cfg, prompts, eos_ids), cfg.spec_eval.every)
  engine = bool(cfg.on_policy.fraction)  # no sampler to build when no step can be on-policy
  policy = OnPolicy(cfg.on_policy, s_cfg, eos_ids, cfg.seed, cfg.data.batch_size, engine=engine)
  trainer.add_batch_hook(policy.hook)

  def export(final, params, steps):
    meta_out = {
      "source": "specjax distill",
      "loss": cfg.loss,
      "loss_options": options,
      "steps": steps,
      "student": student_path,
      "target": target_path,
      "data": data_path,
    }
    save_checkpoint(final, s_saved, params, tokenizer=tokenizer, meta=meta_out)

  return trainer.run(
    data,
    tokens_per_step=cfg.data.batch_size * cfg.data.seq_len,
    init_params=lambda: load_checkpoint(student_path, config=s_cfg).params,
    export=export,
  )
