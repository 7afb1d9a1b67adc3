"""Sampling: temperature / top-k / top-p, and the acceptance rules of speculative decoding.

Everything here is pure and works on float32 logits over the last axis V. `SamplingConfig` is frozen
and hashable, so it lives on a decoder's static settings.

Speculative acceptance (docs/algorithms.md#speculative-sampling), for one round with draft tokens y_1..y_G:
- greedy (temperature 0): accept y_i while y_i == argmax p_i; the next token is argmax p_j at the
  first mismatch j (or the bonus argmax p_{G+1});
- sampling: accept y_i while u_i * q_i(y_i) < p_i(y_i) (that is u_i < min(1, p/q) without a
  division), u_i ~ U[0, 1); strict, so u_i = 0 never accepts a token with p = 0. At the first
  rejection j the next token is drawn from the residual max(0, p_j - q_j) / sum(...), after G
  acceptances from p_{G+1}. p and q are the *processed*
  distributions (temperature, top-k, top-p applied to both).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

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


CANDIDATES = 256  # top-p looks for the nucleus among this many top tokens before sorting the vocabulary
BLOCK = 256  # the two-level inverse-CDF sampler's block size


def _nucleus_threshold(logits: Float[Array, "... V"], sorted_top: Float[Array, "... C"], top_p: float):
  """The smallest logit of the nucleus, from the C largest logits in descending order (-inf past the
  top-k cut). Returns (threshold, found): found is False where the nucleus reaches past the C tokens."""
  log_total = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  probs = jnp.exp(sorted_top - log_total)
  before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
  keep = before < top_p  # the top token always stays
  threshold = jnp.min(jnp.where(keep, sorted_top, jnp.inf), axis=-1, keepdims=True)
  # No slicing of the top_k output (XLA then rewrites top_k into a full sort): reductions instead.
  return threshold, ~jnp.all(keep, axis=-1) | jnp.any(jnp.isneginf(sorted_top), axis=-1)


def _sortable(x: Float[Array, " ..."]) -> Int[Array, " ..."]:
  """int32 keys ordered like the float32 values (-inf < ... < -0 = 0 < ... < inf)."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
  return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def _nucleus_by_bisection(logits: Float[Array, "... V"], top_p: float) -> Float[Array, "... 1"]:
  """The nucleus threshold without sorting: bisect over float32 values (as ordered int32 keys) for the
  largest x with mass(logits > x) >= top_p; the nucleus is then every token above x. 32 halvings
  reach adjacent floats, so the cut is the same as a sort's (up to summation order)."""
  probs = jax.nn.softmax(logits, axis=-1)
  keys = _sortable(logits)
  lo = jnp.min(keys, axis=-1, keepdims=True) - 1  # mass above lo is everything: >= top_p
  hi = jnp.max(keys, axis=-1, keepdims=True)  # mass above hi is nothing: < top_p

  def halve(_, bounds):
    lo, hi = bounds
    mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without int32 overflow
    small = jnp.sum(jnp.where(keys > mid, probs, 0.0), axis=-1, keepdims=True) < top_p
    return jnp.where(small, lo, mid), jnp.where(small, mid, hi)

  lo, _ = jax.lax.fori_loop(0, 32, halve, (lo, hi))
  return jnp.min(jnp.where(keys > lo, logits, jnp.inf), axis=-1, keepdims=True)


def filter_logits(logits: Float[Array, "... V"], cfg: SamplingConfig) -> Float[Array, "... V"]:
  """logits / temperature with the tokens outside top-k and top-p set to -inf (not for greedy).

  Ties at a cut are kept (every token whose logit equals the last kept one). Neither filter sorts the
  vocabulary: top-k is `lax.top_k`; top-p finds the nucleus among the top `CANDIDATES` tokens, or by
  bisection over the values when some row's nucleus is larger (the same result either way).
  """
  logits = logits.astype(jnp.float32) / cfg.temperature
  V = logits.shape[-1]
  if cfg.top_k and cfg.top_k < V:
    # min, not [..., -1:]: XLA rewrites a top_k whose output is sliced to one column into a full sort.
    kth = jnp.min(jax.lax.top_k(logits, cfg.top_k)[0], axis=-1, keepdims=True)
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if cfg.top_p < 1.0:
    C = min(V, CANDIDATES)
    threshold, found = _nucleus_threshold(logits, jax.lax.top_k(logits, C)[0], cfg.top_p)
    threshold = jax.lax.cond(
      jnp.all(found),
      lambda: threshold,
      lambda: _nucleus_by_bisection(logits, cfg.top_p),
    )
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  return logits


def probabilities(logits: Float[Array, "... V"], cfg: SamplingConfig) -> Float[Array, "... V"]:
  """The processed distribution (softmax of `filter_logits`); one-hot argmax when greedy."""
  if cfg.greedy:
    return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
  return jax.nn.softmax(filter_logits(logits, cfg), axis=-1)


