"""The optimizer: AdamW with linear warmup + cosine decay, global-norm clipping, no decay on norms or biases.

Gradient accumulation is not an optax wrapper: the train step scans over `grad_accum` microbatches and
applies one update (`specjax.train.step`), so one step is one optimizer update and one schedule tick.
bfloat16 compute with float32 parameters is the model config (`dtype=bfloat16, param_dtype=float32`).

Weight decay is decided by parameter path, not by rank (layers stacked by `nn.scan` give every norm scale
a leading L axis, so a [L, D] scale looks like a matrix): `decays(path)` is true for weight matrices and
embedding tables (leaf named `kernel` or `embedding`) unless a part of the path names a norm; norm scales
(`scale`, or anything under a module whose name contains `norm`) and biases (`bias`) are never decayed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import optax

from specjax.errors import SpecjaxError


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  lr: float = 3e-4  # peak learning rate
  warmup_steps: int = 100  # linear warmup from 0 (capped at steps - 1)
  min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
  weight_decay: float = 0.1  # decoupled, on kernels and embeddings only (never norms or biases)
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0  # global gradient norm clip; 0 disables
  grad_accum: int = 1  # microbatches per step (the global batch is split into this many)
  z_loss: float = 0.0  # weight of the z-loss (mean squared log-partition); 0 disables
  freeze: tuple[str, ...] = ()  # top-level parameters held fixed, e.g. [embed_tokens, lm_head]


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


DECAYED = ("kernel", "embedding")  # leaf names that get weight decay
NOT_DECAYED = ("scale", "bias")  # leaf names that never do (norm scales, biases)


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def decays(path: Sequence[str]) -> bool:
  """Whether the parameter at `path` (module names then the leaf name) gets weight decay."""
  *modules, leaf = path
  if leaf in NOT_DECAYED or any("norm" in m.lower() for m in modules):
    return False
  return leaf in DECAYED


def decay_mask(params):
  """A tree of bools like `params`: True where weight decay applies (see `decays`)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: decays([_key_name(k) for k in path]), params)


def frozen_labels(freeze: Sequence[str]):
  """`params -> tree of "train" / "frozen"`: a parameter is frozen when its top-level name is in `freeze`."""

  def labels(params):  # a prefix of the params tree: one label per top-level name
    return {k: "frozen" if k in freeze else "train" for k in params}

  return labels


def check_freeze(freeze: Sequence[str], names: Sequence[str]) -> None:
  """Refuse `optim.freeze` names the model does not have, and a freeze that leaves nothing to train."""
  unknown = sorted(set(freeze) - set(names))
  if unknown:
    raise SpecjaxError(f"optim.freeze names {unknown}, which this model does not have; its parameters: {sorted(names)}")
  if set(names) <= set(freeze):
    raise SpecjaxError(f"optim.freeze={list(freeze)} freezes every parameter of the model; nothing would train")


def make_optimizer(cfg: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(AdamW chain, learning-rate schedule) for a run of `total_steps` optimizer steps. The parameters
  named in `cfg.freeze` get no update and no optimizer state (the train step also stops their gradient,
  so it is never computed, and clipping and `grad_norm` see the trained parameters only)."""
  if cfg.grad_accum < 1:
    raise SpecjaxError(f"optim.grad_accum must be >= 1, got {cfg.grad_accum}")
  schedule = make_schedule(cfg, total_steps)
  parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask))
  tx = optax.chain(*parts)
  if cfg.freeze:
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, frozen_labels(tuple(cfg.freeze)))
  return tx, schedule
