"""`specjax bench`: every mode over its own knobs' values, at every temperature and batch size, on the same
prompts, one record each.

Modes and knobs come from the registry (`specjax.decode.modes`): a mode runs once per combination of the
values of its swept knobs (gamma, draft threshold, ngram_min for the built-in ones; `sweeps` gives the
values, else each knob's default sweep) with its other knobs at `knobs` or their defaults; greedy-only
modes are skipped at temperature > 0.

Record fields: mode, every knob of every registered mode that the command line sets (None where the mode
does not read it; the value the decoder ran with, defaults completed, where it does), temperature,
batch_size, prompts, max_new_tokens, dtype (the models' compute dtype), new_tokens, target_calls, draft_calls,
drafted_tokens, acceptance_rate, block_efficiency, per_position_acceptance, tokens_per_s, speedup_vs_ar,
compile_s, wall_s, and `per_prompt`: per prompt, in the prompts' order, its new_tokens, target_calls and
wall_s (the decode time of the compiled call it ran in; at batch size 1 its own), so that a report can
resample prompts (bootstrap intervals) without rerunning.

With `repeat` > 1 each combination runs that many times and the fastest run is kept (same seed, so the
same tokens; the least disturbed timing). speedup_vs_ar divides by the baseline mode's run (target-only
autoregressive decoding, `Mode.baseline`) at the same temperature and batch size (always run, even when
it is not asked for). What one model call costs is measured by `specjax.eval.forward`
(scripts/bench_forward.py, `specjax plan`), not here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from specjax.decode import modes as registry
from specjax.decode.engine import Engine
from specjax.decode.sampling import SamplingConfig
from specjax.errors import SpecjaxError


def combinations(modes: Sequence[str], sweeps: Mapping[str, Sequence] | None = None) -> list[tuple[str, dict]]:
  """(mode, swept knob values) in run order: the baseline first, then each asked mode over the product of
  its swept knobs' values (`sweeps[name]`, else the knob's default sweep), in field order."""
  sweeps = sweeps or {}
  base = registry.baseline().name
  out = [(base, {})]
  for name in modes:
    m = registry.get(name)
    if name == base:
      continue
    fields = {f.name: f for f in m.fields}
    values = [list(sweeps.get(k) or fields[k].metadata["sweep"]) for k in m.swept]
    out += [(name, dict(zip(m.swept, combo, strict=True))) for combo in itertools.product(*values)]
  return out


def record_knobs() -> list[str]:
  """The knob fields of a record: every registered knob the command line sets."""
  return [n for n, f in registry.knob_fields().items() if f.metadata["parse"] is not None]


def bench(
  engine: Engine,
  prompts: Sequence[Sequence[int]],
  modes: Sequence[str],
  temperatures: Sequence[float],
  batch_sizes: Sequence[int],
  max_new_tokens: int,
  *,
  sweeps: Mapping[str, Sequence] | None = None,
  knobs: Mapping[str, object] | None = None,
  top_p: float = 1.0,
  top_k: int = 0,
  seed: int = 0,
  repeat: int = 1,
  log=print,
) -> list[dict]:
  """Run every combination; return one record per combination (see the module docstring). `sweeps` maps a
  swept knob to its values, `knobs` the others to one value each."""
  if not modes:
    raise SpecjaxError("no modes to benchmark; pass e.g. --modes ar,spec")
  for name in modes:
    if registry.get(name).needs_datastore and engine.datastore is None:  # (an unknown mode fails here too)
      raise SpecjaxError(f"{name} needs a datastore (--datastore DS, built with `specjax datastore`)")
  fields = registry.knob_fields()
  sweeps, knobs = dict(sweeps or {}), dict(knobs or {})
  for name in set(sweeps) | set(knobs):
    if name not in fields:
      raise SpecjaxError(f"unknown knob {name!r}; the modes' knobs are {', '.join(fields)}")
  for name, values in sweeps.items():
    if fields[name].metadata["sweep"] is None:
      raise SpecjaxError(f"{name} is not swept by the bench; give it one value")
    if values is not None and not list(values):
      raise SpecjaxError(f"{name} needs at least one value")
  if repeat < 1:
    raise SpecjaxError(f"repeat must be >= 1, got {repeat}")
  combos = combinations(modes, sweeps)
  for mode, swept in combos:
    registry.get(mode).make_knobs({**knobs, **swept})  # a bad knob value fails before anything runs
  base = registry.baseline().name
  shown = record_knobs()
  records = []
  for batch_size in batch_sizes:
    for temperature in temperatures:
      sampling = SamplingConfig(temperature=temperature, top_p=top_p, top_k=top_k)
      base_tps = None
      for mode, swept in combos:
        m = registry.get(mode)
        if m.greedy_only and not sampling.greedy:
          log(f"skip {mode} at temperature {temperature}: greedy only")
          continue
        values = {**knobs, **swept}
        runs = [
          engine.run(
            prompts,
            mode,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            batch_size=batch_size,
            seed=seed,
            **{k: v for k, v in values.items() if k in {f.name for f in m.fields}},
          )
          for _ in range(repeat)
        ]
        run = min(runs, key=lambda r: r.wall_s)  # the same tokens each time; the least disturbed timing
        run.compile_s = runs[0].compile_s
        met = run.metrics
        if mode == base:
          base_tps = met["tokens_per_s"]
        used = run.settings.knobs
        rec = {
          "mode": mode,
          **{k: getattr(used, k, None) for k in shown},
          "temperature": temperature,
          "batch_size": batch_size,
          "prompts": len(prompts),
          "max_new_tokens": max_new_tokens,
          "dtype": engine.target_cfg.dtype,
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
          "speedup_vs_ar": (met["tokens_per_s"] / base_tps) if base_tps and met["tokens_per_s"] else None,
          "compile_s": run.compile_s,
          "wall_s": run.wall_s,
          "swept": list(swept),
          "per_prompt": [{k: row.metrics[k] for k in ("new_tokens", "target_calls", "wall_s")} for row in run.rows],
        }
        if mode != base or base in modes:
          records.append(rec)
        log(_line(rec))
  return records


def _fmt(x, spec=".2f"):
  return "-" if x is None else format(x, spec)


def label(r: dict) -> str:
  """A record's mode and swept knobs, e.g. `spec gamma=4 thr=0.5`."""
  return " ".join([r["mode"], *(_knob(k, r[k]) for k in r.get("swept", ()) if r.get(k) is not None)])


