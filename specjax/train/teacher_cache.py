"""The teacher's features computed once per run: what an EAGLE draft's distillation reads at every step.

An EAGLE-style draft learns from the target's final-normed hidden states f_t and from the target's
next-token distribution, which is the target's head applied to those same features. Neither depends on
the draft, yet the uncached step runs the whole teacher (most of the step's time) on every batch, again
at every epoch. `TeacherCache.build` runs the teacher once over every row the run will read (its training
rows for all its steps, and its held-out rows) and keeps, per row:

    features     float32 [n, D]  f_t at positions 0..n-1 (n = the row's length, at most seq_len)
    teacher_lse  float32 [n]     log-sum-exp of the teacher's full-vocabulary logits at t

`ExampleBatches(..., extras=cache)` right-pads them into every batch as `features` [B, T, D] and
`teacher_lse` [B, T]. With them in the batch, the distillation loss computes the teacher's logits over the
draft's vocabulary from the features with the target's head alone (`head_logits`): loss, metrics and
gradients are those of the uncached step (`tests/test_teacher_cache.py`). Causal attention makes f_t of a
truncated or padded row that of the full row, so one pass per row serves every batch it lands in.

The arrays are saved under the run's folder (`teacher_cache/`, written before its `meta.json`, which
names the target's fingerprint, the rows, their tokens' hash, seq_len and dtype), so a resumed run reads
them back instead of recomputing; a cache whose meta does not match is rebuilt. Its size is printed:
tokens x (D + 1) x 4 bytes (SmolLM2: 2.3 KB per token).

A make-data output made with `--features` already holds both, kept by the sampler as it generated the rows
(float16 features): the cache then reads them from the data and the teacher never runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from specjax.errors import SpecjaxError

BUCKET = 64  # rows are run in batches of equal padded length, a multiple of this (fewer padded positions)


class TeacherCache:
  """Per-row teacher features and log-normalisers (the `extras` protocol of `ExampleBatches`)."""

  def __init__(self, rows: Sequence[int], starts: np.ndarray, lengths: np.ndarray, features: np.ndarray, lse):
    self.index = {int(r): i for i, r in enumerate(rows)}
    self.starts, self.lengths, self.features, self.lse = starts, lengths, features, lse
    self.fields = {"features": (features.shape[1],), "teacher_lse": ()}

  def row(self, r: int) -> dict[str, np.ndarray]:
    if r not in self.index:
      raise KeyError(f"row {r} is not in the teacher cache (it holds the rows the run reads)")
    i = self.index[r]
    lo, hi = self.starts[i], self.starts[i] + self.lengths[i]
    return {"features": np.asarray(self.features[lo:hi], np.float32), "teacher_lse": self.lse[lo:hi]}

  @classmethod
  def build(
    cls,
    folder: str | Path,
    cfg,
    params,
    tokens: Sequence[np.ndarray],
    rows: Sequence[int],
    seq_len: int,
    fingerprint: str,
    batch_size: int = 8,
    stored: tuple[np.ndarray, np.ndarray] | None = None,
  ) -> TeacherCache:
    """The cache of `rows` of `tokens` (each truncated to seq_len) under the teacher (cfg, params):
    read from `folder` when it holds the same one, else computed and saved there. `stored` (the arrays of
    a make-data output made with features, `specjax.data.distill_data.stored_features`, whose target the
    caller has checked) serves the rows directly: no teacher pass, nothing written."""
    folder = Path(folder)
    rows = sorted({int(r) for r in rows})
    if stored is not None:
      full = np.asarray([len(t) for t in tokens], np.int64)
      if int(full.sum()) != len(stored[0]):
        raise SpecjaxError(
          f"the data's stored features cover {len(stored[0])} tokens but its rows hold {int(full.sum())}; "
          "rebuild it with `specjax make-data --features`"
        )
      starts = np.concatenate([[0], np.cumsum(full)])[rows]
      print(f"teacher cache: {len(rows)} rows from the data's stored features (no teacher pass)", file=sys.stderr)
      return cls(rows, starts, np.minimum(full[rows], seq_len), *stored)
    seqs = [np.asarray(tokens[r][:seq_len], np.int32) for r in rows]
    digest = hashlib.sha256()
    for s in seqs:
      digest.update(len(s).to_bytes(4, "little") + s.tobytes())
    meta = {
      "target_fingerprint": fingerprint,
      "rows": len(rows),
      "tokens_sha256": digest.hexdigest(),
      "seq_len": seq_len,
      "dtype": cfg.dtype,
    }
    lengths = np.asarray([len(s) for s in seqs], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    meta_path = folder / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()) == meta:
      feats = np.load(folder / "features.npy", mmap_mode="r")
      lse = np.load(folder / "teacher_lse.npy", mmap_mode="r")
      print(f"teacher cache: read {len(rows)} rows, {int(offsets[-1])} tokens from {folder}", file=sys.stderr)
      return cls(rows, offsets[:-1], lengths, feats, lse)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # a stale or partial cache is never read
    total = int(offsets[-1])
    size_gb = total * (cfg.hidden_size + 1) * 4 / 1e9
    print(f"teacher cache: {len(rows)} rows, {total} tokens, {size_gb:.2f} GB, in {folder}", file=sys.stderr)
    feats = np.lib.format.open_memmap(folder / "features.npy", "w+", np.float32, (total, cfg.hidden_size))
    lse = np.lib.format.open_memmap(folder / "teacher_lse.npy", "w+", np.float32, (total,))
    t0 = time.perf_counter()
    run = _teacher_fn(cfg)  # compiles once per padded length; dropped with its executables on return
    for length, idx in _buckets(lengths, seq_len, batch_size):
      tokens = np.zeros((batch_size, length), np.int32)
      for j, i in enumerate(idx):
        tokens[j, : lengths[i]] = seqs[i]
      f, z = (np.asarray(a) for a in run(params, tokens))
      for j, i in enumerate(idx):
        n = lengths[i]
        feats[offsets[i] : offsets[i] + n] = f[j, :n]
        lse[offsets[i] : offsets[i] + n] = z[j, :n]
    feats.flush()
    lse.flush()
    meta_path.write_text(json.dumps(meta, indent=1))
    dt = time.perf_counter() - t0
    print(f"teacher cache: {total} tokens in {dt:.0f} s ({total / max(dt, 1e-9):.0f} tokens/s)", file=sys.stderr)
    return cls(rows, offsets[:-1], lengths, feats, lse)


def _buckets(lengths: np.ndarray, seq_len: int, batch_size: int):
  """(padded length, row indices) batches: rows sorted by length, each batch padded to a multiple of
  BUCKET (at most seq_len), so there are few padded lengths to compile."""
  order = np.argsort(lengths, kind="stable")
  for k in range(0, len(order), batch_size):
    idx = order[k : k + batch_size]
    yield min(seq_len, -(-int(lengths[idx].max()) // BUCKET) * BUCKET), idx


def _teacher_fn(cfg):
  """jit((params, tokens [B, L]) -> (features float32 [B, L, D], full-vocabulary log-sum-exp [B, L]))."""
  import jax
  import jax.numpy as jnp

  from specjax.models.registry import model_for

  def run(p, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    logits, _, feats = model_for(cfg).apply({"params": p}, tokens, positions, return_features=True)
    return feats.astype(jnp.float32), jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)

  return jax.jit(run)
