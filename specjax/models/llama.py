"""The decoder of every supported family (Llama 2/3.x, Mistral, Qwen2/2.5, Qwen3) in Flax linen.

RMSNorm, rotary embeddings in the Hugging Face rotate-half layout (plain, `linear` or `llama3` scaled),
grouped-query attention (optional q/k/v biases, optional per-head RMSNorm on q and k), SwiGLU MLP,
tied or untied embeddings. A family is data: `ModelConfig.architecture` plus the feature fields it
implies (`specjax.models.config`); build the module, or random parameters, with `specjax.models.registry`
(`model_for(cfg)`, `init_params`, `param_shapes`).
Parameters and compute have separate dtypes; normalisation statistics, softmax and logits are float32.
Layers are stacked with `nn.scan` (one compiled block, parameters with a leading L axis), which keeps
compile time flat in depth; decoding uses `decode_layout` (one parameter set per layer, which XLA CPU
runs about twice as fast inside a decode loop), converted once at load.

One call serves every use:

    logits, cache = model_for(cfg).apply({"params": params}, tokens, positions, cache, attn_mask)

- `cache=None` (training, scoring): attention over the T tokens only, causal unless `attn_mask`
  [B, T, T] says otherwise (packed documents pass a block-diagonal causal mask).
- with a `KVCache`: the T tokens are written behind each row's own `lengths[b]`; they see the cached
  prefix plus the new tokens allowed by `attn_mask` (causal by default, a tree's ancestor mask for
  tree verification). Prefill, one-token decode and gamma+1 verification are the same call.

Dimension letters: B batch, T new tokens, S cache slots, D model, H heads, K kv heads, R = H // K heads
per kv head, Dh head dim, F mlp, V vocab, L layers.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from specjax.errors import SpecjaxError
from specjax.models import kv_cache as kvc
from specjax.models.config import LlamaConfig, ModelConfig
from specjax.models.kv_cache import KVCache

NEG_INF = -1e30
__all__ = ["LlamaConfig", "ModelConfig"]  # the configs' old home: checkpoints and callers import them from here too


def _f32_dot(*args, **kw):
  """A dot_general that accumulates and returns float32 whatever its inputs: the heads' logits keep
  float32 resolution under bfloat16 compute (rounded to bfloat16, logits near 20 would be 1/8 apart)."""
  return jax.lax.dot_general(*args, **kw, preferred_element_type=jnp.float32)


def _dense(
  features: int, axes: tuple[str, str], cfg: ModelConfig, name: str, bias: bool = False, f32_out: bool = False
) -> nn.Dense:
  """A Dense layer in the compute dtype over weights of the param dtype; `f32_out`: float32 outputs (heads)."""
  return nn.Dense(
    features,
    use_bias=bias,
    dtype=cfg.compute_dtype,
    param_dtype=cfg.weight_dtype,
    dot_general=_f32_dot if f32_out else None,
    kernel_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), axes),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
    name=name,
  )


def token_embedding(cfg: ModelConfig) -> nn.Embed:
  """The [V, D] token embedding `embed_tokens` (also the tied head's table)."""
  return nn.Embed(
    cfg.vocab_size,
    cfg.hidden_size,
    dtype=cfg.compute_dtype,
    param_dtype=cfg.weight_dtype,
    embedding_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), ("vocab", "embed")),
    name="embed_tokens",
  )


