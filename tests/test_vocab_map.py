"""Reduced draft vocabularies (FR-Spec style): ranking, the model head, exact decoding, training, save/load."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decode_util import engine, model, perturbed, prompts, save_model, tiny
from test_decode_sampling import PROMPT, SAMPLES, V, _chi2_pvalue, _target_distribution

from specjax.checkpoint.orbax_io import load_checkpoint
from specjax.data.vocab_map import rank_tokens, read_vocab_map, reduce_head, restrict_teacher, write_vocab_map
from specjax.decode.sampling import SamplingConfig
from specjax.errors import SpecjaxError
from specjax.models.llama import NEG_INF, decode_layout, expand_logits
from specjax.models.presets import get_preset
from specjax.models.registry import model_for


def test_rank_tokens_by_frequency_then_id():
  ids, stats = rank_tokens([[5, 5, 5, 3, 3, 9], [3, 7]], vocab_size=12, size=4, always=[11])
  assert ids[:2] == (3, 5)  # 3 and 5 are the most frequent (3 times each: the lower id first)
  assert set(ids) == {3, 5, 11, 7} or set(ids) == {3, 5, 11, 9}
  assert 11 in ids and len(ids) == 4
  assert stats["seen"] == 4 and 0 < stats["coverage"] < 1
  with pytest.raises(SpecjaxError):
    rank_tokens([[1]], vocab_size=4, size=5)


def test_head_logits_are_the_full_models_at_the_kept_ids():
  cfg, params = model(tiny(vocab_size=64), 0)
  ids = tuple(range(0, 64, 3))
  r_cfg, r_params = reduce_head(cfg, params, ids)
  toks = jnp.asarray(prompts([6], vocab=64))
  pos = jnp.arange(6)[None]
  full, _ = model_for(cfg).apply({"params": params}, toks, pos)
  small, _ = model_for(r_cfg).apply({"params": r_params}, toks, pos)
  assert small.shape[-1] == len(ids)
  np.testing.assert_allclose(small, full[..., list(ids)], rtol=1e-5, atol=1e-5)
  d_cfg, d_params = decode_layout(r_cfg, r_params)  # the pre-gathered [D, K] head
  fast, _ = model_for(d_cfg).apply({"params": d_params}, toks, pos)
  np.testing.assert_allclose(fast, small, rtol=1e-5, atol=1e-5)
  wide = np.asarray(expand_logits(r_cfg, small, 64))
  np.testing.assert_allclose(wide[..., list(ids)], small, rtol=1e-6)
  assert (np.delete(wide, list(ids), axis=-1) == NEG_INF).all()
  untied = cfg.replace(tie_embeddings=False)
  u_params = model(untied, 1)[1]
  u_cfg, u_small = reduce_head(untied, u_params, ids)
  assert u_small["lm_head"]["kernel"].shape == (cfg.hidden_size, len(ids))


def test_bad_head_ids():
  with pytest.raises(SpecjaxError):
    tiny(vocab_size=16).replace(head_ids=(1, 1))
  with pytest.raises(SpecjaxError):
    tiny(vocab_size=16).replace(head_ids=(3, 16))


def test_greedy_speculative_with_reduced_vocabulary_equals_autoregressive():
  target = model(tiny(vocab_size=64, init=1.0), 3)
  d_cfg, d_params = perturbed(target, 0.05, seed=4)
  # keep the tokens the target itself emits greedily, plus some others: proposals are often right
  ar = engine(target).run(prompts([5, 9, 12], vocab=64), "ar", max_new_tokens=12, batch_size=2)
  used = sorted({t for r in ar.rows for t in r.tokens})
  ids = tuple(dict.fromkeys(used + list(range(0, 64, 4))))[:40]
  draft = reduce_head(d_cfg, d_params, ids)
  spec = engine(target, draft).run(prompts([5, 9, 12], vocab=64), "spec", max_new_tokens=12, gamma=3, batch_size=2)
  assert [r.tokens for r in spec.rows] == [r.tokens for r in ar.rows]
  assert spec.metrics["acceptance_rate"] > 0.2
  # a draft whose vocabulary misses every token the target wants is still exact (and never accepted)
  others = tuple(t for t in range(64) if t not in used)
  spec = engine(target, reduce_head(d_cfg, d_params, others)).run(
    prompts([5, 9, 12], vocab=64), "spec", max_new_tokens=12, gamma=3, batch_size=2
  )
  assert [r.tokens for r in spec.rows] == [r.tokens for r in ar.rows]
  assert spec.metrics["accepted_tokens"] == 0


def test_speculative_sampling_with_reduced_vocabulary_is_exact():
  """q = 0 outside the draft's vocabulary: the rejection rule still samples the target exactly (chi-square)."""
  s, gamma = SamplingConfig(temperature=1.0), 2
  target = model(tiny(vocab_size=V, init=1.0), 10)
  d_cfg, d_params = perturbed(target, 0.1, seed=11)
  draft = reduce_head(d_cfg, d_params, (0, 2, 3, 5, 6))  # 3 of the 8 tokens can only come from the residual
  n = gamma + 1
  run = engine(target, draft).run(
    [PROMPT] * SAMPLES, "spec", max_new_tokens=1 + n, sampling=s, gamma=gamma, batch_size=2000
  )
  counts = np.zeros((V,) * n)
  for r in run.rows:
    counts[tuple(r.tokens[1 : 1 + n])] += 1
  per_position = run.metrics["per_position_acceptance"]
  assert all(0.0 < a < 1.0 for a in per_position), per_position
  expected = _target_distribution(*target, s, n)
  assert _chi2_pvalue(counts, expected) > 1e-3
  # tokens outside the draft vocabulary do appear (through residual draws)
  assert counts[:, 1].sum() > 0 and counts[:, 4].sum() > 0


