"""The demo's closing table: every benchmarked mode against `ar` in the same run (each bench has its own
`ar` row), tau before and after the demo-scale alignment (a 60-step drafter and 12 distillation steps:
how a drafter is made, not how well), and the shipped drafter (drafters/smollm2-135m-instruct, trained
at scale) on held-out prompts, with the host every speed figure was measured on.

    python scripts/demo_table.py DEMO_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from specjax.eval.forward import host

RUNS = [
  ("bench_pretrained.json", "mt-bench-mix 8", "demo-scale drafter, before alignment"),
  ("bench.json", "mt-bench-mix 8", "demo-scale drafter, TVD++-aligned"),
  ("bench_lookup.json", "grounded 8", "no draft model"),
  ("bench_shipped.json", "mt-bench-mix 24", "shipped drafter"),
  ("bench_shipped_gsm.json", "gsm 8", "shipped drafter"),
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
  print(f"\nSmolLM2-135M-Instruct, greedy, batch 1, held-out prompts; host: {host()}\n")
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
