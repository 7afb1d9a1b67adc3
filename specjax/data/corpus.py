"""Corpus readers and tokenization into an on-disk token store.

Sources (`DataConfig.source`):
- `default`: the offline default corpus (`specjax.data.default_corpus`);
- a file, a glob (`data/*.jsonl`, `**` allowed) or a folder of files: text (`.txt`, `.md`: one
  document per paragraph), JSON lines (`.jsonl`, `.json`) or parquet, read with `datasets` in streaming
  mode (constant memory, any size);
- a folder written by `datasets.save_to_disk` (its `train` split if it is a DatasetDict).

Records give plain text (`text_field`) or, when `prompt_field` is set, chat examples (`prompt_field`,
`response_field`) that are encoded with the tokenizer's chat template and a response-only loss mask
(`specjax.data.chat`). Tokenization runs once, streaming, into a `TokenStore` folder:

    tokens.bin  uint32 [N]  every document's tokens, each text document followed by eos
    mask.bin    uint8  [N]  1 where the token is a training target (all of a text document, the
                            response of a chat example)
    docs.npy    int64  [D]  start offset of every document
    meta.json   counts and the fingerprint of (source, fields, tokenizer) the store was built from
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from specjax.errors import SpecjaxError
from specjax.fileio import atomic_dir

_EXT_FORMAT = {".txt": "text", ".md": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the corpus is and how it becomes [B, T] batches."""

  source: str = "default"  # 'default', a file, a glob, a folder of files or a save_to_disk folder
  format: Literal["auto", "text", "json", "parquet", "disk"] = "auto"
  text_field: str = "text"
  prompt_field: str | None = None  # set to read chat examples (prompt, response) instead of text
  response_field: str = "response"
  max_documents: int | None = None  # read at most this many documents (quick runs)
  seq_len: int = 512  # T
  batch_size: int = 8  # global B (all devices, all microbatches)
  eval_fraction: float = 0.01  # share of packed rows held out for eval
  eval_batches: int = 4  # eval batches per evaluation (at most)
  seed: int = 0


def _files_format(files: list[str], fmt: str) -> str:
  if fmt != "auto":
    return fmt
  kinds = {_EXT_FORMAT.get(Path(f).suffix.lower()) for f in files}
  if None in kinds:
    bad = [f for f in files if Path(f).suffix.lower() not in _EXT_FORMAT][:3]
    raise SpecjaxError(f"cannot tell the format of {bad}; set data.format to text, json or parquet")
  if len(kinds) > 1:
    raise SpecjaxError(f"corpus mixes formats {sorted(kinds)}; point data.source at files of one kind")
  return kinds.pop()


def _resolve(cfg: DataConfig) -> tuple[str, list[str]]:
  """(format, files) for a non-default source."""
  src = cfg.source
  path = Path(src)
  if path.is_dir():
    if cfg.format == "disk" or any(
      (path / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json")
    ):
      return "disk", [str(path)]
    files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _EXT_FORMAT)
    if not files:
      raise SpecjaxError(f"corpus folder {src} holds no .txt/.md/.jsonl/.json/.parquet files")
    return _files_format(files, cfg.format), files
  if any(c in src for c in "*?["):
    files = sorted(f for f in glob.glob(src, recursive=True) if Path(f).is_file())
    if not files:
      raise SpecjaxError(f"corpus pattern {src!r} matches no files; check data.source")
    return _files_format(files, cfg.format), files
  if not path.exists():
    raise SpecjaxError(f"corpus {src} does not exist; set data.source to a file, glob or folder (or 'default')")
  return _files_format([src], cfg.format), [src]


def iter_records(cfg: DataConfig) -> Iterator[dict]:
  """Stream the corpus records (dicts) in a fixed order."""
  if cfg.source == "default":
    from specjax.data.default_corpus import documents

    for text in documents():
      yield {cfg.text_field: text}
    return
  import datasets

  fmt, files = _resolve(cfg)
  try:
    if fmt == "disk":
      ds = datasets.load_from_disk(files[0])
      if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    else:
      kwargs = {"sample_by": "paragraph"} if fmt == "text" else {}
      ds = datasets.load_dataset(fmt, data_files=files, split="train", streaming=True, **kwargs)
    yield from ds
  except SpecjaxError:
    raise
  except Exception as e:  # datasets raises many types for unreadable files
    raise SpecjaxError(f"cannot read corpus {cfg.source} as {fmt}: {e.__class__.__name__}: {str(e)[:300]}") from None


