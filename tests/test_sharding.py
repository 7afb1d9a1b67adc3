"""Mesh and logical-axis rules; the same global batch on 1 device and on a data x fsdp mesh."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from specjax.errors import SpecjaxError
from specjax.models.presets import get_preset
from specjax.parallel.sharding import MeshConfig, batch_sharding, make_mesh, mesh_shape, put_batch
from specjax.train import step as S
from specjax.train.optim import OptimConfig, make_optimizer


def test_mesh_shapes():
  assert mesh_shape(MeshConfig(), 8) == (8, 1, 1)
  assert mesh_shape(MeshConfig(data=2, fsdp=-1), 8) == (2, 4, 1)
  with pytest.raises(SpecjaxError, match="cannot be split"):
    mesh_shape(MeshConfig(data=-1, fsdp=3), 8)
  with pytest.raises(SpecjaxError, match="product"):
    mesh_shape(MeshConfig(data=2, fsdp=2, tensor=1), 8)


def test_param_and_batch_shardings():
  cfg = get_preset("tiny")
  mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  sh = S.param_shardings(cfg, mesh)
  assert sh["embed_tokens"]["embedding"].spec == P("tensor", "fsdp")
  assert sh["layers"]["attn"]["q_proj"]["kernel"].spec == P(None, "fsdp", "tensor")
  assert sh["layers"]["mlp"]["down_proj"]["kernel"].spec == P(None, "tensor", "fsdp")
  assert sh["norm"]["scale"].spec == P(None)
  assert batch_sharding(mesh).spec == P(("data", "fsdp"), None)
  tx, _ = make_optimizer(OptimConfig(), 10)
  st = S.state_shardings(cfg, tx, mesh)
  mu = jax.tree.leaves(st.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
  moments = [x for x in mu if hasattr(x, "mu")][0].mu
  assert moments["layers"]["mlp"]["up_proj"]["kernel"].spec == P(None, "fsdp", "tensor")


def _losses(mesh_cfg, devices, grad_accum=1):
  cfg = get_preset("tiny")
  tx, sched = make_optimizer(OptimConfig(lr=1e-2, warmup_steps=1), 4)
  mesh = make_mesh(mesh_cfg, devices)
  sh = S.state_shardings(cfg, tx, mesh)
  state = S.create_state(cfg, tx, sh, seed=0)
  fn = S.make_train_step(S.make_lm_loss(cfg, z_loss=1e-4), tx, sched, mesh, sh, grad_accum=grad_accum)
  rng = np.random.default_rng(0)
  out = []
  toks = rng.integers(0, cfg.vocab_size, (8, 17)).astype(np.int32)
  for _ in range(3):  # the same batch: the loss must fall
    seg = np.repeat(np.repeat([[1, 2]], 8, 0), [9, 8], axis=1).astype(np.int32)
    batch = {
      "tokens": toks[:, :-1],
      "targets": toks[:, 1:],
      "positions": np.concatenate([np.arange(9), np.arange(7)])[None].repeat(8, 0).astype(np.int32),
      "segment_ids": seg[:, :16],
      "loss_mask": np.ones((8, 16), np.float32),
    }
    state, m = fn(state, put_batch(batch, mesh))
    out.append(float(m["loss"]))
  return np.array(out), jax.device_get(state.params)


def test_one_device_equals_data_fsdp_mesh():
  one, p1 = _losses(MeshConfig(data=1), jax.devices()[:1])
  eight, p8 = _losses(MeshConfig(data=2, fsdp=4), jax.devices()[:8])
  np.testing.assert_allclose(one, eight, rtol=1e-5)
  assert one[-1] < one[0]
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-3)  # Adam normalises near-zero gradients: ~lr-sized noise
  # gradient accumulation over 2 microbatches (equal token counts) matches the full batch
  acc, _ = _losses(MeshConfig(data=1), jax.devices()[:1], grad_accum=2)
  np.testing.assert_allclose(one, acc, rtol=1e-5)
