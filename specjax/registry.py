"""A registry of named records filled by the modules that define them (decoding modes, draft kinds).

The built-in modules are imported on first use, not at import time, so that `specjax --help` and the
modules that only declare records stay cheap and free of import cycles; a second record of a taken name
is refused.

    MODES = Registry("decoding mode", "specjax.decode", ("autoregressive", "speculative"))
    MODES.add(Mode(name="ar", ...))        # in specjax/decode/autoregressive.py
    MODES.get("ar"); MODES.names()
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from specjax.errors import SpecjaxError

T = TypeVar("T")


class Registry(Generic[T]):
  """Records of one kind by `.name`; `unknown(name, names)` words the error for a name not registered."""

  def __init__(self, what: str, package: str, builtin: tuple[str, ...], unknown: Callable[[str, str], str]):
    self.what, self.package, self.builtin, self.unknown = what, package, builtin, unknown
    self._items: dict[str, T] = {}
    self._loaded = False

  def add(self, item: T, check: Callable[[T, dict[str, T]], None] | None = None) -> T:
    """Register `item`; `check(item, registered)` may refuse it against those already there (the
    built-in ones are not loaded for it: it runs while they load)."""
    name = item.name
    if name in self._items and self._items[name] is not item:
      raise SpecjaxError(f"{self.what} {name!r} is registered twice")
    if check is not None:
      check(item, self._items)
    self._items[name] = item
    return item

  def remove(self, name: str) -> None:
    """Forget a record (a test that registered its own)."""
    self._items.pop(name, None)

  def items(self) -> dict[str, T]:
    """Every record, in registration order, the built-in ones loaded."""
    if not self._loaded:
      self._loaded = True
      for module in self.builtin:
        importlib.import_module(f"{self.package}.{module}")
    return self._items

  def names(self) -> tuple[str, ...]:
    return tuple(self.items())

  def get(self, name: str) -> T:
    items = self.items()
    if name not in items:
      raise SpecjaxError(self.unknown(name, ", ".join(items)))
    return items[name]
