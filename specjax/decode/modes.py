"""The registry of decoding modes: each mode registers itself once, in the file of its decoder.

A `Mode` owns everything the rest of specjax needs to know about it: its decoder, its knobs (a frozen
dataclass of its own settings, each field made with `knob`: default, help, how the command line parses
it, whether the bench sweeps it), its look-ahead (the cache slots a round may write past the committed
length), whether it needs a draft model or is greedy only, and which of the planner's speed models
describes its rounds. The engine, the CLI (`--mode` choices and every knob's flag on `generate`, `bench`
and `plan`), the bench (its sweeps and record fields) and the planner read the registry; none of them
names a mode. A new mode with new knobs is one file that calls `register(Mode(...))`, named in `BUILTIN`
(or imported before use), plus its test (tests/test_mode_extension.py is one).

Modes that share a setting share its field (the `gamma()` / `ngram()` / ... constructors below), so the
command line has one `--gamma` however many modes read it; two modes that declare the same knob name
differently are refused at registration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from specjax.errors import SpecjaxError
from specjax.registry import Registry

BUILTIN = (
  "autoregressive",
  "speculative",
  "jacobi",
  "lookup",
  "eagle",
  "datastore",
  "hybrid",
)  # modules of specjax.decode that register modes


def knob(
  default: Any,
  help: str,
  *,
  parse: Callable[[str], Any] | None = None,
  sweep: Sequence | None = None,
  check: Callable[[Any], bool] | None = None,
  rule: str = "",
  short: str | None = None,
):
  """A field of a mode's knob dataclass.

  Args:
    default: the value when the user gives none.
    help: one line for `--help`.
    parse: text -> value for the command line flag (`--name-with-dashes`); None: no flag (set from Python).
    sweep: the bench runs the mode once per value of this knob; these are the values it runs by default.
    check: value -> whether it is valid; `rule` says what a valid value is (the error message).
    short: the name in bench and plan labels (default: the field name).
  """
  meta = dict(
    help=help, parse=parse, sweep=None if sweep is None else tuple(sweep), check=check, rule=rule, short=short
  )
  return dataclasses.field(default=default, metadata=meta)


def optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
  """A parser whose 'none' (or 'off', or empty) is None."""

  def parse(text: str):
    return None if text.strip().lower() in ("none", "off", "") else kind(text)

  parse.__name__ = kind.__name__
  return parse


_opt_float, _opt_int = optional(float), optional(int)


def _at_least_1(v) -> bool:
  return v >= 1


def _probability(v) -> bool:
  return v is None or 0.0 <= v <= 1.0


# --- knobs several modes read (one field each, so one flag) ----------------------------------------


def gamma():
  return knob(
    4,
    "draft tokens per round (the most, when the draft length is dynamic)",
    parse=int,
    sweep=(1, 2, 4),
    check=_at_least_1,
    rule="gamma (draft tokens per round) must be >= 1",
  )


def draft_threshold():
  return knob(
    None,
    "a row stops drafting after a token whose draft probability is below this ('none' = fixed gamma)",
    parse=_opt_float,
    sweep=(None,),
    check=_probability,
    rule="the draft threshold is a probability in [0, 1]",
    short="thr",
  )


def ngram():
  return knob(
    3,
    "lookup drafting matches the last N tokens (then fewer, down to --ngram-min)",
    parse=int,
    check=_at_least_1,
    rule="ngram (tokens matched by lookup drafting) must be >= 1",
  )


def ngram_min():
  return knob(
    None,
    "the shortest match lookup drafting proposes from ('none' = ngram)",
    parse=_opt_int,
    sweep=(None,),
    short="nmin",
  )


def complete_ngram(k):
  """`ngram_min` None (the default) is `ngram`: only full-length matches propose."""
  if k.ngram_min is None:
    k = dataclasses.replace(k, ngram_min=k.ngram)
  if not 1 <= k.ngram_min <= k.ngram:
    raise SpecjaxError(f"ngram_min must be in 1..ngram ({k.ngram}), got {k.ngram_min}")
  return k


@dataclasses.dataclass(frozen=True)
class NoKnobs:
  """The knobs of a mode that has none."""


@dataclasses.dataclass(frozen=True)
class Mode:
  """One decoding mode (see the module docstring).

  Attributes:
    name: the `--mode` name.
    decode: `decode(settings, target_params, draft_params, prompt, prompt_lens, max_new, key) -> DecodeResult`;
      the mode's knob values are `settings.knobs`, an instance of `knobs`.
    help: one line for `--help` and the README.
    knobs: the frozen dataclass of the mode's settings, its fields made with `knob`.
    lookahead: cache slots one round may write past the committed length, from the knob values.
    configure: checks that span several knobs and completes defaults (knobs -> knobs); raises SpecjaxError.
    needs_draft: the mode runs a draft model.
    draft_kind: the `ModelConfig.kind` that draft must be ("decoder", or "eagle" for a draft that reads
      the target's features).
    needs_datastore: the mode reads a datastore (`specjax.data.datastore`): its decoder gets the datastore's
      device arrays where draft modes get `draft_params`.
    reads_datastore: a draft mode that also reads the engine's datastore when it has one (and runs without
      one): its decoder gets the pair (draft_params, the datastore's arrays or None) as `draft_params`.
    greedy_only: the mode refuses temperature > 0.
    traced: the decoder records `DecodeResult.trace` when `DecodeSettings.trace` is set.
    baseline: the mode every speed-up is measured against (exactly one: autoregressive decoding).
    speed_model: which of `specjax plan`'s models predicts its rounds ("draft", "match", "tree" or "hybrid";
      None: the planner does not plan it).
  """

  name: str
  decode: Callable
  help: str
  lookahead: Callable[[Any], int]
  knobs: type = NoKnobs
  configure: Callable[[Any], Any] = lambda knobs: knobs
  needs_draft: bool = False
  draft_kind: str = "decoder"
  needs_datastore: bool = False
  reads_datastore: bool = False
  greedy_only: bool = False
  traced: bool = False
  baseline: bool = False
  speed_model: str | None = None

  def __post_init__(self):
    if not (dataclasses.is_dataclass(self.knobs) and self.knobs.__dataclass_params__.frozen):
      raise SpecjaxError(f"mode {self.name!r}: knobs must be a frozen dataclass, got {self.knobs!r}")
    for f in dataclasses.fields(self.knobs):
      if "help" not in f.metadata:
        raise SpecjaxError(f"mode {self.name!r}: knob {f.name!r} is not declared with modes.knob(...)")
    if self.reads_datastore and not self.needs_draft:
      raise SpecjaxError(f"mode {self.name!r}: reads_datastore is for draft modes; a mode without one needs_datastore")

  @property
  def fields(self) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(self.knobs)

  @property
  def swept(self) -> tuple[str, ...]:
    """The knobs the bench runs once per value of."""
    return tuple(f.name for f in self.fields if f.metadata["sweep"] is not None)

  def make_knobs(self, values: dict[str, Any]):
    """The mode's knobs from `values` (names it does not read are ignored), checked and completed."""
    names = {f.name for f in self.fields}
    k = self.knobs(**{n: v for n, v in values.items() if n in names})
    for f in self.fields:
      v, check = getattr(k, f.name), f.metadata["check"]
      if check is not None and not check(v):
        raise SpecjaxError(f"{f.metadata['rule'] or f.name + ' is not valid'}, got {v}")
    return self.configure(k)


