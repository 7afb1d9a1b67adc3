"""`specjax import` and `specjax export-hf`: Hugging Face folders and GGUF files in, Hugging Face folders out.

Both write through a temporary folder and rename, so a failure never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from specjax.checkpoint import hf
from specjax.checkpoint.builtin import BUILTIN_SOURCES
from specjax.checkpoint.gguf import GGUFModel
from specjax.checkpoint.orbax_io import is_checkpoint, load_checkpoint, load_tokenizer, save_checkpoint
from specjax.errors import SpecjaxError
from specjax.fileio import atomic_dir, refuse_existing
from specjax.models.registry import param_shapes

BUILTIN_MODELS = BUILTIN_SOURCES  # name -> packaged GGUF (specjax/checkpoint/builtin.py)
# tokenizer_config.json's names for "the tokenizer is tokenizer.json, as is" (transformers 5 and 4)
GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


class _HFFolder:
  """A Hugging Face model folder opened for import: `.config`, `.names`, `.tensor(name)`."""

  def __init__(self, path: Path):
    self.path = path
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
      raise SpecjaxError(f"{path} has no config.json; a Hugging Face model folder needs config.json + *.safetensors")
    try:
      raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
      raise SpecjaxError(f"{cfg_file} is not valid JSON ({e}); re-download or re-save the model") from None
    if not isinstance(raw, dict):
      raise SpecjaxError(f"{cfg_file} must hold a JSON object")
    self.config = hf.config_from_hf(raw, where=str(cfg_file))
    files = sorted(path.glob("*.safetensors"))
    if not files:
      raise SpecjaxError(
        f"{path} has no *.safetensors weights (PyTorch .bin files are not supported; re-save with safetensors)"
      )
    from safetensors import SafetensorError, safe_open

    self._where: dict[str, Path] = {}
    for f in files:
      try:
        with safe_open(str(f), framework="flax") as handle:
          for name in handle.keys():
            self._where[name] = f
      except (SafetensorError, OSError) as e:
        raise SpecjaxError(f"{f} is not a readable safetensors file ({e})") from None
    self._safe_open = safe_open

  @property
  def names(self) -> set[str]:
    return set(self._where)

  def tensor(self, name: str) -> np.ndarray:
    with self._safe_open(str(self._where[name]), framework="flax") as handle:
      return np.asarray(handle.get_tensor(name).astype(jnp.float32))

  def tokenizer(self):
    from transformers import AutoTokenizer

    if not any((self.path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
      print(f"warning: {self.path} has no tokenizer files; the checkpoint will have none", file=sys.stderr)
      return None
    try:
      if self._declares_generic_tokenizer():
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(self.path), local_files_only=True)
      return AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
    except Exception as e:
      raise SpecjaxError(f"cannot load the tokenizer in {self.path}: {e}") from None

  def _declares_generic_tokenizer(self) -> bool:
    """Whether tokenizer_config.json names the generic tokenizers class. AutoTokenizer would then still
    pick a model-specific class for some model types (Qwen2): one that adds its own special tokens
    (`<|endoftext|>`) and pre-tokenizer, so the checkpoint's tokenizer would not be the folder's."""
    file = self.path / "tokenizer_config.json"
    if not (self.path / "tokenizer.json").is_file() or not file.is_file():
      return False
    try:
      declared = json.loads(file.read_text()).get("tokenizer_class")
    except (json.JSONDecodeError, AttributeError):
      return False  # AutoTokenizer reports the broken file
    return declared in GENERIC_TOKENIZER_CLASSES


@contextlib.contextmanager
def open_source(src: str | os.PathLike, beside: str | os.PathLike | None = None):
  """Open an import source for the length of a block: a built-in name, a .gguf file or a Hugging Face folder.

  A built-in GGUF split into parts is joined into a temporary file in folder `beside` (default: the temp
  folder), deleted when the block ends.
  """
  if str(src) in BUILTIN_MODELS:
    with BUILTIN_MODELS[str(src)].gguf_file(beside) as path:
      yield GGUFModel(path)
  else:
    yield _open_path(src)


def _open_path(src: str | os.PathLike):
  path = Path(src)
  if path.is_file():
    if path.suffix != ".gguf":
      raise SpecjaxError(f"{path} is a file but not a .gguf; pass a GGUF file or a Hugging Face model folder")
    return GGUFModel(path)
  if path.is_dir():
    if is_checkpoint(path):
      raise SpecjaxError(f"{path} is already a specjax checkpoint; use it directly")
    return _HFFolder(path)
  raise SpecjaxError(
    f"import source {src!r} not found: give a Hugging Face folder, a .gguf file, or one of {sorted(BUILTIN_MODELS)}"
  )


def import_model(src: str | os.PathLike, out: str | os.PathLike, param_dtype: str = "float32") -> Path:
  """Convert `src` into a specjax checkpoint folder at `out` (which must not exist)."""
  out = refuse_existing(out)
  with open_source(src, beside=out.parent) as source:  # a split built-in GGUF is joined beside the output
    cfg = source.config.replace(param_dtype=param_dtype)
    params = hf.params_from_hf(
      source.tensor, source.names, cfg, param_shapes(cfg), where=str(getattr(source, "path", src))
    )
    tokenizer = source.tokenizer()
  meta = {"source": str(src), "source_format": "gguf" if isinstance(source, GGUFModel) else "hf"}
  return save_checkpoint(out, cfg, params, tokenizer=tokenizer, meta=meta)


def export_hf(ckpt: str | os.PathLike, out: str | os.PathLike) -> Path:
  """Write a Hugging Face folder (config.json, model.safetensors, generation_config.json, tokenizer)."""
  from safetensors.flax import save_file

  refuse_existing(out)
  loaded = load_checkpoint(ckpt)
  cfg = loaded.config
  if cfg.kind != "decoder":
    raise SpecjaxError(
      f"{ckpt} is an {cfg.kind} draft: it reads a target's features and has no Hugging Face transformers class; "
      "use it from specjax (`--mode eagle`)"
    )
  tokenizer = load_tokenizer(ckpt) if (Path(ckpt) / "tokenizer.json").is_file() else None
  tensors = {k: jnp.asarray(v) for k, v in hf.params_to_hf(jax.device_get(loaded.params), cfg).items()}
  with atomic_dir(out) as tmp:
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(hf.config_to_hf(cfg, cfg.param_dtype), indent=2) + "\n")
    generation = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "do_sample": False}
    if tokenizer is not None:
      tokenizer.save_pretrained(str(tmp))
      if tokenizer.pad_token_id is not None:
        generation["pad_token_id"] = tokenizer.pad_token_id
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
  return Path(out)
