"""TrainState: everything a training run needs to continue exactly (step, params, optimizer state, RNG).

A plain pytree (flax.struct), so it is jitted, sharded, donated and checkpointed as a whole. The RNG is
stored as raw key data (uint32 [2]) so Orbax saves it like any array; the step key is
`fold_in(key, step)`, hence a resumed run draws the same randomness as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import struct


class TrainState(struct.PyTreeNode):
  step: jax.Array  # int32 scalar: optimizer steps taken
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32 [2]: raw threefry key data

  def step_key(self) -> jax.Array:
    """The PRNG key of the current step (same on every device and after a resume)."""
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)
