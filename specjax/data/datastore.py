"""A datastore of the target's own answers for retrieval drafting (`specjax datastore`, `--mode datastore`).

    build_datastore(["data/distill", "notes.jsonl"], tokenizer="ckpt/target", out="ds/answers")
    ds = load_datastore("ds/answers")  # ds.tokens [N] int32, ds.suffix_array [N] int32, ds.meta

The store is one int32 token array: every document's token ids, each followed by `SEPARATOR` (-1, never a
token id, so no match crosses a document boundary and no proposal runs past one), and its suffix array
(the start positions of all suffixes in lexicographic order), which lets the decoder find every earlier
occurrence of its last n tokens with a binary search of log2 N steps (`specjax.decode.datastore`).

Sources: a `specjax make-data` folder (its generated tokens, already ids: the answers the target gave), a
JSONL file ({"text": ...} or {"prompt": ..., "response": ...} lines: the text or the response) or a .txt
file (one document), both tokenized with the target's tokenizer (no special tokens added).

The folder holds tokens.npy, suffix_array.npy and meta.json (format, the tokenizer's identity: its size
and a hash of its vocabulary, the sources and their document and token counts); it is written as a
hidden sibling and renamed in one step, and every input is checked before anything is written. A
datastore is refused for a target whose tokenizer has another identity (`check_tokenizer`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specjax.errors import SpecjaxError
from specjax.fileio import atomic_dir, json_lines, refuse_existing

FORMAT = "specjax-datastore-v1"
SEPARATOR = -1
TOKENS_FILE, SA_FILE, META_FILE = "tokens.npy", "suffix_array.npy", "meta.json"


@dataclasses.dataclass(frozen=True)
class Datastore:
  """Host arrays and metadata of a datastore (see the module docstring)."""

  tokens: np.ndarray  # int32 [N], documents separated (and ended) by SEPARATOR
  suffix_array: np.ndarray  # int32 [N]
  meta: dict[str, Any]

  @property
  def vocab_size(self) -> int:
    return int(self.meta["tokenizer"]["vocab_size"])

  @property
  def nbytes(self) -> int:
    return int(self.tokens.nbytes + self.suffix_array.nbytes)


def _group_starts(idx: np.ndarray, key: np.ndarray) -> np.ndarray:
  """For sorted `key` laid out at slots `idx`: the slot where each entry's run of equal keys starts."""
  change = np.ones(len(key), bool)
  change[1:] = key[1:] != key[:-1]
  return idx[np.maximum.accumulate(np.where(change, np.arange(len(key)), 0))]


def _in_runs(key: np.ndarray) -> np.ndarray:
  """Which entries of sorted `key` share their key with a neighbour (their group is not yet sorted)."""
  same = key[1:] == key[:-1]
  out = np.zeros(len(key), bool)
  out[1:] |= same
  out[:-1] |= same
  return out


