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
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np

from specjax.data.corpus import DataConfig, build_token_store
from specjax.data.packing import PackedBatches
from specjax.errors import SpecjaxError
from specjax.models.config import resolve_dtype
from specjax.models.llama import LlamaConfig
from specjax.models.presets import get_preset
from specjax.train.loop import LoopResult
from specjax.train.step import make_lm_loss
from specjax.train.trainer import Trainer, TrainerConfig

SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim")


@dataclasses.dataclass(frozen=True)
class ModelSection:
  """The model: a preset plus inline field overrides (or a complete inline model in `fields`)."""

  preset: str | None = "drafter-s"
  fields: dict[str, Any] = dataclasses.field(default_factory=dict)  # LlamaConfig fields
  dtype: str = "auto"  # compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU (`resolve_dtype`)
  param_dtype: str = "float32"  # parameters and optimizer state
  remat: bool = False
  init_from: str | None = None  # start from the params of this specjax checkpoint (same shapes)
  init_embed: Literal["random", "pca", "projection"] = "random"  # see specjax.train.embed_init
  init_embed_from: str | None = None  # target checkpoint for init_embed (default: `tokenizer`)
  head_ids_from: str | None = None  # a `specjax vocab-map` file: reduced draft vocabulary (FR-Spec style)


@dataclasses.dataclass(frozen=True)
class PretrainConfig(TrainerConfig):
  """TrainerConfig (steps, seed, optim, mesh, checkpoint, logging) plus the model, its data and tokenizer."""

  # the target's tokenizer: a specjax checkpoint folder, or a built-in target name (smollm2-135m-instruct)
  tokenizer: str | None = None
  model: ModelSection = ModelSection()
  data: DataConfig = DataConfig()


def model_config(section: ModelSection) -> LlamaConfig:
  base = get_preset(section.preset).to_dict() if section.preset else {}
  base.update(section.fields)
  base.update(dtype=resolve_dtype(section.dtype), param_dtype=section.param_dtype, remat=section.remat)
  if section.head_ids_from:
    from specjax.data.vocab_map import read_vocab_map

    base["head_ids"] = read_vocab_map(section.head_ids_from)
  try:
    return LlamaConfig.from_dict(base)
  except TypeError as e:
    raise SpecjaxError(f"model: {e}; give a preset or every LlamaConfig field under model.fields") from None


def _builtin(name: str | None) -> bool:
  from specjax.checkpoint.convert import BUILTIN_MODELS

  return name is not None and name in BUILTIN_MODELS and not Path(name).exists()


def load_target_tokenizer(name: str):
  """The tokenizer of a target: a specjax checkpoint folder or a built-in target name."""
  if _builtin(name):
    from specjax.checkpoint.convert import open_source

    with open_source(name) as source:
      return source.tokenizer()
  from specjax.checkpoint.orbax_io import load_tokenizer

  return load_tokenizer(name)


def target_embedding(name: str) -> np.ndarray:
  """The [V, D] input embedding of a target (checkpoint folder or built-in name)."""
  if _builtin(name):
    from specjax.checkpoint.convert import open_source

    with open_source(name) as source:
      return source.tensor("model.embed_tokens.weight")
  from specjax.checkpoint.orbax_io import load_checkpoint

  return np.asarray(load_checkpoint(name).params["embed_tokens"]["embedding"], np.float32)


def initial_params(cfg: PretrainConfig, mcfg: LlamaConfig) -> Any:
  """Params to start from, or None for a random init (init_from / init_embed)."""
  from specjax.checkpoint.orbax_io import load_checkpoint, read_config
  from specjax.models.registry import init_params

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

  out = Path(out)
  # The compute dtype resolved once, as run_config.json records it (a resume must compute alike).
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype=resolve_dtype(cfg.model.dtype)))
  if cfg.tokenizer is None:
    raise SpecjaxError(
      "no tokenizer: set tokenizer=PATH to the target's specjax checkpoint folder "
      "(make one with `specjax import smollm2-135m-instruct --out ckpt/smollm2`) or tokenizer=smollm2-135m-instruct"
    )
  mcfg = model_config(cfg.model)
  trainer = Trainer(cfg, out, batch_size=cfg.data.batch_size, stop_at=stop_at)
  trainer.check_run_config(cfg, mcfg)
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
  trainer.set_objective(mcfg, make_lm_loss(mcfg, cfg.optim.z_loss))
  trainer.add_eval(data.eval_batches())

  def export(final, params, steps):
    meta = {"source": "specjax pretrain", "steps": steps, "corpus": cfg.data.source}
    # Saved with float32 compute like an imported checkpoint: whoever runs it chooses its own (`--dtype`).
    save_checkpoint(final, mcfg.replace(remat=False, dtype="float32"), params, tokenizer=tokenizer, meta=meta)

  return trainer.run(
    data,
    tokens_per_step=cfg.data.batch_size * cfg.data.seq_len,
    init_params=lambda: initial_params(cfg, mcfg),
    export=export,
  )
