"""The key/value cache: an explicit, fixed-size pytree with one length per row.

Shapes use the house letters: L layers, B batch, S cache slots, K kv heads, Dh head dim.

Keys and values are held as one array per layer (a tuple of L), not one stacked [L, ...] array:
inside a compiled decode loop each layer's buffer is then updated in place, whereas writing one layer
of a stacked array made XLA copy the whole stack for every layer of every step. Keys are [B, K, Dh, S]
and values [B, K, S, Dh], the layouts the two attention matmuls read without a transpose.

A model call with T new tokens writes their keys and values at slots `lengths[b] .. lengths[b] + T - 1`
of row b and returns the cache with `lengths + T`. Nothing else ever moves, so:
- rollback (speculative rejection) is `cache.replace(lengths=accepted_lengths)`: slots past the length
  are stale and are overwritten by the next write;
- rows hold different numbers of tokens (ragged acceptance, prompts of different lengths) in one
  fixed shape;
- tree verification writes all tree nodes, then `compact` gathers the accepted path's entries into
  consecutive slots.

All functions are pure; callers must make sure `lengths + T <= S` (a write past the end would be
clamped by XLA, so the decoders size the cache up front and check it on the host).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Bool, Float, Int


@struct.dataclass
class KVCache:
  """Per-layer keys and values plus the number of valid slots of each row."""

  k: tuple[Float[Array, "B K Dh S"], ...]  # one per layer
  v: tuple[Float[Array, "B K S Dh"], ...]
  lengths: Int[Array, " B"]

  @property
  def size(self) -> int:
    """S, the number of slots of each row."""
    return self.v[0].shape[2]

  @property
  def batch_size(self) -> int:
    return self.k[0].shape[0]

  @property
  def num_layers(self) -> int:
    return len(self.k)

  @classmethod
  def init(
    cls, num_layers: int, batch_size: int, size: int, num_kv_heads: int, head_dim: int, dtype=jnp.float32
  ) -> KVCache:
    """An empty cache (all lengths 0)."""
    return cls(
      k=tuple(jnp.zeros((batch_size, num_kv_heads, head_dim, size), dtype) for _ in range(num_layers)),
      v=tuple(jnp.zeros((batch_size, num_kv_heads, size, head_dim), dtype) for _ in range(num_layers)),
      lengths=jnp.zeros((batch_size,), jnp.int32),
    )

  def rollback(self, lengths: Int[Array, " B"]) -> KVCache:
    """Forget every slot at or past `lengths` (shapes unchanged)."""
    return self.replace(lengths=lengths.astype(jnp.int32))

  def compact(self, start: Int[Array, " B"], src: Int[Array, "B P"], count: Int[Array, " B"]) -> KVCache:
    """Move the entries at slots `src[b, :count[b]]` to slots `start[b] .. start[b] + count[b] - 1`.

    Used after tree verification: the accepted root-to-leaf path is scattered over the tree's slots;
    this gathers it behind the committed prefix and sets `lengths = start + count`. `src` entries at or
    past `count` are ignored (they may hold anything in range). Needs `start + P <= S`, which holds
    whenever the P tree nodes were themselves written at `start ..`.
    """
    P = src.shape[1]

    def one_row(x, s0, idx, n, axis):  # x: one row's keys [K, Dh, S] (axis 2) or values [K, S, Dh] (axis 1)
      gathered = jnp.take(x, idx, axis=axis)  # P slots
      dst = s0 + jnp.arange(P)
      # Slots past `count` get their own current value back, i.e. stay unchanged.
      current = jnp.take(x, jnp.minimum(dst, x.shape[axis] - 1), axis=axis)
      keep = (jnp.arange(P) < n).reshape([P if a == axis else 1 for a in range(x.ndim)])
      return jax.lax.dynamic_update_slice_in_dim(x, jnp.where(keep, gathered, current), s0, axis=axis)

    move = jax.vmap(one_row, in_axes=(0, 0, 0, 0, None))
    return KVCache(
      k=tuple(move(x, start, src, count, 2) for x in self.k),
      v=tuple(move(x, start, src, count, 1) for x in self.v),
      lengths=(start + count).astype(jnp.int32),
    )


def write(
  layer_k: Float[Array, "B K Dh S"],
  layer_v: Float[Array, "B K S Dh"],
  new_k: Float[Array, "B K Dh T"],
  new_v: Float[Array, "B K T Dh"],
  lengths: Int[Array, " B"],
) -> tuple[Float[Array, "B K Dh S"], Float[Array, "B K S Dh"]]:
  """Write T new entries of one layer at each row's own offset `lengths[b]` (in place in a decode loop)."""

  def one_row(k, v, nk, nv, start):
    k = jax.lax.dynamic_update_slice_in_dim(k, nk.astype(k.dtype), start, axis=2)
    v = jax.lax.dynamic_update_slice_in_dim(v, nv.astype(v.dtype), start, axis=1)
    return k, v

  return jax.vmap(one_row)(layer_k, layer_v, new_k, new_v, lengths)


def attention_mask(lengths: Int[Array, " B"], size: int, new_mask: Bool[Array, "B T T"]) -> Bool[Array, "B T S"]:
  """Which cache slots each of the T new queries may attend to.

  A query sees every slot of the committed prefix (`s < lengths[b]`) and, among the T new slots
  written at `lengths[b] ..`, exactly those `new_mask[b, t, j]` allows (causal for ordinary
  decoding, ancestors-and-self for a token tree).
  """
  T = new_mask.shape[-1]
  s = jnp.arange(size)[None, None, :]  # [1, 1, S]
  j = s - lengths[:, None, None]  # [B, 1, S] index into the new block
  in_prefix = j < 0
  in_block = (j >= 0) & (j < T)
  jc = jnp.clip(j, 0, T - 1)
  block = jnp.take_along_axis(new_mask, jnp.broadcast_to(jc, new_mask.shape[:2] + (size,)), axis=2)
  return in_prefix | (in_block & block)
