"""The optimizer: AdamW with linear warmup + cosine decay, global-norm clipping, no decay on norms.

Gradient accumulation is not an optax wrapper: the train step scans over `grad_accum` microbatches and
applies one update (`specjax.train.step`), so one step is one optimizer update and one schedule tick.
bfloat16 compute with float32 parameters is the model config (`dtype=bfloat16, param_dtype=float32`).
"""

from __future__ import annotations

import dataclasses

import jax
import optax

from specjax.errors import SpecjaxError


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  lr: float = 3e-4  # peak learning rate
  warmup_steps: int = 100  # linear warmup from 0 (capped at steps - 1)
  min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
  weight_decay: float = 0.1  # decoupled, on matrices only (not on norm scales)
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0  # global gradient norm clip; 0 disables
  grad_accum: int = 1  # microbatches per step (the global batch is split into this many)
  z_loss: float = 0.0  # weight of the z-loss (mean squared log-partition); 0 disables


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
  if total_steps < 1:
    raise SpecjaxError(f"steps must be >= 1, got {total_steps}")
  warmup = max(0, min(cfg.warmup_steps, total_steps - 1))
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0 if warmup else cfg.lr,
    peak_value=cfg.lr,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=cfg.lr * cfg.min_lr_ratio,
  )


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(AdamW chain, learning-rate schedule) for a run of `total_steps` optimizer steps."""
  if cfg.grad_accum < 1:
    raise SpecjaxError(f"optim.grad_accum must be >= 1, got {cfg.grad_accum}")
  schedule = make_schedule(cfg, total_steps)
  parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  parts.append(
    optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=_decay_mask)
  )
  return optax.chain(*parts), schedule
