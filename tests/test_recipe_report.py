"""`scripts/recipe_report.py`: the stage times of `scripts/reproduce_smollm2.sh` over resumed invocations
(the script's own timing lines included) and report.json's summary of a bench."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce_smollm2.sh"


def _module():
  spec = importlib.util.spec_from_file_location("recipe_report", ROOT / "scripts" / "recipe_report.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


recipe_report = _module()


def _tsv(path: Path, events) -> Path:
  path.write_text("".join(f"{t}\t{name}\n" for t, name in events))
  return path


def test_stage_times_sum_resumed_invocations(tmp_path):
  events = [
    (100, "start"),
    (100, "1/8 import the target"),
    (118, "2/8 the target writes 384 user requests"),
    (300, "3/8 the target answers 640 training prompts"),
    (400, "exit"),  # interrupted (the script's trap wrote the exit line): 3/8 counts 100 s
    (1000, "start"),
    (1000, "1/8 import the target"),  # resumed: the done stages are skipped in no time
    (1000, "2/8 the target writes 384 user requests"),
    (1001, "3/8 the target answers 640 training prompts"),
    (1501, "4/8 the draft vocabulary"),
    (1510, "5/8 an EAGLE-style draft"),  # killed without its exit line: its time is unknown
    (5000, "start"),
    (5000, "5/8 an EAGLE-style draft"),
    (5020, "6/8 distil it"),
    (5900, "exit"),
  ]
  times = recipe_report.stage_times(_tsv(tmp_path / "stage_times.tsv", events))
  got = {s["stage"].split()[0]: s["s"] for s in times["stages"]}
  assert got == {"1/8": 18, "2/8": 183, "3/8": 600, "4/8": 9, "5/8": 20, "6/8": 880}
  assert times["total_s"] == sum(got.values())
  assert times["invocations"] == 3
  assert times["untimed"] == ["5/8 an EAGLE-style draft"]
  assert recipe_report.stage_times(tmp_path / "missing.tsv") == {}


def test_stage_times_bad_line(tmp_path):
  path = tmp_path / "stage_times.tsv"
  path.write_text("100\tstart\nnot a time line\n")
  with pytest.raises(ValueError, match=r"stage_times.tsv:2: expected"):
    recipe_report.stage_times(path)


def _fake_python(tmp_path: Path, body: str) -> Path:
  """A stand-in for PY: the script runs `$PY -m specjax import ...` first, and this does `body` instead."""
  py = tmp_path / "fakepy"
  py.write_text(f"#!/usr/bin/env bash\n{body}\n")
  py.chmod(0o755)
  return py


def _events(out: Path) -> list[str]:
  return [line.split("\t", 1)[1] for line in (out / "stage_times.tsv").read_text().splitlines()]


def test_script_writes_its_stage_times_when_a_stage_fails(tmp_path):
  out = tmp_path / "out"
  env = {**os.environ, "PY": str(_fake_python(tmp_path, "exit 3"))}
  proc = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 3
  assert _events(out) == ["start", "1/8 import the target", "exit"]
  # a rerun appends to the same file
  subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, timeout=60)
  assert _events(out)[3:] == ["start", "1/8 import the target", "exit"]


def test_script_writes_its_exit_line_when_interrupted(tmp_path):
  out = tmp_path / "out"
  env = {**os.environ, "PY": str(_fake_python(tmp_path, "sleep 30"))}
  proc = subprocess.Popen(["bash", str(SCRIPT), str(out)], env=env, start_new_session=True)
  deadline = time.monotonic() + 30
  while not (out / "stage_times.tsv").is_file() or len(_events(out)) < 2:
    assert time.monotonic() < deadline, "the script never reached its first stage"
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGTERM)  # as Ctrl-C or a job scheduler does: the whole process group
  assert proc.wait(timeout=30) == 130
  assert _events(out) == ["start", "1/8 import the target", "exit"]


def _bench_row(mode, t, gamma, tps, tau):
  return {
    "mode": mode,
    "gamma": gamma,
    "temperature": t,
    "tokens_per_s": tps,
    "speedup_vs_ar": tps / 30.0,
    "block_efficiency": tau,
    "acceptance_rate": None if mode == "ar" else (tau - 1) / gamma,
    "per_position_acceptance": [],
    "prompts": 8,
    "max_new_tokens": 64,
    "new_tokens": 512,
    "compile_s": 1.0,
    "wall_s": 512 / tps,
  }


def test_report_summary_and_plots(tmp_path):
  rows = [_bench_row("ar", t, None, 30.0, 1.0) for t in (0, 1)]
  rows += [_bench_row("eagle", t, g, tps, tau) for t in (0, 1) for g, tps, tau in ((1, 33.0, 1.5), (4, 24.0, 1.8))]
  (tmp_path / "bench.json").write_text(json.dumps(rows))
  (tmp_path / "costs.json").write_text(json.dumps({"c": 0.05, "c_verify": {"1": 1.4}}))
  _tsv(tmp_path / "stage_times.tsv", [(0, "start"), (0, "1/8 import"), (60, "8/8 bench"), (660, "report: ...")])
  recipe_report.report(tmp_path)
  record = json.loads((tmp_path / "report.json").read_text())
  summary = record["summary"]
  assert summary["mode"] == "eagle"
  assert summary["greedy_gamma4_block_efficiency"] == 1.8
  assert summary["greedy_gamma4_speedup_vs_ar"] == pytest.approx(0.8)
  assert summary["best_spec"]["T0"] == {"gamma": 1, "speedup_vs_ar": pytest.approx(1.1), "tau": 1.5}
  assert summary["c"] == 0.05
  assert summary["stages_total_min"] == 11.0
  assert record["stage_times"]["untimed"] == []
  assert (tmp_path / "acceptance.png").stat().st_size > 0 and (tmp_path / "speed.png").stat().st_size > 0