_MODES: Registry[Mode] = Registry(
  "decoding mode",
  "specjax.decode",
  BUILTIN,
  lambda name, known: f"unknown decoding mode {name!r}; choose one of {known}",
)


def _signature(f: dataclasses.Field) -> tuple:
  m = f.metadata
  return (f.default, m["help"], m["parse"] is None, m["sweep"], m["short"])


def _fits(mode: Mode, registered: dict[str, Mode]) -> None:
  """One baseline, and every knob declared alike by every mode that has it."""
  base = [m.name for m in registered.values() if m.baseline and m.name != mode.name]
  if mode.baseline and base:
    raise SpecjaxError(f"mode {mode.name!r} claims to be the baseline, but {base[0]!r} is")
  for f in mode.fields:
    for other in registered.values():
      same = [g for g in other.fields if g.name == f.name]
      if same and _signature(same[0]) != _signature(f):
        raise SpecjaxError(
          f"mode {mode.name!r} declares knob {f.name!r} unlike mode {other.name!r}; share its field (modes.{f.name}())"
        )


def register(mode: Mode) -> Mode:
  """Add a mode (a second mode of the same name, or a knob declared otherwise by another mode, is refused)."""
  return _MODES.add(mode, _fits)


def names() -> tuple[str, ...]:
  """Every registered mode, in registration order."""
  return _MODES.names()


def get(name: str) -> Mode:
  """The mode called `name`; an unknown name is a SpecjaxError listing the registered ones."""
  return _MODES.get(name)


def unregister(name: str) -> None:
  """Forget a mode (a test that registered its own)."""
  _MODES.remove(name)


def baseline() -> Mode:
  """The mode speed-ups are measured against."""
  return next(m for m in _MODES.items().values() if m.baseline)


def knob_fields() -> dict[str, dataclasses.Field]:
  """Every knob of every registered mode, by name (first declaration order)."""
  out: dict[str, dataclasses.Field] = {}
  for m in _MODES.items().values():
    for f in m.fields:
      out.setdefault(f.name, f)
  return out


def short(name: str) -> str:
  """A knob's name in labels."""
  f = knob_fields().get(name)
  return (f.metadata["short"] if f is not None else None) or name