def categorical(key: jax.Array, probs: Float[Array, "... V"]) -> Int[Array, "*batch"]:
  """One draw per leading index from unnormalised probabilities, by inverse CDF on one uniform number.

  Two levels (block sums, then one block) keep it O(V) with short cumulative sums; it never returns a
  zero-probability token. Unlike `jax.random.categorical` it needs one random number per draw instead
  of V Gumbel variates, which on CPU cost more than the draw itself at batch 16.
  """
  lead, V = probs.shape[:-1], probs.shape[-1]
  nb = -(-V // BLOCK)
  p = jnp.pad(probs.astype(jnp.float32), [(0, 0)] * len(lead) + [(0, nb * BLOCK - V)]).reshape(*lead, nb, BLOCK)
  block_cdf = jnp.cumsum(jnp.sum(p, axis=-1), axis=-1)  # [..., nb]
  target = (1.0 - jax.random.uniform(key, lead)) * block_cdf[..., -1]  # in (0, total]
  b = jnp.minimum(jnp.sum(block_cdf < target[..., None], axis=-1), nb - 1)
  below = jnp.where(b > 0, jnp.take_along_axis(block_cdf, jnp.maximum(b - 1, 0)[..., None], axis=-1)[..., 0], 0.0)
  block = jnp.take_along_axis(p, b[..., None, None], axis=-2)[..., 0, :]  # [..., BLOCK]
  j = jnp.sum(jnp.cumsum(block, axis=-1) < (target - below)[..., None], axis=-1)
  last = BLOCK - 1 - jnp.argmax((block > 0)[..., ::-1], axis=-1)  # rounding can overshoot the block's end
  return (b * BLOCK + jnp.minimum(j, last)).astype(jnp.int32)


def sample(key: jax.Array, logits: Float[Array, "... V"], cfg: SamplingConfig) -> Int[Array, "*batch"]:
  """One token per leading index: argmax when greedy, else a draw from the processed distribution."""
  if cfg.greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return categorical(key, probabilities(logits, cfg))


def leading_true(flags: Array) -> Int[Array, "*batch"]:
  """Number of leading True values along the last axis."""
  return jnp.sum(jnp.cumprod(flags.astype(jnp.int32), axis=-1), axis=-1).astype(jnp.int32)


def _valid(draft_tokens: Int[Array, "B G"], n_draft: Int[Array, " B"] | None) -> Bool[Array, "B G"]:
  """Which draft positions hold real proposals: the first n_draft[b] of row b (all when None)."""
  G = draft_tokens.shape[1]
  if n_draft is None:
    return jnp.ones(draft_tokens.shape, bool)
  return jnp.arange(G)[None, :] < n_draft[:, None]


def greedy_accept(
  draft_tokens: Int[Array, "B G"], target_logits: Float[Array, "B G+1 V"], n_draft: Int[Array, " B"] | None = None
) -> tuple[Int[Array, " B"], Int[Array, " B"]]:
  """(accepted count n in 0..G, next token = argmax p_{n+1}). A row with `n_draft[b]` < G proposed only
  its first n_draft[b] tokens: the rest count as rejected."""
  best = jnp.argmax(target_logits, axis=-1).astype(jnp.int32)  # [B, G+1]
  n = leading_true((draft_tokens == best[:, :-1]) & _valid(draft_tokens, n_draft))
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
  n_draft: Int[Array, " B"] | None = None,
) -> tuple[Int[Array, " B"], Int[Array, " B"]]:
  """The exact speculative-sampling rule: (accepted count n, next token from residual or bonus).

  A row with `n_draft[b]` = k < G proposed only y_1..y_k: its round is a round of draft length k, so
  positions past k can never be accepted and, when all k are, the bonus token is drawn from p_{k+1}
  (q is taken as 0 past k, which turns the residual into p itself)."""
  B, G = draft_tokens.shape
  k_u, k_next = jax.random.split(key)
  valid = _valid(draft_tokens, n_draft)
  q = jnp.where(valid[..., None], q, 0.0)
  p_y = jnp.take_along_axis(p[:, :G], draft_tokens[..., None], axis=-1)[..., 0]
  q_y = jnp.take_along_axis(q, draft_tokens[..., None], axis=-1)[..., 0]
  u = jax.random.uniform(k_u, (B, G), jnp.float32)
  n = leading_true((u * q_y < p_y) & valid)  # strict: u = 0 must not accept p(y) = 0
  p_n = jnp.take_along_axis(p, n[:, None, None], axis=1)[:, 0]  # [B, V]
  q_pad = jnp.concatenate([q, jnp.zeros_like(q[:, :1])], axis=1)  # q_{G+1} = 0: the bonus draws from p
  q_n = jnp.take_along_axis(q_pad, n[:, None, None], axis=1)[:, 0]
  dist = residual(p_n, q_n)
  nxt = categorical(k_next, dist)
  return n, nxt


def point_mass(tokens: Int[Array, "B G"], vocab_size: int) -> Float[Array, "B G V"]:
  """q = one-hot(y): a deterministic proposal (lookup drafting). With it the rule above accepts y with
  probability p(y) and on rejection draws from p with y removed and renormalised."""
  return jax.nn.one_hot(tokens, vocab_size, dtype=jnp.float32)


def confidence(logits: Float[Array, "... V"], cfg: SamplingConfig) -> Float[Array, " *batch"]:
  """The draft's confidence: the top probability of its processed distribution. At temperature 0 the
  processed distribution is one-hot (always 1), so the plain softmax is used instead."""
  if cfg.greedy:
    return jnp.max(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
  return jnp.max(probabilities(logits, cfg), axis=-1)
