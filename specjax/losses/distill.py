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
  given, y_t ~ q_t drawn with `rng`, each position with its own key `jax.random.split(rng, (B, T))[b, t]`
  so that the draws do not depend on `chunk`; mu and sigma are the mean and standard deviation of r(y_t) over the
  counted positions, and L_t = - sg(A_t) log q_t(y_t)), or "none" (mu = 0, sigma = 1).
  The reported `loss` is the surrogate; `metrics["tvd"]` is the true TVD.
- `adaspec`: selective KD (Hu et al. 2025). Per counted token L_d = KL(p || q_draft), L_r = KL(p || q_ref),
  gap = L_d - L_r; keep the tokens with gap >= quantile(gap over the counted tokens, 1 - k) (linear
  interpolation like `torch.quantile`, ties kept); loss = sum of the kept L_d / number of counted tokens.

Memory: every loss takes `chunk` (default `CHUNK` = 256; 0 = all at once) and computes its per-position
values `chunk` positions of the length axis at a time, every row at once, each chunk under
`jax.checkpoint` (`per_position`). No float32 [B, T, V] array (log-softmaxes, TVD++'s reward and
advantage) is formed or kept for the backward pass beyond the logits and their gradient: at B x T =
16 x 2048 and V = 128,256 each such array is 16.8 GB. What couples positions (the batch's mu and sigma,
AdaSPEC's quantile) is computed afterwards from [B, T] per-position values, so the loss, its metrics and
its gradient do not depend on `chunk` (beyond float rounding).

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
# Positions of each row per chunk. At B = 2 rows a device and V = 128,256 a chunk's [2, 256, V] float32
# array is 263 MB (and 16 rows on one device: 2.1 GB). 0: the whole length in one piece.
CHUNK = 256


def _check_chunk(chunk: Any) -> int:
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
    raise SpecjaxError(
      f"chunk must be a whole number >= 0 (positions of each row per chunk; 0 = all at once), got {chunk!r}"
    )
  return chunk


def per_position(fn: Callable[..., dict], arrays: tuple, chunk: int = CHUNK) -> dict[str, Float[Array, "B T"]]:
  """`fn(*arrays)` computed `chunk` positions of the length axis at a time, every row at once.

  `fn` maps arrays [B, c, ...] (the same c positions of each) to a dict of per-position arrays [B, c];
  the result is that dict over all T positions. Each chunk is a `jax.checkpoint`ed call inside
  `lax.map`, so neither the forward nor the backward pass holds more than one chunk's [B, c, V]
  intermediates: the backward pass recomputes them from the logits. Chunks run along T, not the
  flattened B x T, so the batch axis keeps its sharding. When `chunk` does not divide T the last chunk
  starts at T - chunk and overlaps the one before it; its first positions are dropped (they are
  computed twice, to identical values). `chunk` 0 or >= T: one plain call (nothing recomputed).
  """
  chunk = _check_chunk(chunk)
  T = arrays[0].shape[1]
  if not chunk or chunk >= T:
    return fn(*arrays)
  n = -(-T // chunk)
  starts = jnp.minimum(jnp.arange(n, dtype=jnp.int32) * chunk, T - chunk)

  @jax.checkpoint
  def one(start):
    return fn(*(jax.lax.dynamic_slice_in_dim(x, start, chunk, axis=1) for x in arrays))

  tail = T - (n - 1) * chunk  # positions of the last chunk that no earlier chunk covered

  def join(y):  # [n, B, c, ...] -> [B, T, ...]
    head = jnp.moveaxis(y[:-1], 0, 1).reshape(y.shape[1], (n - 1) * chunk, *y.shape[3:])
    return jnp.concatenate([head, y[-1][:, chunk - tail :]], axis=1)

  return jax.tree.map(join, jax.lax.map(one, starts))


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
  return s, t, m != 0


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


def acceptance(student_logits, teacher_logits, teacher_lse=None, chunk: int = CHUNK) -> Float[Array, "B T"]:
  """Teacher-forced expected acceptance sum_v min(p, q) at each position [B, T], without gradient.

  q = softmax(student_logits); p = softmax(teacher_logits), or exp(teacher_logits - teacher_lse) when the
  teacher's normaliser `teacher_lse` [B, T] is given (the true p of a reduced-vocabulary draft's columns,
  whose sum is below 1). Computed `chunk` positions at a time (`per_position`).
  """

  def stats(s, t, *lse):
    log_q = _log_probs(s, frozen=True)
    log_p = _log_probs(t, frozen=True) if not lse else jax.lax.stop_gradient(t.astype(jnp.float32) - lse[0][..., None])
    return {"acceptance": _acceptance(log_q, log_p)}

  arrays = (student_logits, teacher_logits) + (() if teacher_lse is None else (teacher_lse,))
  return per_position(stats, arrays, chunk)["acceptance"]


def _finish(per_token, accept, counted, **extra) -> tuple[jax.Array, Metrics]:
  loss = _masked_mean(per_token, counted)
  metrics = {
    "loss": loss,
    "expected_acceptance": _masked_mean(accept, counted),
    "num_tokens": jnp.sum(counted).astype(jnp.float32),
  }
  metrics.update({k: jax.lax.stop_gradient(jnp.asarray(v, jnp.float32)) for k, v in extra.items()})
  return loss, metrics


def _divergence(per_token: Callable, student_logits, teacher_logits, mask, chunk: int) -> tuple[jax.Array, Metrics]:
  """A loss whose per-position value is `per_token(log_q, log_p)` (a divergence of q and p)."""
  s, t, counted = _prepare(student_logits, teacher_logits, mask)

  def stats(s, t):
    log_q, log_p = _log_probs(s, frozen=False), _log_probs(t, frozen=True)
    return {"loss": per_token(log_q, log_p), "acceptance": _acceptance(log_q, log_p)}

  out = per_position(stats, (s, t), chunk)
  return _finish(out["loss"], out["acceptance"], counted)


def fkl(student_logits, teacher_logits, mask, chunk: int = CHUNK) -> tuple[jax.Array, Metrics]:
  """Forward KL, sum_v p log(p / q), averaged over counted tokens."""
  return _divergence(lambda log_q, log_p: _kl(log_p, log_q), student_logits, teacher_logits, mask, chunk)


def rkl(student_logits, teacher_logits, mask, chunk: int = CHUNK) -> tuple[jax.Array, Metrics]:
  """Reverse KL, sum_v q log(q / p), averaged over counted tokens."""
  return _divergence(_kl, student_logits, teacher_logits, mask, chunk)


def _check_beta(beta: float) -> float:
  if not 0.0 <= float(beta) <= 1.0:
    raise SpecjaxError(f"jsd beta must be in [0, 1] (0 = forward KL, 1 = reverse KL), got {beta}")
  return float(beta)


def jsd(student_logits, teacher_logits, mask, beta: float = 0.5, chunk: int = CHUNK) -> tuple[jax.Array, Metrics]:
  """Generalised JSD (GKD form), beta KL(p||m) + (1-beta) KL(q||m) with m = beta p + (1-beta) q.

  Args:
    student_logits: [B, T, V] draft logits.
    teacher_logits: [B, T, V] target logits (no gradient).
    mask: [B, T], nonzero for counted tokens.
    beta: weight of the teacher in the mixture, in [0, 1]. beta = 0 is FKL and beta = 1 is RKL (the limits
      of the rescaled divergence; the unscaled one is identically zero there).
    chunk: positions of each row per chunk (`per_position`).
  """
  beta = _check_beta(beta)
  if beta == 0.0:
    return fkl(student_logits, teacher_logits, mask, chunk)
  if beta == 1.0:
    return rkl(student_logits, teacher_logits, mask, chunk)

  def per_token(log_q, log_p):
    log_m = jnp.logaddexp(log_p + jnp.log(beta), log_q + jnp.log1p(-beta))
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)

  return _divergence(per_token, student_logits, teacher_logits, mask, chunk)


def tvd(student_logits, teacher_logits, mask, chunk: int = CHUNK) -> tuple[jax.Array, Metrics]:
  """Total variation distance, 1/2 sum_v |p - q|, averaged over counted tokens."""
  return _divergence(
    lambda log_q, log_p: 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - jnp.exp(log_q)), axis=-1),
    student_logits,
    teacher_logits,
    mask,
    chunk,
  )


