"""On the real SmolLM2-135M-Instruct: greedy speculative, Jacobi and TR-Jacobi equal greedy autoregressive."""

from __future__ import annotations

import jax
import pytest

pytest.importorskip("specjax.checkpoint.convert")  # the importer behind the `smollm2_ckpt` fixture

from specjax.checkpoint.orbax_io import load_checkpoint  # noqa: E402
from specjax.decode.engine import Engine  # noqa: E402
from specjax.decode.text import decode_tokens, encode, eos_ids, load_engine  # noqa: E402

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers."]


@pytest.fixture(scope="module")
def setup(smollm2_ckpt):
  engine, tok = load_engine(smollm2_ckpt)
  ckpt = load_checkpoint(smollm2_ckpt)
  # Any draft with the target's vocabulary will do: its first 4 layers (a "layer-skip" draft).
  draft_params = dict(ckpt.params, layers=jax.tree.map(lambda x: x[:4], ckpt.params["layers"]))
  engine = Engine(
    ckpt.config,
    ckpt.params,
    ckpt.config.replace(num_layers=4),
    draft_params,
    eos_ids=eos_ids(tok, ckpt.config),
    vocab_size=len(tok),
  )
  return engine, tok, encode(tok, PROMPTS, chat=True)


@pytest.mark.slow
def test_lossless_modes_equal_autoregressive(setup):
  engine, tok, ids = setup
  ar = engine.run(ids, "ar", max_new_tokens=32, batch_size=3)
  expect = [r.tokens for r in ar.rows]
  assert "Paris" in decode_tokens(tok, expect[0])
  for mode, kw in [("spec", {"gamma": 3}), ("jacobi", {"window": 4}), ("tr-jacobi", {})]:
    run = engine.run(ids, mode, max_new_tokens=32, batch_size=3, **kw)
    assert [r.tokens for r in run.rows] == expect, mode
    assert run.metrics["block_efficiency"] >= 1.0
