"""What one model call costs on this machine, and the memory-bandwidth floor beside it.

A decode step must read every weight once, so no call can be faster than streaming the model's bytes
from memory. `floor_s` measures that floor on the spot: one jitted matrix-vector product over a matrix
as large as the model (same bytes, same dtype). `call_costs` times the calls the decoders make (T new
tokens per row on a cache holding `cache_fill` tokens, decode layout), so the two can be compared in
one run and on one machine (a ratio, not an absolute time, is what survives a noisy machine).

    costs = call_costs(cfg, params, batch_size=1, widths=[1, 5], cache_fill=200, cache_size=272)
    floor = floor_s(param_bytes(params))
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from specjax.decode.common import forward
from specjax.models.llama import ModelConfig, decode_layout


def host() -> str:
  """This machine in words, for every speed figure: the CPU model and its widest vector extension
  (AVX-512 or AVX2: on this project's hosts they decide what a few-token call costs), and the
  accelerator when JAX decodes on one."""
  name = platform.processor() or platform.machine()
  try:
    info = Path("/proc/cpuinfo").read_text()
    name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
    name += ", AVX-512" if "avx512f" in info else (", AVX2" if "avx2" in info else "")
  except (OSError, StopIteration):
    pass
  name += f", {os.cpu_count()} cores"
  dev = jax.devices()[0]
  return name + ("" if dev.platform == "cpu" else f"; decoding on {dev.device_kind}")


def param_bytes(params) -> int:
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(params))


def _median_s(thunk, repeat: int, setup=lambda: ()) -> float:
  """Median wall time of `thunk(*setup())` (setup untimed), after one warm-up call."""
  thunk(*setup())  # compile and warm up
  times = []
  for _ in range(repeat):
    args = setup()
    t0 = time.perf_counter()
    thunk(*args)
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def floor_s(nbytes: int, dtype=jnp.float32, repeat: int = 10, rows: int = 1024) -> float:
  """Seconds for one jitted [1, rows] @ [rows, N] product streaming `nbytes` of weights (the floor)."""
  cols = max(1, nbytes // (rows * jnp.dtype(dtype).itemsize))
  w = jnp.ones((rows, cols), dtype)
  x = jnp.ones((1, rows), dtype)
  fn = jax.jit(lambda x, w: x @ w)
  return _median_s(lambda: jax.block_until_ready(fn(x, w)), repeat)


def call_costs(
  cfg: ModelConfig,
  params,
  batch_size: int,
  widths: Sequence[int],
  cache_fill: int,
  cache_size: int,
  repeat: int = 5,
  mask: bool = False,
  fast_layout: bool = True,
  inner: int = 4,
) -> dict[int, float]:
  """Median seconds of one model call with T new tokens per row, for each T in `widths`.

  The call is the decoders' own (`specjax.decode.common.forward` on the decode layout, logits and the
  written cache returned so XLA cannot drop the cache writes). `mask=True` passes an explicit [B, T, T]
  attention mask, as tree verification does; `fast_layout=False` times the training (scanned) layout.
  Each sample is the mean of `inner` calls made inside one compiled loop (see `looped`).
  """
  if fast_layout and cfg.scan_layers:
    cfg, params = decode_layout(cfg, params)
  params = jax.device_put(params)
  fill = jnp.full((batch_size,), cache_fill, jnp.int32)

  def looped(T, m):
    """`inner` calls with T new tokens inside one compiled `fori_loop`, the cache carried (and rolled
    back) from call to call as in a decode loop, where XLA updates it in place; a call timed on its own
    instead measures buffer allocation and layouts that the decoders never see."""
    tokens = jnp.zeros((batch_size, T), jnp.int32)
    positions = cache_fill + jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (batch_size, T))

    def body(_, carry):
      cache, acc = carry
      logits, cache = forward(cfg, params, tokens, positions, cache.rollback(fill), m)
      return cache, acc + logits[0, 0, 0]  # the logits are used, so XLA cannot drop the head

    def run(cache):
      return jax.lax.fori_loop(0, inner, body, (cache, jnp.float32(0)))

    return jax.jit(run, donate_argnums=0)

  calls, caches = {}, {}
  for T in widths:
    if cache_fill + T > cache_size:
      raise ValueError(f"a call of {T} tokens on {cache_fill} cached ones needs a cache of {cache_fill + T} slots")
    m = jnp.broadcast_to(jnp.tril(jnp.ones((T, T), bool)), (batch_size, T, T)) if mask else None
    calls[T] = looped(T, m)
    caches[T] = jax.block_until_ready(calls[T](cfg.init_cache(batch_size, cache_size))[0])  # compile, warm up
  # Round-robin over the widths, so a burst of load on a shared machine hits every width alike.
  times: dict[int, list[float]] = {T: [] for T in widths}
  for _ in range(repeat):
    for T in widths:
      t0 = time.perf_counter()
      caches[T] = jax.block_until_ready(calls[T](caches[T])[0])
      times[T].append((time.perf_counter() - t0) / inner)
  out = {T: float(np.median(times[T])) for T in widths}
  return out
