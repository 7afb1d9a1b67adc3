"""Print a Markdown table of the final measurements of distillation runs (their last metrics.jsonl record).

python scripts/alignment_table.py runs/kd-fkl runs/kd-tvdpp ...
"""

import json
import sys
from pathlib import Path

COLUMNS = [
  ("teacher-forced acceptance", "eval_expected_acceptance"),
  ("greedy acceptance", "spec_t0_acceptance_rate"),
  ("greedy block eff.", "spec_t0_block_efficiency"),
  ("T=1 acceptance", "spec_t1_acceptance_rate"),
  ("T=1 block eff.", "spec_t1_block_efficiency"),
]


def main(runs: list[str]) -> None:
  print("| run | " + " | ".join(c for c, _ in COLUMNS) + " |")
  print("| --- |" + " ---: |" * len(COLUMNS))
  for run in runs:
    records = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line]
    last = {}
    for r in records:  # the latest value of every key
      last.update(r)
    cells = [f"{last[k]:.3f}" if isinstance(last.get(k), (int, float)) else "-" for _, k in COLUMNS]
    print(f"| {Path(run).name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main(sys.argv[1:])
