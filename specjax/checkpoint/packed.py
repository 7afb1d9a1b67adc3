"""Packed drafts: a draft stored as only the tensors it trained, the rest rebuilt from its target.

An EAGLE-style draft copies its token embedding (and, when frozen, its head rows) from the target; a
draft shipped in a repository should not carry 28M copied parameters. `pack_draft` stores the tensors
that differ from the target's in one safetensors file and records, for each tensor it leaves out, where
in the target it comes from, plus the target's fingerprint (its architecture and every parameter, as
`make-data` records it: the draft reads the target's features, so any other target is refused):

    DRAFT/
      packed_draft.json   {"format": "specjax-packed-draft", "model": config, "from_target": {path: rule},
                           "target": {"fingerprint": ..., "source": ...}, "stored": {path: dtype}, ...}
      draft.safetensors   the stored tensors, keyed by their '/'-joined parameter path

`load_draft(path, target)` loads either kind of draft folder (an ordinary specjax checkpoint or a packed
one): a packed draft is rebuilt from `target` (a loaded `Checkpoint`) and refused, with the reason, when
that target's fingerprint is not the recorded one. The two rules:

    "copy"   the tensor at the same path in the target   (embed_tokens/embedding)
    "head"   the target's output head, cut to the draft's head_ids   (lm_head/kernel)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from specjax.data.distill_data import target_fingerprint
from specjax.errors import SpecjaxError
from specjax.fileio import atomic_dir
from specjax.models.config import ModelConfig

PACKED_FILE = "packed_draft.json"
TENSORS_FILE = "draft.safetensors"
FORMAT = "specjax-packed-draft"
STORE_DTYPES = ("float16", "float32")


def is_packed(path: str | os.PathLike) -> bool:
  return (Path(path) / PACKED_FILE).is_file()


def _flat(params: Any) -> dict[str, Any]:
  """{'/'-joined path: leaf} of a nested dict of parameters (the leaves as they are: no copies)."""
  return flatten_dict(params, sep="/")


def _target_head(target_cfg: ModelConfig, target: dict[str, Any]) -> np.ndarray:
  """The target's output head as [D, V]."""
  if target_cfg.head_ids is not None:
    raise SpecjaxError("the target has a reduced head; a draft is packed against the full target")
  if target_cfg.tie_embeddings:
    return np.asarray(target["embed_tokens/embedding"]).T
  return np.asarray(target["lm_head/kernel"])


def _derive(rule: str, name: str, cfg: ModelConfig, target_cfg: ModelConfig, target: dict[str, Any]) -> np.ndarray:
  """The tensor `name` of the draft rebuilt from the target's (flat) parameters by `rule`; only the
  tensors a rule reads are copied to the host."""
  if rule == "copy":
    if name not in target:
      raise SpecjaxError(f"the target has no tensor {name} to rebuild the draft's from")
    return np.asarray(target[name])
  if rule == "head":
    head = _target_head(target_cfg, target)
    return head if cfg.head_ids is None else head[:, np.asarray(cfg.head_ids)]
  raise SpecjaxError(f"unknown rule {rule!r} for {name}; this packed draft is from a newer specjax or corrupt")


def _candidate_rules(name: str) -> tuple[str, ...]:
  return ("head",) if name == "lm_head/kernel" else ("copy",)


