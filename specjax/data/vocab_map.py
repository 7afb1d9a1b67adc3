"""Reduced draft vocabularies (FR-Spec style): the K target tokens a drafter's head may propose.

    ids, stats = rank_tokens(token_lists, vocab_size=49152, size=8192, always=(2,))
    write_vocab_map("vocab.json", ids, stats)       # {"format": ..., "ids": [...], "coverage": ...}
    cfg = cfg.replace(head_ids=read_vocab_map("vocab.json"))

Tokens are ranked by their frequency in text the *target* generated (the responses of a `specjax make-data`
dataset), ties and unseen tokens by id (byte-pair merges are numbered roughly by frequency). `always`
tokens (the EOS ids) are kept whatever their count. The map lives in the drafter's config
(`ModelConfig.head_ids`), so it is saved and loaded with every checkpoint and `specjax generate / bench
--draft DIR` uses it directly; the file here is what `specjax vocab-map` writes and
`pretrain model.head_ids_from=FILE` reads.

Exactness: the drafter's probability is 0 outside its vocabulary (`specjax.models.llama.expand_logits`),
so speculative sampling keeps the target's distribution with the ordinary rejection rule. Training compares
the drafter with the teacher *restricted to the K tokens and renormalised* (`restrict_teacher`): the draft
distribution closest to that is also the one that maximises the real acceptance sum_v min(p, q) over
drafts confined to the K tokens (it reaches the teacher's mass inside the set, the most any such draft can).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from specjax.errors import SpecjaxError
from specjax.fileio import atomic_write_text

FORMAT = "specjax-vocab-map-v1"


def token_counts(token_lists: Iterable[Sequence[int]], vocab_size: int) -> np.ndarray:
  """How often each token id occurs in `token_lists` ([vocab_size] int64)."""
  counts = np.zeros((vocab_size,), np.int64)
  for toks in token_lists:
    a = np.asarray(toks, np.int64)
    a = a[(a >= 0) & (a < vocab_size)]
    counts += np.bincount(a, minlength=vocab_size)
  return counts


def rank_tokens(
  token_lists: Iterable[Sequence[int]], vocab_size: int, size: int, always: Sequence[int] = ()
) -> tuple[tuple[int, ...], dict]:
  """The `size` most frequent token ids (ties and unseen tokens by id), `always` included; and stats:
  coverage = share of the counted tokens inside the set, seen = distinct tokens counted."""
  if not 0 < size <= vocab_size:
    raise SpecjaxError(f"the draft vocabulary size must be in 1..{vocab_size}, got {size}")
  counts = token_counts(token_lists, vocab_size)
  order = np.lexsort((np.arange(vocab_size), -counts))  # by count descending, then id ascending
  forced = [int(t) for t in dict.fromkeys(always) if 0 <= int(t) < vocab_size]
  if len(forced) > size:
    raise SpecjaxError(f"{len(forced)} tokens must always be kept but the draft vocabulary has only {size}")
  rest = [int(t) for t in order if int(t) not in set(forced)][: size - len(forced)]
  chosen = sorted(rest + forced, key=lambda t: (-counts[t], t))
  total = int(counts.sum())
  stats = {
    "size": size,
    "vocab_size": vocab_size,
    "counted_tokens": total,
    "seen": int((counts > 0).sum()),
    "coverage": float(counts[chosen].sum() / total) if total else None,
  }
  return tuple(chosen), stats


def write_vocab_map(path: str | os.PathLike, ids: Sequence[int], stats: dict | None = None) -> Path:
  record = {"format": FORMAT, **(stats or {}), "ids": [int(i) for i in ids]}
  atomic_write_text(path, json.dumps(record) + "\n")
  return Path(path)


def read_vocab_map(path: str | os.PathLike) -> tuple[int, ...]:
  path = Path(path)
  try:
    record = json.loads(path.read_text())
  except FileNotFoundError:
    raise SpecjaxError(f"vocabulary map {path} does not exist; make it with `specjax vocab-map`") from None
  except json.JSONDecodeError as e:
    raise SpecjaxError(f"vocabulary map {path} is corrupt ({e}); make it again with `specjax vocab-map`") from None
  if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("ids"), list):
    raise SpecjaxError(f"{path} is not a specjax vocabulary map; make one with `specjax vocab-map`")
  return tuple(int(i) for i in record["ids"])


def dataset_responses(data_dir: str | os.PathLike) -> Iterable[list[int]]:
  """The generated (response) token ids of each row of a `specjax make-data` dataset."""
  from specjax.data.distill_data import load_distill_data

  ds, _ = load_distill_data(data_dir)
  for row in ds:
    toks, mask = row["tokens"], row["response_mask"]
    yield [t for t, m in zip(toks, mask, strict=True) if m]


def restrict_teacher(teacher_logits, head_ids: Sequence[int] | None):
  """Teacher logits [..., V] -> [..., K] at the drafter's head ids (softmax renormalises over the K)."""
  if head_ids is None:
    return teacher_logits
  import jax.numpy as jnp

  return jnp.take(teacher_logits, jnp.asarray(head_ids, jnp.int32), axis=-1)


def reduce_head(cfg, params, ids: Sequence[int]):
  """A full-vocabulary drafter (config, params) with its head cut to `ids`: a tied head just reads the kept
  rows of the embedding; an untied `lm_head` keeps the columns of the kept tokens."""
  import jax.numpy as jnp

  if cfg.head_ids is not None:
    raise SpecjaxError("the drafter already has a reduced vocabulary; start from a full-vocabulary checkpoint")
  new_cfg = cfg.replace(head_ids=tuple(int(i) for i in ids))
  if cfg.tie_embeddings:
    return new_cfg, params
  params = dict(params)
  kernel = jnp.asarray(params["lm_head"]["kernel"])
  params["lm_head"] = dict(params["lm_head"], kernel=jnp.take(kernel, jnp.asarray(new_cfg.head_ids), axis=1))
  return new_cfg, params
