"""Typed configs: frozen dataclasses filled from YAML files plus dotted `key=value` overrides.

    cfg = load_config(PretrainConfig, "configs/pretrain/drafter-s.yaml", ["optim.lr=3e-4", "steps=100"])

Nested dataclasses are nested mappings in YAML and dotted paths in overrides. Values in overrides are
parsed as YAML scalars (`3e-4`, `true`, `[1, 2]`, `null`). An unknown or mistyped key is a
`SpecjaxError` that lists the valid keys; a value of the wrong type is one too.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from specjax.errors import SpecjaxError

T = TypeVar("T")


# configs/<kind>/*.yaml -> "module:Dataclass" that loads them (each stage adds its own kind here).
CONFIG_KINDS: dict[str, str] = {
  "pretrain": "specjax.train.pretrain:PretrainConfig",
  "distill": "specjax.train.distill:DistillConfig",
  "msn": "specjax.train.msn:MsnConfig",
}


def config_class(kind: str) -> type:
  """The dataclass of configs/<kind>/ files (import errors propagate: the stage may not exist yet)."""
  import importlib

  if kind not in CONFIG_KINDS:
    raise SpecjaxError(f"unknown config kind {kind!r}; known kinds are {sorted(CONFIG_KINDS)}")
  module, _, name = CONFIG_KINDS[kind].partition(":")
  return getattr(importlib.import_module(module), name)


def _parse_scalar(text: str) -> Any:
  try:
    return yaml.safe_load(text)
  except yaml.YAMLError:
    return text


def _coerce(value: Any, tp: Any, where: str) -> Any:
  """Check (and gently convert) `value` to the annotated type `tp`."""
  origin = typing.get_origin(tp)
  if tp is Any:
    return value
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(tp)
    if value is None and type(None) in args:
      return None
    errors = []
    for arg in args:
      if arg is type(None):
        continue
      try:
        return _coerce(value, arg, where)
      except SpecjaxError as e:
        errors.append(str(e))
    raise SpecjaxError(errors[0] if errors else f"{where}: bad value {value!r}")
  if dataclasses.is_dataclass(tp):
    if isinstance(value, tp):
      return value
    if not isinstance(value, dict):
      raise SpecjaxError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
    return _build(tp, value, where)
  if origin in (tuple, list):
    if isinstance(value, str):
      value = [_parse_scalar(v) for v in value.split(",")] if value else []
    if not isinstance(value, (list, tuple)):
      raise SpecjaxError(f"{where}: expected a list, got {value!r}")
    args = typing.get_args(tp)
    item = args[0] if args else Any
    items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items
  if origin is dict:
    if not isinstance(value, dict):
      raise SpecjaxError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)
  if origin is typing.Literal:
    if value not in typing.get_args(tp):
      raise SpecjaxError(f"{where}: must be one of {list(typing.get_args(tp))}, got {value!r}")
    return value
  if tp is bool:
    if isinstance(value, bool):
      return value
    raise SpecjaxError(f"{where}: expected true or false, got {value!r}")
  if tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
    raise SpecjaxError(f"{where}: expected an integer, got {value!r}")
  if tp is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    if isinstance(value, str):
      try:
        return float(value)
      except ValueError:
        pass
    raise SpecjaxError(f"{where}: expected a number, got {value!r}")
  if tp is str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
      return str(value)
    raise SpecjaxError(f"{where}: expected a string, got {value!r}")
  return value


def _build(cls: type[T], data: dict, where: str = "") -> T:
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    prefix = f"{where}." if where else ""
    raise SpecjaxError(
      f"unknown config key(s) {[prefix + k for k in unknown]}; valid keys{' under ' + where if where else ''} "
      f"are: {', '.join(sorted(fields))}"
    )
  kwargs = {}
  for name, value in data.items():
    kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
  missing = [
    n
    for n, f in fields.items()
    if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
  ]
  if missing:
    raise SpecjaxError(f"config is missing required key(s) {[(where + '.' if where else '') + m for m in missing]}")
  return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
  keys = dotted.split(".")
  node = tree
  for k in keys[:-1]:
    node = node.setdefault(k, {})
    if not isinstance(node, dict):
      raise SpecjaxError(f"override {dotted!r}: {k!r} is not a section")
  node[keys[-1]] = value


def config_to_dict(cfg: Any) -> dict:
  return dataclasses.asdict(cfg)


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
  """The dotted keys at which two JSON-like values differ, sorted, e.g. ['generation.dtype']."""
  if isinstance(a, dict) and isinstance(b, dict):
    return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{prefix}{k}.")]
  return [] if a == b else [prefix.rstrip(".")]


def with_defaults(recorded: dict, defaults: dict) -> dict:
  """`recorded` with the keys it lacks taken from `defaults` (nested): a record written before a
  setting existed is read as having had its default, so adding a setting does not orphan old runs."""
  out = dict(recorded)
  for k, v in defaults.items():
    if k not in out:
      out[k] = v
    elif isinstance(out[k], dict) and isinstance(v, dict):
      out[k] = with_defaults(out[k], v)
  return out


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
  """Build `cls` from a YAML file (optional) and `key=value` overrides (dotted for nested fields)."""
  data: dict = {}
  if path is not None:
    path = Path(path)
    if not path.is_file():
      raise SpecjaxError(f"config file {path} does not exist")
    try:
      data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
      raise SpecjaxError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
      raise SpecjaxError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
  for item in overrides or []:
    if "=" not in item:
      raise SpecjaxError(f"override {item!r} must look like key=value (dotted keys for nested sections)")
    key, _, text = item.partition("=")
    _set_dotted(data, key.strip(), _parse_scalar(text))
  return _build(cls, data)
