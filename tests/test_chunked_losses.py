"""Chunked KD losses: value, every metric and the student gradient equal a plain [B, T, V] formulation.

The reference below is the straightforward one (every log-softmax over the whole batch at once), kept
here on purpose: the losses compute the same quantities `chunk` positions at a time, and a chunk that
does not divide T (the last chunk overlaps the one before it) must not change anything. A compiled
memory check shows the point of it: the chunked gradient holds less than one float32 [B, T, V] array of
temporaries, the unchunked one several.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_util import holed_mask, random_logits

from specjax.errors import SpecjaxError
from specjax.losses import distill

B, T, V = 2, 7, 11
CHUNKS = (0, 1, 3, 4, 7, 100)  # 3 and 4 do not divide T; 0, 7 and 100 are one chunk


def _logits(seed, scale=2.0):
  return random_logits(seed, (B, T, V), scale)


def _mask():
  return holed_mask(B, T, ((0, slice(0, 2)), (1, 5)))


# --- the reference: every quantity over the whole [B, T, V] at once -------------------------------


def _mean(x, counted):
  return jnp.sum(jnp.where(counted, x, 0.0)) / jnp.maximum(jnp.sum(counted), 1).astype(jnp.float32)


def _kl(log_a, log_b):
  a = jnp.exp(log_a)
  return jnp.sum(jnp.where(a > 0, a * (log_a - log_b), 0.0), axis=-1)


def _ref(name, s, t, mask, beta=0.5, norm="position", eps=1e-6, sample_tokens=None, reference_logits=None, k=0.4):
  """(loss, metrics) written out directly on [B, T, V] arrays."""
  log_q = jax.nn.log_softmax(s, -1)
  log_p = jax.nn.log_softmax(jax.lax.stop_gradient(t), -1)
  q, p = jnp.exp(log_q), jnp.exp(log_p)
  counted = mask != 0
  accept = jax.lax.stop_gradient(jnp.sum(jnp.minimum(q, p), -1))
  extra = {}
  if name == "fkl" or (name == "jsd" and beta == 0):
    per = _kl(log_p, log_q)
  elif name == "rkl" or (name == "jsd" and beta == 1):
    per = _kl(log_q, log_p)
  elif name == "jsd":
    m = beta * p + (1 - beta) * q
    per = beta * _kl(log_p, jnp.log(m)) + (1 - beta) * _kl(log_q, jnp.log(m))
  elif name == "tvd":
    per = 0.5 * jnp.sum(jnp.abs(p - q), -1)
  elif name == "tvdpp":
    q_sg = jax.lax.stop_gradient(q)
    reward = (p > q_sg).astype(jnp.float32)
    n = jnp.maximum(jnp.sum(counted), 1)
    extra["tvd"] = _mean(0.5 * jnp.sum(jnp.abs(p - q_sg), -1), counted)
    if norm == "sampled":
      y = sample_tokens[..., None]
      r_y = jnp.take_along_axis(reward, y, -1)[..., 0]
      mu = jnp.sum(jnp.where(counted, r_y, 0.0)) / n
      sigma = jnp.sqrt(jnp.sum(jnp.where(counted, (r_y - mu) ** 2, 0.0)) / n)
      per = -jax.lax.stop_gradient((r_y - mu) / (sigma + eps)) * jnp.take_along_axis(log_q, y, -1)[..., 0]
      extra.update(reward_mean=mu, reward_std=sigma)
    else:
      m_t = jnp.sum(q_sg * reward, -1)
      if norm == "none":
        mu, sigma, adv = jnp.zeros_like(m_t), jnp.ones_like(m_t), reward
      else:
        if norm == "position":
          mu = m_t
        else:
          mu = jnp.full_like(m_t, jnp.sum(jnp.where(counted, m_t, 0.0)) / n)
        sigma = jnp.sqrt(jnp.clip(mu * (1 - mu), 0.0))
        adv = (reward - mu[..., None]) / (sigma[..., None] + eps)
      per = -jnp.sum(q_sg * jax.lax.stop_gradient(adv) * log_q, -1)
      extra.update(reward_mean=_mean(mu, counted), reward_std=_mean(sigma, counted))
  elif name == "adaspec":
    log_r = jax.nn.log_softmax(jax.lax.stop_gradient(reference_logits), -1)
    l_d, l_r = _kl(log_p, log_q), _kl(log_p, log_r)
    gap = jax.lax.stop_gradient(l_d) - l_r
    vals = np.sort(np.asarray(gap)[np.asarray(counted)])
    thr = jnp.float32(np.quantile(vals, 1 - k))  # numpy's "linear" is torch.quantile's rule
    keep = counted & (gap >= thr)
    per = jnp.where(keep, l_d, 0.0)
    extra.update(
      kept_fraction=jnp.sum(keep) / jnp.sum(counted),
      threshold=thr,
      reference_acceptance=_mean(jnp.sum(jnp.minimum(jnp.exp(log_r), p), -1), counted),
      gap_mean=_mean(gap, counted),
      fkl=_mean(l_d, counted),
    )
  loss = _mean(per, counted)
  metrics = dict(loss=loss, expected_acceptance=_mean(accept, counted), num_tokens=jnp.sum(counted).astype(jnp.float32))
  return loss, dict(metrics, **extra)


CASES = [
  ("fkl", {}),
  ("rkl", {}),
  ("jsd", {"beta": 0.3}),
  ("jsd", {"beta": 0.0}),
  ("jsd", {"beta": 1.0}),
  ("tvd", {}),
  ("tvdpp", {"norm": "position"}),
  ("tvdpp", {"norm": "batch"}),
  ("tvdpp", {"norm": "none"}),
  ("tvdpp", {"norm": "sampled", "sample_tokens": "data"}),
  ("adaspec", {"k": 0.4}),
  ("adaspec", {"k": 1.0}),
]


def _per_call(name, kw):
  kw = dict(kw)
  if kw.get("sample_tokens") == "data":
    kw["sample_tokens"] = jax.random.randint(jax.random.key(9), (B, T), 0, V)
  if name == "adaspec":
    kw["reference_logits"] = _logits(2)
  return kw


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{'-'.join(map(str, k.values()))}" for n, k in CASES])
def test_chunked_loss_metrics_and_gradient_equal_the_plain_formulation(name, kw):
  s, t, mask = _logits(0), _logits(1), _mask()
  kw = _per_call(name, kw)
  (want, want_m), want_g = jax.value_and_grad(lambda x: _ref(name, x, t, mask, **kw), has_aux=True)(s)
  fn = distill.LOSSES[name]
  for chunk in CHUNKS:
    (got, got_m), got_g = jax.value_and_grad(lambda x, c=chunk: fn(x, t, mask, chunk=c, **kw), has_aux=True)(s)
    assert set(got_m) == set(want_m), chunk
    chex.assert_trees_all_close(got, want, atol=1e-6, rtol=1e-6, custom_message=f"chunk {chunk}")
    chex.assert_trees_all_close(got_m, want_m, atol=1e-6, rtol=1e-6, custom_message=f"chunk {chunk}")
    chex.assert_trees_all_close(got_g, want_g, atol=1e-6, rtol=1e-6, custom_message=f"chunk {chunk}")
    assert np.all(np.asarray(got_g)[np.asarray(mask) == 0] == 0)  # masked positions get no gradient


def test_sampled_draws_do_not_depend_on_the_chunk():
  """norm="sampled" with an rng draws y_t ~ q_t with the key split(rng, (B, T))[b, t]: every chunking
  draws the same tokens, and the loss is the one of those tokens given as sample_tokens."""
  s, t, mask = _logits(0), _logits(1), _mask()
  rng = jax.random.key(4)
  keys = jax.random.split(rng, (B, T))
  y = jax.vmap(jax.vmap(jax.random.categorical))(keys, jax.nn.log_softmax(s, -1))
  want = jax.value_and_grad(lambda x: _ref("tvdpp", x, t, mask, norm="sampled", sample_tokens=y), has_aux=True)(s)
  for chunk in CHUNKS:
    got = jax.value_and_grad(
      lambda x, c=chunk: distill.tvdpp(x, t, mask, norm="sampled", rng=rng, chunk=c), has_aux=True
    )(s)
    chex.assert_trees_all_close(got, want, atol=1e-6, rtol=1e-6, custom_message=f"chunk {chunk}")


def test_acceptance_with_and_without_the_teacher_normaliser():
  s, t = _logits(0), _logits(1)
  q = jax.nn.softmax(s, -1)
  lse = jax.nn.logsumexp(t, -1) + 0.5  # a normaliser over more columns than these: p sums to exp(-0.5)
  for chunk in CHUNKS:
    got = distill.acceptance(s, t, chunk=chunk)
    np.testing.assert_allclose(got, jnp.sum(jnp.minimum(q, jax.nn.softmax(t, -1)), -1), atol=1e-6)
    got_full = distill.acceptance(s, t, lse, chunk=chunk)
    np.testing.assert_allclose(got_full, jnp.sum(jnp.minimum(q, jnp.exp(t - lse[..., None])), -1), atol=1e-6)
  assert float(jnp.max(jnp.abs(jax.grad(lambda x: jnp.sum(distill.acceptance(x, t, chunk=3)))(s)))) == 0.0


@pytest.mark.parametrize("chunk", [-1, 2.5, True, "64"])
def test_bad_chunk_is_an_error(chunk):
  s, t, mask = _logits(0), _logits(1), _mask()
  with pytest.raises(SpecjaxError, match="chunk"):
    distill.fkl(s, t, mask, chunk=chunk)
  with pytest.raises(SpecjaxError, match="chunk"):
    distill.make_loss("tvdpp", chunk=chunk)
  with pytest.raises(SpecjaxError, match="chunk"):
    distill.chunk_of({"chunk": chunk})
  assert distill.chunk_of({}) == distill.CHUNK
  assert "chunk" in distill.loss_options("adaspec")


@pytest.mark.parametrize("name,kw", [("fkl", {}), ("tvdpp", {"norm": "batch"})])
def test_chunked_gradient_keeps_no_full_vocabulary_temporaries(name, kw):
  """XLA's memory analysis of the compiled value-and-gradient (shapes only, nothing run): chunked, the
  temporaries stay below one float32 [B, T, V] array; unchunked they are several of them."""
  b, t, v = 2, 512, 4096
  full = b * t * v * 4
  x = jax.ShapeDtypeStruct((b, t, v), jnp.float32)
  m = jax.ShapeDtypeStruct((b, t), jnp.float32)
  fn = distill.LOSSES[name]

  def temp(chunk):
    step = jax.jit(jax.value_and_grad(lambda s, tt, mm: fn(s, tt, mm, chunk=chunk, **kw), has_aux=True))
    return step.lower(x, x, m).compile().memory_analysis().temp_size_in_bytes

  assert temp(64) < 0.8 * full
  assert temp(0) > 2 * full