def suffix_array(tokens: np.ndarray) -> np.ndarray:
  """The suffix array of `tokens` (any integers) by prefix doubling. A suffix's rank is the first slot
  of its group (suffixes whose first k tokens are equal); each round re-sorts only the suffixes still in
  a group of two or more, on (rank, rank of the suffix k further on), with one vectorised argsort, and
  doubles k (starting from a sort on as many tokens as fit one int64). Rounds: log2 of the longest
  repeat; their cost shrinks with the unsorted part. A suffix that is a prefix of another sorts first."""
  x = np.asarray(tokens).astype(np.int64).reshape(-1)
  n = len(x)
  if n == 0:
    return np.zeros((0,), np.int32)
  # Round 0 sorts on the first c tokens at once, packed into one int64 (0 stands for past the end).
  r = x - x.min() + 1
  bits = int(r.max()).bit_length()
  c = max(1, 63 // bits)
  key = np.zeros(n, np.int64)
  for j in range(c):
    key <<= bits
    if j < n:
      key[: n - j] |= r[j:]
  sa = np.argsort(key).astype(np.int64)
  key = key[sa]
  rank = np.empty(n, np.int64)
  slots = np.arange(n, dtype=np.int64)
  rank[sa] = _group_starts(slots, key)
  idx = slots[_in_runs(key)]
  k = c
  while len(idx):
    pos = sa[idx]
    after = pos + k
    second = np.where(after < n, rank[np.minimum(after, n - 1)] + 1, 0)  # 0: past the end
    key = rank[pos] * (n + 1) + second
    order = np.argsort(key)
    pos, key = pos[order], key[order]
    sa[idx] = pos
    rank[pos] = _group_starts(idx, key)
    idx = idx[_in_runs(key)]
    k *= 2
  return sa.astype(np.int32)


def vocab_identity(tokenizer) -> dict[str, Any]:
  """What identifies a tokenizer's ids: its size and a hash of its (token, id) pairs."""
  vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
  digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()
  return {"vocab_size": len(tokenizer), "vocab_sha256": digest}


def check_tokenizer(ds: Datastore, tokenizer, path: str | os.PathLike = "the datastore") -> None:
  """Refuse a datastore built with another tokenizer than the target's (its ids would mean other text)."""
  want, got = ds.meta["tokenizer"], vocab_identity(tokenizer)
  if (want["vocab_size"], want["vocab_sha256"]) != (got["vocab_size"], got["vocab_sha256"]):
    raise SpecjaxError(
      f"{path} was built with another tokenizer ({want['vocab_size']} tokens, vocab {want['vocab_sha256'][:12]}) than "
      f"the target's ({got['vocab_size']} tokens, vocab {got['vocab_sha256'][:12]}); rebuild it with "
      "`specjax datastore --tokenizer TARGET`"
    )


def _is_make_data(path: Path) -> bool:
  from specjax.data.distill_data import META_FILE as DATA_META

  return path.is_dir() and (path / DATA_META).is_file()


def _check_source(src: str) -> Path:
  path = Path(src)
  if not path.exists():
    raise SpecjaxError(f"datastore source {src} does not exist")
  if _is_make_data(path) or (path.is_file() and path.suffix in (".jsonl", ".txt")):
    return path
  raise SpecjaxError(f"datastore source {src} is neither a make-data folder, a .jsonl file nor a .txt file")


def _answer_text(rec, where: str) -> str:
  """A datastore document of a JSONL line: the response of a prompt/response pair, or its text."""
  text = rec.get("response", rec.get("text")) if isinstance(rec, dict) else None
  if not isinstance(text, str):
    raise SpecjaxError(f'{where}: expected {{"text": ...}} or {{"prompt": ..., "response": ...}}')
  return text


def _documents(path: Path, tokenizer) -> list[list[int]]:
  """The token ids of each document of one source."""
  if _is_make_data(path):
    from specjax.data.vocab_map import dataset_responses

    return [list(r) for r in dataset_responses(path)]
  texts = (
    [_answer_text(r, w) for w, r in json_lines(path)] if path.suffix == ".jsonl" else [path.read_text(encoding="utf-8")]
  )
  texts = [t for t in texts if t]
  if not texts:
    return []
  return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def join_documents(docs: Sequence[Sequence[int]]) -> np.ndarray:
  """One int32 array: each document followed by SEPARATOR."""
  parts = []
  for d in docs:
    parts.append(np.asarray(d, np.int32))
    parts.append(np.array([SEPARATOR], np.int32))
  return np.concatenate(parts) if parts else np.zeros((0,), np.int32)


def from_tokens(tokens: np.ndarray, vocab: dict[str, Any], sources: list | None = None) -> Datastore:
  """A datastore (in memory) of an already joined token array; `vocab` as `vocab_identity` gives it."""
  tokens = np.asarray(tokens, np.int32)
  t0 = time.perf_counter()
  sa = suffix_array(tokens)
  meta = {
    "format": FORMAT,
    "tokenizer": dict(vocab),
    "num_tokens": int(len(tokens)),
    "num_documents": int(np.sum(tokens == SEPARATOR)),
    "separator": SEPARATOR,
    "sources": sources or [],
    "build_s": round(time.perf_counter() - t0, 3),
  }
  return Datastore(tokens=tokens, suffix_array=sa, meta=meta)


def build_datastore(sources: Sequence[str], tokenizer, out: str | os.PathLike) -> Datastore:
  """Read every source, build the suffix array, write `out` atomically (see the module docstring).
  `tokenizer` is a loaded tokenizer or a checkpoint folder holding one."""
  if not sources:
    raise SpecjaxError("no datastore sources; pass --data SRC[,SRC...]")
  refuse_existing(out)
  paths = [_check_source(s) for s in sources]
  if isinstance(tokenizer, str | os.PathLike):
    from specjax.checkpoint.orbax_io import load_tokenizer

    tokenizer = load_tokenizer(tokenizer)
  vocab = vocab_identity(tokenizer)
  docs, recorded = [], []
  for src, path in zip(sources, paths, strict=True):
    these = [d for d in _documents(path, tokenizer) if d]
    n = sum(len(d) for d in these)
    if n == 0:
      raise SpecjaxError(f"datastore source {src} holds no tokens")
    top = max(max(d) for d in these)
    if top >= vocab["vocab_size"] or min(min(d) for d in these) < 0:
      raise SpecjaxError(
        f"datastore source {src} has token id {top} outside the tokenizer's {vocab['vocab_size']} tokens; "
        "it was made with another tokenizer"
      )
    docs += these
    recorded.append({"source": str(src), "documents": len(these), "tokens": n})
  ds = from_tokens(join_documents(docs), vocab, recorded)
  save_datastore(ds, out)
  return ds


def save_datastore(ds: Datastore, out: str | os.PathLike) -> Path:
  """Write the folder `out` (refused if it exists) in one rename."""
  with atomic_dir(out) as tmp:
    np.save(tmp / TOKENS_FILE, ds.tokens)
    np.save(tmp / SA_FILE, ds.suffix_array)
    (tmp / META_FILE).write_text(json.dumps(ds.meta, indent=1) + "\n", encoding="utf-8")
  return Path(out)


def load_datastore(path: str | os.PathLike) -> Datastore:
  """The datastore in `path`; a clear error for anything that is not one."""
  path = Path(path)
  if not (path / META_FILE).is_file():
    raise SpecjaxError(f"{path} is not a datastore (no {META_FILE}); build one with `specjax datastore`")
  meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
  if meta.get("format") != FORMAT:
    raise SpecjaxError(f"{path}: unknown datastore format {meta.get('format')!r} (expected {FORMAT})")
  try:
    tokens, sa = np.load(path / TOKENS_FILE), np.load(path / SA_FILE)
  except (OSError, ValueError) as e:
    raise SpecjaxError(f"{path}: cannot read the datastore arrays ({e}); rebuild it with `specjax datastore`") from None
  if tokens.shape != sa.shape or tokens.ndim != 1 or len(tokens) == 0:
    raise SpecjaxError(f"{path}: the token and suffix arrays do not match; rebuild it with `specjax datastore`")
  return Datastore(tokens=tokens.astype(np.int32), suffix_array=sa.astype(np.int32), meta=meta)
