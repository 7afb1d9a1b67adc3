"""Data pipeline: corpus readers, token store, packing, chat masks, default corpus."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_tokenizer import make_corpus, make_tokenizer

from specjax.checkpoint.orbax_io import load_tokenizer
from specjax.data import default_corpus
from specjax.data.chat import encode_chat
from specjax.data.corpus import DataConfig, build_token_store, iter_records
from specjax.data.packing import PackedBatches, segment_attention_mask
from specjax.errors import SpecjaxError
from specjax.models.llama import Llama
from specjax.models.presets import get_preset
from specjax.models.registry import init_params


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok")))


def _store(tmp_path, tok, source, **kw):
  return build_token_store(DataConfig(source=str(source), **kw), tok, tmp_path / "store")


def test_token_store_and_packing_layout(tmp_path, tok):
  corpus = tmp_path / "c.jsonl"
  corpus.write_text("\n".join(json.dumps({"text": t}) for t in ["the cat sat", "a dog ran on the mat", "yes"]) + "\n")
  store = _store(tmp_path, tok, corpus)
  eos = tok.eos_token_id
  assert store.meta["num_documents"] == 3
  np.testing.assert_array_equal(store.docs, [0, 4, 11])
  assert store.tokens[3] == eos and store.tokens[10] == eos
  data = PackedBatches(store, batch_size=1, seq_len=12, eval_fraction=0.0)
  b = data.batch_at(0)
  np.testing.assert_array_equal(b["segment_ids"][0], [1] * 4 + [2] * 7 + [3])
  np.testing.assert_array_equal(b["positions"][0], [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 0])
  np.testing.assert_array_equal(b["targets"][0], store.tokens[1:13])
  # no target across a document boundary (eos -> next document's first token)
  np.testing.assert_array_equal(b["loss_mask"][0], [1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1])


def test_packed_documents_do_not_see_each_other(tmp_path, tok):
  cfg = get_preset("tiny")
  params = init_params(cfg, jax.random.key(0))
  docs = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16]]
  tokens = jnp.asarray([sum(docs, [])], jnp.int32)
  seg = jnp.asarray([[i + 1 for i, d in enumerate(docs) for _ in d]], jnp.int32)
  pos = jnp.asarray([[p for d in docs for p in range(len(d))]], jnp.int32)
  packed, _ = Llama(cfg).apply({"params": params}, tokens, pos, attn_mask=segment_attention_mask(seg))
  start = 0
  for d in docs:
    alone, _ = Llama(cfg).apply({"params": params}, jnp.asarray([d]), jnp.arange(len(d))[None])
    np.testing.assert_allclose(packed[0, start : start + len(d)], alone[0], atol=1e-5, rtol=1e-5)
    start += len(d)


def test_iterator_is_deterministic_and_resumable(tmp_path, tok):
  store = _store(tmp_path, tok, make_corpus(tmp_path / "c.jsonl", n_docs=12))
  a = PackedBatches(store, batch_size=4, seq_len=16, seed=3, eval_fraction=0.1)
  seq = [a.next() for _ in range(12)]  # crosses epochs
  assert a.rows_per_epoch < 12 * 4
  b = PackedBatches(store, batch_size=4, seq_len=16, seed=3, eval_fraction=0.1)
  b.restore(json.loads(json.dumps(PackedBatches(store, 4, 16, 3, 0.1).state() | {"batches": 7})))
  for k in range(7, 12):
    nb = b.next()
    for key in nb:
      np.testing.assert_array_equal(nb[key], seq[k][key])
  # epochs are reshuffled; eval rows never appear in training batches
  assert set(a.eval_rows).isdisjoint(a.train_rows)
  c = PackedBatches(store, batch_size=4, seq_len=16, seed=4, eval_fraction=0.1)
  assert not np.array_equal(c.batch_at(0)["tokens"], seq[0]["tokens"])
  evals = a.eval_batches()
  assert evals and all(e["tokens"].shape == (4, 16) for e in evals)
  with pytest.raises(SpecjaxError, match="another corpus"):
    c.restore({"batches": 1, "seed": 3, "rows": a.rows.num_rows})


def test_chat_mask_is_response_only(tok):
  tokens, mask = encode_chat(tok, "what is the cat", "the cat sat on the mat")
  words = tok.convert_ids_to_tokens(tokens.tolist())
  masked = [w for w, m in zip(words, mask, strict=True) if m]
  assert masked == ["the", "cat", "sat", "on", "the", "mat", "<|im_end|>"]
  assert words[: list(mask).index(1)][-2:] == ["<|im_start|>", "assistant"]


def test_chat_corpus_packs_with_response_mask(tmp_path, tok):
  corpus = tmp_path / "chat.jsonl"
  corpus.write_text(json.dumps({"prompt": "who is it", "response": "a big dog"}) + "\n")
  store = _store(tmp_path, tok, corpus, prompt_field="prompt")
  prompt_len = len(
    tok(
      tok.apply_chat_template([{"role": "user", "content": "who is it"}], tokenize=False, add_generation_prompt=True),
      add_special_tokens=False,
    )["input_ids"]
  )
  assert store.mask[:prompt_len].sum() == 0 and store.mask[prompt_len:].sum() == 4


@pytest.mark.parametrize("kind", ["text", "jsonl", "parquet", "disk", "glob"])
def test_corpus_formats(tmp_path, kind):
  import datasets

  texts = ["the cat sat", "a dog ran"]
  if kind == "text":
    src = tmp_path / "c.txt"
    src.write_text("\n\n".join(texts) + "\n")
  elif kind in ("jsonl", "glob"):
    for i, t in enumerate(texts):
      (tmp_path / f"part{i}.jsonl").write_text(json.dumps({"text": t}) + "\n")
    src = tmp_path / "part0.jsonl" if kind == "jsonl" else tmp_path / "part*.jsonl"
  elif kind == "parquet":
    src = tmp_path / "c.parquet"
    datasets.Dataset.from_dict({"text": texts}).to_parquet(str(src))
  else:
    src = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(src))
  got = [r["text"].strip() for r in iter_records(DataConfig(source=str(src)))]
  assert got == (texts[:1] if kind == "jsonl" else texts)


def test_bad_corpora(tmp_path, tok):
  with pytest.raises(SpecjaxError, match="does not exist"):
    _store(tmp_path, tok, tmp_path / "missing.jsonl")
  with pytest.raises(SpecjaxError, match="matches no files"):
    _store(tmp_path, tok, tmp_path / "nothing*.jsonl")
  empty = tmp_path / "empty.jsonl"
  empty.write_text(json.dumps({"text": "   "}) + "\n")
  with pytest.raises(SpecjaxError, match="holds no text"):
    _store(tmp_path, tok, empty)
  assert not (tmp_path / "store").exists()  # nothing half-written
  with pytest.raises(SpecjaxError, match="no field 'body'"):
    _store(tmp_path, tok, make_corpus(tmp_path / "c.jsonl", 3), text_field="body")
  with pytest.raises(SpecjaxError, match="vocab_size"):
    build_token_store(DataConfig(source=str(tmp_path / "c.jsonl")), tok, tmp_path / "s2", vocab_size=10)
  small = _store(tmp_path, tok, make_corpus(tmp_path / "c.jsonl", 3))
  with pytest.raises(SpecjaxError, match="too few"):
    PackedBatches(small, batch_size=2, seq_len=4096)


def test_default_corpus_is_english_prose():
  docs = list(itertools.islice(default_corpus.documents(), 50))
  assert len(docs) == 50
  words = " ".join(docs).split()
  assert len(words) > 2000
  assert sum(w.lower() in ("the", "a", "of", "is", "to") for w in words) / len(words) > 0.05
