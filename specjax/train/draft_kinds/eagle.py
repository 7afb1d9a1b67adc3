"""The "eagle" draft kind: a draft that reads the target's features (`specjax eagle-init`).

Its position t is the pair (f_t, x_{t+1}) and it is scored against the teacher's distribution at t + 1
(the token after x_{t+1}), plus `eagle.feature_weight` times the smooth-L1 distance of its predicted
feature to f_{t+1}. With `eagle.steps` > 1 the draft's later steps read its own predicted features
(training-time test). The teacher's features come from the teacher cache (`eagle.cache`,
`specjax.train.teacher_cache`) or from a teacher pass in the step. It cannot generate alone (no on-policy
sampling, no reference model); speculative evaluation decodes with the "eagle" mode.
"""

from __future__ import annotations

import dataclasses

from specjax.errors import SpecjaxError
from specjax.losses.distill import Loss, acceptance, chunk_of
from specjax.train.draft_kinds import DraftKind, base_metric_keys, kd_term, register, teacher_outputs


@dataclasses.dataclass(frozen=True)
class EagleTrainConfig:
  """Only for a student of kind "eagle" (`specjax eagle-init`)."""

  feature_weight: float = 1.0  # weight of the smooth-L1 regression of the predicted next feature
  feature_noise: float = 0.0  # U(-a, a) noise added to the target features the draft reads (EAGLE: 0.1)
  steps: int = 1  # draft steps unrolled per position (training-time test): step j reads step j-1's prediction
  cache: bool = True  # run the teacher once per row read (`specjax.train.teacher_cache`), not in every step


def check(cfg, student_cfg, target_cfg, student_path: str, target_path: str) -> None:
  if student_cfg.hidden_size != target_cfg.hidden_size:
    raise SpecjaxError(
      f"the eagle draft {student_path} reads features of width {student_cfg.hidden_size} but the target "
      f"{target_path} has hidden size {target_cfg.hidden_size}; build the draft for this target with "
      "`specjax eagle-init`"
    )
  if not 1 <= cfg.eagle.steps < cfg.data.seq_len // 2:
    raise SpecjaxError(f"eagle.steps must be in 1..{cfg.data.seq_len // 2 - 1}, got {cfg.eagle.steps}")


def metric_keys(student_cfg, eagle: EagleTrainConfig) -> tuple[str, ...]:
  steps = eagle.steps if eagle.steps > 1 else 0
  return (
    base_metric_keys(student_cfg) + ("feature_loss",) + tuple(f"expected_acceptance_step{j + 1}" for j in range(steps))
  )


def objective(student_cfg, target_cfg, loss: Loss, options: dict, eagle: EagleTrainConfig | None = None):
  """`loss_fn(params, batch, rng, frozen)`: the KD loss of the unrolled draft steps plus the weighted
  feature regression, with each step's teacher-forced acceptance when there are several."""
  import jax
  import jax.numpy as jnp

  from specjax.models.eagle import unrolled_mask
  from specjax.models.registry import model_for

  eagle = eagle or EagleTrainConfig()
  fn, chunk = loss.bind(**options), chunk_of(options)
  student = model_for(student_cfg)
  teacher = teacher_outputs(student_cfg, target_cfg, features=True)
  J = eagle.steps

  def unrolled(params, tokens, positions, mask, teacher_arrays, feats, rng):
    """The J unrolled steps in one call (`specjax.models.eagle.unrolled_mask`): step j (0-based) at index
    t reads (step j-1's predicted feature, or f_t for j = 0, x_{t+j+1}) and is scored against the teacher
    at t+j+1. Returns student logits, predicted features and the matching teacher arrays (a tuple of
    [B, T, ...] or None), true features and loss mask, steps concatenated along the length axis."""
    T = tokens.shape[1] - J
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

  def loss_fn(params, batch, rng, frozen):
    tokens, positions = batch["tokens"], batch["positions"]
    t_logits, t_lse, feats = teacher(batch, frozen)
    s_logits, g, (t_logits, t_lse), feats, mask = unrolled(
      params, tokens, positions, batch["loss_mask"], (t_logits, t_lse), feats, rng
    )
    m = mask.astype(jnp.float32)
    err = jnp.abs(g.astype(jnp.float32) - feats.astype(jnp.float32))
    smooth = jnp.where(err < 1.0, 0.5 * err * err, err - 0.5).mean(axis=-1)
    feature_loss = jnp.sum(smooth * m) / jnp.maximum(jnp.sum(m), 1.0)
    value, metrics = kd_term(loss, fn, s_logits, t_logits, t_lse, mask, rng, chunk=chunk)
    value = value + eagle.feature_weight * feature_loss
    metrics = dict(metrics, feature_loss=feature_loss)
    if J > 1:  # teacher-forced acceptance of each unrolled step (step 1 reads true features)
      both = acceptance(s_logits, t_logits, chunk=chunk)  # [B, J T], chunked like the loss
      T = mask.shape[1] // J
      for j in range(J):
        mj = m[:, j * T : (j + 1) * T]
        metrics[f"expected_acceptance_step{j + 1}"] = jnp.sum(both[:, j * T : (j + 1) * T] * mj) / jnp.maximum(
          jnp.sum(mj), 1.0
        )
    return value, dict(metrics, tokens=metrics["num_tokens"])

  return loss_fn


EAGLE = register(
  DraftKind(
    name="eagle",
    objective=objective,
    metric_keys=metric_keys,
    decode_mode="eagle",
    check=check,
    section="eagle",
    standalone=False,
    uses_teacher_cache=lambda eagle: eagle.cache,
  )
)
