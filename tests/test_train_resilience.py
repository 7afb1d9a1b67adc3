"""Pretraining resilience: a SIGTERM leaves a restorable checkpoint; a NaN loss stops and keeps the last good one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from train_util import logged_losses, pretrain_assets, pretrain_config

from specjax.errors import SpecjaxError
from specjax.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "pretrain" / "tiny.yaml"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  return pretrain_assets(tmp_path_factory.mktemp("assets"))


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
  cfg = pretrain_config(assets, "steps=100000", "checkpoint.every=0", "logging.eval_every=0")
  assert pretrain(cfg, out, stop_at=steps[0] + 1).step == steps[0] + 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, assets):
  cfg = pretrain_config(assets, "optim.lr=1e30", "optim.clip_norm=0", "checkpoint.every=1", "logging.eval_every=0")
  with pytest.raises(SpecjaxError, match=r"loss is (nan|inf) at step \d+; stopped\. Last good checkpoint: step \d+"):
    pretrain(cfg, tmp_path / "nan")
  saved = sorted(int(p.name) for p in (tmp_path / "nan" / "checkpoints").iterdir() if p.name.isdigit())
  bad_step = len(logged_losses(tmp_path / "nan")) + 1
  assert saved and saved[-1] == bad_step - 1


class _Lazy:
  """A metric value that records when the loop reads it on the host."""

  def __init__(self, events, step, value):
    self.events, self.step, self.value = events, step, value

  def __float__(self):
    self.events.append(("read", self.step))
    return self.value


class _Rows:
  def __init__(self):
    self.i = 0

  def next(self):
    self.i += 1
    return {"x": np.full((8, 2), self.i, np.int32)}

  def state(self):
    return {"i": self.i}

  def restore(self, state):
    self.i = state["i"]

  def eval_batches(self):
    return []


def _fake_run(out, losses, every, events):
  """run_loop on a fake step whose metrics record when they are read (loss of step k = losses[k - 1])."""
  import jax
  import jax.numpy as jnp

  from specjax.parallel.sharding import MeshConfig, make_mesh
  from specjax.train.loop import CheckpointConfig, LogConfig, run_loop
  from specjax.train.state import TrainState

  def init_state():
    return TrainState(
      step=jnp.zeros((), jnp.int32), params={"w": jnp.zeros(2)}, opt_state=jnp.zeros(()), rng=jnp.zeros(2, jnp.uint32)
    )

  def train_step(state, batch, frozen):
    done = int(state.step) + 1
    events.append(("dispatch", done))
    metrics = {"loss": _Lazy(events, done, losses[done - 1]), "lr": _Lazy(events, done, 0.1)}
    return state.replace(step=state.step + 1, params={"w": state.params["w"] + 1}), metrics

  return run_loop(
    out=out,
    init_state=init_state,
    abstract_state=jax.eval_shape(init_state),
    train_step=train_step,
    data=_Rows(),
    mesh=make_mesh(MeshConfig()),
    total_steps=len(losses),
    tokens_per_step=16,
    checkpoint=CheckpointConfig(every=every, async_save=False),
    logging=LogConfig(eval_every=0, tensorboard=False, progress=False),
  )


def test_loop_dispatches_the_next_step_before_reading_metrics(tmp_path):
  events = []
  result = _fake_run(tmp_path / "run", [1.0] * 6, every=3, events=events)
  assert result.status == "finished" and result.step == 6 and result.last_loss == 1.0
  first = {}
  for i, e in enumerate(events):
    first.setdefault(e, i)
  # step k's metrics are read after step k+1 was dispatched, except on checkpoint steps (3) and the last (6)
  for k in (1, 2, 4, 5):
    assert first[("dispatch", k + 1)] < first[("read", k)], events
  assert first[("read", 3)] < first[("dispatch", 4)] and ("read", 6) in first
  assert [r["step"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())] == [
    1,
    2,
    3,
    4,
    5,
    6,
  ]


@pytest.mark.parametrize("every", [0, 2])
def test_nan_seen_one_step_late_saves_nothing_of_it(tmp_path, every):
  """The NaN of step 3 is read after step 4 is dispatched: neither is saved nor logged."""
  events = []
  with pytest.raises(
    SpecjaxError, match="loss is nan at step 3; stopped. Last good checkpoint: (none saved yet|step 2 in)"
  ):
    _fake_run(tmp_path / "run", [1.0, 1.0, float("nan"), 1.0, 1.0, 1.0], every=every, events=events)
  assert ("dispatch", 5) not in events
  assert [r["step"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())] == [1, 2]
  saved = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == ([2] if every else [])
