"""Datastore drafting: the binary search, greedy equality with `ar`, exact sampling, refusals, the CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decode_util import engine, model, prompts, save_model, tiny, word_tokenizer
from test_decode_lookup import PROMPT, V, chi2_pvalue, exact_distribution, sampled_counts

from specjax.cli import main
from specjax.data.datastore import from_tokens, join_documents
from specjax.decode.datastore import Store, match_range, retrieve
from specjax.decode.sampling import SamplingConfig
from specjax.errors import SpecjaxError

LENGTHS = (3, 9, 14, 5)
MAX_NEW = 20


def store_of(docs, vocab_size=128):
  ds = from_tokens(join_documents(docs), {"vocab_size": vocab_size, "vocab_sha256": "test"})
  return ds, Store(tokens=jnp.asarray(ds.tokens), suffix_array=jnp.asarray(ds.suffix_array))


def test_binary_search_finds_exactly_the_matching_range():
  rng = np.random.default_rng(0)
  docs = [rng.integers(0, 3, size=int(rng.integers(1, 30))).tolist() for _ in range(12)]
  ds, store = store_of(docs)
  suffixes = [tuple(ds.tokens[p:].tolist()) for p in ds.suffix_array]
  search = jax.jit(match_range, static_argnames="continued")
  for n in (1, 2, 3, 5):
    for _ in range(12):
      q = tuple(rng.integers(0, 3, size=n).tolist())
      lo, hi = (int(x) for x in search(store, jnp.asarray(q, jnp.int32)))
      assert [i for i, s in enumerate(suffixes) if s[:n] == q] == list(range(lo, hi))
      lo, hi = (int(x) for x in search(store, jnp.asarray(q, jnp.int32), continued=True))
      assert [i for i, s in enumerate(suffixes) if s[:n] == q and len(s) > n and s[n] >= 0] == list(range(lo, hi))


def test_retrieve_proposes_the_longest_match_up_to_the_document_end():
  _, store = store_of([[1, 2, 3, 4, 5], [9, 2, 3, 7], [6, 6]])
  #                  context "... 9 2 3": the 3-token match wins over "2 3" (two occurrences)
  seq = jnp.array([[8, 9, 2, 3, 0, 0], [5, 2, 3, 0, 0, 0], [8, 8, 8, 0, 0, 0], [0, 6, 0, 0, 0, 0]])
  search = jax.jit(retrieve, static_argnames=("gamma", "ngram", "ngram_min"))
  tokens, k, m = search(store, seq, jnp.array([3, 2, 2, 1]), gamma=3, ngram=3, ngram_min=1)
  assert m.tolist() == [3, 2, 0, 1] and k.tolist() == [1, 2, 0, 1]
  assert tokens[0, :1].tolist() == [7]  # then the document ends
  assert tokens[1, :2].tolist() in ([4, 5], [7])  # one of the two "2 3" occurrences
  assert tokens[3, :1].tolist() == [6]  # "6" followed by "6" (the other "6" ends its document)
  _, k_strict, _ = search(store, seq, jnp.array([3, 2, 2, 1]), gamma=3, ngram=3, ngram_min=3)
  assert k_strict.tolist() == [1, 0, 0, 0]


@pytest.fixture(scope="module")
def target():
  return model(tiny(), 0)


@pytest.fixture(scope="module")
def reference(target):
  run = engine(target).run(prompts(LENGTHS), "ar", max_new_tokens=MAX_NEW, batch_size=len(LENGTHS))
  return [r.tokens for r in run.rows]


def test_greedy_datastore_equals_autoregressive(target, reference):
  # The store holds the target's own answers, cut short and mixed with noise: proposals are often,
  # not always, right.
  rng = np.random.default_rng(1)
  docs = [a[: len(a) * 2 // 3] for a in reference] + [rng.integers(0, 128, size=40).tolist() for _ in range(20)]
  ds, _ = store_of(docs)
  eng = engine(target, datastore=ds)
  for ngram, ngram_min, batch in ((3, 1, 4), (2, 2, 1)):
    run = eng.run(
      prompts(LENGTHS),
      "datastore",
      max_new_tokens=MAX_NEW,
      gamma=4,
      ngram=ngram,
      ngram_min=ngram_min,
      batch_size=batch,
      trace=batch > 1,
    )
    assert [r.tokens for r in run.rows] == reference
    m = run.metrics
    assert m["draft_calls"] == 0 and m["drafted_tokens"] > 0 and m["accepted_tokens"] > 0
    assert m["acceptance_rate"] < 1.0  # rejections too
    assert m["block_efficiency"] > 1.2
    if run.traces:  # the match length of each round; rounds without a match accept nothing
      tr = run.traces[0]
      assert ((tr["m"] >= 0) & (tr["m"] <= ngram)).all() and (tr["n"][tr["m"] == 0] == 0).all()
  # combined: the longer of the context's and the store's matches proposes
  run = eng.run(prompts(LENGTHS), "combined", max_new_tokens=MAX_NEW, gamma=4, ngram_min=1, batch_size=4)
  assert [r.tokens for r in run.rows] == reference and run.metrics["accepted_tokens"] > 0


def test_datastore_mode_needs_a_datastore_of_the_same_vocabulary(target):
  with pytest.raises(SpecjaxError, match="needs a datastore"):
    engine(target).run([[1, 2]], "datastore", max_new_tokens=2)
  ds, _ = store_of([[1, 2, 3]], vocab_size=64)
  with pytest.raises(SpecjaxError, match="64 tokens"):
    engine(target, datastore=ds)


@pytest.mark.parametrize("mode", ["datastore", "combined"])
def test_datastore_sampling_is_exact(mode):
  # (lookup's test covers plain sampling and gamma 1 with the same acceptance code)
  s, gamma = SamplingConfig(temperature=1.0, top_k=6, top_p=0.95), 2
  tgt = model(tiny(vocab_size=V, init=1.0), 10)
  rng = np.random.default_rng(2)
  docs = [PROMPT + [2, 4, 2, 4, 6, 3]] + [rng.integers(0, V, size=30).tolist() for _ in range(6)]
  ds, _ = store_of(docs, vocab_size=V)
  new = 3 if gamma == 1 else 4  # the first round's tokens, its bonus included
  eng = engine(tgt, datastore=ds)
  run = eng.run(
    [PROMPT] * 8000, mode, max_new_tokens=new, sampling=s, gamma=gamma, ngram=2, ngram_min=1, batch_size=2000
  )
  rows = [r.metrics for r in run.rows]
  assert any(m["drafted_tokens"] > 0 and m["accepted_tokens"] == 0 for m in rows)  # residual draws
  assert any(m["target_calls"] == 1 and m["accepted_tokens"] == gamma for m in rows)  # bonus draws
  assert chi2_pvalue(sampled_counts(run, new), exact_distribution(*tgt, s, new)) > 1e-3


def test_cli_datastore_then_generate(tmp_path, capsys):
  # (greedy identity with `ar` is tested above, with fast compiles; here the commands fit together)
  tok = word_tokenizer()
  ckpt = save_model(tmp_path / "target", *model(tiny(), 0), tok)
  answers = tmp_path / "answers.jsonl"
  every_word = " ".join(f"w{i}" for i in range(124))  # every token occurs: the first round has a match
  answers.write_text(json.dumps({"prompt": "w1", "response": every_word}) + "\n")
  ds = tmp_path / "ds"
  code = main(["datastore", "--data", str(answers), "--tokenizer", str(ckpt), "--out", str(ds)])
  out, err = capsys.readouterr()
  assert code == 0, err
  assert "wrote datastore" in out and (ds / "meta.json").is_file()
  argv = ["generate", "--target", str(ckpt), "--prompt", "w1 w2 w3", "--max-new-tokens", "6", "--json"]
  code = main(argv + ["--mode", "datastore", "--datastore", str(ds), "--ngram-min", "1"])
  out, err = capsys.readouterr()
  assert code == 0, err
  row = json.loads(out)
  assert row["mode"] == "datastore" and row["new_tokens"] == 6 and row["drafted_tokens"] > 0
  # The same store for a target with another tokenizer is refused, in one line; so is a missing store.
  other = save_model(tmp_path / "other", *model(tiny(), 0), word_tokenizer(prefix="x"))
  for target, store, match in ((other, ds, "another tokenizer"), (ckpt, tmp_path / "none", "not a datastore")):
    argv = ["generate", "--target", str(target), "--prompt", "w1", "--max-new-tokens", "2", "--mode", "datastore"]
    code = main(argv + ["--datastore", str(store)])
    _, err = capsys.readouterr()
    assert code == 2 and match in err and "Traceback" not in err
