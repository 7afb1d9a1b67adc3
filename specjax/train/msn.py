"""Make Some Noise (MSN) training: `msn_train(cfg, out)`, the glue behind `specjax msn-train`.

    cfg = load_config(MsnConfig, "configs/msn/smollm2.yaml", ["model=ckpt/smollm2", "data.path=data/distill"])
    msn_train(cfg, "runs/msn")       # rerun with the same folder to resume

Fine-tunes a model (usually the target itself) on (prompt, response) data with the noise of
ALGORITHMS.md section 4: inside the jitted step, `specjax.data.noise.make_some_noise` replaces one span
of `span` response tokens per example by tokens drawn from the preceding (noised) prefix, and the loss is
the ordinary next-token cross-entropy against the CLEAN tokens on response positions, standard causal
mask. The noise key is the step key, so a resumed run noises exactly as an uninterrupted one. The
result (out/final) decodes with the Jacobi and TR-Jacobi modes (`specjax.decode`).

Data: a `specjax make-data` output (any dataset with `tokens`, `response_mask`, `prompt_len` columns in
that format). Output folder: as `specjax pretrain` / `specjax distill`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from specjax.config import config_to_dict
from specjax.errors import SpecjaxError
from specjax.parallel.sharding import MeshConfig, batch_divisor, initialize_distributed, make_mesh
from specjax.train.distill import DistillDataConfig
from specjax.train.loop import CheckpointConfig, LogConfig, LoopResult, gather_params, run_loop
from specjax.train.optim import OptimConfig, make_optimizer


@dataclasses.dataclass(frozen=True)
class MsnConfig:
  model: str | None = None  # the specjax checkpoint to fine-tune (e.g. the imported target)
  span: int = 5  # L: noised tokens per example
  steps: int = 1000
  seed: int = 0
  dtype: str = "float32"  # compute dtype
  remat: bool = False
  data: DistillDataConfig = DistillDataConfig()
  optim: OptimConfig = OptimConfig()
  mesh: MeshConfig = MeshConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  logging: LogConfig = LogConfig()


def make_msn_loss(model_cfg, span: int):
  """`loss_fn(params, batch, rng, frozen)`: cross-entropy on clean targets from span-noised inputs."""
  from specjax.data.noise import make_some_noise
  from specjax.losses.lm import cross_entropy
  from specjax.models.registry import model_for

  model = model_for(model_cfg)

  def loss_fn(params, batch, rng, frozen):
    del frozen
    noisy = make_some_noise(rng, batch["tokens"], batch["response_mask"], span=span)
    logits, _ = model.apply({"params": params}, noisy, batch["positions"])
    return cross_entropy(logits, batch["targets"], batch["loss_mask"])

  return loss_fn


def make_clean_loss(model_cfg):
  """The same cross-entropy without noise (the held-out eval loss of an MSN run)."""
  from specjax.losses.lm import cross_entropy
  from specjax.models.registry import model_for

  model = model_for(model_cfg)

  def loss_fn(params, batch, rng, frozen):
    del rng, frozen
    logits, _ = model.apply({"params": params}, batch["tokens"], batch["positions"])
    return cross_entropy(logits, batch["targets"], batch["loss_mask"])

  return loss_fn


def msn_train(cfg: MsnConfig, out: str | Path, stop_at: int | None = None) -> LoopResult:
  """Run (or resume) MSN fine-tuning into `out`; see the module docstring."""
  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer, read_config, save_checkpoint
  from specjax.data.distill_batches import ExampleBatches
  from specjax.data.distill_data import load_distill_data
  from specjax.train.pretrain import _check_run_config
  from specjax.train.step import abstract_state, create_state, make_eval_step, make_train_step, state_shardings

  if cfg.mesh.distributed:
    initialize_distributed()
  out = Path(out)
  if not cfg.model:
    raise SpecjaxError("model is not set; set model=PATH to the specjax checkpoint to fine-tune")
  if not cfg.data.path:
    raise SpecjaxError("data.path is not set; set it to a `specjax make-data` output")
  if cfg.span < 1:
    raise SpecjaxError(f"span must be >= 1, got {cfg.span}")
  if stop_at is not None and stop_at < 1:
    raise SpecjaxError(f"--stop-at must be >= 1, got {stop_at}")
  saved, _ = read_config(cfg.model)
  mcfg = saved.replace(dtype=cfg.dtype, remat=cfg.remat)
  ds, meta = load_distill_data(cfg.data.path)
  mesh = make_mesh(cfg.mesh)
  div = batch_divisor(mesh) * cfg.optim.grad_accum
  if cfg.data.batch_size % div:
    raise SpecjaxError(
      f"data.batch_size ({cfg.data.batch_size}) must be a multiple of data x fsdp devices x optim.grad_accum ({div})"
    )
  _check_run_config(out, config_to_dict(cfg))
  data = ExampleBatches(
    ds, cfg.data.batch_size, cfg.data.seq_len, cfg.data.seed, cfg.data.eval_examples, cfg.data.eval_batches
  )
  tokenizer = load_tokenizer(cfg.model)
  tx, schedule = make_optimizer(cfg.optim, cfg.steps)
  shardings = state_shardings(mcfg, tx, mesh)
  train_step = make_train_step(
    make_msn_loss(mcfg, cfg.span), tx, schedule, mesh, shardings, grad_accum=cfg.optim.grad_accum
  )
  eval_step = make_eval_step(make_clean_loss(mcfg), mesh, shardings.params)

  def init_state():
    return create_state(mcfg, tx, shardings, cfg.seed, params=load_checkpoint(cfg.model, config=mcfg).params)

  def final_export(state):
    final = out / "final"
    if final.exists():
      return
    params = gather_params(state.params)  # every process joins; process 0 writes
    if params is None:
      return
    info = {"source": "specjax msn-train", "span": cfg.span, "steps": int(state.step), "base": cfg.model}
    info["data"] = cfg.data.path
    save_checkpoint(final, saved, params, tokenizer=tokenizer, meta=info)
    print(f"wrote specjax checkpoint {final}", flush=True)

  return run_loop(
    out=out,
    init_state=init_state,
    abstract_state=abstract_state(mcfg, tx, shardings),
    train_step=train_step,
    eval_step=eval_step,
    data=data,
    mesh=mesh,
    total_steps=cfg.steps,
    tokens_per_step=cfg.data.batch_size * cfg.data.seq_len,
    stop_at=stop_at,
    checkpoint=cfg.checkpoint,
    logging=cfg.logging,
    final_export=final_export,
  )
