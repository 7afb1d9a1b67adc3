"""`ModelConfig`: the architecture and numerics of every model specjax builds, as one frozen dataclass.

A family is data: `ModelConfig.architecture` plus the feature fields it implies (`FAMILY_FEATURES`); a kind
(`KINDS`) says whether a checkpoint is a language model or an EAGLE-style draft over a target's features.
The modules that compute with it are `specjax.models.llama.Llama` and `specjax.models.eagle.EagleDraft`,
built by `specjax.models.registry.model_for`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from specjax.errors import SpecjaxError
from specjax.models.kv_cache import KVCache

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# The compute dtypes the commands offer (`--dtype`, the training configs' `dtype`; a config may also name
# float16): "auto" is `default_compute_dtype()`, resolved once where a command assembles its model configs.
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")

# What the layers of each family have; `qkv_bias` / `qk_norm` left as None take these values, and an
# explicit value that contradicts the family is refused (the model could not be exported as that family).
# A new family is one row here, one in `specjax.checkpoint.hf.FAMILIES`, and a parity test.
FAMILY_FEATURES: dict[str, dict[str, bool]] = {
  "llama": {"qkv_bias": False, "qk_norm": False},
  "mistral": {"qkv_bias": False, "qk_norm": False},
  "qwen2": {"qkv_bias": True, "qk_norm": False},
  "qwen3": {"qkv_bias": False, "qk_norm": True},
}
ROPE_TYPES = ("default", "linear", "llama3")
# What a checkpoint is: a language model over tokens, or an EAGLE-style draft that reads a target's
# final hidden states (`specjax.models.eagle`); both are configured by the same fields.
KINDS = ("decoder", "eagle")
# Fields added with the model families: `to_dict` writes them only where they differ from what their
# absence means, so configs (and dataset fingerprints) of models written before them are unchanged.
_FAMILY_FIELDS = (
  "kind",
  "head_ids",
  "architecture",
  "qkv_bias",
  "qk_norm",
  "rope_type",
  "rope_factor",
  "rope_low_freq_factor",
  "rope_high_freq_factor",
  "rope_original_max_positions",
)


# Config fields that choose numerics, memory or initialisation, not the function a model computes from its
# parameters: two configs that differ only here are the same model (e.g. the target fingerprint of
# `specjax.data.distill_data` ignores them). Add every new runtime-only field (e.g. `scan_layers`) here.
NON_FUNCTIONAL_FIELDS = frozenset({"dtype", "param_dtype", "remat", "scan_layers", "initializer_range"})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and numerics of a decoder of any supported family (hashable: a static argument).

  A `model_config.json` without `architecture` (written before the families) means "llama".
  """

  vocab_size: int
  hidden_size: int  # D
  intermediate_size: int  # F
  num_layers: int  # L
  num_heads: int  # H
  num_kv_heads: int  # K
  head_dim: int | None = None  # Dh; defaults to D // H
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-5
  architecture: str = "llama"  # one of FAMILY_FEATURES
  qkv_bias: bool | None = None  # biases on the q, k, v projections (Qwen2); None = the family's value
  qk_norm: bool | None = None  # RMSNorm over Dh on each q and k head before RoPE (Qwen3); None = the family's
  rope_type: str = "default"  # one of ROPE_TYPES
  rope_factor: float = 1.0  # linear, llama3: how far the context was stretched
  rope_low_freq_factor: float = 1.0  # llama3
  rope_high_freq_factor: float = 4.0  # llama3
  rope_original_max_positions: int | None = None  # llama3: the pretraining context; None = max_position_embeddings
  tie_embeddings: bool = False
  max_position_embeddings: int = 2048
  initializer_range: float = 0.02
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  remat: bool = False  # rematerialise each block in the backward pass (training memory)
  # Layer parameter layout. True: one `nn.scan` block with [L, ...] stacked parameters (flat compile time
  # in depth; the training layout). False: L separate blocks `layers_0 .. layers_{L-1}` (XLA CPU decodes
  # this about 2x faster: it does not slice the stacked weights on every layer). `decode_layout`
  # converts a checkpoint's parameters once at load.
  scan_layers: bool = True
  # Reduced draft vocabulary (FR-Spec style): the head scores only these target token ids (K of them,
  # frequency-ranked), so logits are [..., K] and index i means token head_ids[i]; inputs keep the full
  # vocabulary. None: the head covers all vocab_size tokens. See `expand_logits` and `specjax.data.vocab_map`.
  head_ids: tuple[int, ...] | None = None
  # One of KINDS. "eagle": an EAGLE-style draft (`specjax.models.eagle.EagleDraft`) with the target's
  # hidden size; its inputs are tokens and the target's features, and its head is untied.
  kind: str = "decoder"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"):
      if getattr(self, name) < 1:
        raise SpecjaxError(f"model config: {name} must be >= 1, got {getattr(self, name)}")
    if self.num_heads % self.num_kv_heads:
      raise SpecjaxError(
        f"model config: num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
      )
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise SpecjaxError(
        f"model config: hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads}); "
        "set head_dim explicitly"
      )
    if self.head_dim is not None and self.head_dim % 2:
      raise SpecjaxError(f"model config: head_dim must be even for rotary embeddings, got {self.head_dim}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise SpecjaxError(f"model config: {name} must be one of {sorted(DTYPES)}, got {getattr(self, name)!r}")
    if self.architecture not in FAMILY_FEATURES:
      raise SpecjaxError(
        f"model config: unknown architecture {self.architecture!r}; supported: {', '.join(FAMILY_FEATURES)}"
      )
    for name, value in FAMILY_FEATURES[self.architecture].items():
      if getattr(self, name) is None:
        object.__setattr__(self, name, value)
      elif bool(getattr(self, name)) != value:
        raise SpecjaxError(
          f"model config: architecture {self.architecture!r} has {name}={value}, got {name}={getattr(self, name)}; "
          f"leave {name} unset (it follows the architecture)"
        )
    self._check_rope()
    if self.kind not in KINDS:
      raise SpecjaxError(f"model config: unknown kind {self.kind!r}; supported: {', '.join(KINDS)}")
    if self.kind == "eagle" and self.tie_embeddings:
      raise SpecjaxError("model config: an eagle draft has an untied head (lm_head); set tie_embeddings=false")
    if self.head_ids is not None:
      ids = tuple(int(i) for i in self.head_ids)
      object.__setattr__(self, "head_ids", ids)
      if not ids or len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= self.vocab_size:
        raise SpecjaxError(
          f"model config: head_ids must be distinct token ids in [0, {self.vocab_size}) (got {len(ids)} ids); "
          "rebuild the vocabulary map with `specjax vocab-map`"
        )

  @property
  def head_size(self) -> int:
    """Rows of the output head: K with a reduced vocabulary, else vocab_size."""
    return len(self.head_ids) if self.head_ids is not None else self.vocab_size

  def _check_rope(self) -> None:
    if self.rope_type not in ROPE_TYPES:
      raise SpecjaxError(
        f"model config: RoPE scaling type {self.rope_type!r} is not supported; use one of {', '.join(ROPE_TYPES)}"
      )
    if self.rope_type != "default" and not self.rope_factor >= 1.0:
      raise SpecjaxError(f"model config: rope_factor must be >= 1 for {self.rope_type} scaling, got {self.rope_factor}")
    if self.rope_type == "llama3" and not 0 < self.rope_low_freq_factor < self.rope_high_freq_factor:
      raise SpecjaxError(
        "model config: llama3 RoPE scaling needs 0 < rope_low_freq_factor < rope_high_freq_factor, got "
        f"{self.rope_low_freq_factor} and {self.rope_high_freq_factor}"
      )

  @property
  def dh(self) -> int:
    return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_heads

  @property
  def rope_original_context(self) -> int:
    """The context the model was pretrained on, before RoPE scaling stretched it (llama3)."""
    return self.rope_original_max_positions or self.max_position_embeddings

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return DTYPES[self.param_dtype]

  def replace(self, **changes: Any) -> ModelConfig:
    if "architecture" in changes:  # the features follow a new architecture unless given too
      changes = {"qkv_bias": None, "qk_norm": None, **changes}
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    implied = {f.name: f.default for f in dataclasses.fields(self)} | FAMILY_FEATURES[self.architecture]
    for name in _FAMILY_FIELDS:
      if d[name] == implied[name]:
        del d[name]
    if d["scan_layers"]:  # a run-time layout (decode_layout), not part of a saved model
      del d["scan_layers"]
    if "head_ids" in d:
      d["head_ids"] = list(d["head_ids"])
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise SpecjaxError(f"model config: unknown keys {unknown}; valid keys are {sorted(names)}")
    if d.get("head_ids") is not None:
      d = dict(d, head_ids=tuple(d["head_ids"]))
    return cls(**d)

  def init_cache(self, batch_size: int, size: int, dtype: Any = None) -> KVCache:
    """An empty KV cache of S = `size` slots per row, in the compute dtype unless told otherwise."""
    return KVCache.init(self.num_layers, batch_size, size, self.num_kv_heads, self.dh, dtype or self.compute_dtype)


def default_compute_dtype() -> str:
  """The compute dtype "auto" stands for: bfloat16 on GPU and TPU, whose matrix units run it at several
  times float32's rate and whose memory traffic it halves, float32 on CPU, where bfloat16 matmuls are
  emulated and slower. Parameters, optimizer state, softmax, logits and losses stay float32 either way."""
  return "bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32"


def resolve_dtype(dtype: str) -> str:
  """A compute dtype setting as a `ModelConfig.dtype`: "auto" becomes `default_compute_dtype()`, a dtype
  name is kept, anything else is refused."""
  if dtype == "auto":
    return default_compute_dtype()
  if dtype not in DTYPES:
    raise SpecjaxError(f"compute dtype must be 'auto' or one of {', '.join(DTYPES)}, got {dtype!r}")
  return dtype


LlamaConfig = ModelConfig  # the name before the families; configs and checkpoints use either
