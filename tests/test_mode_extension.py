"""A new decoding mode with a knob of its own is one registration: its flag appears on the command line,
the bench sweeps it and records it, and the engine runs it, with no other file touched."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import pytest
from decode_util import engine, model, prompts, tiny

from specjax.cli import build_parser, main
from specjax.decode import autoregressive, modes
from specjax.decode.modes import Mode
from specjax.errors import SpecjaxError
from specjax.eval.bench import bench, label


@dataclasses.dataclass(frozen=True)
class CappedKnobs:
  cap: int = modes.knob(
    3, "stop each row after this many tokens", parse=int, sweep=(2, 3), check=lambda c: c >= 1, rule="cap must be >= 1"
  )


def _decode(s, params, draft_params, prompt, prompt_lens, max_new, key):
  return autoregressive.decode(s, params, draft_params, prompt, prompt_lens, jnp.minimum(max_new, s.knobs.cap), key)


@pytest.fixture
def capped():
  mode = modes.register(
    Mode(name="ar-capped", decode=_decode, help="ar, cut at --cap tokens", knobs=CappedKnobs, lookahead=lambda k: 1)
  )
  yield mode
  modes.unregister(mode.name)


def test_a_new_knob_is_a_flag(capped, capsys):
  with pytest.raises(SystemExit):
    main(["bench", "--help"])
  out = capsys.readouterr().out
  assert "--cap CAP" in out and "stop each row after this many tokens" in out and "default 2,3" in out
  args = build_parser().parse_args(
    ["bench", "--target", "t", "--prompts", "p", "--out", "o", "--max-new-tokens", "4", "--cap", "1,5"]
  )
  assert args.cap == [1, 5]
  args = build_parser().parse_args(
    ["generate", "--target", "t", "--prompt", "p", "--max-new-tokens", "4", "--mode", "ar-capped", "--cap", "2"]
  )
  assert args.cap == 2


def test_the_new_mode_runs_and_is_benched(capped):
  eng = engine(model(tiny(), 0))
  ps = prompts([5, 7])
  full = eng.run(ps, "ar", max_new_tokens=6, batch_size=2)
  cut = eng.run(ps, "ar-capped", max_new_tokens=6, batch_size=2, cap=2)
  assert [r.tokens for r in cut.rows] == [r.tokens[:2] for r in full.rows]
  with pytest.raises(SpecjaxError, match="cap must be >= 1, got 0"):
    eng.run(ps, "ar-capped", max_new_tokens=6, cap=0)
  records = bench(eng, ps, ["ar-capped"], [0.0], [2], 6, log=lambda line: None)
  assert [(r["mode"], r["cap"], r["new_tokens"]) for r in records] == [("ar-capped", 2, 4), ("ar-capped", 3, 6)]
  assert records[0]["gamma"] is None and label(records[0]) == "ar-capped cap=2"
  assert records[0]["speedup_vs_ar"] is not None  # against the baseline, run although not asked for
