"""`specjax bench`: every (mode, gamma, threshold, temperature, batch size) on the same prompts, one record each.

Modes come from the registry (`specjax.decode.modes`): a mode with a gamma knob runs once per gamma
(and once per draft threshold, and per ngram_min, when it has that knob), the others once; greedy-only modes are skipped
at temperature > 0.

Record fields: mode, gamma, window, ngram, ngram_min, draft_threshold, temperature, batch_size, prompts,
max_new_tokens, new_tokens, target_calls, draft_calls, drafted_tokens, acceptance_rate,
block_efficiency, per_position_acceptance, tokens_per_s, speedup_vs_ar, compile_s, wall_s.

With `repeat` > 1 each combination runs that many times and the fastest run is kept (same seed, so the
same tokens; the least disturbed timing). speedup_vs_ar divides by the target-only autoregressive run
at the same temperature and batch size (always run, even when `ar` is not asked for). What one model
call costs is measured by `specjax.eval.forward` (scripts/bench_forward.py, `specjax plan`), not here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from specjax.decode import modes as registry
from specjax.decode.engine import Engine
from specjax.decode.sampling import SamplingConfig
from specjax.decode.tree import TokenTree
from specjax.errors import SpecjaxError


def combinations(
  modes: Sequence[str],
  gammas: Sequence[int],
  thresholds: Sequence[float | None],
  ngram_mins: Sequence[int | None] = (None,),
) -> list[tuple]:
  """(mode, gamma, threshold, ngram_min) in run order: `ar` first, then each asked mode over its own knobs."""
  out = [("ar", None, None, None)]
  for name in modes:
    m = registry.get(name)
    if name == "ar":
      continue
    if not m.sweeps_gamma:
      out.append((name, None, None, None))
      continue
    for g in gammas:
      for t in thresholds if "draft_threshold" in m.knobs else [None]:
        for j in ngram_mins if "ngram_min" in m.knobs else [None]:
          out.append((name, g, t, j))
  return out


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
  ngram: int = 3,
  ngram_mins: Sequence[int | None] = (None,),
  thresholds: Sequence[float | None] = (None,),
  top_p: float = 1.0,
  top_k: int = 0,
  seed: int = 0,
  tree: TokenTree | None = None,
  repeat: int = 1,
  log=print,
) -> list[dict]:
  """Run every combination; return one record per combination (see the module docstring)."""
  if not modes:
    raise SpecjaxError("no modes to benchmark; pass e.g. --modes ar,spec")
  for name in modes:
    if registry.get(name).needs_datastore and engine.datastore is None:  # (an unknown mode fails here too)
      raise SpecjaxError(f"{name} needs a datastore (--datastore DS, built with `specjax datastore`)")
  if any(registry.get(m).sweeps_gamma for m in modes) and not gammas:
    raise SpecjaxError(f"{', '.join(m for m in modes if registry.get(m).sweeps_gamma)} need at least one gamma")
  if not thresholds:
    thresholds = (None,)
  ngram_mins = ngram_mins or (None,)
  if repeat < 1:
    raise SpecjaxError(f"repeat must be >= 1, got {repeat}")
  for g in gammas:
    if g < 1:
      raise SpecjaxError(f"gamma must be >= 1, got {g}")
  tree = tree or TokenTree.default()
  records = []
  for batch_size in batch_sizes:
    for temperature in temperatures:
      sampling = SamplingConfig(temperature=temperature, top_p=top_p, top_k=top_k)
      ar_tps = None
      for mode, gamma, threshold, ngram_min in combinations(modes, gammas, thresholds, ngram_mins):
        m = registry.get(mode)
        if m.greedy_only and not sampling.greedy:
          log(f"skip {mode} at temperature {temperature}: greedy only")
          continue
        knobs = dict(
          gamma=gamma or 1, window=window, tree=tree, ngram=ngram, ngram_min=ngram_min, draft_threshold=threshold
        )
        runs = [
          engine.run(
            prompts,
            mode,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            batch_size=batch_size,
            seed=seed,
            **{k: v for k, v in knobs.items() if k in m.knobs},
          )
          for _ in range(repeat)
        ]
        run = min(runs, key=lambda r: r.wall_s)  # the same tokens each time; the least disturbed timing
        run.compile_s = runs[0].compile_s
        met = run.metrics
        if mode == "ar":
          ar_tps = met["tokens_per_s"]
        rec = {
          "mode": mode,
          "gamma": gamma,
          "window": window if "window" in m.knobs else None,
          "ngram": ngram if "ngram" in m.knobs else None,
          "ngram_min": (ngram if ngram_min is None else ngram_min) if "ngram_min" in m.knobs else None,
          "draft_threshold": threshold,
          "temperature": temperature,
          "batch_size": batch_size,
          "prompts": len(prompts),
          "max_new_tokens": max_new_tokens,
          **{
            k: met[k]
            for k in (
              "new_tokens",
              "target_calls",
              "draft_calls",
              "drafted_tokens",
              "acceptance_rate",
              "block_efficiency",
            )
          },
          "per_position_acceptance": met["per_position_acceptance"],
          "tokens_per_s": met["tokens_per_s"],
          "speedup_vs_ar": (met["tokens_per_s"] / ar_tps) if ar_tps and met["tokens_per_s"] else None,
          "compile_s": run.compile_s,
          "wall_s": run.wall_s,
        }
        if mode != "ar" or "ar" in modes:
          records.append(rec)
        log(_line(rec))
  return records


def _fmt(x, spec=".2f"):
  return "-" if x is None else format(x, spec)


def label(r: dict) -> str:
  """A record's mode and knobs, e.g. `spec gamma=4 thr=0.5`."""
  name = r["mode"] + (f" gamma={r['gamma']}" if r.get("gamma") else "")
  name += f" thr={r['draft_threshold']:g}" if r.get("draft_threshold") is not None else ""
  return name + (f" nmin={r['ngram_min']}" if r.get("ngram_min") is not None else "")


