"""The forward-call timer and the memory floor: structure only (no wall-clock assertions)."""

from __future__ import annotations

import jax
import pytest

from specjax.eval.forward import call_costs, floor_s, param_bytes
from specjax.models.presets import get_preset
from specjax.models.registry import init_params


def test_call_costs_times_each_width():
  cfg = get_preset("tiny")
  params = init_params(cfg, jax.random.key(0))
  costs = call_costs(cfg, params, batch_size=2, widths=[1, 3], cache_fill=5, cache_size=8, repeat=2)
  assert sorted(costs) == [1, 3] and all(s > 0 for s in costs.values())
  masked = call_costs(cfg, params, 1, [2], 5, 8, repeat=1, mask=True, fast_layout=False)
  assert masked[2] > 0
  assert param_bytes(params) == 4 * sum(x.size for x in jax.tree.leaves(params))
  assert floor_s(param_bytes(params), repeat=2) > 0
  with pytest.raises(ValueError, match="cache of 9 slots"):
    call_costs(cfg, params, 1, [4], 5, 8)