def _check_norm(norm: str) -> str:
  if norm not in TVDPP_NORMS:
    raise SpecjaxError(f"tvdpp norm must be one of {list(TVDPP_NORMS)}, got {norm!r}")
  return norm


def _draw(keys, log_q: Float[Array, "B T V"]) -> jax.Array:
  """One y ~ q per position, each with its own key (so the draw does not depend on the chunking)."""
  return jax.vmap(jax.vmap(jax.random.categorical))(keys, jax.lax.stop_gradient(log_q))


def _pick(x: Float[Array, "B T V"], y) -> Float[Array, "B T"]:
  return jnp.take_along_axis(x, y[..., None], axis=-1)[..., 0]


def tvdpp(
  student_logits,
  teacher_logits,
  mask,
  norm: str = "position",
  eps: float = 1e-6,
  chunk: int = CHUNK,
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
    chunk: positions of each row per chunk (`per_position`). "batch" needs only per-position sums inside a
      chunk: with the batch's mu and sigma constants, L_t = -(sum_v q r log q - mu sum_v q log q) / (sigma
      + eps).
    sample_tokens: [B, T] int, only for norm="sampled": the token scored at each position (e.g. the data's
      next token). Takes precedence over `rng`.
    rng: PRNG key, only for norm="sampled" without `sample_tokens`: draws y_t ~ q_t, position (b, t) with
      the key `jax.random.split(rng, (B, T))[b, t]`, whatever the chunking.

  Returns:
    (surrogate loss, metrics with "tvd", "reward_mean" (mu), "reward_std" (sigma) and the usual ones).
  """
  norm = _check_norm(norm)
  s, t, counted = _prepare(student_logits, teacher_logits, mask)
  n = jnp.maximum(jnp.sum(counted), 1).astype(jnp.float32)
  extra = ()
  if norm == "sampled":
    if sample_tokens is None:
      if rng is None:
        raise SpecjaxError("tvdpp norm='sampled' needs sample_tokens [B, T] or an rng key to sample from the draft")
      extra = (jax.random.split(rng, counted.shape),)
    else:
      y = jnp.asarray(sample_tokens).astype(jnp.int32)
      if y.shape != counted.shape:
        raise SpecjaxError(f"sample_tokens shape {y.shape} must equal the mask shape {counted.shape}")
      extra = (y,)

  def stats(s, t, *y):
    log_q, log_p = _log_probs(s, frozen=False), _log_probs(t, frozen=True)
    q_sg = jax.lax.stop_gradient(jnp.exp(log_q))
    reward = (log_p > jax.lax.stop_gradient(log_q)).astype(jnp.float32)  # [B, c, V]
    out = {"tvd": 0.5 * jnp.sum(jnp.abs(jnp.exp(log_p) - q_sg), axis=-1), "acceptance": _acceptance(log_q, log_p)}
    if norm == "sampled":
      y = y[0] if sample_tokens is not None else _draw(y[0], log_q)
      return dict(out, reward=_pick(reward, y), logq=_pick(log_q, y))
    m_t = jnp.sum(q_sg * reward, axis=-1)  # q-weighted mean reward at each position
    if norm == "none":
      return dict(out, loss=-jnp.sum(q_sg * reward * log_q, axis=-1))
    if norm == "batch":
      return dict(out, m=m_t, qr_logq=jnp.sum(q_sg * reward * log_q, axis=-1), q_logq=jnp.sum(q_sg * log_q, axis=-1))
    sigma = jnp.sqrt(jnp.clip(m_t * (1.0 - m_t), 0.0))
    adv = jax.lax.stop_gradient((reward - m_t[..., None]) / (sigma[..., None] + eps))
    return dict(out, loss=-jnp.sum(q_sg * adv * log_q, axis=-1), mu=m_t, sigma=sigma)

  out = per_position(stats, (s, t) + extra, chunk)
  true_tvd = _masked_mean(out["tvd"], counted)
  if norm == "sampled":
    r_y = out["reward"]
    mu = jnp.sum(jnp.where(counted, r_y, 0.0)) / n
    sigma = jnp.sqrt(jnp.sum(jnp.where(counted, (r_y - mu) ** 2, 0.0)) / n)
    adv = jax.lax.stop_gradient((r_y - mu) / (sigma + eps))
    return _finish(-adv * out["logq"], out["acceptance"], counted, tvd=true_tvd, reward_mean=mu, reward_std=sigma)
  if norm == "batch":
    mu = jax.lax.stop_gradient(jnp.sum(jnp.where(counted, out["m"], 0.0)) / n)
    sigma = jnp.sqrt(jnp.clip(mu * (1.0 - mu), 0.0))
    per_token = -(out["qr_logq"] - mu * out["q_logq"]) / (sigma + eps)
    return _finish(per_token, out["acceptance"], counted, tvd=true_tvd, reward_mean=mu, reward_std=sigma)
  if norm == "none":
    mu, sigma = jnp.zeros(counted.shape), jnp.ones(counted.shape)
  else:
    mu, sigma = out["mu"], out["sigma"]
  return _finish(
    out["loss"],
    out["acceptance"],
    counted,
    tvd=true_tvd,
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


def adaspec(
  student_logits, teacher_logits, mask, reference_logits, k: float = 0.4, chunk: int = CHUNK
) -> tuple[jax.Array, Metrics]:
  """AdaSPEC selective KD: forward KL on the top-k fraction of counted tokens by the gap L_d - L_r.

  Args:
    student_logits: [B, T, V] draft logits.
    teacher_logits: [B, T, V] target logits (no gradient).
    mask: [B, T], nonzero for counted tokens.
    reference_logits: [B, T, V] logits of the frozen reference model (FKL-distilled from the same
      pretrained checkpoint; no gradient).
    k: the fraction kept, a Python number in (0, 1].
    chunk: positions of each row per chunk (`per_position`): L_d and L_r are computed per chunk, the
      quantile and the selection on the per-token [B, T] values.

  Returns:
    (sum of kept L_d / number of counted tokens, metrics with "kept_fraction", "threshold",
    "reference_acceptance", "gap_mean", "fkl" (the mean L_d over all counted tokens) and the usual ones).
  """
  k = _check_k(k)
  s, t, counted = _prepare(student_logits, teacher_logits, mask)
  ref = jnp.asarray(reference_logits)
  if ref.shape != s.shape:
    raise SpecjaxError(f"reference logits {ref.shape} must have the student's shape {s.shape}")

  def stats(s, t, r):
    log_q, log_p, log_r = _log_probs(s, frozen=False), _log_probs(t, frozen=True), _log_probs(r, frozen=True)
    return {
      "l_d": _kl(log_p, log_q),
      "l_r": _kl(log_p, log_r),
      "acceptance": _acceptance(log_q, log_p),
      "reference_acceptance": _acceptance(log_r, log_p),
    }

  out = per_position(stats, (s, t, ref), chunk)
  l_d = out["l_d"]
  gap = jax.lax.stop_gradient(l_d) - out["l_r"]
  threshold = masked_quantile(gap, counted, 1.0 - k)
  keep = counted & (gap >= threshold)
  n = jnp.sum(counted)
  return _finish(
    jnp.where(keep, l_d, 0.0),
    out["acceptance"],
    counted,
    kept_fraction=jnp.sum(keep) / jnp.maximum(n, 1),
    threshold=jnp.where(n > 0, threshold, 0.0),
    reference_acceptance=_masked_mean(out["reference_acceptance"], counted),
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
  """A `Loss.validate` that runs one check per option present (`chunk` is checked for every loss)."""
  validators = dict(validators, chunk=_check_chunk)
  return lambda options: {k: validators[k](v) if k in validators else v for k, v in options.items()}


def chunk_of(options: dict[str, Any]) -> int:
  """The `chunk` of a loss's static options (`CHUNK` when not set), checked: what a trainer uses for the
  metrics it computes beside the loss (`acceptance`)."""
  return _check_chunk(options.get("chunk", CHUNK))


_PER_CALL = ("sample_tokens", "rng", "reference_logits")
REGISTRY: dict[str, Loss] = {
  loss.name: loss
  for loss in (
    Loss("fkl", fkl, validate=_checks()),
    Loss("rkl", rkl, validate=_checks()),
    Loss("jsd", jsd, validate=_checks(beta=_check_beta)),
    Loss("tvd", tvd, validate=_checks()),
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
