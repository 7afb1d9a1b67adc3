"""A Llama-family decoder in Flax linen.

RMSNorm, rotary embeddings in the Hugging Face rotate-half layout, grouped-query attention, SwiGLU MLP,
tied or untied embeddings. Parameters and compute have separate dtypes; normalisation statistics,
softmax and logits are float32. Layers are stacked with `nn.scan` (one compiled block, parameters with
a leading L axis), which keeps compile time flat in depth.

One call serves every use:

    logits, cache = Llama(cfg).apply({"params": params}, tokens, positions, cache, attn_mask)

- `cache=None` (training, scoring): attention over the T tokens only, causal unless `attn_mask`
  [B, T, T] says otherwise (packed documents pass a block-diagonal causal mask).
- with a `KVCache`: the T tokens are written behind each row's own `lengths[b]`; they see the cached
  prefix plus the new tokens allowed by `attn_mask` (causal by default, a tree's ancestor mask for
  tree verification). Prefill, one-token decode and gamma+1 verification are the same call.

Dimension letters: B batch, T new tokens, S cache slots, D model, H heads, K kv heads, R = H // K heads
per kv head, Dh head dim, F mlp, V vocab, L layers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from specjax.errors import SpecjaxError
from specjax.models import kv_cache as kvc
from specjax.models.kv_cache import KVCache

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
NEG_INF = -1e30


# Config fields that choose numerics, memory or initialisation, not the function a model computes from its
# parameters: two configs that differ only here are the same model (e.g. the target fingerprint of
# `specjax.data.distill_data` ignores them). Add every new runtime-only field (e.g. `scan_layers`) here.
NON_FUNCTIONAL_FIELDS = frozenset({"dtype", "param_dtype", "remat", "scan_layers", "initializer_range"})


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture and numerics of a Llama-family model (hashable, so it can be a static argument)."""

  vocab_size: int
  hidden_size: int  # D
  intermediate_size: int  # F
  num_layers: int  # L
  num_heads: int  # H
  num_kv_heads: int  # K
  head_dim: int | None = None  # Dh; defaults to D // H
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-5
  tie_embeddings: bool = False
  max_position_embeddings: int = 2048
  initializer_range: float = 0.02
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  remat: bool = False  # rematerialise each block in the backward pass (training memory)

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"):
      if getattr(self, name) < 1:
        raise SpecjaxError(f"model config: {name} must be >= 1, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise SpecjaxError(
        f"model config: num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
      )
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise SpecjaxError(
        f"model config: hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads}); "
        "set head_dim explicitly"
      )
    if self.head_dim is not None and self.head_dim % 2:
      raise SpecjaxError(f"model config: head_dim must be even for rotary embeddings, got {self.head_dim}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise SpecjaxError(f"model config: {name} must be one of {sorted(DTYPES)}, got {getattr(self, name)!r}")

  @property
  def dh(self) -> int:
    return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return DTYPES[self.param_dtype]

  def replace(self, **changes: Any) -> LlamaConfig:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> LlamaConfig:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise SpecjaxError(f"model config: unknown keys {unknown}; valid keys are {sorted(names)}")
    return cls(**d)

  def init_cache(self, batch_size: int, size: int, dtype: Any = None) -> KVCache:
    """An empty KV cache of S = `size` slots per row, in the compute dtype unless told otherwise."""
    return KVCache.init(self.num_layers, batch_size, size, self.num_kv_heads, self.dh, dtype or self.compute_dtype)


def _dense(features: int, axes: tuple[str, str], cfg: LlamaConfig, name: str) -> nn.Dense:
  return nn.Dense(
    features,
    use_bias=False,
    dtype=cfg.compute_dtype,
    param_dtype=cfg.weight_dtype,
    kernel_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), axes),
    name=name,
  )


class RMSNorm(nn.Module):
  """x / rms(x) * scale, with the statistics in float32 (as Hugging Face Llama)."""

  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
    scale = self.param(
      "scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (x.shape[-1],), self.cfg.weight_dtype
    )
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
    return scale.astype(self.cfg.compute_dtype) * x32.astype(self.cfg.compute_dtype)


def rope_tables(positions: Int[Array, "B T"], head_dim: int, theta: float):
  """cos and sin [B, T, Dh] in the rotate-half layout (frequencies repeated across the two halves)."""
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, Dh/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: Float[Array, "B T N Dh"], cos, sin) -> Float[Array, "B T N Dh"]:
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  out = x.astype(jnp.float32) * cos[:, :, None, :] + rotated.astype(jnp.float32) * sin[:, :, None, :]
  return out.astype(x.dtype)


