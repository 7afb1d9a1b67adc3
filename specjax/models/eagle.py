"""An EAGLE-style draft: a small decoder over the target's own features (Li et al. 2024, EAGLE-1 layout).

The target's final-normed hidden state f_t (`Llama(..., return_features=True)`) already decides the
target's next token; the draft predicts the *next* feature from it and the token that followed:

    g_{t+1} = norm(layers(fc([embed(x_{t+1}), f_t])))      logits(x_{t+2}) = lm_head(g_{t+1})

so a round drafts y_1 from (f_{L-1}, cur), then y_2 from (g, y_1) with its own prediction g standing in
for the target's feature, and so on. The target's verification call returns the true features of the
tokens it accepts, which replace the draft's guesses before the next round (`specjax.decode.eagle`).

One call serves training and decoding, like `Llama`:

    logits, cache, g = EagleDraft(cfg).apply({"params": p}, tokens, positions, cache, attn_mask,
                                             logits_at, features=f, return_features=True)

with `features` [B, T, D] the target features paired with `tokens` [B, T] (the feature of the token
*before* each one). Its config is a `ModelConfig` of kind "eagle" with the target's hidden size (a
reduced vocabulary's `head_ids` keeps the head small: the head is most of an EAGLE draft's cost), and
its checkpoint is an ordinary specjax checkpoint. `specjax.models.registry.from_target` builds one from a
target: the token embedding, final norm and head are copied from the target, the layers and `fc` start random.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from specjax.errors import SpecjaxError
from specjax.models.config import ModelConfig
from specjax.models.kv_cache import KVCache
from specjax.models.llama import RMSNorm, _dense, decoder_layers, token_embedding


class EagleDraft(nn.Module):
  """The draft. See the module docstring for the calling convention."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
    self,
    tokens: Int[Array, "B T"],
    positions: Int[Array, "B T"],
    cache: KVCache | None = None,
    attn_mask: Bool[Array, "B T T"] | None = None,
    logits_at: Int[Array, "B N"] | None = None,
    features: Float[Array, "B T D"] | None = None,
    return_features: bool = False,
  ):
    """`features=None` (parameter init only) reads zeros. Returns `(logits, cache)`, or with
    `return_features` `(logits, cache, g)`: g [B, T, D] the predicted next features."""
    cfg = self.cfg
    B, T = tokens.shape
    embed = token_embedding(cfg)
    if features is None:
      features = jnp.zeros((B, T, cfg.hidden_size), cfg.compute_dtype)
    if features.shape != (B, T, cfg.hidden_size):
      raise SpecjaxError(f"eagle draft: features must be [{B}, {T}, {cfg.hidden_size}], got {list(features.shape)}")
    x = jnp.concatenate([embed(tokens), features.astype(cfg.compute_dtype)], axis=-1)
    x = _dense(cfg.hidden_size, ("mlp", "embed"), cfg, "fc")(x)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x, cache = decoder_layers(cfg, x, positions, cache, attn_mask)
    g = RMSNorm(cfg, name="norm")(x)
    h = g if logits_at is None else jnp.take_along_axis(g, logits_at[..., None], axis=1)
    logits = _dense(cfg.head_size, ("embed", "vocab"), cfg, "lm_head", f32_out=True)(h).astype(jnp.float32)
    return (logits, cache, g) if return_features else (logits, cache)


def eagle_config(target: ModelConfig, num_layers: int = 1, head_ids=None) -> ModelConfig:
  """The config of an EAGLE draft for `target`: its widths, `num_layers` layers, untied head."""
  if target.kind != "decoder":
    raise SpecjaxError("an eagle draft is built from a target language model, not from another draft")
  if num_layers < 1:
    raise SpecjaxError(f"an eagle draft needs at least one layer, got {num_layers}")
  return target.replace(
    kind="eagle",
    num_layers=num_layers,
    tie_embeddings=False,
    head_ids=None if head_ids is None else tuple(int(i) for i in head_ids),
    scan_layers=True,
    remat=False,
  )


def unrolled_mask(T: int, steps: int) -> np.ndarray:
  """The attention mask [J*T, J*T] of a training call that unrolls J = `steps` draft steps at once
  (EAGLE-3's training-time test): block j (0-based) holds, at index t, the pair the draft builds at
  decode step j + 1 of a round whose `cur` is pair t of block 0. Like the decode cache, its query sees
  block 0's pairs 0..t (true features) and the pairs of blocks 1..j at the same index t (its own
  predictions of this round)."""
  causal = np.tril(np.ones((T, T), bool))
  same = np.eye(T, dtype=bool)
  mask = np.zeros((steps * T, steps * T), bool)
  for j in range(steps):
    rows = slice(j * T, (j + 1) * T)
    mask[rows, :T] = causal
    for i in range(1, j + 1):
      mask[rows, i * T : (i + 1) * T] = same
  return mask
