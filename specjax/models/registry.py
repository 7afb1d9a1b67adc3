"""The one place a model is built from its config: `model_for(cfg)`, and every initialisation.

Every family supported today (see `specjax.models.config.FAMILY_FEATURES`) is the same `Llama` module
driven by config fields, so each maps to `Llama`; a family that needs other code registers its own
module here, and every caller (decoders, training steps, init) picks it up. A config's `kind` other than
"decoder" picks its own module (`KIND_MODULES`: "eagle" is `specjax.models.eagle.EagleDraft`) whatever
its family.

Initialisation lives here too, above the modules (nothing here is imported by them):

    params = init_params(cfg, jax.random.key(0))     # random parameters
    shapes = param_shapes(cfg)                       # ShapeDtypeStructs, nothing allocated
    cfg, params = from_target(target_cfg, target_params, num_layers=1)   # a fresh EAGLE draft
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from specjax.errors import SpecjaxError
from specjax.models.config import FAMILY_FEATURES, ModelConfig
from specjax.models.eagle import EagleDraft, eagle_config
from specjax.models.llama import Llama

MODULES: dict[str, type[nn.Module]] = {name: Llama for name in FAMILY_FEATURES}
KIND_MODULES: dict[str, type[nn.Module]] = {"eagle": EagleDraft}  # kinds with their own module


def model_for(cfg: ModelConfig) -> nn.Module:
  """The Linen module for `cfg`: `model_for(cfg).apply({"params": p}, tokens, positions, cache, attn_mask)`."""
  if cfg.kind in KIND_MODULES:
    return KIND_MODULES[cfg.kind](cfg)
  module = MODULES.get(cfg.architecture)
  if module is None:
    raise SpecjaxError(f"no model is registered for architecture {cfg.architecture!r}; supported: {sorted(MODULES)}")
  return module(cfg)


def init_params(cfg: ModelConfig, key: jax.Array) -> dict:
  """Random parameters (boxed logical-axis metadata removed)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  variables = model_for(cfg).init(key, tokens, tokens)
  return nn.unbox(variables["params"])


def param_shapes(cfg: ModelConfig) -> dict:
  """Parameter ShapeDtypeStructs without allocating anything (works for a 7B config on a laptop)."""
  return jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))


def count_params(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def from_target(
  target_cfg: ModelConfig, target_params: dict, num_layers: int = 1, head_ids=None, seed: int = 0
) -> tuple[ModelConfig, dict]:
  """A fresh EAGLE draft for the target: embedding, final norm and (reduced) head copied from the
  target so its first proposal starts as the target's own reading of a feature; `fc` and the layers
  random."""
  cfg = eagle_config(target_cfg, num_layers, head_ids)
  params = init_params(cfg, jax.random.key(seed))
  table = np.asarray(target_params["embed_tokens"]["embedding"])
  if target_cfg.tie_embeddings:
    head = table.T  # [D, V]
  else:
    head = np.asarray(target_params["lm_head"]["kernel"])
    if target_cfg.head_ids is not None:
      raise SpecjaxError("the target has a reduced head; build the eagle draft from the full target")
  if cfg.head_ids is not None:
    head = head[:, np.asarray(cfg.head_ids)]
  params["embed_tokens"] = {"embedding": jnp.asarray(table, cfg.weight_dtype)}
  params["norm"] = {"scale": jnp.asarray(target_params["norm"]["scale"], cfg.weight_dtype)}
  params["lm_head"] = {"kernel": jnp.asarray(head, cfg.weight_dtype)}
  return cfg, params