def _encode_stream(cfg: DataConfig, tokenizer) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(tokens, mask) per document."""
  from specjax.data.chat import encode_chat

  eos = tokenizer.eos_token_id
  chunk: list[str] = []

  def flush():
    ids = tokenizer(chunk, add_special_tokens=False)["input_ids"]
    for seq in ids:
      if seq:
        seq = list(seq) + ([eos] if eos is not None else [])
        yield np.asarray(seq, np.uint32), np.ones(len(seq), np.uint8)
    chunk.clear()

  n = 0
  for rec in iter_records(cfg):
    if cfg.max_documents is not None and n >= cfg.max_documents:
      break
    if cfg.prompt_field is not None:
      for field in (cfg.prompt_field, cfg.response_field):
        if field not in rec:
          raise SpecjaxError(f"corpus record has no field {field!r}; fields are {sorted(rec)}")
      tokens, mask = encode_chat(tokenizer, str(rec[cfg.prompt_field]), str(rec[cfg.response_field]))
      n += 1
      yield tokens.astype(np.uint32), mask
      continue
    if cfg.text_field not in rec:
      raise SpecjaxError(
        f"corpus record has no field {cfg.text_field!r}; fields are {sorted(rec)} (set data.text_field)"
      )
    text = rec[cfg.text_field]
    if isinstance(text, str) and text.strip():
      chunk.append(text)
      n += 1
      if len(chunk) >= 256:
        yield from flush()
  if chunk:
    yield from flush()


def fingerprint(cfg: DataConfig, tokenizer) -> str:
  """Identifies what a token store was built from (source, fields, limits, tokenizer vocabulary)."""
  keys = ("source", "format", "text_field", "prompt_field", "response_field", "max_documents")
  record = {k: getattr(cfg, k) for k in keys}
  record["tokenizer"] = [len(tokenizer), tokenizer.eos_token_id, getattr(tokenizer, "name_or_path", "")]
  if cfg.source not in ("default",) and Path(cfg.source).is_file():
    st = os.stat(cfg.source)
    record["file"] = [st.st_size, int(st.st_mtime)]
  return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class TokenStore:
  """A tokenized corpus on disk, memory-mapped."""

  path: Path
  tokens: np.ndarray  # uint32 [N]
  mask: np.ndarray  # uint8 [N]
  docs: np.ndarray  # int64 [D] document start offsets
  meta: dict

  @classmethod
  def open(cls, path: str | os.PathLike) -> TokenStore:
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    n = meta["num_tokens"]
    tokens = np.memmap(path / "tokens.bin", np.uint32, "r", shape=(n,))
    mask = np.memmap(path / "mask.bin", np.uint8, "r", shape=(n,))
    return cls(path, tokens, mask, np.load(path / "docs.npy"), meta)

  def __len__(self) -> int:
    return int(self.meta["num_tokens"])


def build_token_store(cfg: DataConfig, tokenizer, dest: str | os.PathLike, vocab_size: int | None = None) -> TokenStore:
  """Tokenize the corpus into `dest` (reused if it already holds the same corpus and tokenizer)."""
  dest = Path(dest)
  fp = fingerprint(cfg, tokenizer)
  if (dest / "meta.json").is_file():
    store = TokenStore.open(dest)
    if store.meta.get("fingerprint") != fp:
      raise SpecjaxError(
        f"token store {dest} was built from another corpus or tokenizer; use a new output folder or delete {dest}"
      )
    return store
  if vocab_size is not None and len(tokenizer) > vocab_size:
    raise SpecjaxError(
      f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}; "
      "use the tokenizer of the target the model is built for, or a model with a larger vocabulary"
    )
  with atomic_dir(dest) as tmp:
    starts, n = [], 0
    with open(tmp / "tokens.bin", "wb") as ft, open(tmp / "mask.bin", "wb") as fm:
      for tokens, mask in _encode_stream(cfg, tokenizer):
        starts.append(n)
        n += len(tokens)
        ft.write(tokens.tobytes())
        fm.write(mask.tobytes())
    if n == 0:
      raise SpecjaxError(f"corpus {cfg.source} holds no text (no non-empty documents); check data.source")
    np.save(tmp / "docs.npy", np.asarray(starts, np.int64))
    meta = {"num_tokens": n, "num_documents": len(starts), "fingerprint": fp, "source": cfg.source}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
  return TokenStore.open(dest)
