"""The host training loop: progress, metrics, hooks, checkpoints, exact resume, signals, NaN stop.

REUSE CONTRACT: `run_loop` knows nothing about pretraining (`specjax.train.trainer.Trainer` builds its
arguments for every entry point). It takes

- `init_state()` -> a fresh sharded TrainState (only called when there is nothing to resume), and
  `abstract_state`, its ShapeDtypeStructs with shardings (the restore target; `step.abstract_state`);
- `train_step(state, batch, frozen) -> (state, metrics)` (from `specjax.train.step`), plus `frozen`
  (e.g. teacher params, never saved);
- `data`: any batch iterator with `next() -> dict of [B, ...] numpy arrays`, `state() -> JSON dict`,
  `restore(dict)` and `eval_batches() -> list of batches` (`specjax.data.packing.PackedBatches` is one);
- `hooks`: `Hook(fn, every)`s, `fn(params, step) -> dict of scalars` run on the state after step `step`
  when `every` > 0 divides it and after the last step (held-out evaluation, speculative evaluation);
  their scalars join that step's metrics record;
- `batch_hooks`: `fn(params, host_batch, step) -> (host_batch, scalars)` run before step `step + 1` is
  dispatched (on-policy sampling replaces the batch's responses);
- `final_export(state)`: called once when the run reaches `total_steps`.

Output folder layout (`out/`):
    checkpoints/<step>/   Orbax CheckpointManager steps: `state` (params, opt state, step, RNG) and
                          `data` (the iterator position), saved asynchronously every `every` steps, the
                          last `keep` kept, plus at the end, at --stop-at and on SIGTERM / SIGINT
    metrics.jsonl         one record per step: step, loss, lr, tokens_per_s, grad_norm, ... (+ eval_loss
                          on eval steps); records past the resumed step are dropped on resume
    tensorboard/          the same scalars as TensorBoard event files

Starting again with the same `out` resumes from the latest checkpoint, bit for bit: the state, the data
position and the per-step RNG (fold_in(key, step)) are exactly what the uninterrupted run had.
The loop never waits for a step's metrics before dispatching the next step: it dispatches step k+1,
then reads step k's metrics (loss check, metrics.jsonl, progress bar) while step k+1 runs. Checkpoint
steps (and a signal) read their own step's metrics before saving, so no checkpoint holds an unchecked
state. `tokens_per_s` is measured between consecutive metric reads, minus the time of `hooks` and saves
(`batch_hooks`, e.g. on-policy sampling, count as step time).

A NaN or inf loss at step k stops the run with a SpecjaxError naming step k. Step k+1 was already
dispatched when step k's loss is seen; it is discarded with it. Neither is saved and metrics.jsonl ends
at step k-1, so the last checkpoint on disk is the last good one (a rerun resumes from it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
import orbax.checkpoint as ocp

from specjax.errors import SpecjaxError
from specjax.parallel.sharding import put_batch
from specjax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  every: int = 500  # save every this many steps (0: only at the end / stop / signal)
  keep: int = 3  # keep the newest N checkpoints
  async_save: bool = True


@dataclasses.dataclass(frozen=True)
class LogConfig:
  eval_every: int = 200  # eval loss on the held-out batches every N steps (0: only at the end)
  tensorboard: bool = True
  progress: bool = True  # tqdm progress bar


class BatchIterator(Protocol):
  def next(self) -> dict[str, np.ndarray]: ...
  def state(self) -> dict: ...
  def restore(self, state: dict) -> None: ...
  def eval_batches(self) -> list[dict[str, np.ndarray]]: ...


@dataclasses.dataclass
class LoopResult:
  state: TrainState
  step: int
  status: str  # "finished", "stopped" (--stop-at), "signal", "already-finished"
  last_loss: float | None
  signum: int | None = None


class _Signals:
  """Turns SIGTERM / SIGINT into a flag checked after every step (a second one acts at once)."""

  def __init__(self):
    self.received: int | None = None
    self._old: dict = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    if self.received is not None:
      signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
      raise KeyboardInterrupt
    self.received = signum

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _scalars(metrics: dict) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


class _Metrics:
  """metrics.jsonl + TensorBoard, written by process 0 only."""

  def __init__(self, out: Path, start_step: int, tensorboard: bool):
    self.active = jax.process_index() == 0
    self.path = out / "metrics.jsonl"
    self.tb = None
    if not self.active:
      return
    if self.path.exists():  # drop records the resumed run will write again
      keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= start_step]
      self.path.write_text("".join(ln + "\n" for ln in keep))
    self.file = open(self.path, "a")
    if tensorboard:
      from tensorboardX import SummaryWriter

      self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1 if start_step else None)

  def write(self, record: dict) -> None:
    if not self.active:
      return
    self.file.write(json.dumps(record) + "\n")
    self.file.flush()
    if self.tb is not None:
      for k, v in record.items():
        if k != "step":
          self.tb.add_scalar(k if k.startswith("eval") else f"train/{k}", v, record["step"])

  def close(self) -> None:
    if self.active:
      self.file.close()
      if self.tb is not None:
        self.tb.close()


def gather_params(params: Any) -> Any | None:
  """Host copies of (possibly sharded) parameters for the final export: on several hosts every process
  joins the all-gather and only process 0 gets the tree back (the others get None)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    params = multihost_utils.process_allgather(params, tiled=True)
  else:
    params = jax.device_get(params)
  return params if jax.process_index() == 0 else None


