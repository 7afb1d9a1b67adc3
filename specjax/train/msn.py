"""Make Some Noise (MSN) training: `msn_train(cfg, out)`, the glue behind `specjax msn-train`.

    cfg = load_config(MsnConfig, "configs/msn/smollm2.yaml", ["model=ckpt/smollm2", "data.path=data/distill"])
    msn_train(cfg, "runs/msn")       # rerun with the same folder to resume

Fine-tunes a model (usually the target itself) on (prompt, response) data with the noise of
docs/algorithms.md#make-some-noise: inside the jitted step, `specjax.data.noise.make_some_noise` replaces one span
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

from specjax.errors import SpecjaxError
from specjax.models.config import resolve_dtype
from specjax.train.distill import DistillDataConfig
from specjax.train.loop import LoopResult
from specjax.train.trainer import Trainer, TrainerConfig


@dataclasses.dataclass(frozen=True)
class MsnConfig(TrainerConfig):
  """TrainerConfig (steps, seed, optim, mesh, checkpoint, logging) plus the model, the noise span and data."""

  model: str | None = None  # the specjax checkpoint to fine-tune (e.g. the imported target)
  span: int = 5  # L: noised tokens per example
  dtype: str = "auto"  # compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU (params keep their dtype)
  remat: bool = False
  data: DistillDataConfig = DistillDataConfig()


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

  out = Path(out)
  cfg = dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype))  # once, as run_config.json records it
  if not cfg.model:
    raise SpecjaxError("model is not set; set model=PATH to the specjax checkpoint to fine-tune")
  if not cfg.data.path:
    raise SpecjaxError("data.path is not set; set it to a `specjax make-data` output")
  if cfg.span < 1:
    raise SpecjaxError(f"span must be >= 1, got {cfg.span}")
  saved, _ = read_config(cfg.model)
  mcfg = saved.replace(dtype=cfg.dtype, remat=cfg.remat)
  ds, meta = load_distill_data(cfg.data.path)
  data = ExampleBatches.from_config(ds, cfg.data)  # its settings are checked before anything is written
  trainer = Trainer(cfg, out, batch_size=cfg.data.batch_size, stop_at=stop_at)
  trainer.check_run_config(cfg, mcfg)
  tokenizer = load_tokenizer(cfg.model)
  trainer.set_objective(mcfg, make_msn_loss(mcfg, cfg.span))
  trainer.add_eval(data.eval_batches(), loss_fn=make_clean_loss(mcfg))

  def export(final, params, steps):
    info = {"source": "specjax msn-train", "span": cfg.span, "steps": steps, "base": cfg.model}
    info["data"] = cfg.data.path
    save_checkpoint(final, saved, params, tokenizer=tokenizer, meta=info)

  return trainer.run(
    data,
    tokens_per_step=cfg.data.batch_size * cfg.data.seq_len,
    init_params=lambda: load_checkpoint(cfg.model, config=mcfg).params,
    export=export,
  )
