"""Lookup drafting: the match rule, greedy equality with `ar`, honest counting, exact sampling."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decode_util import engine, model, prompts, tiny
from scipy import stats

from specjax.decode import sampling
from specjax.decode.lookup import lookup
from specjax.decode.sampling import SamplingConfig
from specjax.models.llama import Llama
from specjax.models.registry import init_params

LENGTHS = (3, 9, 14, 5, 12)
MAX_NEW = 23


def test_lookup_rule():
  #                0  1  2  3  4  5  6  7  8  9
  seq = jnp.array([[1, 2, 3, 9, 2, 3, 7, 8, 2, 3, 0, 0]])
  # context = seq[:10] (length 9: `cur` = 3 at index 9); "2 3" occurs at 1..2 and 4..5: the latest wins
  # ("8 2 3" occurs nowhere else: the match is 2 tokens long.)
  toks, match = lookup(seq, jnp.array([9]), 4, 3)
  assert int(match[0]) == 2 and toks.tolist() == [[7, 8, 2, 3]]
  # A longer match beats a later shorter one: "9 2 3" (ending at 5) vs "2 3" only elsewhere.
  seq2 = jnp.array([[9, 2, 3, 5, 6, 2, 3, 4, 9, 2, 3, 0]])
  toks, match = lookup(seq2, jnp.array([10]), 3, 3)
  assert int(match[0]) == 3 and toks.tolist() == [[5, 6, 2]]
  # The continuation runs into the context's end and repeats from its own start (period 2 here).
  seq3 = jnp.array([[4, 5, 6, 5, 6, 0, 0, 0]])
  toks, match = lookup(seq3, jnp.array([4]), 5, 2)
  assert int(match[0]) == 2 and toks.tolist() == [[5, 6, 5, 6, 5]]
  # No earlier occurrence of even the last token: no proposal.
  _, match = lookup(jnp.array([[1, 2, 3, 4, 0]]), jnp.array([3]), 2, 3)
  assert int(match[0]) == 0


def periodic_model(alpha: float = 0.0, period: int = 7):
  """A tiny model whose greedy answer soon cycles: with the attention and MLP outputs scaled by
  `alpha` (0: removed) the next token is a fixed function of the last one, c -> the next token of c's
  block of `period`, through an untied head built from the embedding."""
  cfg = tiny().replace(tie_embeddings=False)
  params = init_params(cfg, jax.random.key(0))
  V = cfg.vocab_size
  nxt = np.array([(c // period) * period + (c % period + 1) % period if c < V - V % period else c for c in range(V)])
  emb = np.asarray(params["embed_tokens"]["embedding"])
  params["lm_head"] = {"kernel": jnp.asarray(emb[np.argsort(nxt)].T)}  # logit of j ~ <x, emb[c]> for j = nxt[c]
  params["layers"] = jax.tree_util.tree_map_with_path(
    lambda path, x: x * alpha if any(getattr(k, "key", "") in ("o_proj", "down_proj") for k in path) else x,
    params["layers"],
  )
  return cfg, params


@pytest.fixture(scope="module", params=["random", "periodic"])
def eng(request):
  target = model(tiny(), 0) if request.param == "random" else periodic_model()
  return engine(target, model(tiny(layers=1), 1))


@pytest.fixture(scope="module")
def reference(eng):
  run = eng.run(prompts(LENGTHS), "ar", max_new_tokens=MAX_NEW, batch_size=len(LENGTHS))
  return [r.tokens for r in run.rows]


@pytest.mark.parametrize("gamma, ngram", [(1, 3), (4, 3), (6, 1)])
def test_greedy_lookup_equals_autoregressive(eng, reference, gamma, ngram):
  kw = dict(max_new_tokens=MAX_NEW, gamma=gamma, ngram=ngram, batch_size=3)
  run = eng.run(prompts(LENGTHS), "lookup", ngram_min=1, **kw)
  assert [r.tokens for r in run.rows] == reference
  m = run.metrics
  assert m["draft_calls"] == 0
  assert m["drafted_tokens"] % gamma == 0 and 0 < m["drafted_tokens"] <= gamma * m["target_calls"]
  if m["accepted_tokens"] > 0:  # the periodic target: its own past continues its answer
    assert m["block_efficiency"] > 1.5 and m["acceptance_rate"] < 1.0  # rejections too (before the cycle)
  # The default proposes from full-length matches only: fewer proposals, the same tokens.
  strict = eng.run(prompts(LENGTHS), "lookup", **kw)
  assert [r.tokens for r in strict.rows] == reference
  assert strict.metrics["drafted_tokens"] <= m["drafted_tokens"]


def test_lookup_trace_records_match_lengths_and_acceptance(eng):
  ngram, gamma = 3, 4
  run = eng.run(prompts(LENGTHS), "lookup", max_new_tokens=MAX_NEW, gamma=gamma, ngram=ngram, ngram_min=2, trace=True)
  for tr, batch in zip(run.traces, run.batches, strict=True):  # batch size 1: one prompt per batch
    row, act = run.rows[batch["rows"][0]], tr["active"][0]
    m, n = tr["m"][0][act], tr["n"][0][act]
    assert act.sum() == row.metrics["target_calls"] and ((m >= 0) & (m <= ngram)).all()
    assert (n[m < 2] == 0).all() and (n <= gamma).all()  # rows below ngram_min proposed nothing
    # (the counters leave out acceptances past max_new_tokens; the trace records the round as it ran)
    assert gamma * (m >= 2).sum() == row.metrics["drafted_tokens"] and n.sum() >= row.metrics["accepted_tokens"]


def test_lookup_counts_only_real_proposals(eng):
  # Distinct prompt tokens and one new token after the prefill: the first round finds the new token
  # in the prompt only if it occurred there; rows without a match propose nothing.
  ps = [list(range(10, 20)), list(range(30, 45))]
  run = eng.run(ps, "lookup", max_new_tokens=2, gamma=4, ngram_min=1, batch_size=2)
  for p, row in zip(ps, run.rows, strict=True):
    m = row.metrics
    assert m["target_calls"] == 1 and m["drafted_tokens"] == (4 if row.tokens[0] in p else 0)


def test_spec_lookup_equals_autoregressive(eng, reference):
  run = eng.run(prompts(LENGTHS), "spec-lookup", max_new_tokens=MAX_NEW, gamma=3, batch_size=len(LENGTHS))
  assert [r.tokens for r in run.rows] == reference
  alone = eng.run(prompts(LENGTHS[:2]), "spec-lookup", max_new_tokens=MAX_NEW, gamma=3, batch_size=1)
  assert [r.tokens for r in alone.rows] == reference[:2]


def test_lookup_accepts_on_a_periodic_answer():
  eng = engine(periodic_model())
  run = eng.run(prompts(LENGTHS), "lookup", max_new_tokens=40, gamma=4, batch_size=len(LENGTHS))
  assert run.metrics["block_efficiency"] > 2.5


# --- exactness: lookup sampling draws from the target's own distribution ----------------------------

V = 8
PROMPT = [3, 6, 3, 5, 6, 2, 4, 2, 4]  # the target's own likely path: lookup proposals are often right
SAMPLES = 8000


def exact_distribution(cfg, params, s: SamplingConfig, new: int, prompt=PROMPT) -> np.ndarray:
  """P(t_2..t_new) of target-only sampling after `prompt` (t_1, from the prefill, summed out)."""
  seqs = np.array([list(prompt) + list(t) for t in itertools.product(range(V), repeat=new - 1)])
  T = seqs.shape[1]
  logits, _ = Llama(cfg).apply({"params": params}, jnp.asarray(seqs), jnp.broadcast_to(jnp.arange(T), seqs.shape))
  probs = np.asarray(sampling.probabilities(logits, s), np.float64)  # [V^(new-1), T, V]
  P = len(prompt)
  joint = np.ones(len(seqs))
  for j in range(1, new - 1):  # P(t_{j+1} | ..., t_j) for j = 1..new-2, read off the rows
    joint *= probs[np.arange(len(seqs)), P + j - 1, seqs[:, P + j]]
  joint = joint.reshape((V,) * (new - 1))
  # The rows are (t_1, ..., t_{new-1}); the last factor P(t_new | ...) comes from the last position.
  last = probs[:, T - 1].reshape((V,) * (new - 1) + (V,))
  full = joint[..., None] * last  # P(t_2..t_new | t_1) over axes (t_1, ..., t_new)
  p1 = probs[0, P - 1]  # P(t_1 | prompt)
  return np.tensordot(p1, full, axes=(0, 0))


def chi2_pvalue(counts: np.ndarray, expected_p: np.ndarray) -> float:
  expected = expected_p.ravel() * counts.sum()
  counts = counts.ravel()
  small = expected < 5  # pool sparse cells into one bin
  obs = np.append(counts[~small], counts[small].sum())
  exp = np.append(expected[~small], expected[small].sum())
  keep = exp > 0
  return float(stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue)


def sampled_counts(run, new: int) -> np.ndarray:
  counts = np.zeros((V,) * (new - 1))
  for r in run.rows:
    assert len(r.tokens) == new
    counts[tuple(r.tokens[1:])] += 1
  return counts


@pytest.mark.parametrize(
  "s, gamma",
  [(SamplingConfig(temperature=1.0), 1), (SamplingConfig(temperature=1.0, top_k=6, top_p=0.95), 2)],
  ids=["plain-gamma1", "top-k-top-p-gamma2"],
)
def test_lookup_sampling_is_exact(s, gamma):
  target = model(tiny(vocab_size=V, init=1.0), 10)
  new = 3 if gamma == 1 else 4  # the first round's tokens, its bonus included
  run = engine(target).run([PROMPT] * SAMPLES, "lookup", max_new_tokens=new, sampling=s, gamma=gamma, batch_size=2000)
  rows = [r.metrics for r in run.rows]
  # Both paths happened: rejections (residual draws) and all-accepted first rounds (bonus draws). (A
  # row without a match draws from p_1, the bonus path with q = 0.)
  assert any(m["drafted_tokens"] > 0 and m["accepted_tokens"] == 0 for m in rows)
  assert any(m["target_calls"] == 1 and m["accepted_tokens"] == gamma for m in rows)
  assert chi2_pvalue(sampled_counts(run, new), exact_distribution(*target, s, new)) > 1e-3
