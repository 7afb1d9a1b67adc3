"""Sampling: temperature / top-k / top-p, and the acceptance rules of speculative decoding.

Everything here is pure and works on float32 logits over the last axis V. `SamplingConfig` is frozen
and hashable, so it lives on a decoder's static settings.

Speculative acceptance (ALGORITHMS.md section 1), for one round with draft tokens y_1..y_G:
- greedy (temperature 0): accept y_i while y_i == argmax p_i; the next token is argmax p_j at the
  first mismatch j (or the bonus argmax p_{G+1});
- sampling: accept y_i while u_i * q_i(y_i) <= p_i(y_i) (that is u_i <= min(1, p/q) without a
  division), u_i ~ U(0, 1); at the first rejection j the next token is drawn from the residual
  max(0, p_j - q_j) / sum(...), after G acceptances from p_{G+1}. p and q are the *processed*
  distributions (temperature, top-k, top-p applied to both).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from specjax.errors import SpecjaxError


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How the next token is chosen. temperature 0 is greedy (top-k / top-p are then irrelevant)."""

  temperature: float = 0.0
  top_k: int = 0  # 0: no top-k filter
  top_p: float = 1.0  # 1: no nucleus filter

  def __post_init__(self):
    if not self.temperature >= 0:
      raise SpecjaxError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise SpecjaxError(f"top-k must be >= 0 (0 disables it), got {self.top_k}")
    if not 0.0 < self.top_p <= 1.0:
      raise SpecjaxError(f"top-p must be in (0, 1], got {self.top_p}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0


def filter_logits(logits: Float[Array, "... V"], cfg: SamplingConfig) -> Float[Array, "... V"]:
  """logits / temperature with the tokens outside top-k and top-p set to -inf (not for greedy)."""
  logits = logits.astype(jnp.float32) / cfg.temperature
  if cfg.top_k and cfg.top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, cfg.top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if cfg.top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass strictly above each token
    keep_sorted = before < cfg.top_p  # the top token always stays
    # The smallest kept logit is the threshold; ties at the threshold are kept.
    threshold = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return logits


def probabilities(logits: Float[Array, "... V"], cfg: SamplingConfig) -> Float[Array, "... V"]:
  """The processed distribution (softmax of `filter_logits`); one-hot argmax when greedy."""
  if cfg.greedy:
    return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
  return jax.nn.softmax(filter_logits(logits, cfg), axis=-1)


def sample(key: jax.Array, logits: Float[Array, "... V"], cfg: SamplingConfig) -> Int[Array, "*batch"]:
  """One token per leading index: argmax when greedy, else a draw from the processed distribution."""
  if cfg.greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, filter_logits(logits, cfg), axis=-1).astype(jnp.int32)


def leading_true(flags: Array) -> Int[Array, "*batch"]:
  """Number of leading True values along the last axis."""
  return jnp.sum(jnp.cumprod(flags.astype(jnp.int32), axis=-1), axis=-1).astype(jnp.int32)


def greedy_accept(
  draft_tokens: Int[Array, "B G"], target_logits: Float[Array, "B G+1 V"]
) -> tuple[Int[Array, " B"], Int[Array, " B"]]:
  """(accepted count n in 0..G, next token = argmax p_{n+1})."""
  best = jnp.argmax(target_logits, axis=-1).astype(jnp.int32)  # [B, G+1]
  n = leading_true(draft_tokens == best[:, :-1])
  return n, jnp.take_along_axis(best, n[:, None], axis=1)[:, 0]


def residual(p: Float[Array, "... V"], q: Float[Array, "... V"]) -> Float[Array, "... V"]:
  """max(0, p - q), normalised; falls back to p where p <= q everywhere (then no rejection can occur)."""
  r = jnp.maximum(p - q, 0.0)
  total = jnp.sum(r, axis=-1, keepdims=True)
  return jnp.where(total > 0, r / jnp.where(total > 0, total, 1.0), p)


def rejection_accept(
  key: jax.Array,
  draft_tokens: Int[Array, "B G"],
  q: Float[Array, "B G V"],
  p: Float[Array, "B G+1 V"],
) -> tuple[Int[Array, " B"], Int[Array, " B"]]:
  """The exact speculative-sampling rule: (accepted count n, next token from residual or bonus)."""
  B, G = draft_tokens.shape
  k_u, k_next = jax.random.split(key)
  p_y = jnp.take_along_axis(p[:, :G], draft_tokens[..., None], axis=-1)[..., 0]
  q_y = jnp.take_along_axis(q, draft_tokens[..., None], axis=-1)[..., 0]
  u = jax.random.uniform(k_u, (B, G), jnp.float32)
  n = leading_true(u * q_y <= p_y)
  p_n = jnp.take_along_axis(p, n[:, None, None], axis=1)[:, 0]  # [B, V]
  q_pad = jnp.concatenate([q, jnp.zeros_like(q[:, :1])], axis=1)  # q_{G+1} = 0: the bonus draws from p
  q_n = jnp.take_along_axis(q_pad, n[:, None, None], axis=1)[:, 0]
  dist = residual(p_n, q_n)
  nxt = jax.random.categorical(k_next, jnp.log(dist), axis=-1).astype(jnp.int32)
  return n, nxt
