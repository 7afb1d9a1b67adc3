"""Speculative decoding with a dynamic draft length (`draft_threshold`): lossless greedy, exact sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decode_util import engine, model, prompts, tiny
from test_decode_lookup import V, chi2_pvalue, exact_distribution, sampled_counts

from specjax.decode.sampling import SamplingConfig

LENGTHS = (3, 9, 14, 5, 12)
MAX_NEW = 23
G = 4


@pytest.fixture(scope="module")
def eng():
  return engine(model(tiny(), 0), model(tiny(layers=1), 1))


@pytest.fixture(scope="module")
def reference(eng):
  run = eng.run(prompts(LENGTHS), "ar", max_new_tokens=MAX_NEW, batch_size=len(LENGTHS))
  return [r.tokens for r in run.rows]


@pytest.mark.parametrize("threshold", [0.0, 0.3, 1.0])
def test_dynamic_greedy_equals_autoregressive(eng, reference, threshold):
  run = eng.run(
    prompts(LENGTHS), "spec", max_new_tokens=MAX_NEW, gamma=G, draft_threshold=threshold, batch_size=3, trace=True
  )
  assert [r.tokens for r in run.rows] == reference
  m = run.metrics
  k = np.concatenate([t["k"][t["active"]] for t in run.traces])
  assert m["drafted_tokens"] == k.sum() and k.min() >= 0 and k.max() <= G
  if threshold == 0.0:  # never below: the fixed length
    assert m["drafted_tokens"] == G * m["target_calls"]
  if threshold == 1.0:  # always below: nothing proposed, every round a plain step after one draft call
    assert m["drafted_tokens"] == 0 and m["draft_calls"] == m["target_calls"]
    assert m["new_tokens"] == m["target_calls"] + len(LENGTHS)  # + each row's token from the prefill
  if threshold == 0.3:  # rows of one batch stop at different lengths
    assert len(set(k.tolist())) > 1
    assert m["target_calls"] < m["draft_calls"] < G * m["target_calls"]


def test_dynamic_batched_equals_alone(eng, reference):
  alone = eng.run(prompts(LENGTHS[:3]), "spec", max_new_tokens=MAX_NEW, gamma=G, draft_threshold=0.3, batch_size=1)
  assert [r.tokens for r in alone.rows] == reference[:3]
  hybrid = eng.run(prompts(LENGTHS), "spec-lookup", max_new_tokens=MAX_NEW, gamma=G, draft_threshold=0.3, batch_size=5)
  assert [r.tokens for r in hybrid.rows] == reference


def test_trace_replays_the_counters(eng):
  run = eng.run(prompts(LENGTHS), "spec", max_new_tokens=MAX_NEW, gamma=G, batch_size=5, trace=True)
  (t,) = run.traces
  assert t["conf"].shape == (5, MAX_NEW, G) and t["active"].sum() == run.metrics["target_calls"]
  assert (t["k"][t["active"]] == G).all()
  # Cut rounds aside (the last round of a row may emit fewer than n + 1 tokens), n is what was accepted.
  assert t["n"][t["active"]].sum() >= run.metrics["accepted_tokens"]


def near(target, scale: float, seed: int):
  """A draft close to the target: its parameters plus Gaussian noise of `scale` times each one's std."""
  cfg, params = target
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return cfg, treedef.unflatten(
    [x + scale * jnp.std(x) * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
  )


@pytest.mark.parametrize("mode", ["spec", "spec-lookup"])
def test_dynamic_sampling_is_exact(mode):
  # A near-target draft at temperature 1.5: first-round confidences spread around the threshold, so
  # rows propose 0, 1, 2 or 3 tokens, and each length sees rejections and all-accepted rounds (bonus draws).
  s = SamplingConfig(temperature=1.5)
  target = model(tiny(vocab_size=V, init=0.5), 10)
  prompt, new, samples = [1, 5, 2], 4, 8000
  run = engine(target, near(target, 0.3, 5)).run(
    [prompt] * samples, mode, max_new_tokens=new, sampling=s, gamma=3, draft_threshold=0.6, batch_size=2000,
    trace=mode == "spec",
  )  # fmt: skip
  if mode == "spec":
    first_k = np.concatenate([t["k"][:, 0] for t in run.traces])
    first_n = np.concatenate([t["n"][:, 0] for t in run.traces])
    assert set(first_k.tolist()) == {0, 1, 2, 3}  # 0: a plain sample from the target
    for k in (1, 2, 3):
      assert (first_n[first_k == k] == k).any() and (first_n[first_k == k] < k).any()
  assert chi2_pvalue(sampled_counts(run, new), exact_distribution(*target, s, new, prompt)) > 1e-3
