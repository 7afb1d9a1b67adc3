"""Fixed-shape batches of (prompt, response) sequences for teacher-forced distillation and MSN training.

One example per row (no packing), right-padded to `seq_len` (longer examples are truncated). A batch:

    tokens     int32 [B, T]   the sequence
    targets    int32 [B, T]   tokens shifted left (the token each position predicts; 0 past the end)
    positions  int32 [B, T]   0 .. T-1
    loss_mask  float32 [B, T] 1 where the predicted token (targets) is a response token
    response_mask uint8 [B, T] 1 on the response tokens themselves (MSN noise; on-policy prompts end where it starts)

So the KD losses count the distribution at position t when token t + 1 is part of the response (the
first counted position is the last prompt token). `loss_on="all"` counts every position whose next token
is in the row, prompt included: the teacher's distribution there is as much a training signal, and the
step computes it anyway (useful when target answers are the scarce resource). Held-out batches count
the response's positions alone either way.

`extras` (e.g. `specjax.train.teacher_cache.TeacherCache`) adds per-token arrays cached per row: an
object with `fields` ({name: trailing shape}) and `row(r)` ({name: float32 [n, ...]}); each becomes a
right-padded float32 [B, T, ...] batch entry (zeros past the row's end).

The rows are split once (seeded) into a held-out part (about `eval_examples` rows: teacher-forced eval
batches and the prompts for the real speculative-decoding measurements) and the training part, which is
read in seeded per-epoch permutations. The split is by prompt: every sample of a held-out prompt is held
out, so no held-out prompt is ever trained on (make-data may answer a prompt several times). `state()` / `restore()` make the position exact across resumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from specjax.data.packing import EpochShuffle
from specjax.errors import SpecjaxError

KEYS = ("tokens", "targets", "positions", "loss_mask", "response_mask")


def empty_batch(batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
  return {
    "tokens": np.zeros((batch_size, seq_len), np.int32),
    "targets": np.zeros((batch_size, seq_len), np.int32),
    "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch_size, seq_len)).copy(),
    "loss_mask": np.zeros((batch_size, seq_len), np.float32),
    "response_mask": np.zeros((batch_size, seq_len), np.uint8),
  }


def fill_row(
  batch: dict[str, np.ndarray], i: int, tokens: Sequence[int], response_mask: Sequence[int], loss_on: str = "response"
):
  """Write one example into row i of `batch` (truncated to the batch's length)."""
  T = batch["tokens"].shape[1]
  tok = np.asarray(tokens, np.int32)[:T]
  resp = np.asarray(response_mask, np.uint8)[:T]
  n = len(tok)
  batch["tokens"][i] = 0
  batch["targets"][i] = 0
  batch["loss_mask"][i] = 0
  batch["response_mask"][i] = 0
  batch["tokens"][i, :n] = tok
  batch["targets"][i, : n - 1] = tok[1:]
  batch["loss_mask"][i, : n - 1] = resp[1:] if loss_on == "response" else 1
  batch["response_mask"][i, :n] = resp


def split_by_prompt(tokens, prompt_lens, n_eval: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(eval rows, train rows): whole prompts, in a seeded order, are held out until >= n_eval rows are."""
  groups: dict[bytes, list[int]] = {}
  for r, (t, p) in enumerate(zip(tokens, prompt_lens, strict=True)):
    groups.setdefault(np.asarray(t[:p]).tobytes(), []).append(r)
  keys = list(groups)
  order = np.random.default_rng([seed, 2**31 - 1]).permutation(len(keys))
  held: list[int] = []
  for k in order:
    if len(held) >= n_eval:
      break
    if len(held) + len(groups[keys[k]]) < len(tokens):  # always leave something to train on
      held += groups[keys[k]]
  held_set = set(held)
  return np.asarray(sorted(held), np.int64), np.asarray([r for r in range(len(tokens)) if r not in held_set], np.int64)


class ExampleBatches:
  """Resumable batch iterator over a make-data dataset (the batch-iterator protocol of train.loop)."""

  def __init__(
    self,
    ds,
    batch_size: int,
    seq_len: int,
    seed: int = 0,
    eval_examples: int = 32,
    eval_batches: int = 4,
    extras=None,
    loss_on: str = "response",
  ):
    if loss_on not in ("response", "all"):
      raise SpecjaxError(f"data.loss_on must be response or all, got {loss_on!r}")
    n = len(ds)
    if n == 0:
      raise SpecjaxError("the distillation dataset is empty; rebuild it with `specjax make-data`")
    self.tokens = [np.asarray(t, np.int32) for t in ds["tokens"]]
    self.resp = [np.asarray(m, np.uint8) for m in ds["response_mask"]]
    self.prompt_lens = [int(p) for p in ds["prompt_len"]]
    self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
    self.eval_examples = eval_examples
    self.eval_rows, self.train_rows = split_by_prompt(self.tokens, self.prompt_lens, min(eval_examples, n // 2), seed)
    if len(self.train_rows) == 0:
      raise SpecjaxError(f"the dataset has {n} samples: too few to train on; generate more with make-data")
    self.num_eval_batches = eval_batches
    self.batches = 0
    self._row = EpochShuffle(self.train_rows, seed)
    self.extras, self.loss_on = extras, loss_on

  @classmethod
  def from_config(cls, ds, cfg) -> ExampleBatches:
    """The batches a run's `data` section (`specjax.train.distill.DistillDataConfig`) asks for."""
    return cls(ds, cfg.batch_size, cfg.seq_len, cfg.seed, cfg.eval_examples, cfg.eval_batches, loss_on=cfg.loss_on)

  def rows_read(self, steps: int) -> list[int]:
    """Every row the first `steps` training batches and the eval batches read (what a cache must hold)."""
    train = {self._row(k) for k in range(steps * self.batch_size)}
    held = self.eval_rows[: self.num_eval_batches * self.batch_size]
    return sorted(train | {int(r) for r in held})

  def _batch(self, rows: Sequence[int], loss_on: str | None = None) -> dict[str, np.ndarray]:
    batch = empty_batch(self.batch_size, self.seq_len)
    for i, r in enumerate(rows):
      fill_row(batch, i, self.tokens[r], self.resp[r], loss_on or self.loss_on)
    if self.extras is not None:
      for name, shape in self.extras.fields.items():
        batch[name] = np.zeros((self.batch_size, self.seq_len, *shape), np.float32)
      for i, r in enumerate(rows):
        for name, x in self.extras.row(r).items():
          batch[name][i, : len(x)] = x[: self.seq_len]
    return batch

  def next(self) -> dict[str, np.ndarray]:
    k = self.batches
    self.batches += 1
    return self._batch([self._row(k * self.batch_size + i) for i in range(self.batch_size)])

  __next__ = next

  def __iter__(self):
    return self

  def state(self) -> dict:
    return {"batches": self.batches, "seed": self.seed, "rows": len(self.tokens)}

  def restore(self, state: dict) -> None:
    if state.get("rows") != len(self.tokens) or state.get("seed") != self.seed:
      raise SpecjaxError("the saved data position belongs to another dataset or seed; use a new output folder")
    self.batches = int(state["batches"])

  def eval_batches(self) -> list[dict[str, np.ndarray]]:
    """Fixed batches of held-out rows (the last one padded with fully masked rows). They always count
    the response's positions alone, what a draft meets when it decodes, whatever `loss_on` trains on."""
    rows = [int(r) for r in self.eval_rows]
    out = []
    for b in range(self.num_eval_batches):
      chunk = rows[b * self.batch_size : (b + 1) * self.batch_size]
      if not chunk:
        break
      out.append(self._batch(chunk, "response"))
    return out

  def eval_prompts(self, limit: int) -> list[list[int]]:
    """Templated prompt ids of up to `limit` held-out rows (for real decoding measurements). Training
    prompts are never used instead: a drafter decoding what it was trained on measures memorisation."""
    if len(self.eval_rows) == 0:
      prompts = len({t[:p].tobytes() for t, p in zip(self.tokens, self.prompt_lens, strict=True)})
      raise SpecjaxError(
        f"no prompts are held out for the speculative evaluation (data.eval_examples={self.eval_examples}, "
        f"{len(self.tokens)} samples of {prompts} prompts); raise data.eval_examples, give make-data "
        "more prompts (a held-out prompt leaves at least one to train on), or set spec_eval.every=-1"
      )
    return [self.tokens[r][: self.prompt_lens[r]].tolist() for r in [int(r) for r in self.eval_rows][:limit]]

  def longest_train_prompt(self) -> int:
    """The most prompt tokens a training batch row can hold (on-policy sampling continues them)."""
    return max(max(min(self.prompt_lens[int(r)], self.seq_len), 1) for r in self.train_rows)


def prompt_length(response_mask_row: np.ndarray) -> int:
  """Where the response of a batch row starts (the whole row when it has no response token)."""
  idx = np.flatnonzero(np.asarray(response_mask_row))
  return int(idx[0]) if idx.size else len(response_mask_row)
