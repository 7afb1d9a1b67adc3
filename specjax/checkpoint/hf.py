"""Hugging Face <-> specjax for every family: one declarative parameter map, per-parameter transforms,
and config translation both ways.

Each row of `PARAM_MAP` names a specjax parameter path, the Hugging Face tensor name (with `{i}` for the
layer index of scanned layers), the transform from the HF layout ([out, in] torch Linear weights) to
ours ([in, out] Dense kernels) and the config condition under which the tensor exists (q/k/v biases,
q/k norms, an untied head). Import and export both walk this one table, so they cannot drift apart.
`FAMILIES` names each architecture's transformers class and the family-specific config.json fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from specjax.errors import SpecjaxError
from specjax.models.llama import ModelConfig


@dataclasses.dataclass(frozen=True)
class ParamRule:
  path: tuple[str, ...]  # specjax parameter path
  hf_name: str  # Hugging Face tensor name; "{i}" = layer index for scanned (per-layer) params
  transpose: bool  # HF Linear weight [out, in] <-> Dense kernel [in, out]
  when: Callable[[ModelConfig], bool] = lambda cfg: True  # the config has this tensor

  @property
  def per_layer(self) -> bool:
    return "{i}" in self.hf_name


_BIAS = lambda cfg: cfg.qkv_bias
_QK_NORM = lambda cfg: cfg.qk_norm
_UNTIED = lambda cfg: not cfg.tie_embeddings

PARAM_MAP: tuple[ParamRule, ...] = (
  ParamRule(("embed_tokens", "embedding"), "model.embed_tokens.weight", False),
  ParamRule(("layers", "input_norm", "scale"), "model.layers.{i}.input_layernorm.weight", False),
  ParamRule(("layers", "attn", "q_proj", "kernel"), "model.layers.{i}.self_attn.q_proj.weight", True),
  ParamRule(("layers", "attn", "k_proj", "kernel"), "model.layers.{i}.self_attn.k_proj.weight", True),
  ParamRule(("layers", "attn", "v_proj", "kernel"), "model.layers.{i}.self_attn.v_proj.weight", True),
  ParamRule(("layers", "attn", "q_proj", "bias"), "model.layers.{i}.self_attn.q_proj.bias", False, _BIAS),
  ParamRule(("layers", "attn", "k_proj", "bias"), "model.layers.{i}.self_attn.k_proj.bias", False, _BIAS),
  ParamRule(("layers", "attn", "v_proj", "bias"), "model.layers.{i}.self_attn.v_proj.bias", False, _BIAS),
  ParamRule(("layers", "attn", "q_norm", "scale"), "model.layers.{i}.self_attn.q_norm.weight", False, _QK_NORM),
  ParamRule(("layers", "attn", "k_norm", "scale"), "model.layers.{i}.self_attn.k_norm.weight", False, _QK_NORM),
  ParamRule(("layers", "attn", "o_proj", "kernel"), "model.layers.{i}.self_attn.o_proj.weight", True),
  ParamRule(("layers", "post_attn_norm", "scale"), "model.layers.{i}.post_attention_layernorm.weight", False),
  ParamRule(("layers", "mlp", "gate_proj", "kernel"), "model.layers.{i}.mlp.gate_proj.weight", True),
  ParamRule(("layers", "mlp", "up_proj", "kernel"), "model.layers.{i}.mlp.up_proj.weight", True),
  ParamRule(("layers", "mlp", "down_proj", "kernel"), "model.layers.{i}.mlp.down_proj.weight", True),
  ParamRule(("norm", "scale"), "model.norm.weight", False),
  ParamRule(("lm_head", "kernel"), "lm_head.weight", True, _UNTIED),
)


@dataclasses.dataclass(frozen=True)
class Family:
  """How one architecture looks in Hugging Face: its class, model_type and family-specific config fields."""

  hf_class: str
  model_type: str
  sliding_window: str  # "none" (no such attention), "always" (Mistral: any window applies) or "flag" (Qwen)
  bias_field: str | None  # the config.json flag for projection biases (refused when true), None = fixed
  export_fields: Mapping[str, Any]  # written into an exported config.json


FAMILIES: dict[str, Family] = {
  "llama": Family("LlamaForCausalLM", "llama", "none", "attention_bias", {"attention_bias": False, "mlp_bias": False}),
  "mistral": Family("MistralForCausalLM", "mistral", "always", None, {"sliding_window": None}),
  "qwen2": Family("Qwen2ForCausalLM", "qwen2", "flag", None, {"use_sliding_window": False, "sliding_window": None}),
  "qwen3": Family(
    "Qwen3ForCausalLM",
    "qwen3",
    "flag",
    "attention_bias",
    {"attention_bias": False, "use_sliding_window": False, "sliding_window": None},
  ),
}
SUPPORTED_ARCHITECTURES = tuple(f.hf_class for f in FAMILIES.values())


def rules_for(cfg: ModelConfig) -> tuple[ParamRule, ...]:
  return tuple(r for r in PARAM_MAP if r.when(cfg))


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
  for k in path:
    tree = tree[k]
  return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def hf_shape(rule: ParamRule, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The HF tensor shape of one layer's slice of a specjax parameter of `shape`."""
  if rule.per_layer:
    shape = shape[1:]
  return tuple(reversed(shape)) if rule.transpose else tuple(shape)