@dataclasses.dataclass(frozen=True)
class Hook:
  """`fn(params, step) -> dict of scalars`, run after step `step` when `every` > 0 divides it and after
  the last step (`every` <= 0: only after the last step)."""

  fn: Callable[[Any, int], dict[str, float] | None]
  every: int = 0

  def due(self, step: int, total_steps: int) -> bool:
    return step == total_steps or (self.every > 0 and step % self.every == 0)


BatchHook = Callable[[Any, dict, int], tuple[dict, dict]]


def run_loop(
  *,
  out: str | Path,
  init_state: Callable[[], TrainState],
  abstract_state: Any,
  train_step: Callable,
  data: BatchIterator,
  mesh: jax.sharding.Mesh,
  total_steps: int,
  tokens_per_step: int,
  frozen: Any = None,
  hooks: Sequence[Hook] = (),
  batch_hooks: Sequence[BatchHook] = (),
  stop_at: int | None = None,
  checkpoint: CheckpointConfig = CheckpointConfig(),
  logging: LogConfig = LogConfig(),
  final_export: Callable[[TrainState], None] | None = None,
) -> LoopResult:
  """Train to `total_steps` (or `stop_at`), resuming from `out/checkpoints` if it holds a checkpoint."""
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  options = ocp.CheckpointManagerOptions(max_to_keep=checkpoint.keep, enable_async_checkpointing=checkpoint.async_save)
  mngr = ocp.CheckpointManager((out / "checkpoints").absolute(), options=options)
  end = total_steps if stop_at is None else min(stop_at, total_steps)
  try:
    latest = mngr.latest_step()
    if latest is not None:
      try:
        restored = mngr.restore(
          latest,
          args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()),
        )
      except (ValueError, KeyError, TypeError) as e:
        raise SpecjaxError(
          f"cannot resume from {out / 'checkpoints'} (step {latest}): it does not match this run's model or "
          f"optimizer ({e.__class__.__name__}: {str(e)[:200]}); use a new --out"
        ) from None
      state = restored.state
      data.restore(restored.data)
      print(f"resuming from step {latest} in {out}", flush=True)
    else:
      state = init_state()
    step = int(jax.device_get(state.step))
    metrics_log = _Metrics(out, step, logging.tensorboard)

    def save(state, step, force=False):
      if mngr.latest_step() == step:
        return
      mngr.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data.state())),
        force=force,
      )

    status, last_loss, signum = "finished", None, None
    bar = None
    if logging.progress and jax.process_index() == 0 and step < end:
      from tqdm import tqdm

      bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True)
    try:
      with _Signals() as signals:
        # Step k+1 is dispatched before step k's metrics are read on the host, so the device never waits
        # for the host between steps. `pending` is the dispatched step whose metrics are not read yet.
        pending: tuple[int, Any, dict] | None = None
        tick, paused = time.perf_counter(), 0.0  # paused: host time spent on eval / saves, not on steps

        def finish(done: int, metrics: Any, extra: dict) -> None:
          nonlocal tick, paused, last_loss
          m = _scalars(metrics)  # waits for step `done` only (the next one may still be running)
          now = time.perf_counter()
          loss = m["loss"]
          if not math.isfinite(loss):
            mngr.wait_until_finished()
            good = mngr.latest_step()
            where = f"step {good} in {out / 'checkpoints'}" if good is not None else "none saved yet"
            raise SpecjaxError(
              f"loss is {loss} at step {done}; stopped. Last good checkpoint: {where}. "
              "Lower optim.lr, lengthen optim.warmup_steps or set optim.z_loss, then rerun"
            )
          seconds = max(now - tick - paused, 1e-9)
          tick, paused = now, 0.0
          record = {"step": done, "loss": loss, "lr": m["lr"], "tokens_per_s": tokens_per_step / seconds}
          record.update({k: v for k, v in m.items() if k not in record})
          record.update(extra)
          metrics_log.write(record)
          last_loss = loss
          if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{m['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")

        while step < end:
          host, before = data.next(), {}
          for batch_hook in batch_hooks:
            host, scalars = batch_hook(state.params, host, step)
            before.update(scalars)
          state, metrics = train_step(state, put_batch(host, mesh), frozen)  # dispatch step `step + 1`
          step += 1
          if pending is not None:  # read the previous step while this one runs
            finish(*pending)
            pending = None
          extra = dict(before)
          due_hooks = [hook for hook in hooks if hook.due(step, total_steps)]
          if due_hooks:  # the step's own compute must not be timed as the hooks' pause
            jax.block_until_ready(metrics)
          for hook in due_hooks:
            t0 = time.perf_counter()
            extra.update(hook.fn(state.params, step) or {})
            paused += time.perf_counter() - t0
          pending = (step, metrics, extra)
          due = checkpoint.every and step % checkpoint.every == 0 and step < end
          if due or signals.received is not None:
            finish(*pending)  # never save a state whose loss was not checked
            pending = None
          if due:
            t0 = time.perf_counter()
            save(state, step)
            paused += time.perf_counter() - t0
          if signals.received is not None:
            status, signum = "signal", signals.received
            break
        if pending is not None:
          finish(*pending)
        if step >= end and status == "finished" and end < total_steps:
          status = "stopped"
        save(state, step, force=True)
        mngr.wait_until_finished()
    finally:
      if bar is not None:
        bar.close()
      metrics_log.close()
    if status == "signal":
      name = signal.Signals(signum).name
      print(f"stopped by {name} at step {step}; checkpoint saved. Rerun the same command to resume.", flush=True)
    if step >= total_steps and final_export is not None:
      final_export(state)
    return LoopResult(state=state, step=step, status=status, last_loss=last_loss, signum=signum)
  finally:
    mngr.close()
