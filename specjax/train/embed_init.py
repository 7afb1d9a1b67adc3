"""Initialise a drafter's token embeddings from its target's embedding matrix.

The target's embedding E [V, Dt] already places tokens in a useful geometry. For a drafter of width
D < Dt we keep the most of it that fits:

- `pca`: center E, project onto its top-D principal directions (eigenvectors of the Dt x Dt covariance);
- `projection`: a seeded Gaussian random projection E @ R, R [Dt, D] (Johnson-Lindenstrauss).

Either result is rescaled so its entries have the standard deviation of the drafter's own random init
(`initializer_range`), which keeps the early training dynamics (and tied logits) in the usual range.
"""

from __future__ import annotations

import numpy as np

from specjax.errors import SpecjaxError
from specjax.models.llama import LlamaConfig


def project_embedding(target_embed: np.ndarray, cfg: LlamaConfig, method: str, seed: int = 0) -> np.ndarray:
  """[V, Dt] target embedding -> [V, D] drafter embedding (float32)."""
  E = np.asarray(target_embed, np.float32)
  V, Dt = E.shape
  D = cfg.hidden_size
  if V != cfg.vocab_size:
    raise SpecjaxError(
      f"the target's vocabulary ({V}) differs from the drafter's ({cfg.vocab_size}); embeddings can only be "
      "initialised from a target with the same tokenizer"
    )
  if method == "pca":
    if D > Dt:
      raise SpecjaxError(f"pca embedding init needs hidden_size ({D}) <= the target's ({Dt}); use 'projection'")
    Ec = E - E.mean(axis=0, keepdims=True)
    cov = (Ec.T.astype(np.float64) @ Ec.astype(np.float64)) / V
    evals, evecs = np.linalg.eigh(cov)
    W = evecs[:, np.argsort(evals)[::-1][:D]].astype(np.float32)  # [Dt, D]
    out = Ec @ W
  elif method == "projection":
    R = np.random.default_rng(seed).standard_normal((Dt, D)).astype(np.float32) / np.sqrt(D)
    out = E @ R
  else:
    raise SpecjaxError(f"unknown embedding init {method!r}; use random, pca or projection")
  out = out / max(float(out.std()), 1e-12) * cfg.initializer_range
  return out.astype(np.float32)