def _knob(name: str, value) -> str:
  return f"{registry.short(name)}={value:g}" if isinstance(value, float) else f"{registry.short(name)}={value}"


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
  base = registry.baseline().name
  swept = [r for r in records if r.get("gamma")]  # modes run once per gamma: a line each
  others = lambda r: tuple((k, r[k]) for k in r.get("swept", ()) if k != "gamma" and r.get(k) is not None)  # noqa: E731
  key = lambda r: (r["mode"], others(r), r["temperature"], r["batch_size"])  # noqa: E731
  groups = sorted(
    {key(r) for r in swept}, key=lambda g: (g[0], tuple((k, -1.0 if v is None else v) for k, v in g[1]), g[2], g[3])
  )
  for group in groups:
    mode, rest, t, b = group
    rs = sorted((r for r in swept if key(r) == group), key=lambda r: r["gamma"])
    g = [r["gamma"] for r in rs]
    name = " ".join([mode, *(_knob(k, v) for k, v in rest)])
    label_ = f"{name}, T={t}, B={b}"
    axes[0].plot(g, [r["block_efficiency"] or np.nan for r in rs], "o-", label=label_)
    axes[1].plot(g, [r["speedup_vs_ar"] or np.nan for r in rs], "o-", label=label_)
    for r in rs:
      acc = [np.nan if a is None else a for a in r["per_position_acceptance"]]
      axes[2].plot(range(1, len(acc) + 1), acc, "o-", label=f"{name} gamma={r['gamma']}, T={t}, B={b}")
  for r in records:
    if r["mode"] != base and not r.get("gamma"):  # modes without gamma: a level line
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
