"""The card (README.md) of a drafter made by scripts/ship_drafter_smollm2.sh, from what its run wrote.

    python scripts/drafter_card.py WORK > WORK/card.md

Reads WORK/data/specjax_data.json (the answers), WORK/kd/run_config.json and WORK/curve.tsv (training
and the learning curve), WORK/costs.json (the host's call costs) and WORK/bench_*.json (ar against the
drafter on held-out prompts); every figure in the card comes from those files.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path


def _host() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
    flags = Path("/proc/cpuinfo").read_text()
    cpu += ", AVX-512" if "avx512f" in flags else (", AVX2" if "avx2" in flags else "")
  except OSError:
    pass
  return cpu


def _bench_rows(path: Path) -> list[str]:
  rows = [
    "| mode | gamma | tokens/s | vs ar | block efficiency | acceptance |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
  ]
  for r in json.loads(path.read_text()):
    acc = "-" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.2f}"
    gamma = "-" if r["gamma"] is None else r["gamma"]
    rows.append(
      f"| {r['mode']} | {gamma} | {r['tokens_per_s']:.1f} | {r['speedup_vs_ar']:.2f} | {r['block_efficiency']:.2f} | {acc} |"
    )
  return rows


def card(work: Path) -> str:
  data = json.loads((work / "data" / "specjax_data.json").read_text())
  run = json.loads((work / "kd" / "run_config.json").read_text())
  lines = ["# An EAGLE-style drafter for SmolLM2-135M-Instruct", ""]
  lines += [
    "Made by `scripts/ship_drafter_smollm2.sh` and stored by `specjax pack-draft`: only the tensors it trained;",
    "the token embedding is rebuilt from the target, whose fingerprint it checks. Use it as it is:",
    "",
    "    specjax import smollm2-135m-instruct --out ckpt/smollm2",
    "    specjax bench --target ckpt/smollm2 --draft drafters/smollm2-135m-instruct --modes ar,eagle --gamma 4 \\",
    "        --prompts mt-bench-mix --limit 24 --chat --max-new-tokens 64",
    "",
    "## Data",
    "",
    f"{data['num_samples']} answers of the target (prompts: `{data['prompts']['source']}`, "
    f"T={data['generation']['temperature']}, top-p {data['generation']['top_p']}, at most "
    f"{data['generation']['max_new_tokens']} new tokens)"
    + (f", a snapshot of a {data['snapshot']['of_samples']}-sample campaign." if "snapshot" in data else "."),
    "",
    "## Training",
    "",
    f"{run.get('steps')} steps of {run['data']['batch_size']} x {run['data']['seq_len']} positions, loss "
    f"{run.get('loss')}, {run.get('eagle', {}).get('steps')} unrolled (training-time test) steps, learning rate "
    f"{run['optim']['lr']}, frozen: {', '.join(run['optim'].get('freeze') or ()) or 'nothing'}. Held-out teacher-forced acceptance:",
    "",
    "| step | positions seen | held-out acceptance | first step |",
    "| ---: | ---: | ---: | ---: |",
  ]
  for line in (work / "curve.tsv").read_text().splitlines()[1:]:
    lines.append("| " + " | ".join(line.split("\t")) + " |")
  lines += ["", f"## Measured on held-out prompts (greedy, batch 1; host: {_host()})", ""]
  costs = [c for c in json.loads((work / "costs.json").read_text()) if c["batch"] == 1]
  lines.append(
    "Call costs, x a one-token target call: "
    + ", ".join(
      f"{c['model']} {c['new_tokens']} tokens {c['vs_one_token']:.2f}" for c in costs if c["model"] == "target"
    )
    + "; draft call / target call "
    + f"{next(c['ms'] for c in costs if c['model'] == 'draft' and c['new_tokens'] == 1) / next(c['ms'] for c in costs if c['model'] == 'target' and c['new_tokens'] == 1):.3f}."
  )
  for name, title in (("bench_mt.json", "mt-bench-mix"), ("bench_gsm.json", "GSM-style")):
    if (work / name).is_file():
      lines += ["", f"{title}:", "", *_bench_rows(work / name)]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: drafter_card.py WORK")
  sys.stdout.write(card(Path(sys.argv[1])))
