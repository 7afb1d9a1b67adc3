"""Make Some Noise (MSN) training: `msn_train(cfg, out)`, the glue behind `specjax msn-train`.

    cfg = load_config(MsnConfig, "configs/msn/smollm2.yaml", ["model=ckpt/smollm2", "data.path=data/distill"])
    msn_train(cfg, "runs/msn")       # rerun with the same folder to resume

Fine-tunes a model (usually the target itself) on (prompt, response) data with the noise of
docs/algorithms.md#make-some-noise: inside the jitted step, `specjax.data.noise.make_some_noise` replaces one span
of `span` response tokens per example by tokens drawn from the preceding (noised) prefix, and the loss is
the ordinary next-token cross-entropy against the CLEAN tokens on response positions, standard causal
mask. The noise key is the step key, so a resumed run noises exactly as an uninterrupted one. The
result (out/final) decodes with the Jacobi and TR-Jacobi modes (`specjax.decode`).

`span=0` is the control: the same run (data, order, steps, optimiser, seed) with the inputs left clean, i.e.
plain supervised fine-tuning on the same answers, so that what MSN changes can be told apart from what any
fine-tuning on them changes.

Data: a `specjax make-data` output (any dataset with `tokens`, `response_mask`, `prompt_len` columns in
that format). Output folder: as `specjax pretrain` / `specjax distill`.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax

from specjax.errors import SpecjaxError
from specjax.models.config import resolve_dtype
from specjax.train.distill import DistillDataConfig
from specjax.train.loop import LoopResult
from specjax.train.trainer import Trainer, TrainerConfig


@dataclasses.dataclass(frozen=True)
class MsnConfig(TrainerConfig):
  """TrainerConfig (steps, seed, optim, mesh, checkpoint, logging) plus the model, the noise span and data."""

  model: str | None = None  # the specjax checkpoint to fine-tune (e.g. the imported target)
  span: int = 5  # L: noised tokens per example; 0 = no noise (the plain fine-tuning control)
  dtype: str = "auto"  # compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU (params keep their dtype)
  remat: bool = False
  data: DistillDataConfig = DistillDataConfig()


def check_span(span) -> int:
  """The span if valid (an int >= 0; 0 is the no-noise control), else a SpecjaxError."""
  if isinstance(span, bool) or not isinstance(span, int) or span < 0:
    raise SpecjaxError(f"span must be an integer >= 0 (0: no noise, the plain fine-tuning control), got {span!r}")
  return span


def msn_inputs(rng: jax.Array, batch: dict, span: int) -> jax.Array:
  """The model's input tokens for one batch: span-noised (`make_some_noise`), or the clean tokens when
  span is 0 (the control)."""
  from specjax.data.noise import make_some_noise

  if check_span(span) == 0:
    return batch["tokens"]
  return make_some_noise(rng, batch["tokens"], batch["response_mask"], span=span)


def make_msn_loss(model_cfg, span: int):
  """`loss_fn(params, batch, rng, frozen)`: cross-entropy on clean targets from span-noised inputs (clean
  inputs for span 0)."""
  from specjax.losses.lm import cross_entropy
  from specjax.models.registry import model_for

  check_span(span)
  model = model_for(model_cfg)

  def loss_fn(params, batch, rng, frozen):
    del frozen
    logits, _ = model.apply({"params": params}, msn_inputs(rng, batch, span), batch["positions"])
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
  check_span(cfg.span)
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


def held_out_loss(model: str | Path, data: DistillDataConfig, dtype: str = "auto") -> dict:
  """The clean held-out loss of any checkpoint on the held-out rows a run with this `data` section keeps
  out of training (the split is seeded by `data.seed`, so it is the one msn-train logs eval_loss on),
  computed in `dtype` (give the run's): `{"eval_loss", "tokens", "batches"}`, token-weighted like the
  trainer's eval. Measures the model a fine-tune starts from, which msn-train never evaluates."""
  from specjax.checkpoint.orbax_io import load_checkpoint
  from specjax.data.distill_batches import ExampleBatches
  from specjax.data.distill_data import load_distill_data

  ds, _ = load_distill_data(data.path)
  batches = ExampleBatches.from_config(ds, data).eval_batches()
  if not batches:
    raise SpecjaxError(f"data.eval_examples={data.eval_examples} keeps no held-out rows; set it above 0")
  compute = resolve_dtype(dtype)
  ckpt = load_checkpoint(model)
  step = _clean_eval(ckpt.config.replace(dtype=compute))
  total = weight = 0.0
  for b in batches:
    loss, metrics = jax.device_get(step(ckpt.params, b, None, None))
    total += float(loss) * float(metrics["tokens"])
    weight += float(metrics["tokens"])
  return {"eval_loss": total / max(weight, 1e-9), "tokens": int(weight), "batches": len(batches)}


@functools.lru_cache(maxsize=4)
def _clean_eval(model_cfg):
  """The jitted clean loss of one architecture, compiled once for every checkpoint of that shape."""
  return jax.jit(make_clean_loss(model_cfg))