def params_from_hf(
  get_tensor: Callable[[str], np.ndarray], names: set[str], cfg: ModelConfig, expected_shapes: Any, where: str
) -> dict:
  """Build the specjax parameter tree from HF tensors.

  Args:
    get_tensor: returns a tensor (numpy-like, HF layout) by HF name.
    names: the HF tensor names available.
    cfg: the model config.
    expected_shapes: `param_shapes(cfg)`; every tensor is checked against it.
    where: a description of the source for error messages.
  """
  missing = [
    r.hf_name.format(i=i)
    for r in rules_for(cfg)
    for i in (range(cfg.num_layers) if r.per_layer else [0])
    if r.hf_name.format(i=i) not in names
  ]
  if missing:
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise SpecjaxError(f"{where} is missing tensors {missing[:5]}{more}; the weights do not match config.json")
  dtype = cfg.weight_dtype
  params: dict = {}
  for rule in rules_for(cfg):
    want = _get(expected_shapes, rule.path).shape
    layers = range(cfg.num_layers) if rule.per_layer else [None]
    slices = []
    for i in layers:
      name = rule.hf_name.format(i=i)
      t = np.asarray(get_tensor(name))
      if t.shape != hf_shape(rule, want):
        raise SpecjaxError(
          f"{where}: tensor {name} has shape {tuple(t.shape)}, expected {hf_shape(rule, want)} from config.json"
        )
      slices.append(t.T if rule.transpose else t)
    value = np.stack(slices) if rule.per_layer else slices[0]
    _set(params, rule.path, np.asarray(value, dtype=dtype))
  return params


