"""`specjax bench`: every (mode, gamma, temperature, batch size) on the same prompts, one record each.

Record fields: mode, gamma, window, temperature, batch_size, prompts, max_new_tokens, new_tokens,
target_calls, draft_calls, acceptance_rate, block_efficiency, per_position_acceptance, tokens_per_s,
speedup_vs_ar, compile_s, wall_s, model_call_s, loop_overhead.

speedup_vs_ar divides by the target-only autoregressive run at the same temperature and batch size
(always run, even when `ar` is not asked for). model_call_s is what the run's model calls cost when
timed alone (each call shape jitted by itself, median of several runs, times the number of times the
loop made it); loop_overhead = wall_s / model_call_s - 1 is what the compiled loop adds on top
(acceptance, sampling, cache bookkeeping, while-loop control).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from specjax.decode.common import forward
from specjax.decode.engine import Engine, RunResult
from specjax.decode.sampling import SamplingConfig
from specjax.decode.tree import TokenTree
from specjax.errors import SpecjaxError


def _time(fn, *args, reps: int = 5) -> float:
  """Median wall time of a jitted call (after one warm-up call that also compiles it)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


class CallTimer:
  """Times single model calls (one jitted forward per model, one measurement per call shape)."""

  def __init__(self, engine: Engine):
    self.engine = engine
    self.costs: dict[tuple, float] = {}
    self._fns = {}

  def _fn(self, which: str):
    if which not in self._fns:
      cfg = self.engine.target_cfg if which == "target" else self.engine.draft_cfg
      vocab = self.engine.vocab_size
      self._fns[which] = jax.jit(lambda p, t, pos, c, m: forward(cfg, p, t, pos, c, m, vocab)[0])
    return self._fns[which]

  def cost(self, which: str, batch: int, T: int, cache_size: int, fill: int, mask=None) -> float:
    """Seconds for one forward of T tokens per row on a cache of `cache_size` slots holding `fill`."""
    key = (which, batch, T, cache_size, fill, mask is not None)
    if key not in self.costs:
      e = self.engine
      cfg, params = (e.target_cfg, e.target_params) if which == "target" else (e.draft_cfg, e.draft_params)
      cache = cfg.init_cache(batch, cache_size).rollback(jnp.full((batch,), fill, jnp.int32))
      tokens = jnp.zeros((batch, T), jnp.int32)
      positions = fill + jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (batch, T))
      self.costs[key] = _time(self._fn(which), params, tokens, positions, cache, mask)
    return self.costs[key]

  def run_seconds(self, run: RunResult, mode: str, gamma: int, window: int, tree: TokenTree | None) -> float:
    """What the model calls of `run` cost when timed alone (see the module docstring)."""
    total = 0.0
    for b in run.batches:
      B, P, S, it = b["batch_size"], b["bucket"], b["cache_size"], b["iterations"]
      mid = P + (S - P) // 2  # a typical cache fill during the run
      total += self.cost("target", B, P, S, 0)
      if mode == "ar":
        total += it * self.cost("target", B, 1, S, mid)
      elif mode == "spec":
        total += self.cost("draft", B, P, S, 0)
        total += it * (self.cost("target", B, gamma + 1, S, mid) + self.cost("draft", B, 2, S, mid))
        total += it * (gamma - 1) * self.cost("draft", B, 1, S, mid)
      elif mode == "jacobi":
        total += it * self.cost("target", B, window + 1, S, mid)
      else:
        n = tree.num_nodes + 1
        mask = jnp.broadcast_to(jnp.asarray(tree.arrays["mask"]), (B, n, n))
        total += it * self.cost("target", B, n, S, mid, mask=mask)
    return total


