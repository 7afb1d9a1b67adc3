"""`model_for(cfg)`: the one place a model module is built from its config.

Every family supported today (see `specjax.models.llama.FAMILY_FEATURES`) is the same `Llama` module
driven by config fields, so each maps to `Llama`; a family that needs other code registers its own
module here, and every caller (decoders, training steps, init) picks it up. A config of kind "eagle"
is an EAGLE-style draft (`specjax.models.eagle.EagleDraft`) whatever its family.
"""

from __future__ import annotations

import flax.linen as nn

from specjax.errors import SpecjaxError
from specjax.models.llama import FAMILY_FEATURES, Llama, ModelConfig

MODULES: dict[str, type[nn.Module]] = {name: Llama for name in FAMILY_FEATURES}


def model_for(cfg: ModelConfig) -> nn.Module:
  """The Linen module for `cfg`: `model_for(cfg).apply({"params": p}, tokens, positions, cache, attn_mask)`."""
  if cfg.kind == "eagle":
    from specjax.models.eagle import EagleDraft

    return EagleDraft(cfg)
  module = MODULES.get(cfg.architecture)
  if module is None:
    raise SpecjaxError(f"no model is registered for architecture {cfg.architecture!r}; supported: {sorted(MODULES)}")
  return module(cfg)