def params_to_hf(params: Mapping, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """Flatten a specjax parameter tree into HF-named tensors (HF layout)."""
  out = {}
  for rule in rules_for(cfg):
    value = np.asarray(_get(params, rule.path))
    for i in range(cfg.num_layers) if rule.per_layer else [None]:
      t = value[i] if rule.per_layer else value
      out[rule.hf_name.format(i=i)] = np.ascontiguousarray(t.T if rule.transpose else t)
  return out


def _rope(hf: Mapping, max_positions: int, where: str) -> dict[str, Any]:
  """The RoPE fields of ModelConfig from `rope_scaling` (transformers 4.x) or `rope_parameters` (5.x)."""
  spec = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
  theta = float(spec.get("rope_theta", hf.get("rope_theta", 10000.0)))
  kind = spec.get("rope_type", spec.get("type")) or "default"
  partial = spec.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
  if partial not in (None, 1, 1.0):
    raise SpecjaxError(f"{where}: partial_rotary_factor={partial} is not supported (RoPE over the whole head only)")
  out: dict[str, Any] = {"rope_theta": theta}
  if kind == "default":
    return out
  if kind not in ("linear", "llama3"):
    raise SpecjaxError(
      f"{where}: RoPE scaling of type {kind!r} is not supported; specjax supports default, linear and llama3"
    )
  try:
    out.update(rope_type=kind, rope_factor=float(spec["factor"]))
    if kind == "llama3":
      out.update(
        rope_low_freq_factor=float(spec["low_freq_factor"]),
        rope_high_freq_factor=float(spec["high_freq_factor"]),
        rope_original_max_positions=int(
          hf.get("original_max_position_embeddings") or spec.get("original_max_position_embeddings") or max_positions
        ),
      )
  except KeyError as e:
    raise SpecjaxError(f"{where}: {kind} RoPE scaling lacks the field {e.args[0]!r}") from None
  return out


def _check_sliding_window(hf: Mapping, family: Family, where: str) -> None:
  """Refuse a sliding window that binds inside the context (specjax attends over the whole context)."""
  if family.sliding_window == "none":
    return
  window = hf.get("sliding_window")
  if family.sliding_window == "flag" and not hf.get("use_sliding_window"):
    window = None
  context = int(hf.get("max_position_embeddings", 2048))
  if window is None or int(window) >= context:
    return
  if family.sliding_window == "flag":  # Qwen: only some layers slide
    layers = int(hf.get("num_hidden_layers", 0))
    types = hf.get("layer_types") or [
      "sliding_attention" if i >= int(hf.get("max_window_layers", 28)) else "full_attention" for i in range(layers)
    ]
    if "sliding_attention" not in types:
      return
  raise SpecjaxError(
    f"{where}: sliding-window attention (window {window} < context {context}) is not supported; specjax "
    "attends over the whole context, so it would compute something else past the window. Use a model "
    "without a sliding window (sliding_window null, or use_sliding_window false for Qwen)"
  )


def config_from_hf(hf: Mapping, where: str = "config.json") -> ModelConfig:
  """Translate a Hugging Face config.json dict of a supported family; refuse what the model cannot represent."""
  archs = hf.get("architectures") or []
  model_type = hf.get("model_type")
  name = next((n for n, f in FAMILIES.items() if f.model_type == model_type), None)
  if name is None or (archs and FAMILIES[name].hf_class not in archs):
    found = ", ".join(archs) or model_type or "unknown"
    raise SpecjaxError(
      f"{where}: architecture {found} is not supported; specjax imports {', '.join(SUPPORTED_ARCHITECTURES)} "
      f"(model_type {', '.join(repr(f.model_type) for f in FAMILIES.values())})"
    )
  family = FAMILIES[name]
  for flag in ("mlp_bias", family.bias_field):
    if flag and hf.get(flag):
      raise SpecjaxError(f"{where}: {flag}=true is not supported ({family.hf_class} in specjax has no such biases)")
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise SpecjaxError(f"{where}: hidden_act {act!r} is not supported (only silu / SwiGLU)")
  _check_sliding_window(hf, family, where)
  try:
    heads = int(hf["num_attention_heads"])
    eos = hf.get("eos_token_id")
    if isinstance(eos, list):
      eos = eos[0] if eos else None
    max_positions = int(hf.get("max_position_embeddings", 2048))
    return ModelConfig(
      vocab_size=int(hf["vocab_size"]),
      hidden_size=int(hf["hidden_size"]),
      intermediate_size=int(hf["intermediate_size"]),
      num_layers=int(hf["num_hidden_layers"]),
      num_heads=heads,
      num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=hf.get("head_dim"),
      architecture=name,
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_position_embeddings=max_positions,
      initializer_range=float(hf.get("initializer_range", 0.02)),
      bos_token_id=hf.get("bos_token_id"),
      eos_token_id=eos,
      **_rope(hf, max_positions, where),
    )
  except KeyError as e:
    raise SpecjaxError(f"{where} lacks the required field {e.args[0]!r}") from None
  except (TypeError, ValueError) as e:
    raise SpecjaxError(f"{where} has a malformed field: {e}") from None


def rope_to_hf(cfg: ModelConfig) -> dict[str, Any] | None:
  """The `rope_scaling` dict of config.json (None for plain RoPE)."""
  if cfg.rope_type == "default":
    return None
  spec: dict[str, Any] = {"rope_type": cfg.rope_type, "factor": cfg.rope_factor}
  if cfg.rope_type == "llama3":
    spec.update(
      low_freq_factor=cfg.rope_low_freq_factor,
      high_freq_factor=cfg.rope_high_freq_factor,
      original_max_position_embeddings=cfg.rope_original_context,
    )
  return spec


def config_to_hf(cfg: ModelConfig, dtype: str) -> dict:
  """A Hugging Face config.json dict for `cfg`, loadable by its own transformers class."""
  family = FAMILIES[cfg.architecture]
  scaling = rope_to_hf(cfg)
  return {
    "architectures": [family.hf_class],
    "model_type": family.model_type,
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.hidden_size,
    "intermediate_size": cfg.intermediate_size,
    "num_hidden_layers": cfg.num_layers,
    "num_attention_heads": cfg.num_heads,
    "num_key_value_heads": cfg.num_kv_heads,
    "head_dim": cfg.dh,
    "hidden_act": "silu",
    "max_position_embeddings": cfg.max_position_embeddings,
    "initializer_range": cfg.initializer_range,
    "rms_norm_eps": cfg.rms_norm_eps,
    "rope_theta": cfg.rope_theta,
    # transformers 5 reads rope_parameters, 4.x reads rope_scaling (and 5 prefers it when set): both agree.
    "rope_parameters": {"rope_type": "default", **(scaling or {}), "rope_theta": cfg.rope_theta},
    "rope_scaling": scaling,
    **family.export_fields,
    "attention_dropout": 0.0,
    "tie_word_embeddings": cfg.tie_embeddings,
    "bos_token_id": cfg.bos_token_id,
    "eos_token_id": cfg.eos_token_id,
    "use_cache": True,
    "dtype": dtype,
    "torch_dtype": dtype,
  }
