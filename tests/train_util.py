"""What the tests of pretraining and of the KD losses share: the tiny pretraining run and random logits."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tiny_tokenizer import make_corpus, make_tokenizer

from specjax.config import load_config
from specjax.train.pretrain import PretrainConfig

TINY_PRETRAIN = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "tiny.yaml"


def pretrain_assets(folder: Path) -> tuple[Path, Path]:
  """A tiny tokenizer and a 300-document corpus written into `folder`."""
  return make_tokenizer(folder / "tok"), make_corpus(folder / "corpus.jsonl", n_docs=300)


def pretrain_config(assets, *overrides: str) -> PretrainConfig:
  """configs/pretrain/tiny.yaml on `assets` (from `pretrain_assets`), with key=value overrides."""
  tok, corpus = assets
  return load_config(PretrainConfig, TINY_PRETRAIN, [f"tokenizer={tok}", f"data.source={corpus}", *overrides])


def logged_losses(out) -> list[float]:
  """The training losses a run logged to OUT/metrics.jsonl, in order."""
  return [json.loads(ln)["loss"] for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def random_logits(seed: int, shape: tuple[int, int, int], scale: float = 2.0) -> jax.Array:
  """Float32 normal logits of `shape` ([B, T, V]) times `scale`."""
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32) * scale


def holed_mask(batch: int, length: int, holes: tuple[tuple[int, slice | int], ...]) -> jax.Array:
  """A [batch, length] float32 mask of ones with zeros at each (row, positions) of `holes`."""
  m = np.ones((batch, length), np.float32)
  for row, positions in holes:
    m[row, positions] = 0
  return jnp.asarray(m)
