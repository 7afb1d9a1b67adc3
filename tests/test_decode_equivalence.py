"""Lossless decoders: greedy speculative, Jacobi and TR-Jacobi equal greedy autoregressive decoding."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from decode_util import engine, model, perturbed, prompts, tiny

from specjax.decode import sampling
from specjax.decode.sampling import SamplingConfig

LENGTHS = (3, 9, 14, 5, 12)  # one bucket (16), different lengths in every batch
MAX_NEW = 23
SCALE = 0.01  # noise of the perturbed draft: it accepts about 65% of first proposals (the target init is 0.5)


@pytest.fixture(scope="module")
def target():
  return model(tiny(), 0)


@pytest.fixture(scope="module")
def draft():
  return model(tiny(layers=1), 1)  # an unrelated draft: few acceptances, many rejections


@pytest.fixture(scope="module")
def eng(target, draft):
  return engine(target, draft)


@pytest.fixture(scope="module")
def reference(eng):
  run = eng.run(prompts(LENGTHS), "ar", max_new_tokens=MAX_NEW, batch_size=len(LENGTHS))
  return [r.tokens for r in run.rows]


def test_autoregressive_batched_equals_one_at_a_time(eng, reference):
  alone = eng.run(prompts(LENGTHS), "ar", max_new_tokens=MAX_NEW, batch_size=1)
  assert [r.tokens for r in alone.rows] == reference
  assert all(len(t) == MAX_NEW for t in reference)
  assert alone.metrics["block_efficiency"] == 1.0
  assert alone.metrics["target_calls"] == len(LENGTHS) * (MAX_NEW - 1)


@pytest.mark.parametrize("gamma", [1, 2, 3, 4, 5, 6])
def test_greedy_speculative_equals_autoregressive(eng, reference, gamma):
  run = eng.run(prompts(LENGTHS), "spec", max_new_tokens=MAX_NEW, gamma=gamma, batch_size=len(LENGTHS))
  assert [r.tokens for r in run.rows] == reference
  m = run.metrics
  assert m["drafted_tokens"] == gamma * m["target_calls"]
  assert m["draft_calls"] == gamma * m["target_calls"]
  # tokens per call: exact for an identical draft (test_identical_draft_accepts_everything), strictly
  # between 1 and gamma + 1 for a near one (test_greedy_speculative_with_partial_acceptance_...)


@pytest.mark.parametrize("gamma", [1, 2, 4, 6])
def test_greedy_speculative_with_partial_acceptance_equals_autoregressive(target, reference, gamma):
  """A near copy of the target: some proposals accepted, some rejected, rows accepting different counts."""
  eng = engine(target, perturbed(target, SCALE))
  run = eng.run(prompts(LENGTHS), "spec", max_new_tokens=MAX_NEW, gamma=gamma, batch_size=len(LENGTHS))
  assert [r.tokens for r in run.rows] == reference
  assert 0.0 < run.metrics["acceptance_rate"] < 1.0
  assert 1.0 < run.metrics["block_efficiency"] < gamma + 1
  if gamma > 1:  # rejections at several depths, not only at the first proposal
    assert sum(0.0 < a < 1.0 for a in run.metrics["per_position_acceptance"]) >= 2


def test_speculative_batched_equals_one_at_a_time(eng, reference):
  run = eng.run(prompts(LENGTHS), "spec", max_new_tokens=MAX_NEW, gamma=3, batch_size=2)
  assert [r.tokens for r in run.rows] == reference


def test_identical_draft_accepts_everything(target):
  gamma = 4
  eng = engine(target, target)
  max_new = 1 + 5 * (gamma + 1)  # the prefill token, then 5 full rounds
  run = eng.run(prompts(LENGTHS), "spec", max_new_tokens=max_new, gamma=gamma, batch_size=len(LENGTHS))
  for row in run.rows:
    assert row.metrics["block_efficiency"] == gamma + 1
    assert row.metrics["acceptance_rate"] == 1.0
    assert row.metrics["per_position_acceptance"] == [1.0] * gamma
  ar = eng.run(prompts(LENGTHS), "ar", max_new_tokens=max_new, batch_size=len(LENGTHS))
  assert [r.tokens for r in run.rows] == [r.tokens for r in ar.rows]


def test_counters_count_only_emitted_tokens(target):
  """A round cut short by max_new_tokens counts only the proposals it emitted (here 2 of 4 accepted)."""
  gamma = 4
  eng = engine(target, target)
  max_new = 1 + 2 * (gamma + 1) + 2  # the prefill token, 2 full rounds, then 2 tokens of the third
  run = eng.run(prompts(LENGTHS), "spec", max_new_tokens=max_new, gamma=gamma, batch_size=len(LENGTHS))
  for row in run.rows:
    m = row.metrics
    assert m["new_tokens"] == max_new and m["target_calls"] == 3
    assert m["accepted_tokens"] == 2 * gamma + 2  # not 3 * gamma: the last 2 accepted were never emitted
    assert m["per_position_acceptance"] == [1.0] * gamma
  for mode in ("jacobi", "tr-jacobi"):
    run = eng.run(prompts(LENGTHS), mode, max_new_tokens=max_new, batch_size=len(LENGTHS))
    for row in run.rows:
      m = row.metrics
      assert m["accepted_tokens"] <= m["new_tokens"] - 1 - m["target_calls"] + 1, mode


def test_eos_inside_a_round(target, reference):
  # An EOS token the reference emits mid-answer: every decoder must stop right after it.
  eos = reference[0][6]
  eng = engine(target, target, eos_ids=(eos,))
  expect = [t[: t.index(eos) + 1] if eos in t else t for t in reference]
  assert any(len(e) < MAX_NEW for e in expect)
  for mode, kw in [("ar", {}), ("spec", {"gamma": 4}), ("jacobi", {}), ("tr-jacobi", {})]:
    run = eng.run(prompts(LENGTHS), mode, max_new_tokens=MAX_NEW, batch_size=len(LENGTHS), **kw)
    assert [r.tokens for r in run.rows] == expect, mode


@pytest.mark.parametrize("window", [1, 4])
def test_jacobi_equals_autoregressive(eng, reference, window):
  run = eng.run(prompts(LENGTHS), "jacobi", max_new_tokens=MAX_NEW, window=window, batch_size=len(LENGTHS))
  assert [r.tokens for r in run.rows] == reference
  assert run.metrics["drafted_tokens"] == window * run.metrics["target_calls"]


def test_tr_jacobi_equals_autoregressive(eng, reference):
  run = eng.run(prompts(LENGTHS), "tr-jacobi", max_new_tokens=MAX_NEW, batch_size=len(LENGTHS))
  assert [r.tokens for r in run.rows] == reference
  alone = eng.run(prompts(LENGTHS[:2]), "tr-jacobi", max_new_tokens=MAX_NEW, batch_size=1)
  assert [r.tokens for r in alone.rows] == reference[:2]


def periodic(period: int = 4):
  """A tiny model whose greedy continuation of token t is f(t), f cycling through blocks of `period` ids
  (0 1 2 3 0 1 ..., 4 5 6 7 4 ...): attention and MLP outputs are zero, so the last token alone decides,
  and lm_head = c * N^T P scores f(t) by |N_t|^2 = D against N_t . N_u ~ sqrt(D) for the others (N: the
  normalised embeddings, P: the permutation matrix of f)."""
  cfg, params = model(tiny(), 0)
  params = jax.tree.map(np.asarray, params)
  for name, sub in (("attn", "o_proj"), ("mlp", "down_proj")):
    params["layers"][name][sub]["kernel"] = np.zeros_like(params["layers"][name][sub]["kernel"])
  emb = params["embed_tokens"]["embedding"]
  n = emb / np.sqrt(np.mean(emb**2, axis=-1, keepdims=True) + cfg.rms_norm_eps)
  ids = np.arange(cfg.vocab_size)
  f = ids - ids % period + (ids + 1) % period
  params["lm_head"]["kernel"] = (0.5 * n.T @ np.eye(cfg.vocab_size)[f]).astype(np.float32)
  return cfg, params, f


def test_tr_jacobi_accepts_on_repetitive_text():
  # Greedy output is periodic (period 4) and the prompt repeats it: the retrieval chain and the tree
  # propose the continuation, which is accepted several tokens per target call.
  cfg, params, f = periodic()
  eng = engine((cfg, params))
  prompt = [4, 5, 6, 7] * 4 + [4, 5]
  ar = eng.run([prompt], "ar", max_new_tokens=40)
  expect = [int(f[prompt[-1]])]
  for _ in range(39):
    expect.append(int(f[expect[-1]]))
  assert ar.rows[0].tokens == expect  # the model is periodic: 6 7 4 5 6 7 ...
  run = eng.run([prompt], "tr-jacobi", max_new_tokens=40)
  assert run.rows[0].tokens == ar.rows[0].tokens
  assert run.metrics["block_efficiency"] > 2.0, run.metrics
  assert run.metrics["target_calls"] < ar.metrics["target_calls"] / 2


def test_draft_with_padded_embedding_table(target, reference, monkeypatch):
  """The draft's table has 32 extra (never used) rows: fine, logits are cut to the shared 128 tokens.
  Greedy equality cannot see a missing cut (the target rejects a padded token), so at T = 1 every
  proposal the acceptance rule sees and every emitted token must lie inside the tokenizer."""
  padded = model(tiny(vocab_size=160, layers=1), 3)
  eng = engine(target, padded, vocab_size=128)
  run = eng.run(prompts(LENGTHS), "spec", max_new_tokens=MAX_NEW, gamma=2, batch_size=len(LENGTHS))
  assert [r.tokens for r in run.rows] == reference

  proposed: list[np.ndarray] = []
  real = sampling.rejection_accept

  def spy(key, tokens, q, p, n_draft=None):
    jax.debug.callback(lambda t: proposed.append(np.asarray(t)), tokens)
    assert q.shape[-1] == p.shape[-1] == 128, (q.shape, p.shape)
    return real(key, tokens, q, p, n_draft)

  monkeypatch.setattr(sampling, "rejection_accept", spy)
  jax.clear_caches()
  try:
    run = eng.run(
      prompts(LENGTHS) * 8, "spec", max_new_tokens=MAX_NEW, gamma=2, batch_size=40, sampling=SamplingConfig(1.0)
    )
  finally:
    jax.clear_caches()
  proposed_tokens = np.concatenate(proposed)
  assert proposed_tokens.size > 1000 and 0 <= proposed_tokens.min() and proposed_tokens.max() < 128
  emitted = np.concatenate([r.tokens for r in run.rows])
  assert emitted.size == 40 * MAX_NEW and 0 <= emitted.min() and emitted.max() < 128
