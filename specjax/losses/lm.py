"""Masked next-token cross-entropy in float32, with an optional z-loss.

The batch carries its targets explicitly (`targets[b, t]` is the token that position t must predict) and
a float mask (`loss_mask[b, t]` = 1 where that prediction counts), so packing, padding and
response-only masks are all decided by the data pipeline, never here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


def cross_entropy(
  logits: Float[Array, "B T V"],
  targets: Int[Array, "B T"],
  loss_mask: Float[Array, "B T"],
  z_loss: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean masked cross-entropy over the counted positions (+ z_loss * mean(logsumexp^2)).

  Args:
    logits: next-token logits (any float dtype; computed in float32).
    targets: the token each position must predict.
    loss_mask: 1.0 where the prediction counts, 0.0 elsewhere.
    z_loss: weight of the log-partition penalty (PaLM's z-loss); 0 disables it.

  Returns:
    (loss, metrics) with metrics `nll` (the plain cross-entropy), `z_loss`, `accuracy` (argmax == target)
    and `tokens` (number of counted positions).
  """
  logits = logits.astype(jnp.float32)
  mask = loss_mask.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)  # [B, T]
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  count = jnp.sum(mask)
  denom = jnp.maximum(count, 1.0)
  nll = jnp.sum((lse - target_logit) * mask) / denom
  zl = jnp.sum(jnp.square(lse) * mask) / denom
  loss = nll + z_loss * zl if z_loss else nll
  accuracy = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * mask) / denom
  return loss, {"nll": nll, "z_loss": zl, "accuracy": accuracy, "tokens": count}
