"""`scripts/drafter_card.py`: the shipped drafter's card carries its run's own figures, and only them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _card(work: Path) -> str:
  spec = importlib.util.spec_from_file_location("drafter_card", ROOT / "scripts" / "drafter_card.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.card(work)


def _bench(speed: float, tau: float, acc: float) -> list[dict]:
  ar = {"mode": "ar", "gamma": None, "tokens_per_s": 20.0, "speedup_vs_ar": 1.0, "block_efficiency": 1.0}
  eagle = {"mode": "eagle", "gamma": 4, "tokens_per_s": 20.0 * speed, "speedup_vs_ar": speed}
  return [dict(ar, acceptance_rate=None), dict(eagle, block_efficiency=tau, acceptance_rate=acc)]


def test_card_reports_the_runs_figures(tmp_path):
  (tmp_path / "data").mkdir()
  (tmp_path / "kd").mkdir()
  data = {"num_samples": 5120, "prompts": {"source": "self.jsonl,gsm:1200"}, "snapshot": {"of_samples": 24000}}
  data["generation"] = {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 160}
  (tmp_path / "data" / "specjax_data.json").write_text(json.dumps(data))
  run = {"steps": 3000, "loss": "fkl", "data": {"batch_size": 8, "seq_len": 256}, "eagle": {"steps": 3}}
  run["optim"] = {"lr": 0.001, "freeze": ["embed_tokens"]}
  (tmp_path / "kd" / "run_config.json").write_text(json.dumps(run))
  (tmp_path / "kd_ttt").mkdir()
  fine = dict(run, steps=400, eagle={"steps": 2}, optim={"lr": 0.0005, "freeze": ["embed_tokens"]})
  (tmp_path / "kd_ttt" / "run_config.json").write_text(json.dumps(fine))
  (tmp_path / "curve.tsv").write_text(
    "step\tpositions_seen\tunrolled_steps\theld_out_acceptance\theld_out_first_step\n"
    "250\t512000\t3\t0.4321\t0.5\n3250\t6656000\t2\t0.47\t0.52\n"
  )
  costs = [
    {"model": m, "batch": 1, "new_tokens": n, "ms": ms, "vs_one_token": v}
    for m, n, ms, v in (("target", 1, 50.0, 1.0), ("target", 5, 52.0, 1.04), ("draft", 1, 1.5, 1.0))
  ]
  (tmp_path / "costs.json").write_text(json.dumps(costs))
  (tmp_path / "bench_mt.json").write_text(json.dumps(_bench(1.37, 2.05, 0.26)))
  text = _card(tmp_path)
  for want in (
    "5120 answers",
    "snapshot of a 24000-sample campaign",
    "Distilled: 3000 steps of 8 x 256",
    "Then: 400 steps of 8 x 256 positions, loss fkl, 2 unrolled",
    "frozen: embed_tokens",
    "| 250 | 512000 | 3 | 0.4321 | 0.5 |",
    "| 3250 | 6656000 | 2 | 0.47 | 0.52 |",
    "target 5 tokens 1.04",
    "draft call / target call 0.030",
    "| eagle | 4 | 27.4 | 1.37 | 2.05 | 0.26 |",
  ):
    assert want in text, want
  assert "GSM-style" not in text  # no bench file, no table
