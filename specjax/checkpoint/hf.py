"""Hugging Face Llama <-> specjax: one declarative parameter map, per-parameter transforms, and config
translation both ways.

Each row of `PARAM_MAP` names a specjax parameter path, the Hugging Face tensor name (with `{i}` for the
layer index of scanned layers) and the transform from the HF layout ([out, in] torch Linear weights) to
ours ([in, out] Dense kernels). Import and export both walk this one table, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from specjax.errors import SpecjaxError
from specjax.models.llama import LlamaConfig


@dataclasses.dataclass(frozen=True)
class ParamRule:
  path: tuple[str, ...]  # specjax parameter path
  hf_name: str  # Hugging Face tensor name; "{i}" = layer index for scanned (per-layer) params
  transpose: bool  # HF Linear weight [out, in] <-> Dense kernel [in, out]

  @property
  def per_layer(self) -> bool:
    return "{i}" in self.hf_name


PARAM_MAP: tuple[ParamRule, ...] = (
  ParamRule(("embed_tokens", "embedding"), "model.embed_tokens.weight", False),
  ParamRule(("layers", "input_norm", "scale"), "model.layers.{i}.input_layernorm.weight", False),
  ParamRule(("layers", "attn", "q_proj", "kernel"), "model.layers.{i}.self_attn.q_proj.weight", True),
  ParamRule(("layers", "attn", "k_proj", "kernel"), "model.layers.{i}.self_attn.k_proj.weight", True),
  ParamRule(("layers", "attn", "v_proj", "kernel"), "model.layers.{i}.self_attn.v_proj.weight", True),
  ParamRule(("layers", "attn", "o_proj", "kernel"), "model.layers.{i}.self_attn.o_proj.weight", True),
  ParamRule(("layers", "post_attn_norm", "scale"), "model.layers.{i}.post_attention_layernorm.weight", False),
  ParamRule(("layers", "mlp", "gate_proj", "kernel"), "model.layers.{i}.mlp.gate_proj.weight", True),
  ParamRule(("layers", "mlp", "up_proj", "kernel"), "model.layers.{i}.mlp.up_proj.weight", True),
  ParamRule(("layers", "mlp", "down_proj", "kernel"), "model.layers.{i}.mlp.down_proj.weight", True),
  ParamRule(("norm", "scale"), "model.norm.weight", False),
  ParamRule(("lm_head", "kernel"), "lm_head.weight", True),
)

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)


def rules_for(cfg: LlamaConfig) -> tuple[ParamRule, ...]:
  return tuple(r for r in PARAM_MAP if not (cfg.tie_embeddings and r.path[0] == "lm_head"))


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
  get_tensor: Callable[[str], np.ndarray], names: set[str], cfg: LlamaConfig, expected_shapes: Any, where: str
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


def params_to_hf(params: Mapping, cfg: LlamaConfig) -> dict[str, np.ndarray]:
  """Flatten a specjax parameter tree into HF-named tensors (HF layout)."""
  out = {}
  for rule in rules_for(cfg):
    value = np.asarray(_get(params, rule.path))
    for i in range(cfg.num_layers) if rule.per_layer else [None]:
      t = value[i] if rule.per_layer else value
      out[rule.hf_name.format(i=i)] = np.ascontiguousarray(t.T if rule.transpose else t)
  return out


def _rope_theta(hf: Mapping) -> float:
  rope = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  for spec in (rope, scaling):
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind not in ("default", None):
      raise SpecjaxError(f"RoPE scaling of type {kind!r} is not supported (only plain RoPE)")
  theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
  return float(theta)


def config_from_hf(hf: Mapping, where: str = "config.json") -> LlamaConfig:
  """Translate a Hugging Face LlamaConfig dict; refuse what the model cannot represent."""
  archs = hf.get("architectures") or []
  model_type = hf.get("model_type")
  if model_type != "llama" or (archs and not set(archs) & set(SUPPORTED_ARCHITECTURES)):
    name = ", ".join(archs) or model_type or "unknown"
    raise SpecjaxError(
      f"{where}: architecture {name} is not supported; specjax imports Llama-architecture models "
      f"(model_type 'llama', {', '.join(SUPPORTED_ARCHITECTURES)})"
    )
  for flag in ("attention_bias", "mlp_bias"):
    if hf.get(flag):
      raise SpecjaxError(f"{where}: {flag}=true is not supported (specjax's Llama has no biases)")
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise SpecjaxError(f"{where}: hidden_act {act!r} is not supported (only silu / SwiGLU)")
  try:
    heads = int(hf["num_attention_heads"])
    eos = hf.get("eos_token_id")
    if isinstance(eos, list):
      eos = eos[0] if eos else None
    return LlamaConfig(
      vocab_size=int(hf["vocab_size"]),
      hidden_size=int(hf["hidden_size"]),
      intermediate_size=int(hf["intermediate_size"]),
      num_layers=int(hf["num_hidden_layers"]),
      num_heads=heads,
      num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=hf.get("head_dim"),
      rope_theta=_rope_theta(hf),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
      initializer_range=float(hf.get("initializer_range", 0.02)),
      bos_token_id=hf.get("bos_token_id"),
      eos_token_id=eos,
    )
  except KeyError as e:
    raise SpecjaxError(f"{where} lacks the required field {e.args[0]!r}") from None
  except (TypeError, ValueError) as e:
    raise SpecjaxError(f"{where} has a malformed field: {e}") from None


def config_to_hf(cfg: LlamaConfig, dtype: str) -> dict:
  """A Hugging Face LlamaConfig dict (config.json) for `cfg`."""
  return {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
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
    "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
    "rope_scaling": None,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "mlp_bias": False,
    "tie_word_embeddings": cfg.tie_embeddings,
    "bos_token_id": cfg.bos_token_id,
    "eos_token_id": cfg.eos_token_id,
    "use_cache": True,
    "dtype": dtype,
    "torch_dtype": dtype,
  }
