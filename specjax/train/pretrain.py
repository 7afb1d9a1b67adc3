"""Drafter pretraining: config dataclasses and `pretrain(cfg, out)`, the glue behind `specjax pretrain`.

    cfg = load_config(PretrainConfig, "configs/pretrain/drafter-s.yaml", ["tokenizer=ckpt/smollm2"])
    pretrain(cfg, "runs/pre")            # rerun with the same folder to resume

Output folder:
    out/run_config.json   the resolved config (a rerun must match it: same run, resumed)
    out/data/             the tokenized corpus (TokenStore), built once
    out/checkpoints/ out/metrics.jsonl out/tensorboard/   see `specjax.train.loop`
    out/final/            the finished model: a specjax checkpoint folder (params + model_config.json +
                          tokenizer), usable by every other command (generate, export-hf, distill, ...)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np

from specjax.config import config_to_dict
from specjax.data.corpus import DataConfig, build_token_store
from specjax.data.packing import PackedBatches
from specjax.errors import SpecjaxError
from specjax.models.llama import LlamaConfig
from specjax.models.presets import get_preset
from specjax.parallel.sharding import MeshConfig, batch_divisor, initialize_distributed, make_mesh
from specjax.train.loop import CheckpointConfig, LogConfig, LoopResult, gather_params, run_loop
from specjax.train.optim import OptimConfig, make_optimizer
from specjax.train.step import (
  abstract_state,
  create_state,
  make_eval_step,
  make_lm_loss,
  make_train_step,
  state_shardings,
)

SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim")


@dataclasses.dataclass(frozen=True)
class ModelSection:
  """The model: a preset plus inline field overrides (or a complete inline model in `fields`)."""

  preset: str | None = "drafter-s"
  fields: dict[str, Any] = dataclasses.field(default_factory=dict)  # LlamaConfig fields
  dtype: str = "float32"  # compute dtype (bfloat16 for mixed precision)
  param_dtype: str = "float32"
  remat: bool = False
  init_from: str | None = None  # start from the params of this specjax checkpoint (same shapes)
  init_embed: Literal["random", "pca", "projection"] = "random"  # see specjax.train.embed_init
  init_embed_from: str | None = None  # target checkpoint for init_embed (default: `tokenizer`)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  # the target's tokenizer: a specjax checkpoint folder, or a built-in target name (smollm2-135m-instruct)
  tokenizer: str | None = None
  steps: int = 1000  # run length = schedule length (optimizer steps)
  seed: int = 0
  model: ModelSection = ModelSection()
  data: DataConfig = DataConfig()
  optim: OptimConfig = OptimConfig()
  mesh: MeshConfig = MeshConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  logging: LogConfig = LogConfig()


def model_config(section: ModelSection) -> LlamaConfig:
  base = get_preset(section.preset).to_dict() if section.preset else {}
  base.update(section.fields)
  base.update(dtype=section.dtype, param_dtype=section.param_dtype, remat=section.remat)
  try:
    return LlamaConfig.from_dict(base)
  except TypeError as e:
    raise SpecjaxError(f"model: {e}; give a preset or every LlamaConfig field under model.fields") from None


def _check_run_config(out: Path, record: dict) -> None:
  path = out / "run_config.json"
  if path.is_file():
    saved = json.loads(path.read_text())
    if saved != record:
      diff = sorted(_diff_keys(saved, record))
      raise SpecjaxError(
        f"{out} holds a run with a different config (keys {diff}); rerun with the same settings to resume, "
        "or use a new --out"
      )
  elif jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    keys = []
    for k in set(a) | set(b):
      keys += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
    return keys
  return [] if a == b else [prefix.rstrip(".")]


def _builtin(name: str | None) -> bool:
  from specjax.checkpoint.convert import BUILTIN_MODELS

  return name is not None and name in BUILTIN_MODELS and not Path(name).exists()


def load_target_tokenizer(name: str):
  """The tokenizer of a target: a specjax checkpoint folder or a built-in target name."""
  if _builtin(name):
    from specjax.checkpoint.convert import open_source

    return open_source(name).tokenizer()
  from specjax.checkpoint.orbax_io import load_tokenizer

  return load_tokenizer(name)


def target_embedding(name: str) -> np.ndarray:
  """The [V, D] input embedding of a target (checkpoint folder or built-in name)."""
  if _builtin(name):
    from specjax.checkpoint.convert import open_source

    return open_source(name).tensor("model.embed_tokens.weight")
  from specjax.checkpoint.orbax_io import load_checkpoint

  return np.asarray(load_checkpoint(name).params["embed_tokens"]["embedding"], np.float32)


def initial_params(cfg: PretrainConfig, mcfg: LlamaConfig) -> Any:
  """Params to start from, or None for a random init (init_from / init_embed)."""
  from specjax.checkpoint.orbax_io import load_checkpoint, read_config
  from specjax.models.llama import init_params

  if cfg.model.init_from:
    saved, _ = read_config(cfg.model.init_from)
    bad = [f for f in SHAPE_FIELDS if getattr(saved, f) != getattr(mcfg, f)]
    if bad:
      raise SpecjaxError(
        f"model.init_from {cfg.model.init_from} is another model size ({', '.join(f'{f}={getattr(saved, f)}' for f in bad)} "
        f"vs this run's {', '.join(f'{f}={getattr(mcfg, f)}' for f in bad)}); pick a checkpoint of this model"
      )
    return load_checkpoint(cfg.model.init_from, config=mcfg).params
  if cfg.model.init_embed == "random":
    return None
  from specjax.train.embed_init import project_embedding

  src = cfg.model.init_embed_from or cfg.tokenizer
  if src is None:
    raise SpecjaxError("model.init_embed needs a target checkpoint: set model.init_embed_from (or tokenizer)")
  emb = project_embedding(target_embedding(src), mcfg, cfg.model.init_embed, seed=cfg.seed)
  params = jax.device_get(init_params(mcfg, jax.random.fold_in(jax.random.key(cfg.seed), 0)))
  params["embed_tokens"]["embedding"] = emb.astype(params["embed_tokens"]["embedding"].dtype)
  return params


def pretrain(cfg: PretrainConfig, out: str | Path, stop_at: int | None = None) -> LoopResult:
  """Run (or resume) pretraining into `out`; see the module docstring for the folder layout."""
  from specjax.checkpoint.orbax_io import save_checkpoint

  if cfg.mesh.distributed:
    initialize_distributed()
  out = Path(out)
  if cfg.tokenizer is None:
    raise SpecjaxError(
      "no tokenizer: set tokenizer=PATH to the target's specjax checkpoint folder "
      "(make one with `specjax import smollm2-135m-instruct --out ckpt/smollm2`) or tokenizer=smollm2-135m-instruct"
    )
  if stop_at is not None and stop_at < 1:
    raise SpecjaxError(f"--stop-at must be >= 1, got {stop_at}")
  mcfg = model_config(cfg.model)
  mesh = make_mesh(cfg.mesh)
  div = batch_divisor(mesh) * cfg.optim.grad_accum
  if cfg.data.batch_size % div:
    raise SpecjaxError(
      f"data.batch_size ({cfg.data.batch_size}) must be a multiple of data x fsdp devices x optim.grad_accum ({div})"
    )
  _check_run_config(out, config_to_dict(cfg))
  tokenizer = load_target_tokenizer(cfg.tokenizer)
  if jax.process_count() > 1:  # one process tokenizes into the shared folder, the others wait and read it
    from jax.experimental import multihost_utils

    if jax.process_index() == 0:
      build_token_store(cfg.data, tokenizer, out / "data", vocab_size=mcfg.vocab_size)
    multihost_utils.sync_global_devices("specjax-token-store")
  store = build_token_store(cfg.data, tokenizer, out / "data", vocab_size=mcfg.vocab_size)
  data = PackedBatches(
    store, cfg.data.batch_size, cfg.data.seq_len, cfg.data.seed, cfg.data.eval_fraction, cfg.data.eval_batches
  )
  tx, schedule = make_optimizer(cfg.optim, cfg.steps)
  shardings = state_shardings(mcfg, tx, mesh)
  loss_fn = make_lm_loss(mcfg, cfg.optim.z_loss)
  train_step = make_train_step(loss_fn, tx, schedule, mesh, shardings, grad_accum=cfg.optim.grad_accum)
  eval_step = make_eval_step(loss_fn, mesh, shardings.params)

  def init_state():
    return create_state(mcfg, tx, shardings, cfg.seed, params=initial_params(cfg, mcfg))

  def final_export(state):
    final = out / "final"
    if final.exists():
      return
    params = gather_params(state.params)  # every process joins; process 0 writes
    if params is None:
      return
    meta = {"source": "specjax pretrain", "steps": int(state.step), "corpus": cfg.data.source}
    save_checkpoint(final, mcfg.replace(remat=False), params, tokenizer=tokenizer, meta=meta)
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
