"""Device mesh (data, fsdp, tensor) and the one logical-axis rules table.

Parameters carry logical axis names (vocab, embed, heads, kv_heads, mlp, norm, layers) and activations
(batch, length, embed). `LOGICAL_RULES` maps them onto the mesh:

- `batch` is split over data x fsdp (pure data parallelism plus ZeRO-3-style parameter sharding);
- `embed` is split over fsdp for parameters (an activation's embed axis stays whole because fsdp is
  already taken by its batch axis: flax assigns each mesh axis once per array, in rule order);
- `vocab`, `heads`, `kv_heads`, `mlp` are split over tensor (Megatron-style tensor parallelism);
- `length`, `norm`, `layers` are replicated.

Multi-host: call `initialize_distributed()` once per process (behind the `mesh.distributed` config flag)
before any other jax call; `make_mesh` then spans every process's devices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from specjax.errors import SpecjaxError

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
  ("batch", ("data", "fsdp")),
  ("length", None),
  ("vocab", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("mlp", "tensor"),
  ("embed", "fsdp"),
  ("norm", None),
  ("layers", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape; -1 on one axis means 'all remaining devices'. distributed: call jax.distributed.initialize()."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  distributed: bool = False


def initialize_distributed() -> None:
  """Join a multi-host job (coordinator address etc. come from the environment: TPU pods, SLURM, ...)."""
  jax.distributed.initialize()


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, int, int]:
  sizes = [cfg.data, cfg.fsdp, cfg.tensor]
  if sizes.count(-1) > 1:
    raise SpecjaxError(f"mesh: at most one of data/fsdp/tensor may be -1, got {sizes}")
  if any(s == 0 or s < -1 for s in sizes):
    raise SpecjaxError(f"mesh: axis sizes must be positive or -1, got {sizes}")
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % fixed:
      raise SpecjaxError(f"mesh: {num_devices} devices cannot be split into {sizes}; pick sizes that divide it")
    sizes[sizes.index(-1)] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise SpecjaxError(
      f"mesh: data*fsdp*tensor = {math.prod(sizes)} but there are {num_devices} devices; "
      "set one axis to -1 or make the product match"
    )
  return tuple(sizes)


def make_mesh(cfg: MeshConfig = MeshConfig(), devices: list | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: every device of every process)."""
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(cfg, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_shardings(logical_specs: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
  """NamedShardings for a pytree of logical PartitionSpecs (e.g. `nn.get_partition_spec(boxed_tree)`).
  optax's `MaskedNode` (the state of a parameter an optimizer leaves out, e.g. `optim.freeze`) holds no
  array and stays as it is (flax would read the empty tuple as a spec)."""

  def one(spec):
    return spec if isinstance(spec, optax.MaskedNode) else nn.logical_to_mesh_sharding(spec, mesh, rules)

  return jax.tree.map(one, logical_specs, is_leaf=lambda x: isinstance(x, (PartitionSpec, optax.MaskedNode)))


def batch_sharding(mesh: Mesh, rules=LOGICAL_RULES) -> NamedSharding:
  """Sharding of a [B, T] batch array: B over the mesh axes that `batch` maps to."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch", "length"), rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_divisor(mesh: Mesh) -> int:
  """The global batch must be a multiple of this (devices along data x fsdp)."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Place a host batch (the same global array on every process) onto the mesh, split along B."""
  sharding = batch_sharding(mesh)
  out = {}
  for k, v in batch.items():
    if jax.process_count() == 1:
      out[k] = jax.device_put(v, sharding)
    else:
      out[k] = jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
  return out
