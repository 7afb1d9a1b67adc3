"""specjax checkpoint folders.

A checkpoint folder is self-contained, so any command can be pointed at just that folder:

    CKPT/
      model_config.json   {"format": "specjax", "model": LlamaConfig fields, "source": ...}
      params/             an Orbax CheckpointManager folder (one step) holding the parameter pytree
      tokenizer.json ...  the tokenizer (Hugging Face files, chat template included)

`save_checkpoint` writes through a temporary folder (no half-written checkpoint survives);
`load_checkpoint` restores into freshly made abstract targets, optionally sharded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from specjax.errors import SpecjaxError
from specjax.fileio import atomic_dir
from specjax.models.config import LlamaConfig
from specjax.models.registry import param_shapes

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


@dataclasses.dataclass
class Checkpoint:
  path: Path
  config: LlamaConfig
  params: Any
  meta: dict


def is_checkpoint(path: str | os.PathLike) -> bool:
  return (Path(path) / CONFIG_FILE).is_file()


def save_params(directory: Path, params: Any, step: int = 0) -> None:
  """Save a parameter pytree with an Orbax CheckpointManager (blocking)."""
  with ocp.CheckpointManager(directory.absolute()) as mngr:
    mngr.save(step, args=ocp.args.StandardSave(params))
    mngr.wait_until_finished()


def restore_params(directory: Path, abstract: Any) -> Any:
  """Restore the latest step of a CheckpointManager folder into `abstract` (ShapeDtypeStructs with
  optional shardings)."""
  with ocp.CheckpointManager(directory.absolute()) as mngr:
    step = mngr.latest_step()
    if step is None:
      raise SpecjaxError(f"{directory} holds no saved parameters; the checkpoint is incomplete or corrupt")
    mismatch = "the checkpoint is corrupt or from another model size"
    try:
      restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError, TypeError) as e:
      raise SpecjaxError(
        f"parameters in {directory} do not match the model config next to them ({e.__class__.__name__}: "
        f"{str(e)[:300]}); {mismatch}"
      ) from None
  # Orbax restores whatever shapes were saved; check them against the config.
  for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(abstract), jax.tree.leaves(restored), strict=True):
    if tuple(want.shape) != tuple(got.shape):
      raise SpecjaxError(
        f"parameters in {directory} do not match the model config next to them: {jax.tree_util.keystr(path)} "
        f"has shape {tuple(got.shape)}, the config needs {tuple(want.shape)}; {mismatch}"
      )
  return restored


def save_checkpoint(
  out: str | os.PathLike,
  config: LlamaConfig,
  params: Any,
  tokenizer: Any = None,
  meta: dict | None = None,
  step: int = 0,
) -> Path:
  """Write a complete checkpoint folder at `out` (which must not exist)."""
  with atomic_dir(out) as tmp:
    record = {"format": "specjax", "model": config.to_dict(), **(meta or {})}
    (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    save_params(tmp / PARAMS_DIR, params, step)
    if tokenizer is not None:
      tokenizer.save_pretrained(str(tmp))
  return Path(out)


def read_config(path: str | os.PathLike) -> tuple[LlamaConfig, dict]:
  path = Path(path)
  if not path.exists():
    raise SpecjaxError(f"checkpoint {path} does not exist")
  file = path / CONFIG_FILE
  from specjax.checkpoint.packed import is_packed  # (packed.py reads checkpoints through this module)

  if not file.is_file() and is_packed(path):
    raise SpecjaxError(
      f"{path} is a packed draft (only its trained tensors; the rest comes from its target): use it as "
      "--draft beside --target, or unpack it with `specjax unpack-draft`"
    )
  if not file.is_file():
    raise SpecjaxError(
      f"{path} is not a specjax checkpoint (no {CONFIG_FILE}); make one with `specjax import SRC --out {path}`"
    )
  try:
    record = json.loads(file.read_text())
    config = LlamaConfig.from_dict(record["model"])
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise SpecjaxError(f"{file} is corrupt ({e.__class__.__name__}: {e}); re-create the checkpoint") from None
  return config, record


def abstract_params(config: LlamaConfig, shardings: Any = None) -> Any:
  shapes = param_shapes(config)
  if shardings is None:
    return shapes
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def load_checkpoint(path: str | os.PathLike, shardings: Any = None, config: LlamaConfig | None = None) -> Checkpoint:
  """Read a checkpoint folder. `config` overrides numerics (dtype, remat) but not shapes."""
  path = Path(path)
  saved, record = read_config(path)
  config = config or saved
  params = restore_params(path / PARAMS_DIR, abstract_params(config, shardings))
  return Checkpoint(path=path, config=config, params=params, meta=record)


def load_tokenizer(path: str | os.PathLike):
  """The tokenizer stored in a checkpoint folder (offline; never touches a hub)."""
  from transformers import AutoTokenizer

  path = Path(path)
  if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
    raise SpecjaxError(f"checkpoint {path} has no tokenizer files (tokenizer.json); re-import it with `specjax import`")
  try:
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
  except Exception as e:  # transformers raises many types for broken files
    raise SpecjaxError(f"cannot load the tokenizer in {path}: {e}") from None
