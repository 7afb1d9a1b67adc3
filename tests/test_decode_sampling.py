"""Sampling filters, the acceptance rules, and the exactness of speculative sampling (chi-square)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decode_util import engine, model, perturbed, tiny
from scipy import stats

from specjax.decode import sampling
from specjax.decode.sampling import SamplingConfig
from specjax.errors import SpecjaxError
from specjax.models.llama import Llama


def test_filters():
  logits = jnp.log(jnp.array([0.5, 0.2, 0.15, 0.1, 0.05]))
  p = sampling.probabilities(logits, SamplingConfig(temperature=1.0, top_k=2))
  np.testing.assert_allclose(p, [0.5 / 0.7, 0.2 / 0.7, 0, 0, 0], atol=1e-6)
  p = sampling.probabilities(logits, SamplingConfig(temperature=1.0, top_p=0.8))  # 0.5 + 0.2 < 0.8 -> 3 kept
  np.testing.assert_allclose(p, np.array([0.5, 0.2, 0.15, 0, 0]) / 0.85, atol=1e-6)
  p = sampling.probabilities(logits, SamplingConfig(temperature=1.0, top_p=0.3))  # the top token alone
  np.testing.assert_allclose(p, [1, 0, 0, 0, 0], atol=1e-6)
  p = sampling.probabilities(logits, SamplingConfig(temperature=0.5))
  np.testing.assert_allclose(p, np.array([0.25, 0.04, 0.0225, 0.01, 0.0025]) / 0.325, atol=1e-6)
  assert sampling.probabilities(logits, SamplingConfig()).tolist() == [1, 0, 0, 0, 0]


def _sorted_top_p(logits, top_p):
  """The textbook nucleus: sort the whole vocabulary, keep tokens whose mass above is < top_p (ties kept)."""
  order = np.argsort(-logits, kind="stable")
  probs = np.exp(logits - logits.max())
  probs /= probs.sum()
  before = np.cumsum(probs[order]) - probs[order]
  threshold = logits[order][before < top_p].min()
  return np.where(logits < threshold, -np.inf, logits)


@pytest.mark.parametrize("scale", [0.1, 3.0])  # 0.1: the nucleus is larger than the candidates (full-sort path)
def test_top_p_without_sorting_matches_a_full_sort(scale):
  logits = np.asarray(jax.random.normal(jax.random.key(4), (3, 2000))) * scale
  logits[1, 7] = logits[1, 9] = logits[1].max() + 1.0  # a tie at the top
  got = np.asarray(sampling.filter_logits(jnp.asarray(logits), SamplingConfig(temperature=1.0, top_p=0.9)))
  for row, want in zip(got, logits, strict=True):
    np.testing.assert_array_equal(np.isinf(row), np.isinf(_sorted_top_p(want, 0.9)))
  assert (np.isfinite(got).sum(axis=1) > sampling.CANDIDATES).all() == (scale < 1)


def test_categorical_draws_from_the_distribution():
  """The inverse-CDF sampler: chi-square against the probabilities, never a zero-probability token."""
  V, n = 700, 40000  # three blocks, the last one partial
  probs = np.zeros(V, np.float32)
  probs[[0, 255, 256, 300, 511, 699]] = [0.1, 0.3, 0.05, 0.25, 0.2, 0.1]
  draws = np.asarray(sampling.categorical(jax.random.key(0), jnp.broadcast_to(jnp.asarray(probs) * 3.0, (n, V))))
  counts = np.bincount(draws, minlength=V)
  assert counts[probs == 0].sum() == 0
  support = probs > 0
  assert stats.chisquare(counts[support], probs[support] / probs.sum() * n).pvalue > 1e-3


@pytest.mark.parametrize("kw", [{"temperature": -1}, {"top_k": -1}, {"top_p": 0}, {"top_p": 1.5}])
def test_bad_sampling_settings(kw):
  with pytest.raises(SpecjaxError):
    SamplingConfig(**kw)


def test_acceptance_rules():
  y = jnp.array([[1, 2, 3]])
  logits = jnp.full((1, 4, 5), -5.0).at[0, 0, 1].set(5).at[0, 1, 2].set(5).at[0, 2, 4].set(5).at[0, 3, 0].set(5)
  n, nxt = sampling.greedy_accept(y, logits)
  assert (int(n[0]), int(nxt[0])) == (2, 4)
  # p == q: the test accepts everything and the bonus comes from p_{G+1}.
  q = jax.nn.softmax(jax.random.normal(jax.random.key(0), (1, 3, 5)))
  p = jnp.concatenate([q, jax.nn.one_hot(jnp.array([[3]]), 5)], axis=1)
  n, nxt = sampling.rejection_accept(jax.random.key(1), y, q, p)
  assert (int(n[0]), int(nxt[0])) == (3, 3)
  # p(y_1) = 0: always rejected at once, the replacement comes from the residual max(0, p - q).
  p0 = jnp.zeros((1, 4, 5)).at[:, :, 0].set(0.5).at[:, :, 4].set(0.5)
  q0 = jnp.zeros((1, 3, 5)).at[:, :, 1].set(0.5).at[:, :, 4].set(0.5)
  n, nxt = sampling.rejection_accept(jax.random.key(2), y, q0, p0)
  assert (int(n[0]), int(nxt[0])) == (0, 0)


def test_rejection_never_accepts_a_zero_probability_token_at_u_zero(monkeypatch):
  """u is drawn from [0, 1), so u = 0 happens: `u * q <= p` would then accept a token of p = 0."""
  monkeypatch.setattr(jax.random, "uniform", lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype))
  y = jnp.array([[1, 4], [4, 4]])
  p = jnp.zeros((2, 3, 5)).at[:, :, 0].set(0.5).at[:, :, 4].set(0.5)  # p(1) = 0, p(4) = 0.5
  q = jnp.zeros((2, 2, 5)).at[:, :, 1].set(0.5).at[:, :, 4].set(0.5)
  n, _ = sampling.rejection_accept(jax.random.key(0), y, q, p)
  assert n.tolist() == [0, 2]  # row 0 stops at y_1 (p = 0); row 1 accepts both (u = 0 < p / q)
  # a point-mass proposal (lookup) of a token the target rules out
  n, nxt = sampling.rejection_accept(jax.random.key(0), y[:1, :1], sampling.point_mass(y[:1, :1], 5), p[:1, :2])
  assert (int(n[0]), int(nxt[0]) in (0, 4)) == (0, True)


# --- exactness: speculative sampling draws from the target's own distribution ---------------------
# The first token t1 comes from the prefill; the first round then drafts t2..t_{G+1} and, when it accepts
# them all, samples the bonus t_{G+2}. The test compares the joint law of t2..t_{G+2} (all of round 1,
# bonus included) with the target's exact one, and checks that rejections (residual draws) at every draft
# position and fully accepted rounds (bonus draws) both happened.

V = 8
PROMPT = [1, 5, 2]
SAMPLES = 6000


def _target_distribution(cfg, params, s: SamplingConfig, n: int) -> np.ndarray:
  """Exact P(t2, .., t_{n+1}) of target-only sampling after PROMPT (t1, from the prefill, summed out)."""
  P = len(PROMPT)
  seqs = np.array([PROMPT + list(t) for t in itertools.product(range(V), repeat=n + 1)])
  pos = jnp.broadcast_to(jnp.arange(seqs.shape[1]), seqs.shape)
  logits, _ = Llama(cfg).apply({"params": params}, jnp.asarray(seqs), pos)
  probs = np.asarray(sampling.probabilities(logits, s), np.float64)  # [V**(n+1), P+n+1, V]
  joint = probs[0, P - 1]  # P(t1 | prompt): [V]
  for i in range(1, n + 1):  # multiply in P(t_{i+1} | prompt, t1..t_i), read from the rows that start so
    cond = probs[:, P - 1 + i].reshape((V,) * (n + 1) + (V,))
    cond = cond[(slice(None),) * i + (0,) * (n + 1 - i)]  # [V]*i + [V]
    joint = joint[..., None] * cond
  return joint.sum(axis=0)


def _chi2_pvalue(counts: np.ndarray, expected_p: np.ndarray) -> float:
  expected = expected_p.ravel() * counts.sum()
  counts = counts.ravel()
  small = expected < 5  # pool sparse cells into one bin
  obs = np.append(counts[~small], counts[small].sum())
  exp = np.append(expected[~small], expected[small].sum())
  keep = exp > 0
  return float(stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue)


def _speculative_counts(s: SamplingConfig, gamma: int) -> tuple[np.ndarray, np.ndarray]:
  target = model(tiny(vocab_size=V, init=1.0), 10)
  draft = perturbed(target, 0.1, seed=11)  # accepts often enough for full rounds, not always
  n = gamma + 1  # t2..t_{G+2}: the whole first round
  run = engine(target, draft).run(
    [PROMPT] * SAMPLES, "spec", max_new_tokens=1 + n, sampling=s, gamma=gamma, batch_size=2000
  )
  counts = np.zeros((V,) * n)
  for r in run.rows:
    counts[tuple(r.tokens[1 : 1 + n])] += 1
  # every path of the acceptance rule was taken: rejection (then a residual draw) at each draft position,
  # and rounds that accepted all G proposals (then a bonus draw): those rows needed one round only
  per_position = run.metrics["per_position_acceptance"]
  assert len(per_position) == gamma and all(0.0 < a < 1.0 for a in per_position), per_position
  bonus_rows = sum(r.metrics["target_calls"] == 1 for r in run.rows)
  assert 0.1 * SAMPLES < bonus_rows < SAMPLES, bonus_rows
  return counts, _target_distribution(*target, s, n)


@pytest.mark.parametrize(
  "s, gamma",
  [(SamplingConfig(temperature=1.0), 2), (SamplingConfig(temperature=0.7, top_k=5, top_p=0.9), 3)],
  ids=["plain", "top-k-top-p"],
)
def test_speculative_sampling_is_exact(s, gamma):
  counts, expected = _speculative_counts(s, gamma)
  assert _chi2_pvalue(counts, expected) > 1e-3


def test_broken_acceptance_rule_fails_the_test(monkeypatch):
  # Resample rejected positions from p instead of the residual max(0, p - q): a classic bug.
  monkeypatch.setattr(sampling, "residual", lambda p, q: p)
  jax.clear_caches()
  try:
    counts, expected = _speculative_counts(SamplingConfig(temperature=1.0), 2)
  finally:
    jax.clear_caches()
  assert _chi2_pvalue(counts, expected) < 1e-3
