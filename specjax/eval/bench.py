"""`specjax bench`: every (mode, gamma, temperature, batch size) on the same prompts, one record each.

Record fields: mode, gamma, window, temperature, batch_size, prompts, max_new_tokens, new_tokens,
target_calls, draft_calls, acceptance_rate, block_efficiency, per_position_acceptance, tokens_per_s,
speedup_vs_ar, compile_s, wall_s, model_call_s, loop_overhead.

With `repeat` > 1 each combination runs that many times and the fastest run is kept (same seed, so the
same tokens; the least disturbed timing). speedup_vs_ar divides by the target-only autoregressive run at the same temperature and batch size
(always run, even when `ar` is not asked for). model_call_s is what the run's model calls cost alone:
`CallReplay` makes the same calls (shapes, count, order) as separately jitted calls, fastest of
`repeat` replays; loop_overhead = wall_s / model_call_s - 1 is what the compiled loop adds on top
(drafting control, acceptance, sampling, cache bookkeeping, while-loop control).
"""

from __future__ import annotations

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


class CallReplay:
  """Replays the model calls of a decode, one separately jitted call at a time, to time them alone.

  The replay makes the same calls as the compiled loop (same shapes, same count, in loop order: the
  prefill(s), then per iteration the target call and the draft calls) on a cache filled to the middle
  of the run, waiting for each, and returns the total wall time. Timing calls over the same span as
  the decode, rather than one call at a time, exposes both to the same background load.
  """

  def __init__(self, engine: Engine):
    self.engine = engine
    self._calls: dict[tuple, object] = {}
    self._fns = {}

  def _fn(self, which: str):
    if which not in self._fns:
      cfg = self.engine.target_cfg if which == "target" else self.engine.draft_cfg
      vocab = self.engine.vocab_size
      # Logits and the written cache, as in the loop (returning only logits would let XLA drop the writes).
      self._fns[which] = jax.jit(lambda p, t, pos, c, m: forward(cfg, p, t, pos, c, m, vocab))
    return self._fns[which]

  def call(self, which: str, batch: int, T: int, cache_size: int, fill: int, mask=None):
    """A ready-to-run thunk: one forward of T tokens per row on a cache holding `fill` tokens."""
    key = (which, batch, T, cache_size, fill, mask is not None)
    if key not in self._calls:
      e = self.engine
      cfg, params = (e.target_cfg, e.target_params) if which == "target" else (e.draft_cfg, e.draft_params)
      cache = cfg.init_cache(batch, cache_size).rollback(jnp.full((batch,), fill, jnp.int32))
      tokens = jnp.zeros((batch, T), jnp.int32)
      positions = fill + jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (batch, T))
      fn = self._fn(which)
      thunk = lambda: jax.block_until_ready(fn(params, tokens, positions, cache, mask))  # noqa: E731
      thunk()  # compile and warm up
      self._calls[key] = thunk
    return self._calls[key]

  def plan(self, run: RunResult, mode: str, gamma: int, window: int, tree: TokenTree | None) -> list:
    """[(prefill calls, per-iteration calls, iterations)] for each batch of `run`."""
    out = []
    for b in run.batches:
      B, P, S, it = b["batch_size"], b["bucket"], b["cache_size"], b["iterations"]
      mid = P + (S - P) // 2  # a typical cache fill during the run
      pre, step = [self.call("target", B, P, S, 0)], []
      if mode == "ar":
        step = [self.call("target", B, 1, S, mid)]
      elif mode == "spec":
        pre.append(self.call("draft", B, P, S, 0))
        step = [self.call("draft", B, 2, S, mid)] + [self.call("draft", B, 1, S, mid)] * (gamma - 1)
        step.append(self.call("target", B, gamma + 1, S, mid))
      elif mode == "jacobi":
        step = [self.call("target", B, window + 1, S, mid)]
      else:
        n = tree.num_nodes + 1
        step = [self.call("target", B, n, S, mid, mask=jnp.broadcast_to(jnp.asarray(tree.arrays["mask"]), (B, n, n)))]
      out.append((pre, step, it))
    return out

  def seconds(self, run: RunResult, mode: str, gamma: int, window: int, tree: TokenTree | None) -> float:
    """Wall time of replaying every model call of `run` (see the class docstring)."""
    plan = self.plan(run, mode, gamma, window, tree)
    t0 = time.perf_counter()
    for pre, step, iterations in plan:
      for call in pre:
        call()
      for _ in range(iterations):
        for call in step:
          call()
    return time.perf_counter() - t0


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
  repeat: int = 1,
  log=print,
) -> list[dict]:
  """Run every combination; return one record per combination (see the module docstring)."""
  if not modes:
    raise SpecjaxError("no modes to benchmark; pass e.g. --modes ar,spec")
  if "spec" in modes and not gammas:
    raise SpecjaxError("speculative decoding needs at least one gamma")
  if repeat < 1:
    raise SpecjaxError(f"repeat must be >= 1, got {repeat}")
  for g in gammas:
    if g < 1:
      raise SpecjaxError(f"gamma must be >= 1, got {g}")
  tree = tree or TokenTree.default()
  replay = CallReplay(engine)
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
        runs = [
          engine.run(
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
          for _ in range(repeat)
        ]
        run = min(runs, key=lambda r: r.wall_s)  # the same tokens each time; the least disturbed timing
        run.compile_s = runs[0].compile_s
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
          rec["model_call_s"] = min(replay.seconds(run, mode, gamma or 1, window, tree) for _ in range(repeat))
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
