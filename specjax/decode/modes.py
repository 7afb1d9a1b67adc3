"""The registry of decoding modes: each mode registers itself once, in the file of its decoder.

A `Mode` owns everything the rest of specjax needs to know about it: its decoder, which settings it
reads (its knobs) and how it checks them, its look-ahead (the cache slots a round may write past the
committed length), and whether it needs a draft model or is greedy only. The engine, the CLI (`--mode`
/ `--modes` choices), the bench and the planner read the registry; none of them compares mode names. A new mode is
one file that calls `register(Mode(...))`, named in `BUILTIN` (or imported before use), plus its test.

Knobs are `DecodeSettings` fields: gamma, window, tree, ngram, ngram_min, draft_threshold. A mode's `configure`
gets the user's values of its own knobs and returns them checked (and completed with defaults).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

from specjax.decode.common import DecodeSettings
from specjax.errors import SpecjaxError

KNOBS = ("gamma", "window", "tree", "ngram", "ngram_min", "draft_threshold")
BUILTIN = (
  "autoregressive",
  "speculative",
  "jacobi",
  "lookup",
  "eagle",
  "datastore",
)  # modules of specjax.decode that register modes


@dataclasses.dataclass(frozen=True)
class Mode:
  """One decoding mode (see the module docstring).

  Attributes:
    name: the `--mode` name.
    decode: `decode(settings, target_params, draft_params, prompt, prompt_lens, max_new, key) -> DecodeResult`.
    help: one line for `--help` and the README.
    knobs: the `DecodeSettings` fields the decoder reads (the others are left at their defaults).
    lookahead: cache slots one round may write past the committed length, from the settings.
    configure: checks the mode's knob values (a dict) and returns them, completed; raises SpecjaxError.
    needs_draft: the mode runs a draft model.
    draft_kind: the `ModelConfig.kind` that draft must be ("decoder", or "eagle" for a draft that reads
      the target's features).
    needs_datastore: the mode reads a datastore (`specjax.data.datastore`): its decoder gets the datastore's
      device arrays where draft modes get `draft_params`.
    greedy_only: the mode refuses temperature > 0.
    traced: the decoder records `DecodeResult.trace` when `DecodeSettings.trace` is set.
  """

  name: str
  decode: Callable
  help: str
  knobs: tuple[str, ...]
  lookahead: Callable[[DecodeSettings], int]
  configure: Callable[[dict], dict] = lambda knobs: knobs
  needs_draft: bool = False
  draft_kind: str = "decoder"
  needs_datastore: bool = False
  greedy_only: bool = False
  traced: bool = False

  def __post_init__(self):
    unknown = set(self.knobs) - set(KNOBS)
    if unknown:
      raise SpecjaxError(f"mode {self.name!r} names unknown knobs {sorted(unknown)}; knobs are {', '.join(KNOBS)}")

  @property
  def sweeps_gamma(self) -> bool:
    """The bench runs the mode once per gamma."""
    return "gamma" in self.knobs


_MODES: dict[str, Mode] = {}
_loaded = False


def register(mode: Mode) -> Mode:
  """Add a mode (a second mode of the same name is refused)."""
  if mode.name in _MODES and _MODES[mode.name] is not mode:
    raise SpecjaxError(f"decoding mode {mode.name!r} is registered twice")
  _MODES[mode.name] = mode
  return mode


def _load_builtin() -> None:
  global _loaded
  if not _loaded:
    _loaded = True
    for module in BUILTIN:
      importlib.import_module(f"specjax.decode.{module}")


def names() -> tuple[str, ...]:
  """Every registered mode, in registration order."""
  _load_builtin()
  return tuple(_MODES)


def get(name: str) -> Mode:
  """The mode called `name`; an unknown name is a SpecjaxError listing the registered ones."""
  _load_builtin()
  if name not in _MODES:
    raise SpecjaxError(f"unknown decoding mode {name!r}; choose one of {', '.join(_MODES)}")
  return _MODES[name]


# --- knob checks shared by several modes -----------------------------------------------------------


def check_gamma(knobs: dict) -> dict:
  if knobs["gamma"] < 1:
    raise SpecjaxError(f"gamma (draft tokens per round) must be >= 1, got {knobs['gamma']}")
  return knobs


def check_ngram(knobs: dict) -> dict:
  """`ngram_min` None (the default) is `ngram`: only full-length matches propose."""
  if knobs["ngram_min"] is None:
    knobs = {**knobs, "ngram_min": knobs["ngram"]}
  if knobs["ngram"] < 1:
    raise SpecjaxError(f"ngram (tokens matched by lookup drafting) must be >= 1, got {knobs['ngram']}")
  if not 1 <= knobs["ngram_min"] <= knobs["ngram"]:
    raise SpecjaxError(f"ngram_min must be in 1..ngram ({knobs['ngram']}), got {knobs['ngram_min']}")
  return knobs


def check_threshold(knobs: dict) -> dict:
  t = knobs["draft_threshold"]
  if t is not None and not 0.0 <= t <= 1.0:
    raise SpecjaxError(f"the draft threshold is a probability in [0, 1], got {t}")
  return knobs