class RMSNorm(nn.Module):
  """x / rms(x) * scale over the last axis (D, or Dh for Qwen3's q/k norms), statistics in float32."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
    scale = self.param(
      "scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (x.shape[-1],), self.cfg.weight_dtype
    )
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.cfg.rms_norm_eps)
    return scale.astype(self.cfg.compute_dtype) * x32.astype(self.cfg.compute_dtype)


def rope_frequencies(cfg: ModelConfig) -> np.ndarray:
  """The Dh/2 inverse frequencies (float32, as Hugging Face computes them), after `cfg.rope_type` scaling.

  `linear` divides every frequency by the factor. `llama3` divides the low frequencies (wavelength beyond
  original_context / low_freq_factor) by the factor, keeps the high ones (wavelength below
  original_context / high_freq_factor) and interpolates smoothly in between.
  """
  dh = cfg.dh
  inv = (1.0 / np.float32(cfg.rope_theta) ** (np.arange(0, dh, 2, dtype=np.float32) / np.float32(dh))).astype(
    np.float32
  )
  factor = np.float32(cfg.rope_factor)
  if cfg.rope_type == "linear":
    inv = inv / factor
  elif cfg.rope_type == "llama3":
    old = np.float32(cfg.rope_original_context)
    low, high = np.float32(cfg.rope_low_freq_factor), np.float32(cfg.rope_high_freq_factor)
    wavelen = np.float32(2 * math.pi) / inv
    scaled = np.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    inv = np.where(medium, smoothed, scaled)
  return inv.astype(np.float32)


def rope_tables(positions: Int[Array, "B T"], cfg: ModelConfig):
  """cos and sin [B, T, Dh] in the rotate-half layout (frequencies repeated across the two halves)."""
  inv_freq = jnp.asarray(rope_frequencies(cfg))
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, Dh/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: Float[Array, "B T N Dh"], cos, sin) -> Float[Array, "B T N Dh"]:
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  out = x.astype(jnp.float32) * cos[:, :, None, :] + rotated.astype(jnp.float32) * sin[:, :, None, :]
  return out.astype(x.dtype)


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, layer_kv, lengths):
    cfg = self.cfg
    B, T, _ = x.shape
    H, K, Dh = cfg.num_heads, cfg.num_kv_heads, cfg.dh
    q = _dense(H * Dh, ("embed", "heads"), cfg, "q_proj", cfg.qkv_bias)(x).reshape(B, T, H, Dh)
    k = _dense(K * Dh, ("embed", "kv_heads"), cfg, "k_proj", cfg.qkv_bias)(x).reshape(B, T, K, Dh)
    v = _dense(K * Dh, ("embed", "kv_heads"), cfg, "v_proj", cfg.qkv_bias)(x).reshape(B, T, K, Dh)
    if cfg.qk_norm:  # Qwen3: each head normalised over Dh before the rotation
      q, k = RMSNorm(cfg, name="q_norm")(q), RMSNorm(cfg, name="k_norm")(k)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    # Keys as [B, K, Dh, S] and values as [B, K, S, Dh] (the cache's layout): both attention products are
    # then plain batched matmuls, with no per-layer transpose of the cache (on CPU that cost as much as
    # the products themselves at batch 16).
    k, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
    if layer_kv is not None:  # attend over the whole cache
      layer_kv = kvc.write(layer_kv[0], layer_kv[1], k, v, lengths)
      k, v = layer_kv[0].astype(cfg.compute_dtype), layer_kv[1].astype(cfg.compute_dtype)

    q = q.reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)  # [B, K, R, T, Dh]
    scores = jnp.einsum("bkrtd,bkds->bkrts", q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(Dh)
    scores = jnp.where(mask[:, None, None, :, :], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(cfg.compute_dtype)
    out = jnp.einsum("bkrts,bksd->bkrtd", probs, v).transpose(0, 3, 1, 2, 4).reshape(B, T, H * Dh)
    return _dense(cfg.hidden_size, ("heads", "embed"), cfg, "o_proj")(out), layer_kv


class MLP(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    gate = _dense(cfg.intermediate_size, ("embed", "mlp"), cfg, "gate_proj")(x)
    up = _dense(cfg.intermediate_size, ("embed", "mlp"), cfg, "up_proj")(x)
    return _dense(cfg.hidden_size, ("mlp", "embed"), cfg, "down_proj")(nn.silu(gate) * up)


class Block(nn.Module):
  """One pre-norm decoder layer; the scan body (carry = hidden states, scanned input = this layer's kv)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, layer_kv, cos, sin, mask, lengths):
    h, layer_kv = Attention(self.cfg, name="attn")(
      RMSNorm(self.cfg, name="input_norm")(x), cos, sin, mask, layer_kv, lengths
    )
    x = x + h
    x = x + MLP(self.cfg, name="mlp")(RMSNorm(self.cfg, name="post_attn_norm")(x))
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    return x, layer_kv


def decoder_layers(
  cfg: ModelConfig,
  x: Float[Array, "B T D"],
  positions: Int[Array, "B T"],
  cache: KVCache | None,
  attn_mask: Bool[Array, "B T T"] | None,
) -> tuple[Float[Array, "B T D"], KVCache | None]:
  """The L decoder layers over hidden states `x`, called inside a parent module's compact `__call__`
  (their parameters are the parent's `layers` when scanned, else `layers_0 ..`); see `Llama` for the
  cache and mask conventions. Returns the last layer's output (before the final norm) and the cache."""
  B, T = x.shape[:2]
  cos, sin = rope_tables(positions, cfg)
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
  if cfg.scan_layers:
    stack = nn.scan(
      block,
      variable_axes={"params": 0},
      split_rngs={"params": True},
      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
      length=cfg.num_layers,
      metadata_params={nn.PARTITION_NAME: "layers"},
    )(cfg, name="layers")
    stacked = None if kv is None else (jnp.stack(kv[0]), jnp.stack(kv[1]))
    x, stacked = stack(x, stacked, cos, sin, mask, lengths)
    if kv is not None:
      kv = (tuple(stacked[0]), tuple(stacked[1]))
  else:
    new_k, new_v = [], []
    for i in range(cfg.num_layers):
      layer_kv = None if kv is None else (kv[0][i], kv[1][i])
      x, layer_kv = block(cfg, name=f"layers_{i}")(x, layer_kv, cos, sin, mask, lengths)
      if kv is not None:
        new_k.append(layer_kv[0])
        new_v.append(layer_kv[1])
    if kv is not None:
      kv = (tuple(new_k), tuple(new_v))
  if cache is not None:
    cache = KVCache(k=kv[0], v=kv[1], lengths=cache.lengths + T)
  return x, cache


class Llama(nn.Module):
  """The decoder. See the module docstring for the calling convention."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
    self,
    tokens: Int[Array, "B T"],
    positions: Int[Array, "B T"],
    cache: KVCache | None = None,
    attn_mask: Bool[Array, "B T T"] | None = None,
    logits_at: Int[Array, "B N"] | None = None,
    return_features: bool = False,
  ):
    """`logits_at` [B, N]: compute logits only at these token indices (then [B, N, V]); a prefill needs
    them after each prompt's last token alone, and the head over every prompt position costs more than
    the rest of the prefill. `return_features`: also return the final-normed hidden states [B, T, D] of
    every position (what an EAGLE-style draft reads), as `(logits, cache, features)`."""
    cfg = self.cfg
    embed = token_embedding(cfg)
    x = embed(tokens)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x, cache = decoder_layers(cfg, x, positions, cache, attn_mask)
    norm = RMSNorm(cfg, name="norm")
    features = norm(x) if return_features else None
    h = x if features is None else features
    if logits_at is not None:
      h = jnp.take_along_axis(h, logits_at[..., None], axis=1)
    logits = self.head(embed, h if return_features else norm(h))
    return (logits, cache, features) if return_features else (logits, cache)

  def head(self, embed: nn.Embed, x: Float[Array, "B T D"]) -> Float[Array, "B T V"]:
    """Logits (float32) of final-normed hidden states, tied or untied, full or reduced vocabulary."""
    cfg = self.cfg
    f32 = jnp.float32  # products accumulate and return float32 (see `_f32_dot`)
    h = x.astype(cfg.compute_dtype)
    table = embed.embedding
    if cfg.tie_embeddings and cfg.head_ids is not None:  # the tied head reads only the K kept rows
      rows = jnp.take(table, jnp.asarray(cfg.head_ids, jnp.int32), axis=0).astype(cfg.compute_dtype)
      logits = jnp.einsum("btd,kd->btk", h, rows, preferred_element_type=f32)
    elif cfg.tie_embeddings and not cfg.scan_layers:
      # Decode layout: a [D, V] copy of the table as well (decode_layout fills it; init copies the table).
      # One row is a matrix-vector product, which XLA CPU wants on [D, V] (given only the [V, D] table,
      # it transposes the whole table on every step of a decode loop); several rows run faster on [V, D].
      head_t = self.param("head_t", lambda *_: jnp.asarray(table).T)
      if x.shape[0] * x.shape[1] == 1:
        logits = jnp.matmul(h, head_t.astype(cfg.compute_dtype), preferred_element_type=f32)
      else:
        logits = jnp.dot(h, table.astype(cfg.compute_dtype).T, preferred_element_type=f32)
    elif cfg.tie_embeddings:
      logits = jnp.dot(h, table.astype(cfg.compute_dtype).T, preferred_element_type=f32)
    else:
      logits = _dense(cfg.head_size, ("embed", "vocab"), cfg, "lm_head", f32_out=True)(x)
    return logits.astype(f32)


def head_logits(cfg: ModelConfig, params: dict, x: Float[Array, "... D"], ids=None) -> Float[Array, "... K"]:
  """`Llama.head` from a parameter tree without running the model: float32 logits of final-normed hidden
  states x, over the vocabulary columns `ids` only when given (e.g. a draft's reduced vocabulary; the
  full vocabulary otherwise). For a full-vocabulary model (not a reduced-head draft)."""
  if cfg.head_ids is not None:
    raise SpecjaxError("head_logits reads a full-vocabulary head; this model has a reduced one")
  cols = None if ids is None else jnp.asarray(ids, jnp.int32)
  h = x.astype(cfg.compute_dtype)
  if cfg.tie_embeddings:
    table = params["embed_tokens"]["embedding"]  # [V, D]
    rows = table if cols is None else jnp.take(table, cols, axis=0)
    logits = jnp.einsum("...d,kd->...k", h, rows.astype(cfg.compute_dtype), preferred_element_type=jnp.float32)
  else:
    kernel = params["lm_head"]["kernel"]  # [D, V]
    kernel = kernel if cols is None else jnp.take(kernel, cols, axis=1)
    logits = jnp.einsum("...d,dk->...k", h, kernel.astype(cfg.compute_dtype), preferred_element_type=jnp.float32)
  return logits.astype(jnp.float32)


def decode_layout(cfg: ModelConfig, params: dict) -> tuple[ModelConfig, dict]:
  """The same model with the parameter layout XLA decodes fastest: one parameter set per layer instead
  of `nn.scan`'s stacked [L, ...] arrays, which XLA CPU slices on every layer of every call, and for a
  tied head a pre-transposed [D, V] copy of the embedding as `head_t`, used by one-row calls (inside a
  decode loop XLA otherwise transposes the whole table for `embed.attend` on every step; a reduced
  vocabulary's K rows become an untied [D, K] `lm_head`). The function is unchanged. `params=None`
  gives the decode-layout config alone (params set later, e.g. by a training hook)."""
  reduced = cfg.tie_embeddings and cfg.head_ids is not None
  dcfg = cfg.replace(scan_layers=False, tie_embeddings=cfg.tie_embeddings and not reduced)
  if params is None:
    return dcfg, None
  out = {k: v for k, v in params.items() if k != "layers"}
  if cfg.scan_layers:
    for i in range(cfg.num_layers):
      out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
  else:
    out.update({k: v for k, v in params.items() if k.startswith("layers_")})
  if cfg.tie_embeddings:
    table = jnp.asarray(params["embed_tokens"]["embedding"])
    if reduced:
      out["lm_head"] = {"kernel": jnp.take(table, jnp.asarray(cfg.head_ids, jnp.int32), axis=0).T}
    else:
      out["head_t"] = table.T
  return dcfg, out


def expand_logits(cfg: ModelConfig, logits: Float[Array, "... K"], vocab_size: int) -> Float[Array, "... V"]:
  """Reduced-head logits over the full vocabulary: head_ids[i] gets logits[..., i], every other token
  NEG_INF (probability exactly 0 after softmax, never an argmax). Identity without `head_ids`."""
  if cfg.head_ids is None:
    return logits
  ids = np.asarray(cfg.head_ids)
  inverse = np.full((vocab_size,), len(ids), np.int32)  # K = the NEG_INF column appended below
  keep = ids < vocab_size
  inverse[ids[keep]] = np.arange(len(ids), dtype=np.int32)[keep]
  padded = jnp.concatenate([logits, jnp.full(logits.shape[:-1] + (1,), NEG_INF, logits.dtype)], axis=-1)
  return jnp.take(padded, jnp.asarray(inverse), axis=-1)