def bench(
  engine: Engine,
  prompts: Sequence[Sequence[int]],
  modes: Sequence[str],
  gammas: Sequence[int],
  temperatures: Sequence[float],
  batch_sizes: Sequence[int],
  max_new_tokens: int,
  *,
  window: int = 5,
  top_p: float = 1.0,
  top_k: int = 0,
  seed: int = 0,
  tree: TokenTree | None = None,
  measure_overhead: bool = True,
  log=print,
) -> list[dict]:
  """Run every combination; return one record per combination (see the module docstring)."""
  if not modes:
    raise SpecjaxError("no modes to benchmark; pass e.g. --modes ar,spec")
  if "spec" in modes and not gammas:
    raise SpecjaxError("speculative decoding needs at least one gamma")
  for g in gammas:
    if g < 1:
      raise SpecjaxError(f"gamma must be >= 1, got {g}")
  tree = tree or TokenTree.default()
  timer = CallTimer(engine)
  records = []
  for batch_size in batch_sizes:
    for temperature in temperatures:
      sampling = SamplingConfig(temperature=temperature, top_p=top_p, top_k=top_k)
      combos = [("ar", None)] + [(m, g) for m in modes if m == "spec" for g in gammas]
      combos += [(m, None) for m in modes if m in ("jacobi", "tr-jacobi")]
      ar_tps = None
      for mode, gamma in combos:
        if mode in ("jacobi", "tr-jacobi") and not sampling.greedy:
          log(f"skip {mode} at temperature {temperature}: greedy only")
          continue
        run = engine.run(
          prompts,
          mode,
          max_new_tokens=max_new_tokens,
          sampling=sampling,
          gamma=gamma or 1,
          window=window,
          tree=tree,
          batch_size=batch_size,
          seed=seed,
        )
        m = run.metrics
        if mode == "ar":
          ar_tps = m["tokens_per_s"]
        rec = {
          "mode": mode,
          "gamma": gamma,
          "window": window if mode == "jacobi" else None,
          "temperature": temperature,
          "batch_size": batch_size,
          "prompts": len(prompts),
          "max_new_tokens": max_new_tokens,
          **{k: m[k] for k in ("new_tokens", "target_calls", "draft_calls", "acceptance_rate", "block_efficiency")},
          "per_position_acceptance": m["per_position_acceptance"],
          "tokens_per_s": m["tokens_per_s"],
          "speedup_vs_ar": (m["tokens_per_s"] / ar_tps) if ar_tps and m["tokens_per_s"] else None,
          "compile_s": run.compile_s,
          "wall_s": run.wall_s,
        }
        if measure_overhead:
          rec["model_call_s"] = timer.run_seconds(run, mode, gamma or 1, window, tree)
          rec["loop_overhead"] = run.wall_s / rec["model_call_s"] - 1.0
        if mode != "ar" or "ar" in modes:
          records.append(rec)
        log(_line(rec))
  return records


def _fmt(x, spec=".2f"):
  return "-" if x is None else format(x, spec)


def _line(r: dict) -> str:
  name = r["mode"] + (f" gamma={r['gamma']}" if r["gamma"] else "")
  extra = f" overhead={_fmt(r.get('loop_overhead'), '+.1%')}" if "loop_overhead" in r else ""
  return (
    f"{name:<16} T={r['temperature']:<4} B={r['batch_size']:<3} tok/s={_fmt(r['tokens_per_s'], '.1f'):>7} "
    f"speedup={_fmt(r['speedup_vs_ar'])} tau={_fmt(r['block_efficiency'])} alpha={_fmt(r['acceptance_rate'])} "
    f"compile={r['compile_s']:.1f}s wall={r['wall_s']:.2f}s{extra}"
  )


def plot(records: list[dict], path: str) -> None:
  """Block efficiency and speed-up against gamma, and acceptance per draft position."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  spec = [r for r in records if r["mode"] == "spec"]
  groups = sorted({(r["temperature"], r["batch_size"]) for r in spec})
  for t, b in groups:
    rs = sorted((r for r in spec if (r["temperature"], r["batch_size"]) == (t, b)), key=lambda r: r["gamma"])
    g = [r["gamma"] for r in rs]
    label = f"T={t}, B={b}"
    axes[0].plot(g, [r["block_efficiency"] or np.nan for r in rs], "o-", label=label)
    axes[1].plot(g, [r["speedup_vs_ar"] or np.nan for r in rs], "o-", label=label)
    for r in rs:
      acc = [np.nan if a is None else a for a in r["per_position_acceptance"]]
      axes[2].plot(range(1, len(acc) + 1), acc, "o-", label=f"gamma={r['gamma']}, {label}")
  for r in records:
    if r["mode"] in ("jacobi", "tr-jacobi"):
      axes[1].axhline(r["speedup_vs_ar"] or np.nan, ls="--", lw=1, color="gray")
      axes[1].annotate(r["mode"], (axes[1].get_xlim()[0], r["speedup_vs_ar"] or 0), fontsize=8, color="gray")
  axes[1].axhline(1.0, color="black", lw=0.8)
  axes[0].set(xlabel="gamma (draft tokens per round)", ylabel="block efficiency (tokens / target call)")
  axes[1].set(xlabel="gamma", ylabel="speed-up vs autoregressive (tokens/s)")
  axes[2].set(xlabel="draft position i", ylabel="P(accept i | 1..i-1 accepted)", ylim=(0, 1.05))
  for ax in axes:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
