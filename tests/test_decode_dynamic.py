"""Speculative decoding with a dynamic draft length (`draft_threshold`): lossless greedy, exact sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decode_util import engine, model, prompts, tiny
from test_decode_lookup import V, chi2_pvalue, exact_distribution, sampled_counts

from specjax.decode.lookup import lookup
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


def lookup_first_rounds(run, prompt: list[int], gamma: int) -> tuple[np.ndarray, np.ndarray]:
  """Per row: whether its first round proposed a lookup continuation (its context prompt + t_1 has a
  match), and how many of those proposals were accepted. A point-mass proposal's residual excludes the
  proposed token, so the accepted count is the number of leading emitted tokens equal to the proposal."""
  P = len(prompt)
  seq = jnp.asarray([prompt + [r.tokens[0]] for r in run.rows])
  proposed, match = lookup(seq, jnp.full((len(run.rows),), P), gamma, 3)
  emitted = np.array([r.tokens[1 : 1 + gamma] for r in run.rows])
  same = np.asarray(proposed)[:, : emitted.shape[1]] == emitted
  return np.asarray(match) > 0, np.cumprod(same, axis=1).sum(axis=1)


@pytest.mark.parametrize("mode", ["spec", "spec-lookup"])
def test_dynamic_sampling_is_exact(mode):
  # A near-target draft at temperature 1.5: first-round confidences spread around the threshold, so
  # rows propose 0, 1, 2 or 3 tokens, and each length sees rejections and all-accepted rounds (bonus draws).
  # spec-lookup: a repetitive prompt, so a row whose t_1 occurs in it proposes a lookup continuation and
  # the others draft; both kinds of proposal are rejected in some rows and accepted in others.
  s = SamplingConfig(temperature=1.5)
  target = model(tiny(vocab_size=V, init=0.5), 10)
  prompt = [1, 5, 2] if mode == "spec" else [7, 4, 7, 4, 7, 4]
  new, samples = 4, 8000
  run = engine(target, near(target, 0.3, 5)).run(
    [prompt] * samples, mode, max_new_tokens=new, sampling=s, gamma=3, draft_threshold=0.6, batch_size=2000,
    trace=mode == "spec", ngram_min=1,
  )  # fmt: skip
  if mode == "spec-lookup":
    looked, accepted = lookup_first_rounds(run, prompt, 3)
    drafted = np.array([r.metrics["drafted_tokens"] for r in run.rows])
    assert 0.1 * samples < looked.sum() < 0.9 * samples, looked.sum()
    assert (drafted[looked] >= 3).all()  # each lookup round proposes gamma tokens
    counts = np.bincount(accepted[looked], minlength=4)
    assert counts[0] > 0 and counts[1:].sum() > 0 and counts[3] > 0, counts  # rejected, accepted, all accepted
    assert (drafted[~looked] > 0).any()  # the rows without a match drafted
  if mode == "spec":
    first_k = np.concatenate([t["k"][:, 0] for t in run.traces])
    first_n = np.concatenate([t["n"][:, 0] for t in run.traces])
    assert set(first_k.tolist()) == {0, 1, 2, 3}  # 0: a plain sample from the target
    for k in (1, 2, 3):
      assert (first_n[first_k == k] == k).any() and (first_n[first_k == k] < k).any()
  assert chi2_pvalue(sampled_counts(run, new), exact_distribution(*target, s, new, prompt)) > 1e-3
