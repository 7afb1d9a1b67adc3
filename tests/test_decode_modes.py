"""The mode registry: every decoder registers itself once; engine, CLI and bench read it."""

from __future__ import annotations

import dataclasses

import pytest
from decode_util import engine, model, prompts, tiny

from specjax.cli import main
from specjax.decode import autoregressive, modes
from specjax.decode.modes import Mode
from specjax.decode.tree import TokenTree
from specjax.errors import SpecjaxError
from specjax.eval.bench import combinations

BUILTIN = {
  "ar",
  "spec",
  "spec-lookup",
  "lookup",
  "jacobi",
  "tr-jacobi",
  "eagle",
  "datastore",
  "combined",
  "eagle-retrieval",
}


@pytest.fixture(scope="module")
def eng():
  return engine(model(tiny(), 0), model(tiny(layers=1), 1))


def test_builtin_modes_are_registered():
  assert set(modes.names()) == BUILTIN
  looks = {name: modes.get(name).lookahead(modes.get(name).make_knobs(dict(gamma=3, window=5))) for name in BUILTIN}
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
    "eagle-retrieval": 4,
  }
  assert {m for m in BUILTIN if modes.get(m).needs_draft} == {"spec", "spec-lookup", "eagle", "eagle-retrieval"}
  assert {m for m in BUILTIN if modes.get(m).draft_kind == "eagle"} == {"eagle", "eagle-retrieval"}
  assert {m for m in BUILTIN if modes.get(m).needs_datastore} == {"datastore", "combined"}
  assert {m for m in BUILTIN if modes.get(m).reads_datastore} == {"eagle-retrieval"}  # when the engine has one
  assert {m for m in BUILTIN if modes.get(m).greedy_only} == {"jacobi", "tr-jacobi"}
  assert modes.baseline().name == "ar"
  assert modes.get("tr-jacobi").make_knobs({}).tree == TokenTree.default()  # completed by the mode
  assert modes.get("lookup").make_knobs({"ngram": 4}).ngram_min == 4


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
    lookahead=lambda k: 1,
  )
  modes.register(mode)
  try:
    assert "ar-again" in modes.names()
    a = eng.run(prompts([5, 9]), "ar", max_new_tokens=6, batch_size=2)
    b = eng.run(prompts([5, 9]), "ar-again", max_new_tokens=6, batch_size=2, gamma=7)  # unused knob: ignored
    assert [r.tokens for r in a.rows] == [r.tokens for r in b.rows]
    assert [c[0] for c in combinations(["ar", "ar-again", "spec"], {"gamma": [1, 2]})] == [
      "ar",
      "ar-again",
      "spec",
      "spec",
    ]
    with pytest.raises(SpecjaxError, match="registered twice"):
      modes.register(Mode(**{**mode.__dict__}))
  finally:
    modes.unregister("ar-again")

  @dataclasses.dataclass(frozen=True)
  class Plain:
    beam_width: int = 4

  with pytest.raises(SpecjaxError, match="not declared with modes.knob"):
    Mode(name="x", decode=None, help="", knobs=Plain, lookahead=None)
  with pytest.raises(SpecjaxError, match="reads_datastore is for draft modes"):
    Mode(name="x", decode=None, help="", lookahead=None, reads_datastore=True)

  @dataclasses.dataclass(frozen=True)
  class OtherGamma:
    gamma: int = modes.knob(8, "another gamma", parse=int)

  with pytest.raises(SpecjaxError, match="declares knob 'gamma' unlike mode"):
    modes.register(Mode(name="y", decode=None, help="", knobs=OtherGamma, lookahead=None))
  assert "y" not in modes.names()


def test_bench_combinations_follow_the_knobs():
  combos = combinations(
    ["ar", "spec", "lookup", "jacobi"], {"gamma": [2, 4], "draft_threshold": [None, 0.5], "ngram_min": [1, None]}
  )
  g, t, n = "gamma", "draft_threshold", "ngram_min"
  assert combos == [
    ("ar", {}),
    ("spec", {g: 2, t: None}), ("spec", {g: 2, t: 0.5}), ("spec", {g: 4, t: None}), ("spec", {g: 4, t: 0.5}),
    ("lookup", {g: 2, n: 1}), ("lookup", {g: 2, n: None}), ("lookup", {g: 4, n: 1}), ("lookup", {g: 4, n: None}),
    ("jacobi", {"window": 5}),
  ]  # fmt: skip
  assert [c for c in combinations(["spec"]) if c[0] == "spec"] == [("spec", {g: v, t: None}) for v in (1, 2, 4)]


def test_cli_mode_choices_come_from_the_registry(capsys):
  with pytest.raises(SystemExit) as e:
    main(["generate", "--target", "x", "--prompt", "w1", "--max-new-tokens", "2", "--mode", "beam"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "invalid choice: 'beam'" in err and all(name in err for name in BUILTIN)