def test_vocab_map_round_trips_through_files_and_checkpoints(tmp_path):
  ids, stats = rank_tokens([[1, 2, 2, 9]], vocab_size=64, size=10)
  write_vocab_map(tmp_path / "map.json", ids, stats)
  assert read_vocab_map(tmp_path / "map.json") == ids
  cfg, params = model(tiny(vocab_size=64), 0)
  r_cfg, r_params = reduce_head(cfg, params, ids)
  save_model(tmp_path / "ckpt", r_cfg, r_params)
  back = load_checkpoint(tmp_path / "ckpt")
  assert back.config.head_ids == ids and back.config == r_cfg
  (tmp_path / "bad.json").write_text("{}")
  with pytest.raises(SpecjaxError):
    read_vocab_map(tmp_path / "bad.json")


def test_distill_loss_compares_with_the_restricted_renormalised_teacher():
  from specjax.losses.distill import make_loss
  from specjax.train.distill import make_distill_loss

  t_cfg, t_params = model(tiny(vocab_size=64), 0)
  ids = tuple(range(0, 64, 2))
  s_cfg, s_params = reduce_head(*perturbed((t_cfg, t_params), 0.05, seed=2), ids)
  toks = jnp.asarray(prompts([10, 10], vocab=64))
  batch = {"tokens": toks, "positions": jnp.broadcast_to(jnp.arange(10), (2, 10)), "loss_mask": jnp.ones((2, 10))}
  loss_fn = make_distill_loss(s_cfg, t_cfg, "fkl", {})
  value, metrics = loss_fn(s_params, batch, jax.random.key(0), {"target": t_params})
  t_logits, _ = model_for(t_cfg).apply({"params": t_params}, toks, batch["positions"])
  s_logits, _ = model_for(s_cfg).apply({"params": s_params}, toks, batch["positions"])
  want, _ = make_loss("fkl")(s_logits, restrict_teacher(t_logits, ids), batch["loss_mask"])
  np.testing.assert_allclose(value, want, rtol=1e-5)
  # the true acceptance counts only the teacher's mass inside the set: below the restricted one
  assert 0 < metrics["expected_acceptance_full"] < metrics["expected_acceptance"]
  grads = jax.grad(lambda p: loss_fn(p, batch, jax.random.key(0), {"target": t_params})[0])(s_params)
  assert np.isfinite(np.asarray(grads["embed_tokens"]["embedding"])).all()


def test_lm_loss_with_reduced_head_skips_targets_outside_the_vocabulary():
  from specjax.train.step import make_lm_loss

  cfg, params = model(tiny(vocab_size=64), 0)
  r_cfg, r_params = reduce_head(cfg, params, tuple(range(32)))
  toks = jnp.asarray(prompts([8], vocab=64))
  targets = jnp.asarray([[1, 40, 2, 50, 3, 4, 60, 5]])
  batch = {
    "tokens": toks,
    "positions": jnp.arange(8)[None],
    "segment_ids": jnp.ones((1, 8), jnp.int32),
    "targets": targets,
    "loss_mask": jnp.ones((1, 8)),
  }
  _, metrics = make_lm_loss(r_cfg)(r_params, batch, None, None)
  assert int(metrics["tokens"]) == 5


def test_pretrain_model_section_reads_the_vocab_map(tmp_path):
  from specjax.train.pretrain import ModelSection, model_config

  write_vocab_map(tmp_path / "map.json", (5, 1, 9))
  cfg = model_config(ModelSection(preset="tiny", head_ids_from=str(tmp_path / "map.json")))
  assert cfg.head_ids == (5, 1, 9) and cfg.head_size == 3
  assert "head_ids" not in get_preset("tiny").to_dict()  # configs without a map are written as before
