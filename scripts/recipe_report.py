"""The measurements of `scripts/reproduce_smollm2.sh`: call costs, then report.json and plots.

    python scripts/recipe_report.py costs OUT    # OUT/costs.json: target and drafter call costs, c, c_verify
    python scripts/recipe_report.py report OUT   # OUT/report.json, OUT/acceptance.png, OUT/speed.png

`costs` times one-token calls of the target and of OUT/drafter (and the target's gamma+1-token
verification calls) with `specjax.eval.forward.call_costs`, batch 1, 200 cached tokens.
`report` gathers costs.json, bench.json (`specjax bench`), the vocabulary map's coverage, the
training runs' last metrics and each stage's wall time (`stage_times`, summed over resumed runs) into
report.json, and plots block efficiency and acceptance against gamma
(greedy and T=1) and tokens/s of spec against ar.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path


def costs(out: Path) -> None:
  from specjax.checkpoint.orbax_io import load_checkpoint
  from specjax.eval.forward import call_costs

  target = load_checkpoint(out / "target")
  t = call_costs(target.config, target.params, 1, [1, 2, 3, 4, 5, 6, 7], cache_fill=200, cache_size=272, repeat=7)
  del target
  draft = load_checkpoint(out / "drafter")
  d = call_costs(draft.config, draft.params, 1, [1, 2], cache_fill=200, cache_size=272, repeat=7)
  record = {
    "target_call_s": {str(k): v for k, v in t.items()},
    "drafter_call_s": {str(k): v for k, v in d.items()},
    "c": d[1] / t[1],
    "c_verify": {str(g): t[g + 1] / t[1] for g in range(1, 7)},
    "drafter_head_size": draft.config.head_size,
  }
  (out / "costs.json").write_text(json.dumps(record, indent=1) + "\n")
  print(f"target 1-token call {t[1] * 1e3:.1f} ms, drafter {d[1] * 1e3:.2f} ms: c = {record['c']:.3f}")


def _last_metrics(path: Path) -> dict:
  if not path.is_file():
    return {}
  last: dict = {}
  for line in path.read_text().splitlines():
    try:
      last.update(json.loads(line))
    except json.JSONDecodeError:
      continue
  return last


def stage_times(path: Path) -> dict:
  """Wall seconds per stage of `reproduce_smollm2.sh`, summed over its invocations, from OUT/stage_times.tsv
  (one `unix-time<TAB>event` line per stage header, invocation start and exit).

  A stage lasts until the next event. A stage followed by a `start` belongs to an invocation that ended
  without its exit line (killed with SIGKILL, or the machine went away): its time is unknown, so it is
  listed under `untimed` instead of being counted. Stages are keyed by their number (`3/8`) and keep the
  header of their last invocation.
  """
  if not path.is_file():
    return {}
  events = []
  for n, line in enumerate(path.read_text().splitlines(), 1):
    t, sep, name = line.partition("\t")
    if not sep or not t.isdigit() or not name:
      raise ValueError(f"{path}:{n}: expected 'unix-time<TAB>event', got {line!r}")
    events.append((int(t), name))
  seconds: dict[str, int] = {}
  label: dict[str, str] = {}
  untimed = []
  for (t0, name), (t1, after) in itertools.pairwise(events):
    if name in ("start", "exit"):
      continue
    key = name.split(" ", 1)[0]
    label[key] = name
    if after == "start":
      untimed.append(name)
      continue
    seconds[key] = seconds.get(key, 0) + t1 - t0
  return {
    "stages": [{"stage": label[k], "s": s} for k, s in seconds.items()],
    "total_s": sum(seconds.values()),
    "invocations": sum(name == "start" for _, name in events),
    "untimed": untimed,
  }


def report(out: Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  bench = json.loads((out / "bench.json").read_text())
  cost = json.loads((out / "costs.json").read_text()) if (out / "costs.json").is_file() else {}
  vocab = json.loads((out / "vocab.json").read_text()) if (out / "vocab.json").is_file() else {}
  rows = []
  for r in bench:
    rows.append(
      {
        k: r.get(k)
        for k in (
          "mode",
          "gamma",
          "temperature",
          "tokens_per_s",
          "speedup_vs_ar",
          "block_efficiency",
          "acceptance_rate",
          "per_position_acceptance",
          "prompts",
          "max_new_tokens",
          "new_tokens",
          "compile_s",
          "wall_s",
        )
      }
    )
  mode = next((r["mode"] for r in rows if r["mode"] != "ar"), "spec")  # spec, or eagle (DRAFTER=eagle)
  best = {}
  for t in sorted({r["temperature"] for r in rows}):
    spec = [r for r in rows if r["mode"] == mode and r["temperature"] == t]
    if spec:
      b = max(spec, key=lambda r: r["tokens_per_s"] or 0)
      best[f"T{t:g}"] = {"gamma": b["gamma"], "speedup_vs_ar": b["speedup_vs_ar"], "tau": b["block_efficiency"]}
  g4 = {f"T{r['temperature']:g}": r for r in rows if r["mode"] == mode and r["gamma"] == 4}
  summary = {
    "greedy_gamma4_block_efficiency": g4.get("T0", {}).get("block_efficiency"),
    "greedy_gamma4_speedup_vs_ar": g4.get("T0", {}).get("speedup_vs_ar"),
    "t1_gamma4_block_efficiency": g4.get("T1", {}).get("block_efficiency"),
    "mode": mode,
    "best_spec": best,
    "c": cost.get("c"),
    "c_verify": cost.get("c_verify"),
  }
  times = stage_times(out / "stage_times.tsv")
  if times:
    summary["stages_total_min"] = round(times["total_s"] / 60, 1)
  record = {
    "summary": summary,
    "costs": cost,
    "vocab": {k: v for k, v in vocab.items() if k != "ids"},
    "pretrain_last_metrics": _last_metrics(out / "pre" / "metrics.jsonl"),
    "distill_last_metrics": _last_metrics(out / "kd" / "metrics.jsonl"),
    "stage_times": times,
    "bench": rows,
  }
  (out / "report.json").write_text(json.dumps(record, indent=1) + "\n")

  temps = sorted({r["temperature"] for r in rows})
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for t in temps:
    spec = sorted((r for r in rows if r["mode"] == mode and r["temperature"] == t), key=lambda r: r["gamma"])
    g = [r["gamma"] for r in spec]
    axes[0].plot(g, [r["block_efficiency"] for r in spec], "o-", label=f"T={t:g}")
    axes[1].plot(g, [r["acceptance_rate"] for r in spec], "o-", label=f"T={t:g}")
  axes[0].set(xlabel="gamma", ylabel="block efficiency (tokens / target call)", title="block efficiency")
  axes[1].set(xlabel="gamma", ylabel="acceptance rate", title="acceptance")
  for a in axes:
    a.grid(alpha=0.3)
    a.legend()
  fig.tight_layout()
  fig.savefig(out / "acceptance.png", dpi=100)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 4))
  for t in temps:
    spec = sorted((r for r in rows if r["mode"] == mode and r["temperature"] == t), key=lambda r: r["gamma"])
    line = ax.plot([r["gamma"] for r in spec], [r["tokens_per_s"] for r in spec], "o-", label=f"{mode} T={t:g}")
    ar = [r for r in rows if r["mode"] == "ar" and r["temperature"] == t]
    if ar:
      ax.axhline(ar[0]["tokens_per_s"], ls="--", color=line[0].get_color(), label=f"ar T={t:g}")
  ax.set(xlabel="gamma", ylabel="tokens/s (batch 1)", title="speculative vs autoregressive")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(out / "speed.png", dpi=100)
  plt.close(fig)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  cmd, out = sys.argv[1], Path(sys.argv[2])
  {"costs": costs, "report": report}[cmd](out)
