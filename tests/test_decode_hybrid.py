"""eagle-retrieval: the source rule, greedy equality with `ar` with and without a datastore (every source
observed, the draft calls a round makes), exact sampling with retrieved and drafted rounds, refusals, the CLI."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decode_util import engine, model, prompts, tiny
from test_decode_datastore import store_of
from test_decode_eagle import eagle_pair
from test_decode_lookup import V, chi2_pvalue, exact_distribution, sampled_counts

from specjax.cli import main
from specjax.decode.hybrid import SOURCES, retrieval, source_rounds
from specjax.decode.sampling import SamplingConfig
from specjax.errors import SpecjaxError
from specjax.models.registry import from_target

LENGTHS = (3, 9, 14, 5, 12)
MAX_NEW = 21
DRAFT, CONTEXT, DATASTORE = (SOURCES.index(n) for n in ("draft", "context", "datastore"))


def test_the_longest_retrieval_match_picks_the_source():
  _, store = store_of([[5, 6, 7, 1], [9, 9, 2, 3, 8]], vocab_size=16)
  #                 0  1  2  3  4  5
  seq = jnp.array(
    [
      [2, 3, 4, 2, 3, 0],  # "2 3" in the context and in the store: the context wins the tie
      [1, 9, 2, 3, 0, 0],  # "9 2 3" only in the store (the context has no earlier "3")
      [1, 5, 6, 0, 0, 0],  # "5 6" only in the store
      [1, 4, 0, 0, 0, 0],  # "4": nowhere
    ]
  )
  length = jnp.array([4, 3, 2, 1])
  search = jax.jit(retrieval, static_argnames=("gamma", "ngram", "ngram_min"))
  tokens, k, source = search(store, seq, length, gamma=2, ngram=3, ngram_min=2)
  assert source.tolist() == [CONTEXT, DATASTORE, DATASTORE, DRAFT] and k.tolist() == [2, 1, 2, 0]
  assert tokens[0].tolist() == [4, 2] and tokens[1, :1].tolist() == [8] and tokens[2].tolist() == [7, 1]
  tokens, k, source = search(None, seq, length, gamma=2, ngram=3, ngram_min=2)  # no datastore: lookup only
  assert source.tolist() == [CONTEXT, DRAFT, DRAFT, DRAFT] and k.tolist() == [2, 0, 0, 0]


@pytest.fixture(scope="module")
def pair():
  return eagle_pair(head_ids=tuple(range(0, 16, 2)))


@pytest.fixture(scope="module")
def reference(pair):
  run = engine(pair[0]).run(prompts(LENGTHS, vocab=16), "ar", max_new_tokens=MAX_NEW, batch_size=len(LENGTHS))
  return [r.tokens for r in run.rows]


def test_greedy_equals_autoregressive_without_a_datastore(pair, reference):
  gamma = 3
  run = engine(*pair).run(
    prompts(LENGTHS, vocab=16),
    "eagle-retrieval",
    max_new_tokens=MAX_NEW,
    gamma=gamma,
    ngram_min=2,
    batch_size=1,
    trace=True,
  )
  assert [r.tokens for r in run.rows] == reference
  rounds = source_rounds(run.traces)
  assert rounds["draft"] > 0 and rounds["context"] > 0 and rounds["datastore"] == 0
  for tr, batch in zip(run.traces, run.batches, strict=True):  # batch size 1: one prompt per batch
    m, act = run.rows[batch["rows"][0]].metrics, tr["active"][0]
    source, k = tr["source"][0][act], tr["k"][0][act]
    assert act.sum() == m["target_calls"] and (k == gamma).all()  # lookup proposes gamma tokens, the draft too
    # A retrieved round makes only the catch-up draft call, a drafted one gamma calls.
    assert m["draft_calls"] == np.where(source == CONTEXT, 1, gamma).sum()
  accepted = np.concatenate([tr["n"][tr["active"] & (tr["source"] == CONTEXT)] for tr in run.traces])
  assert accepted.sum() > 0  # retrieved proposals were accepted too


def test_greedy_equals_autoregressive_with_a_datastore_and_a_draft_threshold(pair, reference):
  # The store holds the target's answers cut short and noise: every source proposes sometimes.
  rng = np.random.default_rng(1)
  docs = [a[: len(a) // 3] for a in reference] + [rng.integers(0, 16, size=40).tolist() for _ in range(4)]
  ds, _ = store_of(docs, vocab_size=16)
  gamma = 3
  run = engine(*pair, datastore=ds).run(
    prompts(LENGTHS, vocab=16),
    "eagle-retrieval",
    max_new_tokens=MAX_NEW,
    gamma=gamma,
    ngram_min=2,
    draft_threshold=0.9,
    batch_size=4,
    trace=True,
  )
  assert [r.tokens for r in run.rows] == reference
  rounds = source_rounds(run.traces)
  assert all(rounds[s] > 0 for s in SOURCES), rounds
  tr = np.concatenate  # per source: the proposal counts of its rounds
  k = {s: tr([t["k"][t["active"] & (t["source"] == SOURCES.index(s))] for t in run.traces]) for s in SOURCES}
  assert (k["context"] == gamma).all() and ((k["datastore"] >= 1) & (k["datastore"] <= gamma)).all()
  assert (k["draft"] < gamma).any()  # the threshold shortened drafted rounds
  assert run.metrics["drafted_tokens"] == sum(int(v.sum()) for v in k.values())


def test_sampling_is_exact_with_retrieved_and_drafted_rounds():
  """The first token after the prompt decides the first round's source: 0 (43%) continues "4 0" from the
  prompt, 6 (27%) "4 6" from the store, 2 (26%) has no match and drafts."""
  prompt = [3, 7, 6, 0, 3, 2, 4, 0, 4]
  target = model(tiny(vocab_size=V, init=1.0), 10)
  draft = from_target(*target, num_layers=1, seed=3)
  ds, _ = store_of([[4, 6, 0, 6, 0], [1, 5, 3]], vocab_size=V)
  s, gamma = SamplingConfig(temperature=1.0), 2
  new = gamma + 2  # the first round's tokens (bonus included) after the prefill's token
  run = engine(target, draft, datastore=ds).run(
    [prompt] * 8000,
    "eagle-retrieval",
    max_new_tokens=new,
    sampling=s,
    gamma=gamma,
    ngram=2,
    batch_size=2000,
    trace=True,
  )
  source, k, n = (np.concatenate([tr[f][:, 0] for tr in run.traces]) for f in ("source", "k", "n"))
  for src in (DRAFT, CONTEXT, DATASTORE):
    assert (source == src).sum() > 1000, SOURCES[src]  # every source proposed first rounds
    assert ((source == src) & (n < k)).any(), SOURCES[src]  # rejections: residual draws
  for src in (DRAFT, DATASTORE):  # (the context's "4 0" continuation is never accepted: p(4) = 0 there)
    assert ((source == src) & (n == k)).any(), SOURCES[src]  # all accepted: bonus draws
  assert chi2_pvalue(sampled_counts(run, new), exact_distribution(*target, s, new, prompt=prompt)) > 1e-3


def test_refused_without_an_eagle_draft(pair):
  target, _ = pair
  with pytest.raises(SpecjaxError, match="needs a draft model"):
    engine(target).run([[1, 2]], "eagle-retrieval", max_new_tokens=4)
  with pytest.raises(SpecjaxError, match="kind 'eagle'"):
    engine(target, model(tiny(vocab_size=16, layers=1), 1)).run([[1, 2]], "eagle-retrieval", max_new_tokens=4)
  with pytest.raises(SpecjaxError, match="ngram_min must be in 1..ngram"):
    engine(*pair).run([[1, 2]], "eagle-retrieval", max_new_tokens=4, ngram=2, ngram_min=3)


def test_cli_flags(capsys, monkeypatch):
  monkeypatch.setenv("COLUMNS", "400")  # no wrapped help lines
  with pytest.raises(SystemExit):
    main(["bench", "--help"])
  flags = {b.split()[0]: b for b in capsys.readouterr().out.split("\n  --")[1:]}  # each flag's help
  for flag in ("gamma", "draft-threshold", "ngram", "ngram-min"):
    assert "eagle-retrieval" in flags[flag].split(":")[0], flag  # the modes that read it, then the help
  with pytest.raises(SystemExit):
    main(["generate", "--help"])
  assert "eagle-retrieval" in capsys.readouterr().out  # a --mode choice
