"""The demo's closing table: every benchmarked mode against `ar` in the same run, and tau before and
after alignment. Demo-scale numbers: a 60-step drafter and 12 distillation steps (see docs/recipes.md for the
real recipe, scripts/reproduce_smollm2.sh).

    python scripts/demo_table.py DEMO_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS = [
  ("bench_pretrained.json", "MT-Bench (held out)", "pretrained drafter (before alignment)"),
  ("bench.json", "MT-Bench (held out)", "TVD++-aligned drafter"),
  ("bench_lookup.json", "grounded (held out)", "no draft model"),
]


def main(directory: str) -> int:
  rows = []
  for name, prompts, draft in RUNS:
    path = Path(directory) / name
    if not path.exists():
      continue
    for r in json.loads(path.read_text()):  # each run's own ar row is the reference of its speed-ups
      mode = r["mode"] + (f" gamma={r['gamma']}" if r.get("gamma") else "")
      kind = "ar" if r["mode"] == "ar" else draft
      rows.append((mode, prompts, kind, r["tokens_per_s"], r["speedup_vs_ar"], r["block_efficiency"]))
  print("\nDemo-scale results (SmolLM2-135M-Instruct, greedy, batch 1; tokens/s of this machine in this run):\n")
  print("| mode | prompts | draft | tokens/s | speed-up vs ar (same run) | block efficiency tau |")
  print("| --- | --- | --- | ---: | ---: | ---: |")
  for mode, prompts, draft, tps, speedup, tau in rows:
    print(f"| {mode} | {prompts} | {draft} | {tps:.1f} | {speedup:.2f} | {tau:.2f} |")
  faster = [r for r in rows if r[2] != "ar" and r[4] and r[4] > 1.0]
  print("\nfaster than ar in this run: " + (", ".join(f"{r[0]} on {r[1]} ({r[4]:.2f}x)" for r in faster) or "none"))
  return 0


if __name__ == "__main__":
  if len(sys.argv) != 2:
    raise SystemExit("usage: python scripts/demo_table.py DEMO_DIR")
  raise SystemExit(main(sys.argv[1]))
