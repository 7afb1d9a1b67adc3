"""Every annotation in specjax resolves: no undefined names hide in type hints (ruff's F821 checks the same)."""

import importlib
import inspect
import pkgutil
import typing

import pytest

import specjax

MODULES = sorted(m.name for m in pkgutil.walk_packages(specjax.__path__, "specjax.") if m.name != "specjax.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_type_hints_resolve(name):
  module = importlib.import_module(name)
  for obj in vars(module).values():
    if getattr(obj, "__module__", None) != name or not (inspect.isclass(obj) or inspect.isfunction(obj)):
      continue
    typing.get_type_hints(obj)
    if inspect.isclass(obj):
      for member in vars(obj).values():  # methods written in the module (not dataclass-generated ones)
        if inspect.isfunction(member) and member.__code__.co_filename == module.__file__:
          typing.get_type_hints(member)
