"""The host engine: length buckets bound the compilations, metrics add up, bad input fails clearly."""

from __future__ import annotations

import pytest
from decode_util import engine, model, prompts, tiny

from specjax.decode.engine import bucket_length
from specjax.decode.sampling import SamplingConfig
from specjax.errors import SpecjaxError


@pytest.fixture(scope="module")
def target():
  return model(tiny(), 0)


def test_buckets():
  assert [bucket_length(n, 1000) for n in (1, 16, 17, 33, 200, 700)] == [16, 16, 24, 48, 256, 768]
  assert bucket_length(200, 150) == 200 and bucket_length(100, 120) == 120


def test_compilations_are_bounded_by_buckets(target):
  eng = engine(target)
  lengths = [3, 40, 7, 16, 17, 30, 33, 60, 1, 12, 50, 25]  # sorted pairs: buckets 16, 16, 24, 32, 48, 64
  run = eng.run(prompts(lengths), "ar", max_new_tokens=4, batch_size=2)
  assert eng.compile_count == 5
  assert run.compile_s > 0 and run.wall_s > 0
  assert [b["bucket"] for b in run.batches] == [16, 16, 24, 32, 48, 64]
  again = eng.run(prompts(lengths, seed=1), "ar", max_new_tokens=4, batch_size=2)
  assert eng.compile_count == 5 and again.compile_s == 0.0
  # Batched rows equal rows decoded alone, whatever bucket and batch they landed in.
  alone = eng.run(prompts(lengths), "ar", max_new_tokens=4, batch_size=1)
  assert [r.tokens for r in alone.rows] == [r.tokens for r in run.rows]


def test_metrics_add_up(target):
  eng = engine(target, model(tiny(layers=1), 1))
  run = eng.run(prompts([5, 9, 3]), "spec", max_new_tokens=12, gamma=3, batch_size=2)
  m, rows = run.metrics, [r.metrics for r in run.rows]
  for k in ("new_tokens", "target_calls", "draft_calls", "drafted_tokens", "accepted_tokens"):
    assert m[k] == sum(r[k] for r in rows), k
  assert m["new_tokens"] == 36
  assert m["acceptance_rate"] == m["accepted_tokens"] / m["drafted_tokens"]
  assert m["block_efficiency"] == (m["new_tokens"] - 3) / m["target_calls"]
  assert m["tokens_per_s"] == m["new_tokens"] / run.wall_s
  assert len(m["per_position_acceptance"]) == 3
  # Position 1 is reached in every round, position i+1 exactly when position i was accepted, so the
  # accepted counts rebuilt from the conditional rates add up to the accepted tokens.
  reached, accepted = m["target_calls"], 0.0
  for rate in m["per_position_acceptance"]:
    hits = (rate or 0.0) * reached
    accepted, reached = accepted + hits, hits
  assert accepted == pytest.approx(m["accepted_tokens"])


def test_bad_input(target):
  other_vocab = model(tiny(vocab_size=64), 2)
  with pytest.raises(SpecjaxError, match="vocabulary"):
    engine(target, other_vocab)
  with pytest.raises(SpecjaxError, match="tokenizer has 200 tokens"):
    engine(target, vocab_size=200)
  eng = engine(target, model(tiny(layers=1), 1), max_len=64)
  with pytest.raises(SpecjaxError, match="gamma"):
    eng.run(prompts([4]), "spec", max_new_tokens=4, gamma=0)
  with pytest.raises(SpecjaxError, match="cache holds 64"):
    eng.run(prompts([4, 60]), "ar", max_new_tokens=8)
  with pytest.raises(SpecjaxError, match="no prompts"):
    eng.run([], "ar", max_new_tokens=4)
  with pytest.raises(SpecjaxError, match="empty"):
    eng.run([[1, 2], []], "ar", max_new_tokens=4)
  with pytest.raises(SpecjaxError, match="greedy only"):
    eng.run(prompts([4]), "jacobi", max_new_tokens=4, sampling=SamplingConfig(temperature=1.0))
  with pytest.raises(SpecjaxError, match="unknown decoding mode"):
    eng.run(prompts([4]), "beam", max_new_tokens=4)
  with pytest.raises(SpecjaxError, match="max_new_tokens"):
    eng.run(prompts([4]), "ar", max_new_tokens=0)
  with pytest.raises(SpecjaxError, match="draft model"):
    engine(target).run(prompts([4]), "spec", max_new_tokens=4)
  assert eng.compile_count == 0  # every check happens before anything is compiled


def test_sampling_is_seeded(target):
  eng = engine(target)
  s = SamplingConfig(temperature=1.0, top_p=0.9)
  a = eng.run(prompts([5, 7]), "ar", max_new_tokens=8, sampling=s, seed=3, batch_size=2)
  b = eng.run(prompts([5, 7]), "ar", max_new_tokens=8, sampling=s, seed=3, batch_size=2)
  c = eng.run(prompts([5, 7]), "ar", max_new_tokens=8, sampling=s, seed=4, batch_size=2)
  assert [r.tokens for r in a.rows] == [r.tokens for r in b.rows] != [r.tokens for r in c.rows]


def test_partial_batch_is_smaller(target):
  """5 prompts at batch 4: one full batch and a 1-row batch (not 4 rows of which 3 are padding)."""
  eng = engine(target)
  run = eng.run(prompts([3, 9, 14, 5, 12]), "ar", max_new_tokens=3, batch_size=4)
  assert [b["batch_size"] for b in run.batches] == [4, 1]
  alone = eng.run(prompts([3, 9, 14, 5, 12]), "ar", max_new_tokens=3, batch_size=1)
  assert [r.tokens for r in run.rows] == [r.tokens for r in alone.rows]