def pack_draft(
  draft_path: str | os.PathLike,
  target_path: str | os.PathLike,
  out: str | os.PathLike,
  dtype: str = "float16",
  card: str | None = None,
) -> dict:
  """Write the packed form of the draft checkpoint at `draft_path` at `out` (which must not exist); the
  tensors equal to what a rule derives from the target are left out. Returns the packed record. (The
  caller checks that the two share a tokenizer: a packed draft has none of its own.)"""
  from safetensors.numpy import save_file

  from specjax.checkpoint.orbax_io import load_checkpoint

  if dtype not in STORE_DTYPES:
    raise SpecjaxError(f"--dtype must be one of {', '.join(STORE_DTYPES)}, got {dtype!r}")
  if is_packed(draft_path):
    raise SpecjaxError(f"{draft_path} is already packed")
  draft = load_checkpoint(draft_path)
  target = load_checkpoint(target_path)
  d_flat, t_flat = _flat(draft.params), _flat(target.params)
  rules: dict[str, str] = {}
  stored: dict[str, np.ndarray] = {}
  for name, value in d_flat.items():
    value = np.asarray(value)
    for rule in _candidate_rules(name):
      try:
        derived = _derive(rule, name, draft.config, target.config, t_flat)
      except SpecjaxError:
        continue
      if derived.shape == value.shape and np.array_equal(derived, value):
        rules[name] = rule
        break
    else:
      stored[name] = np.ascontiguousarray(value.astype(dtype))
  if not stored:
    raise SpecjaxError(f"{draft_path} holds nothing but tensors of the target; it is untrained")
  meta = {k: v for k, v in draft.meta.items() if k not in ("format", "model")}
  record = {
    "format": FORMAT,
    "model": draft.config.to_dict(),
    "from_target": rules,
    "target": {"fingerprint": target_fingerprint(target.config, target.params), "source": target.meta.get("source")},
    "stored": {n: dtype for n in sorted(stored)},
    "stored_params": int(sum(v.size for v in stored.values())),
    "draft_meta": meta,
  }
  with atomic_dir(out) as tmp:
    save_file(stored, str(tmp / TENSORS_FILE))
    (tmp / TENSORS_FILE).chmod(0o644)  # a file to ship, readable like the rest
    (tmp / PACKED_FILE).write_text(json.dumps(record, indent=2) + "\n")
    if card is not None:
      (tmp / "README.md").write_text(card)
  return record


def read_packed(path: str | os.PathLike) -> dict:
  file = Path(path) / PACKED_FILE
  try:
    record = json.loads(file.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise SpecjaxError(f"{file} is unreadable ({e.__class__.__name__}: {e}); the packed draft is corrupt") from None
  if not isinstance(record, dict) or record.get("format") != FORMAT:
    raise SpecjaxError(f"{file} is not a packed specjax draft (format {record.get('format')!r})")
  return record


def load_packed(path: str | os.PathLike, target):
  """Rebuild the packed draft at `path` for `target` (a loaded `Checkpoint`): a `Checkpoint`."""
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  from specjax.checkpoint.orbax_io import Checkpoint
  from specjax.models.registry import param_shapes

  path = Path(path)
  record = read_packed(path)
  try:
    cfg = ModelConfig.from_dict(record["model"])
    rules = dict(record["from_target"])
    want = record["target"]["fingerprint"]
  except (KeyError, TypeError, ValueError) as e:
    raise SpecjaxError(f"{path / PACKED_FILE} is corrupt ({e.__class__.__name__}: {e})") from None
  got = target_fingerprint(target.config, target.params)
  if got != want:
    source = record["target"].get("source")
    raise SpecjaxError(
      f"{path} was trained for another target ({source or 'unnamed'}, fingerprint {want[:12]}), not for "
      f"{target.path} (fingerprint {got[:12]}): a draft reads its target's features, so it serves that target "
      "only. Use the target it was packed with, imported unchanged"
    )
  t_flat = _flat(target.params)
  try:
    stored = load_file(str(path / TENSORS_FILE))
  except (SafetensorError, OSError) as e:
    raise SpecjaxError(f"{path / TENSORS_FILE} is unreadable ({e}); the packed draft is corrupt") from None
  shapes = _flat(param_shapes(cfg))
  flat = {}
  for name, shape in shapes.items():
    if name in rules:
      value = _derive(rules[name], name, cfg, target.config, t_flat)
    elif name in stored:
      value = stored[name]
    else:
      raise SpecjaxError(f"{path} lacks the tensor {name}; the packed draft is corrupt")
    if tuple(value.shape) != tuple(shape.shape):
      raise SpecjaxError(f"{path}: {name} has shape {tuple(value.shape)}, its config needs {tuple(shape.shape)}")
    flat[name] = jax.numpy.asarray(value, cfg.weight_dtype)
  extra = set(stored) - set(shapes)
  if extra:
    raise SpecjaxError(f"{path} holds tensors its config has no place for ({', '.join(sorted(extra))}); corrupt")
  return Checkpoint(path=path, config=cfg, params=unflatten_dict(flat, sep="/"), meta=record)


def load_draft(path: str | os.PathLike, target):
  """A draft folder of either kind, as a `Checkpoint`; `target` is the loaded target it serves."""
  from specjax.checkpoint.orbax_io import load_checkpoint

  if is_packed(path):
    return load_packed(path, target)
  return load_checkpoint(path)
