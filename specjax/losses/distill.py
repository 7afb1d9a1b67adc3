"""Knowledge-distillation losses for draft models: FKL, RKL, JSD, TVD, TVD++ and AdaSPEC.

Pure functions for people who bring their own trainer. Every loss has the form

    loss, metrics = fkl(student_logits, teacher_logits, mask)

with logits [B, T, V] (any float dtype), `mask` [B, T] (nonzero = a response token that counts) and

- `loss` = mean of the per-token loss over the counted tokens (0 when no token counts),
- all math in float32 on `log_softmax` outputs,
- the teacher (and AdaSPEC's reference) under `jax.lax.stop_gradient`: only the student gets gradients,
- masked tokens contribute nothing to the loss or to the gradient,
- `metrics["expected_acceptance"]` = mean over counted tokens of sum_v min(p, q): the teacher-forced
  expected acceptance of speculative sampling (1 - TVD), plus `metrics["num_tokens"]` and loss-specific
  extras.

p is the teacher (target) distribution and q the student (draft) distribution at each position.
Definitions (docs/algorithms.md#distillation-losses, docs/algorithms.md#adaspec):

- `fkl`: sum_v p log(p / q).
- `rkl`: sum_v q log(q / p).
- `jsd`: the generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024) with m = beta p + (1 - beta) q:
  JSD_beta = beta KL(p || m) + (1 - beta) KL(q || m). At beta = 0 or 1 this vanishes identically, so the
  endpoints are defined by the limits of the rescaled divergence: beta = 0 gives FKL (lim JSD_beta / beta)
  and beta = 1 gives RKL (lim JSD_beta / (1 - beta)), the convention of common GKD trainers.
  beta = 0.5 is the classic symmetric JSD.
- `tvd`: 1/2 sum_v |p - q| (= 1 - expected acceptance).
- `tvdpp`: the policy-gradient view of TVD with a normalised reward. With r(v) = 1[p(v) > q(v)] and the
  advantage A = (r - mu) / (sigma + eps), the surrogate per position is
  L_t = - sum_v sg(q_t(v)) sg(A_t(v)) log q_t(v): the expectation over v ~ q of -A log q, with the
  sampling distribution q itself not differentiated (REINFORCE). With mu = 0, sigma = 1 (`norm="none"`)
  its gradient equals the TVD gradient exactly. `norm` picks the set mu and sigma are taken over:
  "position" (q-weighted over the vocabulary at each position: mu_t = m_t = sum_{p>q} q,
  sigma_t = sqrt(m_t (1 - m_t))), "batch" (q-weighted over all counted positions and the vocabulary:
  mu = mean_t m_t, sigma = sqrt(mu (1 - mu)), exact because r is binary), "sampled" (one token y_t per
  position, either the explicit `sample_tokens` [B, T] (e.g. the data token) or, when those are not
  given, y_t ~ q_t drawn with `rng`; mu and sigma are the mean and standard deviation of r(y_t) over the
  counted positions, and L_t = - sg(A_t) log q_t(y_t)), or "none" (mu = 0, sigma = 1).
  The reported `loss` is the surrogate; `metrics["tvd"]` is the true TVD.
- `adaspec`: selective KD (Hu et al. 2025). Per counted token L_d = KL(p || q_draft), L_r = KL(p || q_ref),
  gap = L_d - L_r; keep the tokens with gap >= quantile(gap over the counted tokens, 1 - k) (linear
  interpolation like `torch.quantile`, ties kept); loss = sum of the kept L_d / number of counted tokens.

`REGISTRY` maps names to `Loss` records: the function, its option checks and what it needs per call
(a reference model's logits, the step's rng), which is all a trainer reads about a loss. `LOSSES` maps
names to the bare functions, and `make_loss(name, **options)` validates options up front and returns a
function of (student_logits, teacher_logits, mask, **per-call arguments).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from specjax.errors import SpecjaxError

Metrics = dict[str, jax.Array]
TVDPP_NORMS = ("position", "batch", "sampled", "none")


def _log_probs(logits: ArrayLike, frozen: bool) -> Float[Array, "B T V"]:
  x = jnp.asarray(logits)
  if frozen:
    x = jax.lax.stop_gradient(x)
  return jax.nn.log_softmax(x.astype(jnp.float32), axis=-1)


def _prepare(student_logits, teacher_logits, mask):
  s = jnp.asarray(student_logits)
  t = jnp.asarray(teacher_logits)
  if s.shape != t.shape:
    raise SpecjaxError(
      f"student logits {s.shape} and teacher logits {t.shape} differ in shape; the drafter and the target "
      "must share the vocabulary and see the same tokens"
    )
  m = jnp.asarray(mask)
  if m.shape != s.shape[:-1]:
    raise SpecjaxError(f"mask shape {m.shape} must be the logits shape without the vocabulary axis {s.shape[:-1]}")
  counted = m != 0
  return _log_probs(s, frozen=False), _log_probs(t, frozen=True), counted


def _masked_mean(per_token: Float[Array, "B T"], counted) -> jax.Array:
  n = jnp.sum(counted)
  total = jnp.sum(jnp.where(counted, per_token, 0.0))
  return total / jnp.maximum(n, 1).astype(jnp.float32)


def _kl(log_a: Float[Array, "B T V"], log_b: Float[Array, "B T V"]) -> Float[Array, "B T"]:
  """KL(a || b) per position, with 0 log 0 = 0."""
  a = jnp.exp(log_a)
  return jnp.sum(jnp.where(a > 0, a * (log_a - log_b), 0.0), axis=-1)


def _acceptance(log_q, log_p) -> Float[Array, "B T"]:
  """sum_v min(p, q) per position, without gradient."""
  return jax.lax.stop_gradient(jnp.sum(jnp.exp(jnp.minimum(log_q, log_p)), axis=-1))


def _finish(per_token, log_q, log_p, counted, **extra) -> tuple[jax.Array, Metrics]:
  loss = _masked_mean(per_token, counted)
  metrics = {
    "loss": loss,
    "expected_acceptance": _masked_mean(_acceptance(log_q, log_p), counted),
    "num_tokens": jnp.sum(counted).astype(jnp.float32),
  }
  metrics.update({k: jax.lax.stop_gradient(jnp.asarray(v, jnp.float32)) for k, v in extra.items()})
  return loss, metrics


def fkl(student_logits, teacher_logits, mask) -> tuple[jax.Array, Metrics]:
  """Forward KL, sum_v p log(p / q), averaged over counted tokens."""
  log_q, log_p, counted = _prepare(student_logits, teacher_logits, mask)
  return _finish(_kl(log_p, log_q), log_q, log_p, counted)


def rkl(student_logits, teacher_logits, mask) -> tuple[jax.Array, Metrics]:
  """Reverse KL, sum_v q log(q / p), averaged over counted tokens."""
  log_q, log_p, counted = _prepare(student_logits, teacher_logits, mask)
  return _finish(_kl(log_q, log_p), log_q, log_p, counted)


def _check_beta(beta: float) -> float:
  if not 0.0 <= float(beta) <= 1.0:
    raise SpecjaxError(f"jsd beta must be in [0, 1] (0 = forward KL, 1 = reverse KL), got {beta}")
  return float(beta)


def jsd(student_logits, teacher_logits, mask, beta: float = 0.5) -> tuple[jax.Array, Metrics]:
  """Generalised JSD (GKD form), beta KL(p||m) + (1-beta) KL(q||m) with m = beta p + (1-beta) q.

  Args:
    student_logits: [B, T, V] draft logits.
    teacher_logits: [B, T, V] target logits (no gradient).
    mask: [B, T], nonzero for counted tokens.
    beta: weight of the teacher in the mixture, in [0, 1]. beta = 0 is FKL and beta = 1 is RKL (the limits
      of the rescaled divergence; the unscaled one is identically zero there).
  """
  beta = _check_beta(beta)
  if beta == 0.0:
    return fkl(student_logits, teacher_logits, mask)
  if beta == 1.0:
    return rkl(student_logits, teacher_logits, mask)
  log_q, log_p, counted = _prepare(student_logits, teacher_logits, mask)
  log_m = jnp.logaddexp(log_p + jnp.log(beta), log_q + jnp.log1p(-beta))
  per_token = beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
  return _finish(per_token, log_q, log_p, counted)


def tvd(student_logits, teacher_logits, mask) -> tuple[jax.Array, Metrics]:
  """Total variation distance, 1/2 sum_v |p - q|, averaged over counted tokens."""
  log_q, log_p, counted = _prepare(student_logits, teacher_logits, mask)
  per_token = 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)), axis=-1)
  return _finish(per_token, log_q, log_p, counted)


def _check_norm(norm: str) -> str:
  if norm not in TVDPP_NORMS:
    raise SpecjaxError(f"tvdpp norm must be one of {list(TVDPP_NORMS)}, got {norm!r}")
  return norm


def tvdpp(
  student_logits,
  teacher_logits,
  mask,
  norm: str = "position",
  eps: float = 1e-6,
  sample_tokens: ArrayLike | None = None,
  rng: jax.Array | None = None,
) -> tuple[jax.Array, Metrics]:
  """TVD++: the TVD policy gradient with the reward 1[p > q] normalised to an advantage.

  Args:
    student_logits: [B, T, V] draft logits.
    teacher_logits: [B, T, V] target logits (no gradient).
    mask: [B, T], nonzero for counted tokens.
    norm: "position", "batch", "sampled" or "none" (mu = 0, sigma = 1: the gradient is exactly TVD's);
      see the module docstring.
    eps: added to sigma before dividing (sigma is 0 when the student equals the teacher).
    sample_tokens: [B, T] int, only for norm="sampled": the token scored at each position (e.g. the data's
      next token). Takes precedence over `rng`.
    rng: PRNG key, only for norm="sampled" without `sample_tokens`: draws y_t ~ q_t.

  Returns:
    (surrogate loss, metrics with "tvd", "reward_mean" (mu), "reward_std" (sigma) and the usual ones).
  """
  norm = _check_norm(norm)
  log_q, log_p, counted = _prepare(student_logits, teacher_logits, mask)
  n = jnp.maximum(jnp.sum(counted), 1).astype(jnp.float32)
  q_sg = jax.lax.stop_gradient(jnp.exp(log_q))
  reward = (log_p > jax.lax.stop_gradient(log_q)).astype(jnp.float32)  # [B, T, V]
  true_tvd = 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - q_sg), axis=-1)
  if norm == "sampled":
    if sample_tokens is None:
      if rng is None:
        raise SpecjaxError("tvdpp norm='sampled' needs sample_tokens [B, T] or an rng key to sample from the draft")
      y = jax.random.categorical(rng, jax.lax.stop_gradient(log_q), axis=-1)
    else:
      y = jnp.asarray(sample_tokens).astype(jnp.int32)
      if y.shape != counted.shape:
        raise SpecjaxError(f"sample_tokens shape {y.shape} must equal the mask shape {counted.shape}")
    r_y = jnp.take_along_axis(reward, y[..., None], axis=-1)[..., 0]  # [B, T]
    logq_y = jnp.take_along_axis(log_q, y[..., None], axis=-1)[..., 0]
    mu = jnp.sum(jnp.where(counted, r_y, 0.0)) / n
    sigma = jnp.sqrt(jnp.sum(jnp.where(counted, (r_y - mu) ** 2, 0.0)) / n)
    adv = jax.lax.stop_gradient((r_y - mu) / (sigma + eps))
    per_token = -adv * logq_y
    return _finish(
      per_token, log_q, log_p, counted, tvd=_masked_mean(true_tvd, counted), reward_mean=mu, reward_std=sigma
    )
  m_t = jnp.sum(q_sg * reward, axis=-1)  # [B, T]: q-weighted mean reward at each position
  if norm == "none":
    mu, sigma = jnp.zeros_like(m_t), jnp.ones_like(m_t)
  elif norm == "position":
    mu, sigma = m_t, jnp.sqrt(jnp.clip(m_t * (1.0 - m_t), 0.0))
  else:  # batch
    mu_b = jnp.sum(jnp.where(counted, m_t, 0.0)) / n
    mu = jnp.full_like(m_t, mu_b)
    sigma = jnp.full_like(m_t, jnp.sqrt(jnp.clip(mu_b * (1.0 - mu_b), 0.0)))
  if norm == "none":
    adv = reward
  else:
    adv = (reward - mu[..., None]) / (sigma[..., None] + eps)
  per_token = -jnp.sum(q_sg * jax.lax.stop_gradient(adv) * log_q, axis=-1)
  return _finish(
    per_token,
    log_q,
    log_p,
    counted,
    tvd=_masked_mean(true_tvd, counted),
    reward_mean=_masked_mean(mu, counted),
    reward_std=_masked_mean(sigma, counted),
  )


def _check_k(k: Any) -> float:
  try:
    kf = float(k)
  except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
    raise SpecjaxError(f"adaspec k must be a number in (0, 1], got {k!r}") from None
  if not 0.0 < kf <= 1.0:
    raise SpecjaxError(f"adaspec k must be in (0, 1] (the fraction of tokens kept; 0.4 in the paper), got {k}")
  return kf


def masked_quantile(values: Float[Array, "B T"], counted, q: float) -> jax.Array:
  """Quantile `q` of `values` over the counted entries, linear interpolation (like torch.quantile).

  Returns +inf when nothing is counted.
  """
  flat = jnp.where(counted, values, jnp.inf).reshape(-1)
  srt = jnp.sort(flat)
  n = jnp.sum(counted)
  pos = q * (jnp.maximum(n, 1) - 1).astype(jnp.float32)
  lo = jnp.floor(pos).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  frac = pos - lo.astype(jnp.float32)
  v_lo, v_hi = srt[lo], srt[hi]
  out = v_lo + frac * (v_hi - v_lo)
  out = jnp.where(frac == 0, v_lo, out)
  return jnp.where(n > 0, out, jnp.inf)


def adaspec(student_logits, teacher_logits, mask, reference_logits, k: float = 0.4) -> tuple[jax.Array, Metrics]:
  """AdaSPEC selective KD: forward KL on the top-k fraction of counted tokens by the gap L_d - L_r.

  Args:
    student_logits: [B, T, V] draft logits.
    teacher_logits: [B, T, V] target logits (no gradient).
    mask: [B, T], nonzero for counted tokens.
    reference_logits: [B, T, V] logits of the frozen reference model (FKL-distilled from the same
      pretrained checkpoint; no gradient).
    k: the fraction kept, a Python number in (0, 1].

  Returns:
    (sum of kept L_d / number of counted tokens, metrics with "kept_fraction", "threshold",
    "reference_acceptance", "gap_mean", "fkl" (the mean L_d over all counted tokens) and the usual ones).
  """
  k = _check_k(k)
  log_q, log_p, counted = _prepare(student_logits, teacher_logits, mask)
  ref = jnp.asarray(reference_logits)
  if ref.shape != jnp.shape(student_logits):
    raise SpecjaxError(f"reference logits {ref.shape} must have the student's shape {jnp.shape(student_logits)}")
  log_r = _log_probs(ref, frozen=True)
  l_d = _kl(log_p, log_q)
  l_r = _kl(log_p, log_r)
  gap = jax.lax.stop_gradient(l_d) - l_r
  threshold = masked_quantile(gap, counted, 1.0 - k)
  keep = counted & (gap >= threshold)
  n = jnp.sum(counted)
  return _finish(
    jnp.where(keep, l_d, 0.0),
    log_q,
    log_p,
    counted,
    kept_fraction=jnp.sum(keep) / jnp.maximum(n, 1),
    threshold=jnp.where(n > 0, threshold, 0.0),
    reference_acceptance=_masked_mean(_acceptance(log_r, log_p), counted),
    gap_mean=_masked_mean(gap, counted),
    fkl=_masked_mean(l_d, counted),
  )


@dataclasses.dataclass(frozen=True)
class Loss:
  """A distillation loss and what it asks of the training step beside (student, teacher, mask), so a
  trainer reads these fields instead of comparing loss names.

  Attributes:
    name: the `loss=` name.
    fn: `fn(student_logits, teacher_logits, mask, **per-call arrays, **options) -> (loss, metrics)`.
    needs_reference: takes `reference_logits`, the logits of a second frozen model (AdaSPEC).
    reference_loss: the loss that reference must have been distilled with (from the same start).
    needs_rng: takes the step's PRNG key `rng` (TVD++ draws its tokens with it under norm="sampled").
    validate: checks the static option values ({name: value}) and returns them normalised; raises
      SpecjaxError.
  """

  name: str
  fn: Callable[..., tuple[jax.Array, Metrics]]
  needs_reference: bool = False
  reference_loss: str | None = None
  needs_rng: bool = False
  validate: Callable[[dict[str, Any]], dict[str, Any]] = lambda options: options

  @property
  def options(self) -> list[str]:
    """The static options (keyword arguments after the three arrays), per-call arrays left out."""
    params = list(inspect.signature(self.fn).parameters)[3:]
    return [p for p in params if p not in _PER_CALL]

  def bind(self, **options: Any) -> Callable[..., tuple[jax.Array, Metrics]]:
    """`fn` with its static options checked now and bound (see `make_loss`)."""
    for key in options:
      if key not in self.options:
        raise SpecjaxError(f"loss {self.name!r} has no option {key!r}; its options are {self.options or 'none'}")
    options = self.validate(dict(options))
    return functools.partial(self.fn, **options) if options else self.fn


def _checks(**validators: Callable[[Any], Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
  """A `Loss.validate` that runs one check per option present."""
  return lambda options: {k: validators[k](v) if k in validators else v for k, v in options.items()}


_PER_CALL = ("sample_tokens", "rng", "reference_logits")
REGISTRY: dict[str, Loss] = {
  loss.name: loss
  for loss in (
    Loss("fkl", fkl),
    Loss("rkl", rkl),
    Loss("jsd", jsd, validate=_checks(beta=_check_beta)),
    Loss("tvd", tvd),
    Loss("tvdpp", tvdpp, needs_rng=True, validate=_checks(norm=_check_norm)),
    Loss("adaspec", adaspec, needs_reference=True, reference_loss="fkl", validate=_checks(k=_check_k)),
  )
}
LOSSES: dict[str, Callable[..., tuple[jax.Array, Metrics]]] = {name: loss.fn for name, loss in REGISTRY.items()}


def get_loss(name: str) -> Loss:
  """The record of loss `name`; an unknown name is a SpecjaxError listing the registered ones."""
  if name not in REGISTRY:
    raise SpecjaxError(f"unknown distillation loss {name!r}; choose one of {sorted(REGISTRY)}")
  return REGISTRY[name]


def loss_options(name: str) -> list[str]:
  """The static options a loss accepts (e.g. ["beta"] for jsd); per-call arrays are not listed."""
  return get_loss(name).options


def make_loss(name: str, **options: Any) -> Callable[..., tuple[jax.Array, Metrics]]:
  """A loss function with its static options bound and checked now.

  Example: `loss_fn = make_loss("tvdpp", norm="batch"); loss, metrics = loss_fn(s_logits, t_logits, mask)`.
  AdaSPEC's `reference_logits` and TVD++'s `sample_tokens` / `rng` are passed per call.

  Raises:
    SpecjaxError: unknown loss name, unknown option, or an option value out of range.
  """
  return get_loss(name).bind(**options)
