"""Pretraining resilience: a SIGTERM leaves a restorable checkpoint; a NaN loss stops and keeps the last good one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_tokenizer import make_corpus, make_tokenizer

from specjax.config import load_config
from specjax.errors import SpecjaxError
from specjax.train.pretrain import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "pretrain" / "tiny.yaml"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  d = tmp_path_factory.mktemp("assets")
  return make_tokenizer(d / "tok"), make_corpus(d / "corpus.jsonl", n_docs=300)


def _cfg(assets, *overrides):
  tok, corpus = assets
  return load_config(PretrainConfig, TINY, [f"tokenizer={tok}", f"data.source={corpus}", *overrides])


def _losses(out):
  return [json.loads(ln)["loss"] for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_sigterm_leaves_restorable_checkpoint(tmp_path, assets):
  tok, corpus = assets
  out = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=1")
  cmd = [sys.executable, "-m", "specjax", "pretrain", "--config", str(TINY), "--out", str(out), "--steps", "100000"]
  cmd += [f"tokenizer={tok}", f"data.source={corpus}", "checkpoint.every=0", "logging.eval_every=0"]
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = out / "metrics.jsonl"
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
      break
    time.sleep(0.2)
  assert proc.poll() is None, proc.stdout.read()
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signal.SIGTERM, output
  assert "stopped by SIGTERM" in output
  steps = [int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(steps) == 1 and steps[0] >= 3
  # restorable: the same run resumes from it (one more step, on all 8 host devices this time)
  cfg = _cfg(assets, "steps=100000", "checkpoint.every=0", "logging.eval_every=0")
  assert pretrain(cfg, out, stop_at=steps[0] + 1).step == steps[0] + 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, assets):
  cfg = _cfg(assets, "optim.lr=1e30", "optim.clip_norm=0", "checkpoint.every=1", "logging.eval_every=0")
  with pytest.raises(SpecjaxError, match=r"loss is (nan|inf) at step \d+; stopped\. Last good checkpoint: step \d+"):
    pretrain(cfg, tmp_path / "nan")
  saved = sorted(int(p.name) for p in (tmp_path / "nan" / "checkpoints").iterdir() if p.name.isdigit())
  bad_step = len(_losses(tmp_path / "nan")) + 1
  assert saved and saved[-1] == bad_step - 1
