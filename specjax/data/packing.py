"""Packing a token store into fixed [B, T] batches with segment ids, and the packed attention mask.

The store's token stream (documents back to back) is cut into rows of T + 1 tokens that overlap by one
(row r covers stream[r*T : r*T + T + 1]); inputs are the first T, targets the last T. Inside a row:

- `segment_ids` number the documents 1, 2, ... (0 = padding), so attention stays inside a document;
- `positions` restart at 0 where a document starts (and at the row start for a continued document);
- `loss_mask` is 1 where the target is in the same document as the input and is a training target.

Rows are split once into a held-out eval set (a seed-fixed random `eval_fraction` of them) and the
training set. Training visits the training rows epoch after epoch, each epoch in its own permutation
drawn from (seed, epoch). Batch k of the run is therefore a pure function of k: the iterator's whole
state is `{"batches": k}`, saved in every checkpoint, so a resumed run reads exactly the batches the
uninterrupted run would have read.

Batch dict (numpy, all [B, T]): tokens int32, positions int32, segment_ids int32, targets int32,
loss_mask float32. The model's [B, T, T] mask is built on device by `segment_attention_mask`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from specjax.data.corpus import TokenStore
from specjax.errors import SpecjaxError

BATCH_KEYS = ("tokens", "positions", "segment_ids", "targets", "loss_mask")


def segment_attention_mask(segment_ids: Int[Array, "B T"]) -> Bool[Array, "B T T"]:
  """Block-diagonal causal mask: query t sees key s iff s <= t and both are in the same segment."""
  T = segment_ids.shape[-1]
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  return same & jnp.tril(jnp.ones((T, T), bool))[None]


class EpochShuffle:
  """The j-th training row of an endless stream of epochs, each a fresh permutation of `rows` seeded by
  (seed, epoch): a pure function of j, so a resumed run sees exactly the rows an unbroken one would."""

  def __init__(self, rows: np.ndarray, seed: int):
    self.rows, self.seed = rows, seed
    self._epoch, self._perm = -1, rows

  def __call__(self, j: int) -> int:
    epoch, pos = divmod(j, len(self.rows))
    if epoch != self._epoch:  # one permutation per epoch, kept until the stream moves on
      self._epoch = epoch
      self._perm = self.rows[np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))]
    return int(self._perm[pos])


def empty_batch(batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
  z = np.zeros((batch_size, seq_len), np.int32)
  return {
    "tokens": z,
    "positions": z.copy(),
    "segment_ids": z.copy(),
    "targets": z.copy(),
    "loss_mask": np.zeros((batch_size, seq_len), np.float32),
  }


class PackedRows:
  """Random access to the packed rows of a token store."""

  def __init__(self, store: TokenStore, seq_len: int):
    self.store, self.seq_len = store, seq_len
    self.num_rows = (len(store) - 1) // seq_len

  def fill(self, batch: dict[str, np.ndarray], i: int, row: int) -> None:
    """Write packed row `row` into line i of `batch`."""
    T = self.seq_len
    start = row * T
    idx = np.arange(start, start + T + 1)
    tok = np.asarray(self.store.tokens[start : start + T + 1], np.int64)
    tgt_ok = np.asarray(self.store.mask[start + 1 : start + T + 1], bool)
    doc = np.searchsorted(self.store.docs, idx, side="right") - 1
    doc_start = np.maximum(self.store.docs[doc], start)
    batch["tokens"][i] = tok[:-1]
    batch["targets"][i] = tok[1:]
    batch["positions"][i] = (idx - doc_start)[:-1]
    batch["segment_ids"][i] = (doc - doc[0] + 1)[:-1]
    batch["loss_mask"][i] = ((doc[1:] == doc[:-1]) & tgt_ok).astype(np.float32)


class PackedBatches:
  """Deterministic, resumable iterator of training batches (plus fixed eval batches).

  Implements the batch-iterator protocol of `specjax.train.loop`: `next()` -> batch dict,
  `state()` -> JSON-able dict, `restore(state)`, `eval_batches()` -> list of batch dicts.
  """

  def __init__(
    self,
    store: TokenStore,
    batch_size: int,
    seq_len: int,
    seed: int = 0,
    eval_fraction: float = 0.01,
    eval_batches: int = 4,
  ):
    self.rows = PackedRows(store, seq_len)
    self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
    n = self.rows.num_rows
    n_eval = 0 if eval_fraction <= 0 else max(1, int(round(eval_fraction * n)))
    if n - n_eval < 1:
      raise SpecjaxError(
        f"the corpus has {len(store)} tokens: too few for one training row of seq_len {seq_len} "
        f"plus {n_eval} eval row(s); use a larger corpus or a smaller data.seq_len / data.eval_fraction"
      )
    split = np.random.default_rng([seed, 2**31 - 1]).permutation(n)
    self.eval_rows = np.sort(split[:n_eval])
    self.train_rows = np.sort(split[n_eval:])
    self.num_eval_batches = eval_batches
    self.batches = 0
    self._row = EpochShuffle(self.train_rows, seed)

  @property
  def rows_per_epoch(self) -> int:
    return len(self.train_rows)

  def batch_at(self, k: int) -> dict[str, np.ndarray]:
    batch = empty_batch(self.batch_size, self.seq_len)
    for i in range(self.batch_size):
      self.rows.fill(batch, i, self._row(k * self.batch_size + i))
    return batch

  def next(self) -> dict[str, np.ndarray]:
    batch = self.batch_at(self.batches)
    self.batches += 1
    return batch

  __next__ = next

  def __iter__(self):
    return self

  def state(self) -> dict:
    return {"batches": self.batches, "seed": self.seed, "rows": self.rows.num_rows}

  def restore(self, state: dict) -> None:
    if state.get("rows", self.rows.num_rows) != self.rows.num_rows or state.get("seed", self.seed) != self.seed:
      raise SpecjaxError("the saved data position belongs to another corpus, seq_len or seed; use a new output folder")
    self.batches = int(state["batches"])

  def eval_batches(self) -> list[dict[str, np.ndarray]]:
    """Up to `eval_batches` fixed batches of held-out rows (the last one padded with masked rows)."""
    out = []
    rows = list(self.eval_rows)
    for b in range(self.num_eval_batches):
      chunk = rows[b * self.batch_size : (b + 1) * self.batch_size]
      if not chunk:
        break
      batch = empty_batch(self.batch_size, self.seq_len)
      for i, r in enumerate(chunk):
        self.rows.fill(batch, i, int(r))
      out.append(batch)
    return out
