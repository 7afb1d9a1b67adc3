"""The teacher cache of EAGLE distillation: the cached step equals the uncached one, the cache is reused on
resume and rebuilt when anything it depends on changes."""

import json

import jax
import numpy as np
import pytest
from align_helpers import PROMPTS, prompts_file, tiny_checkpoint, word_data

from specjax.checkpoint.orbax_io import load_checkpoint
from specjax.cli import main
from specjax.config import load_config
from specjax.data.distill_batches import ExampleBatches
from specjax.data.distill_data import load_distill_data
from specjax.train import teacher_cache
from specjax.train.distill import DistillConfig, EagleTrainConfig, distill, make_distill_loss
from specjax.train.teacher_cache import TeacherCache


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("cache")
  target = tiny_checkpoint(root / "target", seed=0, init_scale=0.5)
  data = word_data(target, root, num_samples=24, length=40, shard_size=12)
  vocab = root / "vocab.json"
  assert main(["vocab-map", "--data", str(data), "--size", "30", "--out", str(vocab)]) == 0
  draft = root / "eagle0"
  assert main(["eagle-init", str(target), "--map", str(vocab), "--out", str(draft)]) == 0
  return {"root": root, "target": target, "data": data, "draft": draft}


def _cache(setup, folder, seq_len=48, rows=None):
  ds, meta = load_distill_data(setup["data"])
  target = load_checkpoint(setup["target"])
  batches = ExampleBatches(ds, 4, seq_len, eval_examples=4, eval_batches=1)
  rows = batches.rows_read(3) if rows is None else rows
  cache = TeacherCache.build(
    folder, target.config, target.params, batches.tokens, rows, seq_len, meta["target"]["fingerprint"], batch_size=3
  )
  return batches, cache, target


@pytest.mark.parametrize("steps", [1, 2])
def test_cached_step_equals_uncached(setup, tmp_path, steps):
  """Loss, every metric and the gradients of a batch with the cached features equal those of the step
  that runs the teacher (reduced draft vocabulary, so the full-vocabulary log-normaliser is used too)."""
  batches, cache, target = _cache(setup, tmp_path / "c")
  draft = load_checkpoint(setup["draft"])
  loss_fn = make_distill_loss(draft.config, target.config, "fkl", {}, EagleTrainConfig(steps=steps))
  frozen = {"target": target.params}
  batches.extras = cache
  cached = batches.next()
  assert cached["features"].shape == (4, 48, target.config.hidden_size) and cached["teacher_lse"].shape == (4, 48)
  plain = {k: v for k, v in cached.items() if k not in ("features", "teacher_lse")}
  grad = jax.value_and_grad(loss_fn, has_aux=True)
  (v1, m1), g1 = grad(draft.params, cached, jax.random.key(0), frozen)
  (v2, m2), g2 = grad(draft.params, plain, jax.random.key(0), frozen)
  np.testing.assert_allclose(v1, v2, rtol=1e-5)
  assert set(m1) == set(m2) and "expected_acceptance_full" in m1
  for k in m1:
    np.testing.assert_allclose(m1[k], m2[k], rtol=1e-5, atol=1e-6, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g1, g2)


def test_cache_rows_lengths_and_padding(setup, tmp_path):
  batches, cache, target = _cache(setup, tmp_path / "c", seq_len=32)
  for r in batches.rows_read(3):
    n = min(len(batches.tokens[r]), 32)
    assert cache.row(r)["features"].shape == (n, target.config.hidden_size)
  unread = set(batches.train_rows.tolist()) - set(batches.rows_read(3))
  if unread:
    with pytest.raises(KeyError, match="not in the teacher cache"):
      cache.row(unread.pop())
  batches.extras = cache
  b = batches.next()
  ends = b["tokens"].astype(bool).sum(1)  # rows are right-padded with token 0 (word tokens are >= 5)
  for i, n in enumerate(ends):
    assert not b["features"][i, n:].any() and b["features"][i, :n].any()