class Attention(nn.Module):
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, layer_kv, lengths):
    cfg = self.cfg
    B, T, _ = x.shape
    H, K, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.dh
    q = _dense(H * Dh, ("embed", "heads"), cfg, "q_proj")(x).reshape(B, T, H, Dh)
    k = _dense(K * Dh, ("embed", "kv_heads"), cfg, "k_proj")(x).reshape(B, T, K, Dh)
    v = _dense(K * Dh, ("embed", "kv_heads"), cfg, "v_proj")(x).reshape(B, T, K, Dh)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    if layer_kv is not None:  # attend over the whole cache: [B, S, K, Dh]
      ck, cv = kvc.write(layer_kv[0], layer_kv[1], k, v, lengths)
      layer_kv = (ck, cv)
      k, v = ck.astype(cfg.compute_dtype), cv.astype(cfg.compute_dtype)

    q = q.reshape(B, T, K, H // K, Dh)
    scores = jnp.einsum("btkrd,bskd->bkrts", q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(Dh)
    scores = jnp.where(mask[:, None, None, :, :], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(cfg.compute_dtype)
    out = jnp.einsum("bkrts,bskd->btkrd", probs, v).reshape(B, T, H * Dh)
    return _dense(cfg.hidden_size, ("heads", "embed"), cfg, "o_proj")(out), layer_kv


class MLP(nn.Module):
  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    gate = _dense(cfg.intermediate_size, ("embed", "mlp"), cfg, "gate_proj")(x)
    up = _dense(cfg.intermediate_size, ("embed", "mlp"), cfg, "up_proj")(x)
    return _dense(cfg.hidden_size, ("mlp", "embed"), cfg, "down_proj")(nn.silu(gate) * up)


class Block(nn.Module):
  """One pre-norm decoder layer; the scan body (carry = hidden states, scanned input = this layer's kv)."""

  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x, layer_kv, cos, sin, mask, lengths):
    h, layer_kv = Attention(self.cfg, name="attn")(
      RMSNorm(self.cfg, name="input_norm")(x), cos, sin, mask, layer_kv, lengths
    )
    x = x + h
    x = x + MLP(self.cfg, name="mlp")(RMSNorm(self.cfg, name="post_attn_norm")(x))
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    return x, layer_kv


class Llama(nn.Module):
  """The decoder. See the module docstring for the calling convention."""

  cfg: LlamaConfig

  @nn.compact
  def __call__(
    self,
    tokens: Int[Array, "B T"],
    positions: Int[Array, "B T"],
    cache: KVCache | None = None,
    attn_mask: Bool[Array, "B T T"] | None = None,
  ) -> tuple[Float[Array, "B T V"], KVCache | None]:
    cfg = self.cfg
    B, T = tokens.shape
    embed = nn.Embed(
      cfg.vocab_size,
      cfg.hidden_size,
      dtype=cfg.compute_dtype,
      param_dtype=cfg.weight_dtype,
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), ("vocab", "embed")),
      name="embed_tokens",
    )
    x = embed(tokens)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    cos, sin = rope_tables(positions, cfg.dh, cfg.rope_theta)

    if attn_mask is None:
      attn_mask = jnp.broadcast_to(jnp.tril(jnp.ones((T, T), bool)), (B, T, T))
    if cache is None:
      mask, lengths, kv = attn_mask, None, None
    else:
      mask = kvc.attention_mask(cache.lengths, cache.size, attn_mask)
      lengths, kv = cache.lengths, (cache.k, cache.v)

    block = Block
    if cfg.remat:
      block = nn.remat(Block, prevent_cse=False)
    stack = nn.scan(
      block,
      variable_axes={"params": 0},
      split_rngs={"params": True},
      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
      length=cfg.num_layers,
      metadata_params={nn.PARTITION_NAME: "layers"},
    )(cfg, name="layers")
    x, kv = stack(x, kv, cos, sin, mask, lengths)
    x = RMSNorm(cfg, name="norm")(x)

    if cfg.tie_embeddings:
      logits = embed.attend(x.astype(cfg.compute_dtype))
    else:
      logits = _dense(cfg.vocab_size, ("embed", "vocab"), cfg, "lm_head")(x)
    logits = logits.astype(jnp.float32)

    if cache is not None:
      cache = KVCache(k=kv[0], v=kv[1], lengths=cache.lengths + T)
    return logits, cache


def init_params(cfg: LlamaConfig, key: jax.Array) -> dict:
  """Random parameters (boxed logical-axis metadata removed)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  variables = Llama(cfg).init(key, tokens, tokens)
  return nn.unbox(variables["params"])


def param_shapes(cfg: LlamaConfig) -> dict:
  """Parameter ShapeDtypeStructs without allocating anything (works for a 7B config on a laptop)."""
  return jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))


def count_params(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
