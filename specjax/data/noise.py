"""Make Some Noise (MSN): the span-noise of Wang et al. (EMNLP 2024), docs/algorithms.md#make-some-noise.

Per example (prompt S, full sequence X = S + response), one contiguous span of length L inside the
response is noised: its start s is uniform in [|S|, |X| - L), and for i = s .. s+L-1, in order, X_i is
replaced by a token drawn uniformly from X_{<i}, the current (partly noised) prefix, prompt included.
The model is then trained with ordinary next-token cross-entropy against the CLEAN tokens: the caller
feeds the noisy tokens as inputs and keeps the clean tokens as labels (this function never sees them).

Conventions:
- `response_mask` [B, T] marks the response (one contiguous run per row); tokens after the sequence end
  are padding (mask 0) and are never touched. |S| is the first response position, |X| is one past the
  last response position.
- The upper bound |X| - L is exclusive, so the last response token (usually EOS) stays clean.
- A row whose response is shorter than L + 1 tokens (so that [|S|, |X| - L) is empty), or that has no
  response at all, is left clean: no clipped spans, every noised row carries exactly L noised positions.
- A span never starts at position 0 (there would be no prefix to draw from); this only matters for a
  row with an empty prompt.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int

from specjax.errors import SpecjaxError


def response_bounds(response_mask: Bool[Array, "B T"]) -> tuple[Int[Array, " B"], Int[Array, " B"]]:
  """(|S|, |X|) per row: the first response position and one past the last (0, 0 for no response)."""
  resp = jnp.asarray(response_mask) != 0
  T = resp.shape[-1]
  has = resp.any(-1)
  first = jnp.argmax(resp, axis=-1)
  end = T - jnp.argmax(resp[..., ::-1], axis=-1)
  return jnp.where(has, first, 0), jnp.where(has, end, 0)


def span_starts(key: jax.Array, response_mask: Bool[Array, "B T"], span: int) -> Int[Array, " B"]:
  """The span start s per row (uniform in [max(|S|, 1), |X| - L)), or -1 for rows left clean."""
  first, end = response_bounds(response_mask)
  lo = jnp.maximum(first, 1)
  hi = end - span
  ok = hi > lo
  s = jax.random.randint(key, first.shape, lo, jnp.maximum(hi, lo + 1))
  return jnp.where(ok, s, -1)


def _noise_row(key: jax.Array, tokens: Int[Array, " T"], start: Int[Array, ""], span: int) -> Int[Array, " T"]:
  s = jnp.maximum(start, 1)
  # j_n uniform in [0, s + n): a position of the current prefix X_{<i} for i = s + n.
  src = jax.random.randint(key, (span,), 0, s + jnp.arange(span))

  def body(n, x):
    return x.at[s + n].set(x[src[n]])

  noisy = jax.lax.fori_loop(0, span, body, tokens)
  return jnp.where(start >= 0, noisy, tokens)


@functools.partial(jax.jit, static_argnames="span")
def make_some_noise(
  key: jax.Array, tokens: Int[Array, "B T"], response_mask: Bool[Array, "B T"], span: int = 5
) -> Int[Array, "B T"]:
  """Noise one span of `span` response tokens per row, each from the preceding (noised) tokens.

  Args:
    key: PRNG key; the same key gives the same noise.
    tokens: [B, T] int token ids (prompt + response + padding).
    response_mask: [B, T], nonzero on the (contiguous) response of each row.
    span: L, the number of consecutive positions noised per row (static, >= 1).

  Returns:
    [B, T] noisy tokens, equal to `tokens` outside the one noised span of each row; rows whose response is
    shorter than span + 1 are returned unchanged.
  """
  if not isinstance(span, int) or span < 1:
    raise SpecjaxError(f"MSN span must be a positive integer, got {span!r}")
  tokens = jnp.asarray(tokens)
  k_start, k_src = jax.random.split(key)
  starts = span_starts(k_start, response_mask, span)
  keys = jax.random.split(k_src, tokens.shape[0])
  return jax.vmap(_noise_row, in_axes=(0, 0, 0, None))(keys, tokens, starts, span)
