"""EAGLE-style drafts: the model, greedy decoding equal to `ar`, each round's first proposal against a
teacher-forced pass (the feature and cache bookkeeping), exact sampling, kind checks, checkpoints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from decode_util import engine, model, prompts, tiny
from test_decode_lookup import PROMPT, SAMPLES, V, chi2_pvalue, exact_distribution, sampled_counts

from specjax.decode.sampling import SamplingConfig
from specjax.errors import SpecjaxError
from specjax.models.eagle import EagleDraft
from specjax.models.llama import Llama, ModelConfig
from specjax.models.registry import from_target

LENGTHS = (3, 9, 14, 5, 12)
MAX_NEW = 21


def eagle_pair(vocab: int = 16, head_ids=None, seed: int = 0):
  target = model(tiny(vocab_size=vocab, init=1.0), seed)
  return target, from_target(*target, num_layers=1, head_ids=head_ids, seed=seed + 1)


def test_eagle_config_and_shapes():
  (t_cfg, t_params), (cfg, params) = eagle_pair(head_ids=range(0, 16, 2))
  assert cfg.kind == "eagle" and not cfg.tie_embeddings and cfg.head_size == 8
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg
  assert "kind" not in t_cfg.to_dict()  # a plain model's config is unchanged by the new field
  head = t_params["embed_tokens"]["embedding"].T if t_cfg.tie_embeddings else t_params["lm_head"]["kernel"]
  np.testing.assert_array_equal(params["lm_head"]["kernel"], np.asarray(head)[:, ::2])
  tokens = jnp.ones((2, 5), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(5), (2, 5))
  logits, _, g = EagleDraft(cfg).apply(
    {"params": params}, tokens, pos, features=jnp.ones((2, 5, 64)), return_features=True
  )
  assert logits.shape == (2, 5, 8) and g.shape == (2, 5, 64)
  with pytest.raises(SpecjaxError, match="features must be"):
    EagleDraft(cfg).apply({"params": params}, tokens, pos, features=jnp.ones((2, 4, 64)))
  with pytest.raises(SpecjaxError, match="untied head"):
    cfg.replace(tie_embeddings=True)
  with pytest.raises(SpecjaxError, match="unknown kind"):
    cfg.replace(kind="medusa")
  with pytest.raises(SpecjaxError, match="from another draft"):
    from_target(cfg, params)


@pytest.fixture(scope="module")
def pair():
  # A reduced head (half the tokens) exercises the spreading of K logits over the vocabulary as well.
  return eagle_pair(head_ids=tuple(range(0, 16, 2)))


@pytest.fixture(scope="module")
def reference(pair):
  target, _ = pair
  return engine(target).run(prompts(LENGTHS, vocab=16), "ar", max_new_tokens=MAX_NEW, batch_size=len(LENGTHS))


@pytest.mark.parametrize("gamma, threshold", [(3, None), (3, 0.5), (3, 1.0)])
def test_greedy_eagle_equals_autoregressive(pair, reference, gamma, threshold):
  run = engine(*pair).run(
    prompts(LENGTHS, vocab=16), "eagle", max_new_tokens=MAX_NEW, gamma=gamma, draft_threshold=threshold, batch_size=4
  )
  assert [r.tokens for r in run.rows] == [r.tokens for r in reference.rows]
  m = run.metrics
  if threshold is None:
    assert m["draft_calls"] == gamma * m["target_calls"] and m["drafted_tokens"] == gamma * m["target_calls"]
  elif threshold == 1.0:  # confident only where a float32 softmax saturates: mostly plain steps
    assert m["drafted_tokens"] < m["target_calls"] < m["draft_calls"] < 2 * m["target_calls"]
  else:  # rows propose 0..gamma tokens
    assert 0 < m["drafted_tokens"] < gamma * m["target_calls"]


def test_first_proposals_match_a_teacher_forced_pass(pair, reference):
  """gamma 1: each round proposes the draft's argmax at `cur` over pairs built from true target features
  only, so the accepted counts follow from one teacher-forced pass of both models over the answer."""
  (t_cfg, t_params), (d_cfg, d_params) = pair
  run = engine(*pair).run(prompts(LENGTHS, vocab=16), "eagle", max_new_tokens=MAX_NEW, gamma=1, batch_size=3)
  expected_total = 0
  for prompt, row, got in zip(prompts(LENGTHS, vocab=16), reference.rows, run.rows, strict=True):
    seq = jnp.asarray([prompt + list(row.tokens)])
    T = seq.shape[1]
    pos = jnp.arange(T)[None]
    _, _, f = Llama(t_cfg).apply({"params": t_params}, seq, pos, return_features=True)
    d_logits, _ = EagleDraft(d_cfg).apply({"params": d_params}, seq[:, 1:], pos[:, 1:], features=f[:, :-1])
    ids = np.arange(16) if d_cfg.head_ids is None else np.asarray(d_cfg.head_ids)
    proposal = ids[np.asarray(jnp.argmax(d_logits[0], axis=-1))]  # proposal[i]: guess for seq[i + 2]
    P, emitted, accepted = len(prompt), 1, 0
    while emitted < MAX_NEW:
      c = P + emitted - 1  # index of `cur`
      if proposal[c - 1] == int(seq[0, c + 1]):  # accepted: it is the round's first emitted token
        accepted += 1
        emitted += min(2, MAX_NEW - emitted)
      else:
        emitted += 1
    assert got.metrics["accepted_tokens"] == accepted, (prompt, got.metrics)
    expected_total += accepted
  assert expected_total > 0  # the check saw accepted proposals, not only rejections


@pytest.mark.parametrize("gamma", [2])
def test_eagle_sampling_is_exact(gamma):
  target = model(tiny(vocab_size=V, init=1.0), 10)
  draft = from_target(*target, num_layers=1, seed=3)
  s = SamplingConfig(temperature=1.0)
  new = gamma + 2  # the first round's tokens (bonus included) after the prefill's token
  run = engine(target, draft).run(
    [PROMPT] * SAMPLES, "eagle", max_new_tokens=new, sampling=s, gamma=gamma, batch_size=2000
  )
  rows = [r.metrics for r in run.rows]
  assert any(m["accepted_tokens"] == 0 for m in rows)  # rejections: residual draws
  assert any(m["target_calls"] == 1 and m["accepted_tokens"] == gamma for m in rows)  # bonus draws
  assert chi2_pvalue(sampled_counts(run, new), exact_distribution(*target, s, new)) > 1e-3


def test_kinds_are_checked():
  target, draft = eagle_pair()
  eng = engine(target, draft)
  with pytest.raises(SpecjaxError, match="--mode eagle"):
    eng.run([[1, 2]], "spec", max_new_tokens=4)
  plain = engine(target, target)
  with pytest.raises(SpecjaxError, match="kind 'eagle'"):
    plain.run([[1, 2]], "eagle", max_new_tokens=4)
  with pytest.raises(SpecjaxError, match="reduced head"):
    from_target(target[0].replace(head_ids=(1, 2)), target[1])


def test_eagle_checkpoint_round_trip_and_export_refused(tmp_path):
  from specjax.checkpoint.convert import export_hf
  from specjax.checkpoint.orbax_io import load_checkpoint, save_checkpoint

  _, (cfg, params) = eagle_pair(head_ids=(0, 3, 5))
  save_checkpoint(tmp_path / "eagle", cfg, params)
  back = load_checkpoint(tmp_path / "eagle")
  assert back.config == cfg
  jax.tree.map(np.testing.assert_array_equal, back.params, params)
  with pytest.raises(SpecjaxError, match="eagle"):
    export_hf(tmp_path / "eagle", tmp_path / "hf")
  assert not (tmp_path / "hf").exists()


def test_unrolled_training_call_matches_decoding_steps():
  """Block j of the unrolled training call (`unrolled_mask`) computes what decode step j + 1 computes
  from a cache of true pairs and the draft's own earlier predictions."""
  from specjax.models.eagle import unrolled_mask

  _, (cfg, params) = eagle_pair()
  model = EagleDraft(cfg)
  T, J, D = 6, 3, cfg.hidden_size
  rng = np.random.default_rng(0)
  toks = jnp.asarray(rng.integers(0, 16, (1, T + J)))
  feats = jnp.asarray(rng.normal(size=(1, T + J, D)), jnp.float32)
  # unrolled: step j at index t reads x_{t+j+1} at position t+j+1
  ids = jnp.concatenate([toks[:, j + 1 : j + 1 + T] for j in range(J)], axis=1)
  pos = jnp.concatenate([jnp.arange(j + 1, j + 1 + T)[None] for j in range(J)], axis=1)
  ins = feats[:, :T]
  for j in range(J):
    n = (j + 1) * T
    mask = jnp.asarray(unrolled_mask(T, J))[None, :n, :n]
    logits, _, g = model.apply(
      {"params": params}, ids[:, :n], pos[:, :n], attn_mask=mask, features=ins, return_features=True
    )
    ins = jnp.concatenate([ins, g[:, j * T :]], axis=1)
  # decoding, for the round whose cur is pair t = 3: a cache of true pairs 0..3, then steps with own features
  t = 3
  cache = cfg.init_cache(1, 16)
  out, cache, g_step = model.apply(
    {"params": params},
    toks[:, 1 : t + 2],
    jnp.arange(1, t + 2)[None],
    cache,
    features=feats[:, : t + 1],
    return_features=True,
  )
  g_prev = g_step[:, -1:]
  for j in range(1, J):
    out, cache, g_prev = model.apply(
      {"params": params},
      toks[:, t + j + 1 : t + j + 2],
      jnp.asarray([[t + j + 1]]),
      cache,
      features=g_prev,
      return_features=True,
    )
    np.testing.assert_allclose(out[0, 0], logits[0, j * T + t], rtol=1e-4, atol=1e-4)