def test_cache_is_reused_and_rebuilt_when_stale(setup, tmp_path, monkeypatch):
  folder = tmp_path / "c"
  _, first, _ = _cache(setup, folder)
  meta = json.loads((folder / "meta.json").read_text())

  def boom(*a, **k):
    raise AssertionError("the teacher ran again")

  with monkeypatch.context() as m:
    m.setattr(teacher_cache, "_teacher_fn", boom)
    _, again, _ = _cache(setup, folder)  # the same rows, target and seq_len: read back
  np.testing.assert_array_equal(again.features, first.features)
  _, longer, _ = _cache(setup, folder, seq_len=64)  # another seq_len: rebuilt
  assert json.loads((folder / "meta.json").read_text())["seq_len"] == 64 != meta["seq_len"]
  assert longer.features.shape[0] >= first.features.shape[0]


def test_distill_with_and_without_cache_agree(setup, tmp_path):
  """End to end: three eagle distillation steps log the same losses with and without the cache, and a
  resumed cached run reads its cache back."""
  base = [
    f"target={setup['target']}",
    f"student={setup['draft']}",
    f"data.path={setup['data']}",
    "spec_eval.every=-1",
    "steps=3",
    "data.seq_len=48",
    "data.eval_examples=4",
  ]

  def run(out, *extra, stop_at=None):
    distill(load_config(DistillConfig, "configs/distill/tiny.yaml", base + list(extra)), out, stop_at=stop_at)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

  with_cache = run(tmp_path / "a", stop_at=2)
  assert (tmp_path / "a" / "teacher_cache" / "meta.json").exists()
  with_cache = run(tmp_path / "a")
  without = run(tmp_path / "b", "eagle.cache=false")
  assert not (tmp_path / "b" / "teacher_cache").exists()
  assert [r["step"] for r in with_cache] == [r["step"] for r in without] == [1, 2, 3]
  for a, b in zip(with_cache, without, strict=True):
    for k in ("loss", "feature_loss", "expected_acceptance", "expected_acceptance_full"):
      np.testing.assert_allclose(a[k], b[k], rtol=2e-4, err_msg=k)


def test_make_data_features_serve_the_cache(setup, tmp_path):
  """`make-data --features` keeps the teacher's features and log-normalisers as it samples; the cache reads
  them instead of running the teacher, and they equal the teacher pass (float16 storage) row by row."""
  from specjax.data.distill_data import stored_features
  from specjax.jobs.make_data import make_data

  data = make_data(
    setup["target"],
    str(prompts_file(tmp_path, PROMPTS[:3])),
    tmp_path / "d",
    num_samples=5,
    max_new_tokens=12,
    batch_size=2,
    shard_size=3,
    check_eval=False,
    features=True,
  )
  ds, meta = load_distill_data(data)
  target = load_checkpoint(setup["target"])
  stored = stored_features(data, meta)
  tokens = [np.asarray(t, np.int32) for t in ds["tokens"]]
  assert stored[0].dtype == np.float16 and len(stored[0]) == sum(len(t) for t in tokens)
  rows, fp = list(range(len(tokens))), meta["target"]["fingerprint"]
  kept = TeacherCache.build(tmp_path / "unused", target.config, target.params, tokens, rows, 24, fp, stored=stored)
  assert not (tmp_path / "unused").exists()  # nothing computed, nothing written
  ran = TeacherCache.build(tmp_path / "c", target.config, target.params, tokens, rows, 24, fp, batch_size=2)
  for r in rows:
    a, b = kept.row(r), ran.row(r)
    assert len(a["features"]) == min(len(tokens[r]), 24)
    np.testing.assert_allclose(a["features"], b["features"], rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(a["teacher_lse"], b["teacher_lse"], rtol=1e-5, atol=1e-4)
  assert stored_features(setup["data"], load_distill_data(setup["data"])[1]) is None