def _line(r: dict) -> str:
  name = label(r)
  return (
    f"{name:<24} T={r['temperature']:<4} B={r['batch_size']:<3} tok/s={_fmt(r['tokens_per_s'], '.1f'):>7} "
    f"speedup={_fmt(r['speedup_vs_ar'])} tau={_fmt(r['block_efficiency'])} alpha={_fmt(r['acceptance_rate'])} "
    f"compile={r['compile_s']:.1f}s wall={r['wall_s']:.2f}s"
  )


def plot(records: list[dict], path: str) -> None:
  """Block efficiency and speed-up against gamma, and acceptance per draft position."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  swept = [r for r in records if r.get("gamma")]  # modes run once per gamma: a line each
  key = lambda r: (r["mode"], r.get("draft_threshold"), r.get("ngram_min"), r["temperature"], r["batch_size"])  # noqa: E731
  groups = sorted({key(r) for r in swept}, key=lambda g: (g[0], -1.0 if g[1] is None else g[1], g[2] or 0, g[3], g[4]))
  for group in groups:
    mode, thr, nmin, t, b = group
    rs = sorted((r for r in swept if key(r) == group), key=lambda r: r["gamma"])
    g = [r["gamma"] for r in rs]
    name = mode + ("" if thr is None else f" thr={thr:g}") + ("" if nmin is None else f" nmin={nmin}")
    label_ = f"{name}, T={t}, B={b}"
    axes[0].plot(g, [r["block_efficiency"] or np.nan for r in rs], "o-", label=label_)
    axes[1].plot(g, [r["speedup_vs_ar"] or np.nan for r in rs], "o-", label=label_)
    for r in rs:
      acc = [np.nan if a is None else a for a in r["per_position_acceptance"]]
      axes[2].plot(range(1, len(acc) + 1), acc, "o-", label=f"{name} gamma={r['gamma']}, T={t}, B={b}")
  for r in records:
    if r["mode"] != "ar" and not r.get("gamma"):  # modes without gamma: a level line
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
