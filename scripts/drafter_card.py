"""The card (README.md) of a drafter made by scripts/ship_drafter_smollm2.sh, from what its run wrote.

    python scripts/drafter_card.py WORK > WORK/card.md

Reads WORK/data/specjax_data.json (the answers), WORK/kd/run_config.json (and WORK/kd_ttt/run_config.json
when a training-time-test stage ran) and WORK/curve.tsv (training and the learning curve), WORK/costs.json (the host's call costs) and WORK/bench_*.json (ar against the
drafter on held-out prompts); every figure in the card comes from those files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from specjax.eval.forward import host


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
  ]
  for name, what in (("kd", "Distilled"), ("kd_ttt", "Then")):
    if (work / name / "run_config.json").is_file():
      run = json.loads((work / name / "run_config.json").read_text())
      lines.append(
        f"{what}: {run.get('steps')} steps of {run['data']['batch_size']} x {run['data']['seq_len']} positions, "
        f"loss {run.get('loss')}, {run.get('eagle', {}).get('steps')} unrolled (training-time test) steps, "
        f"learning rate {run['optim']['lr']}, frozen: {', '.join(run['optim'].get('freeze') or ()) or 'nothing'}."
      )
  lines += [
    "",
    "Held-out teacher-forced acceptance (rows of the training mix the training never read; the first",
    "step's column reads the target's true features, the other averages every unrolled step):",
    "",
    "| step | positions seen | unrolled steps | held-out acceptance | first step |",
    "| ---: | ---: | ---: | ---: | ---: |",
  ]
  for line in (work / "curve.tsv").read_text().splitlines()[1:]:
    lines.append("| " + " | ".join(line.split("\t")) + " |")
  lines += ["", f"## Measured on held-out prompts (greedy, batch 1; host: {host()})", ""]
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
