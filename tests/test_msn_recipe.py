"""`scripts/msn_smollm2.sh` end to end at `BUDGET=tiny` on a tiny random target (MSN, the span=0 control,
the measure stage and the report), and `scripts/msn_report.py`'s intervals on hand-made bench files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from align_helpers import tiny_checkpoint, word_data

pytestmark = pytest.mark.slow  # runs long: scheduled first (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "msn_smollm2.sh"
SUITES = ("mt-bench-mix", "gsm", "grounded", "humaneval")
MODELS = ("target", "control", "msn")


def _module():
  spec = importlib.util.spec_from_file_location("msn_report", ROOT / "scripts" / "msn_report.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


msn_report = _module()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("msn-recipe")
  target = tiny_checkpoint(root / "target", seed=0, init_scale=0.2, num_layers=1)  # one layer: less to compile
  data = word_data(target, root, num_samples=24, length=20)
  suites = root / "cache" / "suites"  # the built-in suites' cache, filled with the tiny vocabulary's words
  suites.mkdir(parents=True)
  words = ["what is the cat", "where is the big dog", "who sat on the mat", "why is the sky blue"]
  for name in SUITES:
    (suites / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": f"{w} {name[:2]}"}) + "\n" for w in words))
  env = {**os.environ, "BUDGET": "tiny", "TARGET": str(target), "PY": sys.executable}
  env["SPECJAX_CACHE"] = str(root / "cache")
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
  out = root / "out"
  proc = subprocess.run(["bash", str(SCRIPT), str(out), str(data)], cwd=ROOT, env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return out, env, data


def test_the_two_fine_tunes_differ_in_noise_alone(run):
  out, _, _ = run
  msn, control = (json.loads((out / n / "run_config.json").read_text()) for n in ("msn", "control"))
  assert msn.pop("span") == 5 and control.pop("span") == 0
  assert msn == control  # same data, steps, seed, optimiser
  assert json.loads((out / "control" / "final" / "model_config.json").read_text())["span"] == 0
  for name in ("msn", "control"):
    assert "eval_loss" in json.loads((out / name / "metrics.jsonl").read_text().splitlines()[-1])


def test_the_measure_stage_writes_every_file(run):
  out, _, _ = run
  m = out / "measure"
  for model in MODELS:
    for suite in SUITES:
      records = json.loads((m / "bench" / f"{model}-{suite}.json").read_text())
      assert [msn_report.label(r) for r in records] == ["ar", "jacobi W=1", "jacobi W=2", "tr-jacobi"]
      assert all(len(r["per_prompt"]) == 2 and r["batch_size"] == 1 and r["temperature"] == 0 for r in records)
      gsm = json.loads((m / "gsm" / f"{model}.json").read_text())
      assert gsm["n"] == 2 and len(gsm["problems"]) == 2
  held = json.loads((m / "heldout.json").read_text())
  last = json.loads((out / "msn" / "metrics.jsonl").read_text().splitlines()[-1])
  assert held["msn"]["eval_loss"] == pytest.approx(last["eval_loss"], rel=1e-5)  # the run's own held-out rows
  assert held["target"]["eval_loss"] != pytest.approx(held["msn"]["eval_loss"])
  answers = json.loads((m / "answers.json").read_text())
  assert len(answers["prompts"]) == 10 and all(set(MODELS) < set(r) for r in answers["prompts"])
  report = (out / "report.md").read_text()
  assert all(f"## {s}" in report for s in SUITES) and "| jacobi W=2 |" in report and "## Quality" in report
  assert (out / "speed.png").stat().st_size > 0


def test_a_rerun_skips_every_done_stage(run):
  out, env, data = run
  final = out / "msn" / "final" / "model_config.json"
  before = final.stat().st_mtime_ns, (out / "measure" / "bench" / "msn-gsm.json").stat().st_mtime_ns
  proc = subprocess.run(["bash", str(SCRIPT), str(out), str(data)], cwd=ROOT, env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (final.stat().st_mtime_ns, (out / "measure" / "bench" / "msn-gsm.json").stat().st_mtime_ns) == before
  events = [line.split("\t", 1)[1] for line in (out / "stage_times.tsv").read_text().splitlines()]
  assert events.count("start") == 2 and events[-1] == "exit"


def test_the_script_refuses_a_missing_data_folder(tmp_path):
  proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "o"), str(tmp_path)], capture_output=True, text=True)
  assert proc.returncode == 2 and "is not a make-data folder" in proc.stderr and not (tmp_path / "o").exists()


def _record(mode, walls, calls, window=None, tokens=10):
  per = [{"new_tokens": tokens, "target_calls": c, "wall_s": w} for w, c in zip(walls, calls, strict=True)]
  return {
    "mode": mode,
    "window": window,
    "temperature": 0.0,
    "batch_size": 1,
    "tokens_per_s": tokens * len(walls) / sum(walls),
    "per_prompt": per,
  }


def test_report_intervals_on_fake_bench_files(tmp_path):
  bench = tmp_path / "measure" / "bench"
  bench.mkdir(parents=True)
  ar = _record("ar", [1.0, 1.0, 1.0, 1.0], [9, 9, 9, 9])
  twice = _record("jacobi", [0.5, 0.5, 0.5, 0.5], [3, 3, 3, 3], window=1)  # every prompt exactly 2x, tau 3
  mixed = _record("jacobi", [0.25, 1.0, 0.5, 2.0], [9, 3, 9, 1], window=2)
  tree = _record("tr-jacobi", [2.0, 2.0, 2.0, 2.0], [9, 9, 9, 9])
  (bench / "msn-gsm.json").write_text(json.dumps([ar, twice, mixed, tree]))
  (bench / "target-gsm.json").write_text(json.dumps([ar, tree]))
  gsm = tmp_path / "measure" / "gsm"
  gsm.mkdir()
  flags = [True, False, True, True]
  (gsm / "msn.json").write_text(json.dumps({"max_new_tokens": 8, "problems": [{"correct": c} for c in flags]}))
  (tmp_path / "measure" / "heldout.json").write_text(json.dumps({"run": "x", "msn": {"eval_loss": 1.25}}))
  (tmp_path / "msn").mkdir()
  (tmp_path / "msn" / "metrics.jsonl").write_text('{"step": 1, "loss": 2}\n{"step": 2, "loss": 1, "eval_loss": 1.5}\n')

  rec = msn_report.report(tmp_path)
  cell = rec["speed"]["gsm"]["msn"]
  w1 = cell["jacobi W=1"]
  assert w1["speedup"] == pytest.approx(2.0) and w1["speedup_ci"] == pytest.approx([2, 2])
  assert w1["tau"] == pytest.approx(3.0)
  m = cell["jacobi W=2"]
  assert m["speedup"] == pytest.approx((40 / 3.75) / 10) and m["tau"] == pytest.approx(36 / 22)
  assert m["speedup_ci"][0] < m["speedup"] < m["speedup_ci"][1]  # prompts differ: a real interval
  assert cell["tr-jacobi"]["speedup"] == pytest.approx(0.5) and cell["ar_tokens_per_s"] == pytest.approx(10.0)
  assert rec["gsm"]["msn"]["accuracy"] == 0.75 and rec["gsm"]["msn"]["ci"][0] < 0.75 <= rec["gsm"]["msn"]["ci"][1]
  assert rec["heldout"] == {"msn": 1.25} and rec["curves"]["msn"] == [{"step": 2, "eval_loss": 1.5}]
  md = (tmp_path / "report.md").read_text()
  assert "| jacobi W=1 | 2.00 [2.00, 2.00]x, tau 3.00 [3.00, 3.00] | - |" in md  # the target has no Jacobi runs
  assert "| msn | 1.2500 | 3/4 = 0.750" in md
  assert (tmp_path / "speed.png").stat().st_size > 0

  short = _record("jacobi", [0.5, 0.5], [3, 3], window=3)
  with pytest.raises(ValueError, match="2 prompts against ar's 4"):
    msn_report.bootstrap(short, ar)
  with pytest.raises(ValueError, match="no per_prompt"):
    msn_report.bootstrap({"mode": "jacobi"}, ar)
