"""Distillation data: the format `specjax make-data` (`specjax.jobs.make_data`) writes, and its readers.

    ds, meta = load_distill_data("data/distill")

One row per sample of the target:

    prompt (str), response (str, special tokens removed), tokens (int32 list: templated prompt ids + the
    generated ids exactly as sampled, EOS included when reached), response_mask (uint8 list, 1 on the
    generated ids), prompt_len (int), finished (bool: the response ended with EOS), sample_id (int)

The output is a `datasets` folder (`datasets.load_from_disk`) plus `specjax_data.json` with the
generation settings, the prompt source and the target identity: its path, config and a fingerprint
(a hash of the architecture fields of the config and every parameter's value), so `specjax distill` can
refuse a dataset made by another target. The fingerprint ignores how a model is run (compute and param
dtype, remat: `specjax.models.llama.NON_FUNCTIONAL_FIELDS`), so distilling in bfloat16 accepts a
dataset made in float32. Made with features, it also holds the target's features and log-normalisers at
every position (`FEATURES_FILE`, `LSE_FILE`: rows back to back in dataset order).

While the job runs, its rows are shards (`shard_path`, `write_shard`) in a work folder, joined into the
output at the end (`join_shards`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specjax.errors import SpecjaxError
from specjax.fileio import atomic_write_text

META_FILE = "specjax_data.json"
FORMAT = "specjax-distill-data-v1"


FEATURES_FILE, LSE_FILE = "features.npy", "teacher_lse.npy"  # written with `make_data(features=True)`
FINGERPRINT_VERSION = 2  # 1 (no version in the metadata): hash of the whole config and the raw parameters


def architecture(config) -> dict[str, Any]:
  """The config fields that define what the model computes (all but `NON_FUNCTIONAL_FIELDS`)."""
  from specjax.models.config import NON_FUNCTIONAL_FIELDS

  return {k: v for k, v in config.to_dict().items() if k not in NON_FUNCTIONAL_FIELDS}


def _hash(config_dict: dict, params, canonical: bool) -> str:
  import jax

  h = hashlib.blake2b(digest_size=16)
  h.update(json.dumps(config_dict, sort_keys=True).encode())
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    arr = np.asarray(jax.device_get(leaf))
    if canonical and jax.numpy.issubdtype(arr.dtype, jax.numpy.floating):
      arr = arr.astype(np.float32)  # exact for every param dtype: the values, not how they are held
    h.update(jax.tree_util.keystr(path).encode())
    h.update(f"{arr.shape}{arr.dtype}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()


def target_fingerprint(config, params) -> str:
  """A hash of a model's architecture fields and every parameter (path, shape and float32 value)."""
  return _hash(architecture(config), params, canonical=True)


def _legacy_fingerprint_matches(saved: dict, want: str, config, params) -> bool:
  """Version 1 (datasets made before FINGERPRINT_VERSION): same architecture and same raw parameters."""
  try:
    same_arch = architecture(type(config).from_dict(saved)) == architecture(config)
  except (SpecjaxError, TypeError):
    return False
  return same_arch and _hash(saved, params, canonical=False) == want


def shard_path(work: Path, shard: int) -> Path:
  """Where shard `shard` of a run lives in its work folder (it exists only once complete)."""
  return work / f"shard-{shard:05d}"


def write_shard(
  work: Path, shard: int, records: dict[str, list], arrays: tuple[np.ndarray, np.ndarray] | None = None
) -> None:
  """Shard `shard` (columns of rows, and with `arrays` their features and log-normalisers), atomically."""
  import datasets

  dest = shard_path(work, shard)
  tmp = work / f".tmp-{dest.name}"
  shutil.rmtree(tmp, ignore_errors=True)
  datasets.Dataset.from_dict(records, features=_features()).save_to_disk(str(tmp))
  if arrays is not None:
    np.save(tmp / FEATURES_FILE, arrays[0])
    np.save(tmp / LSE_FILE, arrays[1])
  os.replace(tmp, dest)


