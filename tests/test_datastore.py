"""The datastore format and builder: the suffix array, sources, tokenizer identity, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from decode_util import word_tokenizer

from specjax.data.datastore import (
  SEPARATOR,
  build_datastore,
  check_tokenizer,
  join_documents,
  load_datastore,
  suffix_array,
)
from specjax.errors import SpecjaxError


def naive_suffix_array(x) -> list[int]:
  return sorted(range(len(x)), key=lambda i: tuple(int(t) for t in x[i:]))


@pytest.mark.parametrize("seed", range(4))
def test_suffix_array_equals_a_naive_sort(seed):
  rng = np.random.default_rng(seed)
  for _ in range(50):
    n = int(rng.integers(1, 80))
    x = rng.integers(0, int(rng.integers(1, 5)), size=n)  # few symbols: long repeats
    x[rng.random(n) < 0.1] = SEPARATOR
    assert suffix_array(x).tolist() == naive_suffix_array(x)
  periodic = np.tile([3, 1, 3], 40)  # one repeat as long as the array: many doubling rounds
  assert suffix_array(periodic).tolist() == naive_suffix_array(periodic)
  assert suffix_array(np.zeros(64, np.int32)).tolist() == list(range(63, -1, -1))
  wide = rng.integers(0, 200_000, size=300)  # ids that pack fewer tokens into the first key
  assert suffix_array(wide).tolist() == naive_suffix_array(wide)


def make_data_folder(path, responses, prompt=(7, 8)):
  """A minimal `specjax make-data` folder: the prompt's ids, then each response (response_mask 1)."""
  import datasets

  from specjax.data.distill_data import FORMAT, META_FILE

  rows = {
    "tokens": [list(prompt) + list(r) for r in responses],
    "response_mask": [[0] * len(prompt) + [1] * len(r) for r in responses],
  }
  datasets.Dataset.from_dict(rows).save_to_disk(str(path))
  (path / META_FILE).write_text(json.dumps({"format": FORMAT}))
  return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  root = tmp_path_factory.mktemp("sources")
  jsonl = root / "answers.jsonl"
  jsonl.write_text(json.dumps({"prompt": "w1", "response": "w5 w6 w7"}) + "\n\n" + json.dumps({"text": "w9 w9"}) + "\n")
  txt = root / "notes.txt"
  txt.write_text("w20 w21\nw22\n")
  data = make_data_folder(root / "data", [[10, 11, 12, 1], [13, 14]])
  return {"root": root, "jsonl": str(jsonl), "txt": str(txt), "data": str(data)}


def test_build_from_every_source_kind(sources, tmp_path):
  tok = word_tokenizer()
  w = lambda *ids: [tok.convert_tokens_to_ids(f"w{i}") for i in ids]  # noqa: E731
  ds = build_datastore([sources["data"], sources["jsonl"], sources["txt"]], tok, tmp_path / "ds")
  docs = [[10, 11, 12, 1], [13, 14], w(5, 6, 7), w(9, 9), w(20, 21, 22)]  # make-data: the answers only
  assert ds.tokens.tolist() == join_documents(docs).tolist()
  assert ds.tokens[-1] == SEPARATOR and ds.meta["num_documents"] == 5
  assert [s["documents"] for s in ds.meta["sources"]] == [2, 2, 1]
  loaded = load_datastore(tmp_path / "ds")
  assert np.array_equal(loaded.tokens, ds.tokens) and np.array_equal(loaded.suffix_array, ds.suffix_array)
  assert loaded.suffix_array.tolist() == naive_suffix_array(ds.tokens)
  assert loaded.vocab_size == len(tok) and loaded.nbytes == 8 * len(ds.tokens)
  check_tokenizer(loaded, tok)  # the same tokenizer passes
  with pytest.raises(SpecjaxError, match="another tokenizer"):
    check_tokenizer(loaded, word_tokenizer(prefix="x"))  # same size, other ids
  with pytest.raises(SpecjaxError, match="another tokenizer"):
    check_tokenizer(loaded, word_tokenizer(vocab_size=64))


@pytest.mark.parametrize(
  "srcs, match",
  [
    (["{root}/missing.jsonl"], "does not exist"),
    (["{root}/empty.jsonl"], "holds no tokens"),
    (["{jsonl}", "{root}/bad.jsonl"], "not valid JSON"),
    (["{root}/other.jsonl"], "expected"),
    (["{root}/big"], "outside the tokenizer"),
    (["{root}/x.csv"], "neither"),
    ([], "no datastore sources"),
  ],
)
def test_bad_inputs_write_nothing(sources, tmp_path, srcs, match):
  root = sources["root"]
  (root / "empty.jsonl").write_text("\n")
  (root / "bad.jsonl").write_text("{not json\n")
  (root / "other.jsonl").write_text(json.dumps({"question": "w1"}) + "\n")
  (root / "x.csv").write_text("a,b\n")
  if not (root / "big").exists():
    make_data_folder(root / "big", [[5, 500]])  # id 500: not in a 128-token vocabulary
  out = tmp_path / "ds"
  with pytest.raises(SpecjaxError, match=match):
    build_datastore([s.format(**sources) for s in srcs], word_tokenizer(), out)
  assert list(tmp_path.iterdir()) == []  # neither the folder nor a hidden partial one


def test_existing_out_is_refused(sources, tmp_path):
  (tmp_path / "ds").mkdir()
  with pytest.raises(SpecjaxError, match="already exists"):
    build_datastore([sources["jsonl"]], word_tokenizer(), tmp_path / "ds")
  assert list((tmp_path / "ds").iterdir()) == []
  with pytest.raises(SpecjaxError, match="not a datastore"):
    load_datastore(tmp_path / "ds")
