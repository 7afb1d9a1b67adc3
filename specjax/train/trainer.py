"""One training runner behind `specjax pretrain`, `distill` and `msn-train`: each supplies only what differs.

    trainer = Trainer(cfg, out, batch_size=cfg.data.batch_size, stop_at=stop_at)  # mesh, checks, optimizer
    trainer.check_run_config(cfg, model_cfg)             # out/run_config.json: a rerun must be the same run
    trainer.set_objective(model_cfg, loss_fn, frozen=..., frozen_shardings=...)   # sharded, jitted, donated
    trainer.add_eval(data.eval_batches())                # held-out loss every logging.eval_every and at the end
    trainer.add_hook(spec_eval, every=500)               # any fn(params, step) -> dict of scalars
    trainer.add_batch_hook(on_policy)                    # fn(params, host_batch, step) -> (batch, scalars)
    result = trainer.run(data, tokens_per_step=B * T, init_params=load_params, export=write_final)

`TrainerConfig` is the config section every run shares (steps, seed, optim, mesh, checkpoint, logging);
`PretrainConfig`, `DistillConfig` and `MsnConfig` extend it, so their YAML keeps these keys at the top
level. The entry points construct their models where their losses are made (`specjax.train.step.
make_lm_loss`, the draft kinds of `specjax.train.draft_kinds`, `specjax.train.msn.make_msn_loss`); the runner
only asks `specjax.train.step` for the shardings of a model config.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from specjax.config import config_to_dict, differences, with_defaults
from specjax.errors import SpecjaxError
from specjax.fileio import atomic_write_text
from specjax.parallel.sharding import MeshConfig, batch_divisor, initialize_distributed, make_mesh, put_batch
from specjax.train import step as step_lib
from specjax.train.loop import (
  BatchHook,
  BatchIterator,
  CheckpointConfig,
  Hook,
  LogConfig,
  LoopResult,
  gather_params,
  run_loop,
)
from specjax.train.optim import OptimConfig, check_freeze, make_optimizer


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """The sections of every training config (the entry points' configs extend this class)."""

  steps: int = 1000  # run length = schedule length (optimizer steps)
  seed: int = 0
  optim: OptimConfig = OptimConfig()
  mesh: MeshConfig = MeshConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  logging: LogConfig = LogConfig()


def check_run_config(out: Path, record: dict, defaults: dict | None = None) -> None:
  """Write `out/run_config.json`, or refuse a folder that holds a run with another config. Settings
  the saved record lacks (added since it was written) count as their `defaults`."""
  path = out / "run_config.json"
  record = json.loads(json.dumps(record))  # as it reads back (tuples become lists)
  if path.is_file():
    saved = json.loads(path.read_text())
    if defaults is not None:
      saved = with_defaults(saved, json.loads(json.dumps(defaults)))
    if saved != record:
      diff = differences(saved, record)
      raise SpecjaxError(
        f"{out} holds a run with a different config (keys {diff}); rerun with the same settings to resume, "
        "or use a new --out"
      )
  elif jax.process_index() == 0:
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def held_out_eval(eval_step, batches: list, frozen: Any, mesh, keys=("loss",)) -> Callable[[Any, int], dict]:
  """A hook: token-weighted means (weight: the `tokens` metric when reported) of `keys` over the held-out
  batches, reported as eval_<key>."""

  def hook(params, step):
    del step
    sums: dict[str, float] = {}
    weight = 0.0
    for b in batches:
      m = {k: float(v) for k, v in jax.device_get(eval_step(params, put_batch(b, mesh), frozen)).items()}
      w = m.get("tokens", 1.0)
      weight += w
      for k in keys:
        if k in m:
          sums[k] = sums.get(k, 0.0) + m[k] * w
    return {f"eval_{k}": v / max(weight, 1e-9) for k, v in sums.items()}

  return hook


class Trainer:
  """Mesh, optimizer, sharded state, jitted steps, hooks, the host loop and the final export of one run."""

  def __init__(self, cfg: TrainerConfig, out: str | Path, *, batch_size: int, stop_at: int | None = None):
    if cfg.mesh.distributed:
      initialize_distributed()
    if stop_at is not None and stop_at < 1:
      raise SpecjaxError(f"--stop-at must be >= 1, got {stop_at}")
    self.cfg, self.out, self.stop_at = cfg, Path(out), stop_at
    self.mesh = make_mesh(cfg.mesh)
    div = batch_divisor(self.mesh) * cfg.optim.grad_accum
    if batch_size % div:
      raise SpecjaxError(
        f"data.batch_size ({batch_size}) must be a multiple of data x fsdp devices x optim.grad_accum ({div})"
      )
    self.tx, self.schedule = make_optimizer(cfg.optim, cfg.steps)
    self.hooks: list[Hook] = []
    self.batch_hooks: list[BatchHook] = []
    self.model_cfg = None

  def check_run_config(self, cfg: Any, model_cfg) -> None:
    """Refuse settings the model cannot take (`optim.freeze`), then a resume under a different config;
    call before anything is written to `out`."""
    if cfg.optim.freeze:
      check_freeze(cfg.optim.freeze, list(step_lib.param_specs(model_cfg)))
    check_run_config(self.out, config_to_dict(cfg), config_to_dict(type(cfg)()))

  def param_shardings(self, model_cfg) -> Any:
    """NamedShardings of a model's params on this run's mesh (for frozen teachers and references)."""
    return step_lib.param_shardings(model_cfg, self.mesh)

  def set_objective(self, model_cfg, loss_fn: step_lib.LossFn, *, frozen: Any = None, frozen_shardings=None):
    """The trained model's config and `loss_fn(params, batch, rng, frozen)` (see `specjax.train.step`)."""
    freeze = tuple(self.cfg.optim.freeze)
    self.model_cfg, self.loss_fn = model_cfg, loss_fn
    self.frozen, self.frozen_shardings = frozen, frozen_shardings
    self.shardings = step_lib.state_shardings(model_cfg, self.tx, self.mesh)
    self.train_step = step_lib.make_train_step(
      loss_fn,
      self.tx,
      self.schedule,
      self.mesh,
      self.shardings,
      frozen_shardings,
      grad_accum=self.cfg.optim.grad_accum,
      freeze=freeze,
    )

  def add_hook(self, fn: Callable[[Any, int], dict | None], every: int) -> None:
    """Run `fn(params, step)` after every `every`-th step and after the last one (every <= 0: last only)."""
    self.hooks.append(Hook(fn, every))

  def add_batch_hook(self, fn: BatchHook) -> None:
    """Run `fn(params, host_batch, step) -> (host_batch, scalars)` before each step is dispatched."""
    self.batch_hooks.append(fn)

  def add_eval(self, batches: list, loss_fn: step_lib.LossFn | None = None, keys=("loss",)) -> None:
    """Held-out evaluation (eval_<key> for each of `keys`) every `logging.eval_every` steps and at the end,
    with the training loss unless `loss_fn` is given."""
    if not batches:
      return
    eval_step = step_lib.make_eval_step(
      loss_fn or self.loss_fn, self.mesh, self.shardings.params, self.frozen_shardings
    )
    self.add_hook(held_out_eval(eval_step, batches, self.frozen, self.mesh, keys), self.cfg.logging.eval_every)

  def run(
    self,
    data: BatchIterator,
    *,
    tokens_per_step: int,
    init_params: Callable[[], Any],
    export: Callable[[Path, Any, int], None],
  ) -> LoopResult:
    """Train (or resume) to `steps`. `init_params()` gives the starting params (None: random init) and is
    only called when there is nothing to resume; `export(out / "final", host_params, steps)` writes the
    finished model (once, on process 0)."""
    if self.model_cfg is None:
      raise RuntimeError("Trainer.set_objective must be called before run")
    cfg, mcfg, shardings = self.cfg, self.model_cfg, self.shardings

    def init_state():
      return step_lib.create_state(mcfg, self.tx, shardings, cfg.seed, params=init_params())

    def final_export(state):
      final = self.out / "final"
      if final.exists():
        return
      params = gather_params(state.params)  # every process joins; process 0 writes
      if params is None:
        return
      export(final, params, int(state.step))
      print(f"wrote specjax checkpoint {final}", flush=True)

    return run_loop(
      out=self.out,
      init_state=init_state,
      abstract_state=step_lib.abstract_state(mcfg, self.tx, shardings),
      train_step=self.train_step,
      data=data,
      mesh=self.mesh,
      frozen=self.frozen,
      hooks=self.hooks,
      batch_hooks=self.batch_hooks,
      total_steps=cfg.steps,
      tokens_per_step=tokens_per_step,
      stop_at=self.stop_at,
      checkpoint=cfg.checkpoint,
      logging=cfg.logging,
      final_export=final_export,
    )