def join_shards(work: Path, n_shards: int, out: Path, meta: dict[str, Any], keep_work: bool = False) -> int:
  """The first `n_shards` shards joined in order into the dataset `out` with its metadata; the work folder
  is removed unless `keep_work` (a snapshot of a run that goes on). Returns the number of rows."""
  import datasets

  parts = [shard_path(work, s) for s in range(n_shards)]
  full = datasets.concatenate_datasets([datasets.load_from_disk(str(p)) for p in parts])
  full.info.description = json.dumps(meta)
  final_tmp = work / (f".snapshot-{os.getpid()}" if keep_work else ".final")
  shutil.rmtree(final_tmp, ignore_errors=True)
  full.save_to_disk(str(final_tmp))
  if "features" in meta:
    _join_arrays(parts, final_tmp)
  atomic_write_text(final_tmp / META_FILE, json.dumps(meta, indent=2) + "\n")
  os.replace(final_tmp, out)
  if not keep_work:
    shutil.rmtree(work, ignore_errors=True)
  return len(full)


def _join_arrays(shards: Sequence[Path], out: Path) -> None:
  """The shards' feature and log-normaliser arrays joined in row order into `out`, one shard at a time."""
  for name in (FEATURES_FILE, LSE_FILE):
    parts = [np.load(s / name, mmap_mode="r") for s in shards]
    shape = (sum(len(p) for p in parts), *parts[0].shape[1:])
    joined = np.lib.format.open_memmap(out / name, "w+", parts[0].dtype, shape)
    at = 0
    for p in parts:
      joined[at : at + len(p)] = p
      at += len(p)
    joined.flush()
    del joined


def stored_features(path: str | os.PathLike, meta: dict):
  """(features [tokens, D] float16, lse [tokens] float32), memory-mapped, of a make-data output made with
  `features=True` (rows back to back in dataset order), or None for one made without."""
  if "features" not in meta:
    return None
  path = Path(path)
  return np.load(path / FEATURES_FILE, mmap_mode="r"), np.load(path / LSE_FILE, mmap_mode="r")


def _features():
  import datasets

  return datasets.Features(
    {
      "prompt": datasets.Value("string"),
      "response": datasets.Value("string"),
      "tokens": datasets.Sequence(datasets.Value("int32")),
      "response_mask": datasets.Sequence(datasets.Value("uint8")),
      "prompt_len": datasets.Value("int32"),
      "finished": datasets.Value("bool"),
      "sample_id": datasets.Value("int64"),
    }
  )


def load_distill_data(path: str | os.PathLike):
  """(datasets.Dataset, metadata dict) of a make-data output; clear errors for anything else or empty."""
  import datasets

  path = Path(path)
  meta_path = path / META_FILE
  if not meta_path.is_file():
    raise SpecjaxError(f"{path} is not a make-data output (no {META_FILE}); build one with `specjax make-data`")
  meta = json.loads(meta_path.read_text())
  if meta.get("format") != FORMAT:
    raise SpecjaxError(f"{path}: unknown data format {meta.get('format')!r} (expected {FORMAT})")
  try:
    ds = datasets.load_from_disk(str(path))
  except IndexError:  # a dataset saved with zero rows has no data file to read
    ds = []
  except (FileNotFoundError, ValueError) as e:
    raise SpecjaxError(f"{path}: cannot read the dataset ({e}); rebuild it with `specjax make-data`") from None
  if len(ds) == 0:
    raise SpecjaxError(f"{path} holds no samples; rebuild it with `specjax make-data`")
  return ds, meta


def check_same_target(meta: dict, config, params, data_path: str | os.PathLike = "the dataset") -> None:
  """Raise SpecjaxError unless the dataset was generated by this target model (same architecture and
  parameters; the dtypes and remat it runs with do not matter)."""
  want = meta["target"]["fingerprint"]
  got = target_fingerprint(config, params)
  if meta["target"].get("fingerprint_version") == FINGERPRINT_VERSION:
    same = want == got
  else:
    same = _legacy_fingerprint_matches(meta["target"].get("config", {}), want, config, params)
  if not same:
    raise SpecjaxError(
      f"{data_path} was made by another target ({meta['target']['path']}, fingerprint {want[:12]}) than the one "
      f"given (fingerprint {got[:12]}); distil against the target that generated the data, or rebuild it"
    )
