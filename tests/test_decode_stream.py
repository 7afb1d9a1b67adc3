"""Refilled batched sampling (`Engine.stream`): the same answers as `ar`, exact sampling, rows refilled."""

from __future__ import annotations

import pytest
from decode_util import engine, model, prompts, tiny
from test_decode_lookup import PROMPT, SAMPLES, V, chi2_pvalue, exact_distribution, sampled_counts

from specjax.decode.sampling import SamplingConfig
from specjax.errors import SpecjaxError

LENGTHS = (3, 9, 14, 5, 12, 7, 4, 11, 6)


@pytest.fixture(scope="module")
def target():
  return model(tiny(), 0)


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_greedy_stream_equals_autoregressive(target, batch_size):
  # EOS ids that the greedy answers hit, so rows end (and are refilled) at different steps.
  ps = prompts(LENGTHS)
  plain = engine(target).run(ps, "ar", max_new_tokens=13, batch_size=1)
  eos = {r.tokens[k] for r, k in zip(plain.rows, (2, 5, 9), strict=False)}
  eng = engine(target, eos_ids=sorted(eos))
  ref = eng.run(ps, "ar", max_new_tokens=13, batch_size=1)
  assert len({len(r.tokens) for r in ref.rows}) > 2  # answers of several lengths
  out = eng.stream(ps, max_new_tokens=13, batch_size=batch_size)
  assert [r.tokens for r in out.rows] == [r.tokens for r in ref.rows]
  m = out.metrics
  assert m["new_tokens"] == sum(len(r.tokens) for r in ref.rows)
  assert m["refills"] == max(0, len(ps) - batch_size)
  limits = [1 + i % 13 for i in range(len(ps))]  # per-prompt limits end answers early too
  cut = eng.stream(ps, max_new_tokens=13, per_prompt=limits, batch_size=batch_size)
  assert [r.tokens for r in cut.rows] == [r.tokens[:n] for r, n in zip(ref.rows, limits, strict=True)]
  if batch_size == 4:  # rows were refilled while others ran: fewer steps than batches decoded as blocks
    blocks = eng.run(ps, "ar", max_new_tokens=13, batch_size=4)
    assert m["steps"] < sum(b["iterations"] for b in blocks.batches)


@pytest.mark.parametrize(
  "s", [SamplingConfig(temperature=1.0), SamplingConfig(temperature=1.0, top_k=6, top_p=0.95)], ids=["plain", "top"]
)
def test_stream_sampling_is_exact(s):
  # Every queue entry is an independent sample; all but the first 16 start in a refilled row.
  target = model(tiny(vocab_size=V, init=1.0), 10)
  new = 3
  run = engine(target).stream([PROMPT] * SAMPLES, max_new_tokens=new, sampling=s, batch_size=16)
  assert run.metrics["refills"] == SAMPLES - 16
  assert chi2_pvalue(sampled_counts(run, new), exact_distribution(*target, s, new)) > 1e-3


def test_stream_refusals(target):
  eng = engine(target)
  with pytest.raises(SpecjaxError, match="no prompts"):
    eng.stream([], max_new_tokens=4)
  with pytest.raises(SpecjaxError, match="batch size"):
    eng.stream(prompts([3]), max_new_tokens=4, batch_size=0)
  with pytest.raises(SpecjaxError, match="prompt 0 is empty"):
    eng.stream([[]], max_new_tokens=4)
  with pytest.raises(SpecjaxError, match="prompt 1 has 9 tokens"):
    eng.stream(prompts([3, 9]), max_new_tokens=eng.max_len - 8)
  with pytest.raises(SpecjaxError, match="one limit in 1..4 per prompt"):
    eng.stream(prompts([3, 4]), max_new_tokens=4, per_prompt=[2, 5])


@pytest.mark.parametrize("batch_size", [1, 4])
def test_stream_features_equal_the_teachers_pass(target, batch_size):
  # features=True keeps, at every position of prompt + answer, what one full forward pass over that
  # sequence gives (the teacher cache's f_t and log-sum-exp); the answers are those of greedy `ar`.
  import numpy as np

  from specjax.train.teacher_cache import _teacher_fn

  cfg, params = target
  ps = prompts(LENGTHS)
  eng = engine(target)
  greedy = eng.run(ps, "ar", max_new_tokens=9, batch_size=1)
  eos = sorted({r.tokens[k] for r, k in zip(greedy.rows, (1, 4), strict=False)})
  eng = engine(target, eos_ids=eos)
  ref = eng.stream(ps, max_new_tokens=9, batch_size=batch_size)
  out = eng.stream(ps, max_new_tokens=9, batch_size=batch_size, features=True)
  assert [r.tokens for r in out.rows] == [r.tokens for r in ref.rows]
  assert len({len(r.tokens) for r in out.rows}) > 2  # rows ended (and were refilled) at several steps
  run = _teacher_fn(cfg)
  for p, row in zip(ps, out.rows, strict=True):
    seq = np.asarray(list(p) + row.tokens, np.int32)
    f, z = (np.asarray(a)[0] for a in run(params, seq[None]))
    assert row.features.shape == f.shape and row.features.dtype == np.float16
    np.testing.assert_allclose(row.features.astype(np.float32), f, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(row.lse, z, rtol=1e-5, atol=1e-4)
  assert ref.rows[0].features is None
