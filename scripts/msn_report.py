"""The report of scripts/msn_smollm2.sh: its measurement files as a markdown table with bootstrap intervals
over prompts, a JSON summary and a plot.

    python scripts/msn_report.py OUT        # writes OUT/report.md, OUT/report.json, OUT/speed.png

Reads OUT/measure (scripts/msn_measure.py: bench/MODEL-SUITE.json, gsm/MODEL.json, heldout.json,
answers.json) and the fine-tunes' OUT/msn/metrics.jsonl and OUT/control/metrics.jsonl; whatever is
missing is left out (a report of a run still going).

Speed: per suite, model and decode (Jacobi window W, TR-Jacobi), the speed-up over `ar` of the same model
on the same prompts, (sum of new tokens / sum of decode seconds) / (the same for `ar`), and the block
efficiency tau (tokens per target call, prefill excluded), each with a 95% percentile bootstrap interval:
the prompts are resampled with replacement (`RESAMPLES` times, seed 0), the same draw for the mode and
its `ar`, so the interval covers which prompts were picked, not timing noise alone. GSM accuracy gets
the same interval over problems.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

RESAMPLES = 2000


def _per_prompt(record: dict, key: str) -> np.ndarray:
  return np.asarray([p[key] for p in record["per_prompt"]], np.float64)


def _check(record: dict, base: dict) -> None:
  if "per_prompt" not in record or "per_prompt" not in base:
    raise ValueError(f"{record['mode']}: the bench records carry no per_prompt figures (rerun the bench)")
  if len(record["per_prompt"]) != len(base["per_prompt"]):
    raise ValueError(f"{record['mode']}: {len(record['per_prompt'])} prompts against ar's {len(base['per_prompt'])}")
  if record.get("batch_size", 1) != 1 or base.get("batch_size", 1) != 1:
    raise ValueError("per-prompt times are per compiled call; the bootstrap needs batch size 1")


def interval(draws: np.ndarray) -> list[float]:
  lo, hi = np.percentile(draws, [2.5, 97.5])
  return [float(lo), float(hi)]


def bootstrap(record: dict, base: dict, resamples: int = RESAMPLES, seed: int = 0) -> dict:
  """Speed-up over `base` (the same model's ar) and block efficiency, each with its 95% interval over
  prompts (see the module docstring)."""
  _check(record, base)
  n, w, c = (_per_prompt(record, k) for k in ("new_tokens", "wall_s", "target_calls"))
  bn, bw = _per_prompt(base, "new_tokens"), _per_prompt(base, "wall_s")
  idx = np.random.default_rng(seed).integers(0, len(n), size=(resamples, len(n)))
  speed = lambda i: (n[i].sum(-1) / w[i].sum(-1)) / (bn[i].sum(-1) / bw[i].sum(-1))  # noqa: E731
  tau = lambda i: (n[i] - 1).sum(-1) / np.maximum(c[i].sum(-1), 1)  # noqa: E731
  every = np.arange(len(n))
  return {
    "speedup": float(speed(every)),
    "speedup_ci": interval(speed(idx)),
    "tau": float(tau(every)),
    "tau_ci": interval(tau(idx)),
    "tokens_per_s": float(n.sum() / w.sum()),
    "prompts": len(n),
  }


def accuracy(correct: list[bool], resamples: int = RESAMPLES, seed: int = 0) -> dict:
  """Accuracy with its 95% bootstrap interval over problems."""
  x = np.asarray(correct, np.float64)
  idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
  return {"accuracy": float(x.mean()), "ci": interval(x[idx].mean(-1)), "n": len(x), "correct": int(x.sum())}


def label(r: dict) -> str:
  return f"jacobi W={r['window']}" if r["mode"] == "jacobi" else r["mode"]


def _order(name: str) -> tuple:
  return (0, int(name.split("=")[1])) if name.startswith("jacobi W=") else (1, name)


def speed_table(bench_dir: Path) -> dict:
  """{suite: {model: {decode label: bootstrap(...)} plus "ar_tokens_per_s"}} from the bench files."""
  out: dict = {}
  for path in sorted(bench_dir.glob("*.json")):
    model, _, suite = path.stem.partition("-")
    records = json.loads(path.read_text())
    base = next((r for r in records if r["mode"] == "ar"), None)
    if base is None:
      raise ValueError(f"{path}: no ar record to compare with")
    cell = {label(r): bootstrap(r, base) for r in records if r["mode"] != "ar" and r["temperature"] == 0}
    cell["ar_tokens_per_s"] = base["tokens_per_s"]
    out.setdefault(suite, {})[model] = cell
  return out


def curve(path: Path) -> list[dict]:
  """The held-out loss a fine-tune logged: [{step, eval_loss}]."""
  if not path.is_file():
    return []
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [{"step": r["step"], "eval_loss": r["eval_loss"]} for r in rows if "eval_loss" in r]


def _ci(x: dict, key: str, fmt: str = ".2f") -> str:
  lo, hi = x[f"{key}_ci"]
  return f"{x[key]:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def markdown(report: dict) -> str:
  models = report["models"]
  lines = ["# Make Some Noise: speed and quality", ""]
  lines += [
    "Speed-up over `ar` of the same model (greedy, batch 1, compile excluded), 95% bootstrap interval over "
    "prompts in brackets; tau = tokens per target call.",
    "",
  ]
  for suite, by_model in report["speed"].items():
    present = [m for m in models if m in by_model] + [m for m in by_model if m not in models]
    lines += [f"## {suite}", "", "| decode | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    ar = [f"{by_model[m]['ar_tokens_per_s']:.1f} tok/s" for m in present]
    lines.append("| ar | " + " | ".join(ar) + " |")
    labels = sorted({k for m in present for k in by_model[m] if k != "ar_tokens_per_s"}, key=_order)
    for lab in labels:
      cells = [
        f"{_ci(by_model[m][lab], 'speedup')}x, tau {_ci(by_model[m][lab], 'tau')}" if lab in by_model[m] else "-"
        for m in present
      ]
      lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    n = {by_model[m][lab]["prompts"] for m in present for lab in by_model[m] if lab != "ar_tokens_per_s"}
    lines += ["", f"Prompts: {', '.join(map(str, sorted(n)))}.", ""]
  if report["gsm"] or report["heldout"]:
    lines += ["## Quality", "", "| model | held-out loss | GSM exact match [95% interval] |", "|---|---|---|"]
    for m in models:
      loss = report["heldout"].get(m)
      g = report["gsm"].get(m)
      acc = f"{g['correct']}/{g['n']} = {g['accuracy']:.3f} [{g['ci'][0]:.3f}, {g['ci'][1]:.3f}]" if g else "-"
      lines.append(f"| {m} | {'-' if loss is None else format(loss, '.4f')} | {acc} |")
    lines.append("")
  for name, points in report["curves"].items():
    if points:
      text = ", ".join(f"{p['step']}: {p['eval_loss']:.4f}" for p in points)
      lines += [f"Held-out loss of the {name} fine-tune by step: {text}.", ""]
  if report["answers"]:
    lines += ["## Greedy answers side by side", ""]
    for row in report["answers"]:
      lines += [f"**{row['prompt'][:200]!r}**", ""]
      lines += [f"- {m}: {row[m][:300]!r}" for m in models if m in row]
      lines.append("")
  return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
  """Speed-up against the Jacobi window (TR-Jacobi at the right), a panel per suite, a line per model."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  suites = list(report["speed"])
  fig, axes = plt.subplots(1, max(len(suites), 1), figsize=(4.5 * max(len(suites), 1), 3.8), squeeze=False)
  for ax, suite in zip(axes[0], suites, strict=False):
    for model, cell in report["speed"][suite].items():
      labels = sorted((k for k in cell if k != "ar_tokens_per_s"), key=_order)
      y = np.array([cell[k]["speedup"] for k in labels])
      err = np.abs(np.array([cell[k]["speedup_ci"] for k in labels]).T - y)
      ax.errorbar(range(len(labels)), y, yerr=err, fmt="o-", capsize=3, label=model)
      ax.set_xticks(range(len(labels)), [k.replace("jacobi ", "") for k in labels], fontsize=8)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(title=suite, ylabel="speed-up vs ar (95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def report(out: Path) -> dict:
  """Write OUT/report.json, OUT/report.md and OUT/speed.png; return the report."""
  out = Path(out)
  measure = out / "measure"
  answers = json.loads((measure / "answers.json").read_text()) if (measure / "answers.json").is_file() else None
  heldout = json.loads((measure / "heldout.json").read_text()) if (measure / "heldout.json").is_file() else {}
  speed = speed_table(measure / "bench")
  gsm = {}
  for path in sorted((measure / "gsm").glob("*.json")):
    g = json.loads(path.read_text())
    gsm[path.stem] = {**accuracy([p["correct"] for p in g["problems"]]), "max_new_tokens": g["max_new_tokens"]}
  models = list(answers["models"]) if answers else []
  for m in [*(m for s in speed.values() for m in s), *gsm]:
    if m not in models:
      models.append(m)
  rec = {
    "models": models,
    "speed": speed,
    "gsm": gsm,
    "heldout": {m: v["eval_loss"] for m, v in heldout.items() if isinstance(v, dict)},
    "curves": {name: curve(out / name / "metrics.jsonl") for name in ("msn", "control")},
    "answers": answers["prompts"] if answers else [],
  }
  (out / "report.json").write_text(json.dumps(rec, indent=1) + "\n")
  (out / "report.md").write_text(markdown(rec) + "\n")
  if speed:
    plot(rec, out / "speed.png")
  return rec


if __name__ == "__main__":
  if len(sys.argv) != 2:
    raise SystemExit("usage: msn_report.py OUT")
  report(Path(sys.argv[1]))
  print(f"wrote {sys.argv[1]}/report.md, report.json, speed.png")
