"""The measured cost of one model call, by number of new tokens (a minimal version; see `call_costs`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from specjax.decode.common import forward
from specjax.models.llama import LlamaConfig, decode_layout


def call_costs(
  cfg: LlamaConfig,
  params,
  batch_size: int,
  widths: Sequence[int],
  cache_fill: int,
  cache_size: int,
  repeat: int = 5,
) -> dict[int, float]:
  """Median seconds of one cached model call with T new tokens per row, for each T in `widths`, on a
  cache of `cache_size` slots holding `cache_fill` tokens, in the decode layout (compiled ahead of
  time, one warm-up call, then `repeat` timed calls each waited for)."""
  cfg, params = decode_layout(cfg, params)
  params = jax.device_put(params)
  fn = jax.jit(lambda p, t, pos, c: forward(cfg, p, t, pos, c))
  cache = cfg.init_cache(batch_size, cache_size).rollback(jnp.full((batch_size,), cache_fill, jnp.int32))
  out = {}
  for T in sorted(set(int(w) for w in widths)):
    tokens = jnp.zeros((batch_size, T), jnp.int32)
    positions = cache_fill + jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (batch_size, T))
    compiled = fn.lower(params, tokens, positions, cache).compile()
    jax.block_until_ready(compiled(params, tokens, positions, cache))
    times = []
    for _ in range(repeat):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(params, tokens, positions, cache))
      times.append(time.perf_counter() - t0)
    out[T] = statistics.median(times)
  return out
