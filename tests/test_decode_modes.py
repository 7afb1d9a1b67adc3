"""The mode registry: every decoder registers itself once; engine, CLI and bench read it."""

from __future__ import annotations

import pytest
from decode_util import engine, model, prompts, tiny

from specjax.cli import main
from specjax.decode import autoregressive, modes
from specjax.decode.common import DecodeSettings
from specjax.decode.modes import Mode
from specjax.decode.tree import TokenTree
from specjax.errors import SpecjaxError
from specjax.eval.bench import combinations

BUILTIN = {"ar", "spec", "spec-lookup", "lookup", "jacobi", "tr-jacobi", "eagle", "datastore", "combined"}


@pytest.fixture(scope="module")
def eng():
  return engine(model(tiny(), 0), model(tiny(layers=1), 1))


def test_builtin_modes_are_registered():
  assert set(modes.names()) == BUILTIN
  s = DecodeSettings(target=tiny(), max_new_tokens=4, cache_size=1, gamma=3, window=5, tree=TokenTree.default())
  looks = {name: modes.get(name).lookahead(s) for name in BUILTIN}
  assert looks == {
    "ar": 1,
    "spec": 4,
    "spec-lookup": 4,
    "lookup": 4,
    "jacobi": 6,
    "tr-jacobi": 69,
    "eagle": 4,
    "datastore": 4,
    "combined": 4,
  }
  assert {m for m in BUILTIN if modes.get(m).needs_draft} == {"spec", "spec-lookup", "eagle"}
  assert {m for m in BUILTIN if modes.get(m).draft_kind == "eagle"} == {"eagle"}
  assert {m for m in BUILTIN if modes.get(m).needs_datastore} == {"datastore", "combined"}
  assert {m for m in BUILTIN if modes.get(m).greedy_only} == {"jacobi", "tr-jacobi"}


def test_unknown_mode_lists_registered_modes(eng):
  with pytest.raises(SpecjaxError, match="unknown decoding mode 'beam'; choose one of") as e:
    eng.run(prompts([4]), "beam", max_new_tokens=4)
  for name in BUILTIN:
    assert name in str(e.value)
  with pytest.raises(SpecjaxError, match="unknown decoding option"):
    eng.run(prompts([4]), "ar", max_new_tokens=4, gama=3)
  with pytest.raises(SpecjaxError, match="ngram"):
    eng.run(prompts([4]), "lookup", max_new_tokens=4, ngram=0)
  with pytest.raises(SpecjaxError, match="threshold"):
    eng.run(prompts([4]), "spec", max_new_tokens=4, draft_threshold=1.5)
  assert eng.compile_count == 0


def test_a_new_mode_is_one_registration(eng):
  mode = Mode(
    name="ar-again",
    decode=autoregressive.decode,
    help="autoregressive decoding under another name",
    knobs=(),
    lookahead=lambda s: 1,
  )
  modes.register(mode)
  try:
    assert "ar-again" in modes.names()
    a = eng.run(prompts([5, 9]), "ar", max_new_tokens=6, batch_size=2)
    b = eng.run(prompts([5, 9]), "ar-again", max_new_tokens=6, batch_size=2, gamma=7)  # unused knob: ignored
    assert [r.tokens for r in a.rows] == [r.tokens for r in b.rows]
    assert [c[0] for c in combinations(["ar", "ar-again", "spec"], [1, 2], [None])] == [
      "ar",
      "ar-again",
      "spec",
      "spec",
    ]
    with pytest.raises(SpecjaxError, match="registered twice"):
      modes.register(Mode(**{**mode.__dict__}))
  finally:
    modes._MODES.pop("ar-again")
  with pytest.raises(SpecjaxError, match="unknown knobs"):
    Mode(name="x", decode=None, help="", knobs=("beam_width",), lookahead=None)


def test_bench_combinations_follow_the_knobs():
  combos = combinations(["ar", "spec", "lookup", "jacobi"], [2, 4], [None, 0.5], [1, None])
  assert combos == [
    ("ar", None, None, None),
    ("spec", 2, None, None), ("spec", 2, 0.5, None), ("spec", 4, None, None), ("spec", 4, 0.5, None),
    ("lookup", 2, None, 1), ("lookup", 2, None, None), ("lookup", 4, None, 1), ("lookup", 4, None, None),
    ("jacobi", None, None, None),
  ]  # fmt: skip


def test_cli_mode_choices_come_from_the_registry(capsys):
  with pytest.raises(SystemExit) as e:
    main(["generate", "--target", "x", "--prompt", "w1", "--max-new-tokens", "2", "--mode", "beam"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "invalid choice: 'beam'" in err and all(name in err for name in BUILTIN)
