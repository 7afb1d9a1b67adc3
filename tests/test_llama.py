"""Model invariants: shapes, causality, cached decode == full forward, ragged batches, tree masks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from specjax.models.llama import Llama, decode_layout
from specjax.models.presets import get_preset
from specjax.models.registry import init_params, model_for

CFG = get_preset("tiny")


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.key(0))


def _tokens(key, B, T):
  return jax.random.randint(jax.random.key(key), (B, T), 0, CFG.vocab_size)


def _pos(B, T, start=0):
  return jnp.broadcast_to(jnp.arange(start, start + T), (B, T))


def _apply(params, tokens, positions, cache=None, mask=None, cfg=CFG):
  return Llama(cfg).apply({"params": params}, tokens, positions, cache, mask)


def test_shapes_and_dtypes(params):
  tokens = _tokens(1, 3, 7)
  logits, cache = _apply(params, tokens, _pos(3, 7))
  chex.assert_shape(logits, (3, 7, CFG.vocab_size))
  assert logits.dtype == jnp.float32 and cache is None
  cfg16 = CFG.replace(dtype="bfloat16")
  logits16, _ = _apply(params, tokens, _pos(3, 7), cfg=cfg16)
  assert logits16.dtype == jnp.float32  # logits stay float32 whatever the compute dtype
  np.testing.assert_allclose(logits16, logits, atol=0.1)


def test_causality(params):
  """The gradient of the output at position t never reaches inputs after t."""
  T, t = 8, 3
  emb = params["embed_tokens"]["embedding"]
  tokens = _tokens(2, 1, T)

  def out_at_t(x_emb):
    p = {**params, "embed_tokens": {"embedding": x_emb}}
    logits, _ = _apply(p, tokens, _pos(1, T))
    return logits[0, t].sum()

  g = jax.grad(out_at_t)(emb)
  later = np.asarray(tokens[0, t + 1 :])
  earlier = set(np.asarray(tokens[0, : t + 1]).tolist())
  for tok in later:
    if tok not in earlier:
      assert np.abs(np.asarray(g[tok])).max() == 0.0


def test_incremental_decode_equals_full_forward(params):
  B, T = 2, 12
  tokens = _tokens(3, B, T)
  full, _ = _apply(params, tokens, _pos(B, T))
  cache = CFG.init_cache(B, 32)
  logits, cache = _apply(params, tokens[:, :5], _pos(B, 5), cache)
  outs = [logits]
  for t in range(5, T):
    logits, cache = _apply(params, tokens[:, t : t + 1], _pos(B, 1, t), cache)
    outs.append(logits)
  chex.assert_trees_all_close(jnp.concatenate(outs, axis=1), full, atol=1e-5)
  np.testing.assert_array_equal(cache.lengths, [T, T])


@pytest.mark.parametrize("gamma", [1, 4])
def test_verify_call_and_rollback(params, gamma):
  """A gamma+1-token call on a cache equals the full forward; rollback + rewrite is consistent."""
  B, P = 2, 6
  tokens = _tokens(4, B, P + gamma + 1)
  full, _ = _apply(params, tokens, _pos(B, P + gamma + 1))
  cache = CFG.init_cache(B, 32)
  _, cache = _apply(params, tokens[:, :P], _pos(B, P), cache)
  verify, cache2 = _apply(params, tokens[:, P:], _pos(B, gamma + 1, P), cache)
  chex.assert_trees_all_close(verify, full[:, P:], atol=1e-5)
  # Roll back to P + 1 and decode the next token again: same logits as the full forward.
  cache3 = cache2.rollback(jnp.full((B,), P + 1))
  again, _ = _apply(params, tokens[:, P + 1 : P + 2], _pos(B, 1, P + 1), cache3)
  chex.assert_trees_all_close(again[:, 0], full[:, P + 1], atol=1e-5)


def test_ragged_batch_equals_rows_alone(params):
  """Rows of one batch holding different lengths behave like each row run alone."""
  lengths = [3, 7]
  tokens = _tokens(5, 2, 10)
  cache = CFG.init_cache(2, 24)
  # Right-padded prefill, then set each row's own length.
  _, cache = _apply(params, tokens[:, :7], _pos(2, 7), cache)
  cache = cache.rollback(jnp.array(lengths))
  nxt = jnp.stack([tokens[0, 3:5], tokens[1, 7:9]])
  pos = jnp.array([[3, 4], [7, 8]])
  batched, _ = _apply(params, nxt, pos, cache)
  for b, n in enumerate(lengths):
    seq = jnp.concatenate([tokens[b, :n], nxt[b]])[None]
    alone, _ = _apply(params, seq, _pos(1, n + 2))
    chex.assert_trees_all_close(batched[b], alone[0, n:], atol=1e-5)


def test_tree_mask_equals_path_forward(params):
  """Tree verification: each node attends to the prefix, its ancestors and itself."""
  P = 5
  tokens = _tokens(6, 1, P + 3)
  # Tree of 3 nodes after the prefix: node0 (depth 1), node1 child of node0, node2 sibling of node0.
  nodes = tokens[:, P:]
  parents = [-1, 0, -1]
  mask = np.eye(3, dtype=bool)
  for i, p in enumerate(parents):
    while p >= 0:
      mask[i, p] = True
      p = parents[p]
  depth = jnp.array([[1, 2, 1]]) + P - 1
  cache = CFG.init_cache(1, 16)
  _, cache = _apply(params, tokens[:, :P], _pos(1, P), cache)
  tree_logits, _ = _apply(params, nodes, depth, cache, jnp.asarray(mask)[None])
  path_a, _ = _apply(params, tokens[:, : P + 2], _pos(1, P + 2))  # prefix, node0, node1
  path_b, _ = _apply(params, jnp.concatenate([tokens[:, :P], nodes[:, 2:]], 1), _pos(1, P + 1))
  chex.assert_trees_all_close(tree_logits[0, :2], path_a[0, P:], atol=1e-5)
  chex.assert_trees_all_close(tree_logits[0, 2], path_b[0, P], atol=1e-5)


def test_cache_compact_moves_path(params):
  cache = CFG.init_cache(2, 12)
  _, cache = _apply(params, _tokens(7, 2, 8), _pos(2, 8), cache)
  start = jnp.array([2, 3])
  src = jnp.array([[5, 7, 0], [4, 0, 0]])
  count = jnp.array([2, 1])
  out = cache.compact(start, src, count)
  np.testing.assert_array_equal(out.lengths, [4, 4])
  # Slots on axis 2 of [L, B, S, K*Dh] views of the keys [B, K, Dh, S] and values [B, K, S, Dh].
  slots = lambda c: (  # noqa: E731
    jnp.stack([x.transpose(0, 3, 1, 2).reshape(x.shape[0], x.shape[3], -1) for x in c.k]),
    jnp.stack([x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1) for x in c.v]),
  )
  (ok, ov), (ck, cv) = slots(out), slots(cache)
  np.testing.assert_array_equal(ok[:, 0, 2:4], ck[:, 0, jnp.array([5, 7])])
  np.testing.assert_array_equal(ov[:, 0, 2:4], cv[:, 0, jnp.array([5, 7])])
  np.testing.assert_array_equal(ok[:, 1, 3], ck[:, 1, 4])
  np.testing.assert_array_equal(ov[:, 1, 4:], cv[:, 1, 4:])  # untouched past the count
  np.testing.assert_array_equal(ok[:, 0, :2], ck[:, 0, :2])  # prefix untouched


def test_decode_layout_same_function(params):
  """The unstacked decode layout (and its pre-transposed tied head) computes the same logits and cache."""
  for cfg in (CFG, CFG.replace(tie_embeddings=True)):
    p = init_params(cfg, jax.random.key(3))
    dcfg, dparams = decode_layout(cfg, p)
    assert not dcfg.scan_layers and "layers" not in dparams and ("head_t" in dparams) == cfg.tie_embeddings
    tokens, pos = _tokens(5, 2, 9), _pos(2, 9)
    full = model_for(cfg).apply({"params": p}, tokens, pos)[0]
    chex.assert_trees_all_close(model_for(dcfg).apply({"params": dparams}, tokens, pos)[0], full, atol=1e-5)
    one = model_for(dcfg).apply({"params": dparams}, tokens[:1, :1], pos[:1, :1])[0]  # the [D, V] head path
    chex.assert_trees_all_close(one, full[:1, :1], atol=1e-5)
    cache_a, cache_b = cfg.init_cache(2, 12), dcfg.init_cache(2, 12)
    la, cache_a = model_for(cfg).apply({"params": p}, tokens, pos, cache_a)
    lb, cache_b = model_for(dcfg).apply({"params": dparams}, tokens, pos, cache_b)
    chex.assert_trees_all_close(lb, la, atol=1e-5)
    chex.assert_trees_all_close(cache_b, cache_a, atol=1e-6)
    assert "scan_layers" not in cfg.to_dict()  # a run-time layout, never saved


def test_logits_at_selects_positions(params):
  tokens, pos = _tokens(6, 2, 9), _pos(2, 9)
  full = model_for(CFG).apply({"params": params}, tokens, pos)[0]
  at = jnp.array([[3, 8], [0, 5]])
  some = model_for(CFG).apply({"params": params}, tokens, pos, logits_at=at)[0]
  chex.assert_trees_all_close(some, jnp.take_along_axis(full, at[..., None], axis=1), atol=1e-5)
