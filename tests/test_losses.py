"""KD losses against closed forms on random logits."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_util import holed_mask, random_logits

from specjax.errors import SpecjaxError
from specjax.losses import distill

B, T, V = 3, 5, 11


def _logits(seed, scale=2.0):
  return random_logits(seed, (B, T, V), scale)


def _mask():
  return holed_mask(B, T, ((0, slice(0, 2)), (2, 4)))


def _np_softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_kl(a, b):
  return np.sum(a * (np.log(a) - np.log(b)), -1)


def _np_reference(name, s, t, beta=0.5):
  q, p = _np_softmax(s), _np_softmax(t)
  if name == "fkl":
    return _np_kl(p, q)
  if name == "rkl":
    return _np_kl(q, p)
  if name == "tvd":
    return 0.5 * np.abs(p - q).sum(-1)
  m = beta * p + (1 - beta) * q
  return beta * _np_kl(p, m) + (1 - beta) * _np_kl(q, m)


def _np_masked_mean(x, mask):
  mask = np.asarray(mask)
  return (x * mask).sum() / mask.sum()


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd", "tvd", "tvdpp", "adaspec"])
def test_zero_when_student_equals_teacher(name):
  s = _logits(0)
  extra = {"reference_logits": _logits(1)} if name == "adaspec" else {}
  loss, metrics = distill.LOSSES[name](s, s, _mask(), **extra)
  chex.assert_trees_all_close(loss, 0.0, atol=1e-6)
  chex.assert_trees_all_close(metrics["expected_acceptance"], 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd", "tvd"])
def test_values_match_numpy(name):
  s, t, mask = _logits(0), _logits(1), _mask()
  loss, metrics = jax.jit(distill.LOSSES[name])(s, t, mask)
  want = _np_masked_mean(_np_reference(name, s, t), mask)
  chex.assert_trees_all_close(loss, want, rtol=1e-5)
  q, p = _np_softmax(s), _np_softmax(t)
  ea = _np_masked_mean(np.minimum(p, q).sum(-1), mask)
  chex.assert_trees_all_close(metrics["expected_acceptance"], ea, rtol=1e-5)
  chex.assert_shape(loss, ())


def test_jsd_beta_endpoints_and_interior():
  s, t, mask = _logits(0), _logits(1), _mask()
  for beta in (0.1, 0.9):
    got, _ = distill.jsd(s, t, mask, beta=beta)
    chex.assert_trees_all_close(got, _np_masked_mean(_np_reference("jsd", s, t, beta), mask), rtol=1e-5)
  chex.assert_trees_all_close(distill.jsd(s, t, mask, beta=0.0)[0], distill.fkl(s, t, mask)[0])
  chex.assert_trees_all_close(distill.jsd(s, t, mask, beta=1.0)[0], distill.rkl(s, t, mask)[0])
  # Near the endpoints the rescaled divergence approaches FKL / RKL.
  eps = 1e-3
  near0 = distill.jsd(s, t, mask, beta=eps)[0] / eps
  near1 = distill.jsd(s, t, mask, beta=1 - eps)[0] / eps
  chex.assert_trees_all_close(near0, distill.fkl(s, t, mask)[0], rtol=2e-2)
  chex.assert_trees_all_close(near1, distill.rkl(s, t, mask)[0], rtol=2e-2)
  with pytest.raises(SpecjaxError, match="beta"):
    distill.jsd(s, t, mask, beta=1.5)


def _grad(fn, s, t, mask, **kw):
  return jax.grad(lambda x: fn(x, t, mask, **kw)[0])(s)


def test_tvdpp_unnormalised_gradient_equals_tvd_gradient():
  s, t, mask = _logits(0), _logits(1), _mask()
  g_tvd = _grad(distill.tvd, s, t, mask)
  g_pp = _grad(distill.tvdpp, s, t, mask, norm="none")
  chex.assert_trees_all_close(g_pp, g_tvd, atol=1e-6)
  assert float(jnp.abs(g_tvd).max()) > 1e-3  # not a trivially zero comparison


def test_tvdpp_position_norm_rescales_tvd_gradient_per_position():
  s, t, mask = _logits(0), _logits(1), _mask()
  q, p = _np_softmax(s), _np_softmax(t)
  m = (q * (p > q)).sum(-1)
  sigma = np.sqrt(m * (1 - m))
  g_tvd = np.asarray(_grad(distill.tvd, s, t, mask))
  g_pos = np.asarray(_grad(distill.tvdpp, s, t, mask, norm="position", eps=0.0))
  np.testing.assert_allclose(g_pos, g_tvd / sigma[..., None], atol=1e-5)
  _, metrics = distill.tvdpp(s, t, mask, norm="position")
  chex.assert_trees_all_close(metrics["tvd"], distill.tvd(s, t, mask)[0], rtol=1e-6)


def test_tvdpp_batch_and_sampled_norms():
  s, t, mask = _logits(0), _logits(1), _mask()
  q, p = _np_softmax(s), _np_softmax(t)
  msk = np.asarray(mask)
  m = (q * (p > q)).sum(-1)
  mu = (m * msk).sum() / msk.sum()
  # q-weighted variance of the binary reward over all counted (position, vocab) entries
  var = ((q * ((p > q) - mu) ** 2).sum(-1) * msk).sum() / msk.sum()
  _, metrics = distill.tvdpp(s, t, mask, norm="batch")
  chex.assert_trees_all_close(metrics["reward_mean"], mu, rtol=1e-5)
  chex.assert_trees_all_close(metrics["reward_std"], np.sqrt(var), rtol=1e-5)
  g_batch = np.asarray(_grad(distill.tvdpp, s, t, mask, norm="batch", eps=0.0))
  np.testing.assert_allclose(g_batch, np.asarray(_grad(distill.tvd, s, t, mask)) / np.sqrt(var), atol=1e-5)

  y = jax.random.randint(jax.random.key(3), (B, T), 0, V)
  loss, metrics = distill.tvdpp(s, t, mask, norm="sampled", sample_tokens=y)
  r = np.take_along_axis(p > q, np.asarray(y)[..., None], -1)[..., 0].astype(np.float64)
  mu_s = (r * msk).sum() / msk.sum()
  sd_s = np.sqrt((((r - mu_s) ** 2) * msk).sum() / msk.sum())
  logq_y = np.log(np.take_along_axis(q, np.asarray(y)[..., None], -1)[..., 0])
  want = _np_masked_mean(-(r - mu_s) / (sd_s + 1e-6) * logq_y, msk)
  chex.assert_trees_all_close(loss, want, rtol=1e-4)
  loss_rng, _ = distill.tvdpp(s, t, mask, norm="sampled", rng=jax.random.key(0))
  assert np.isfinite(float(loss_rng))
  with pytest.raises(SpecjaxError, match="sample_tokens"):
    distill.tvdpp(s, t, mask, norm="sampled")
  with pytest.raises(SpecjaxError, match="norm"):
    distill.tvdpp(s, t, mask, norm="vocab")


def test_tvdpp_sampled_gradient_is_a_monte_carlo_tvd_gradient():
  """norm="sampled" with an rng: y_t ~ q_t, A_t = (r(y_t) - mu) / sigma over the counted positions. Times
  (sigma + eps) its gradient is -(1/n) sum_t (r(y_t) - mu) grad log q_t(y_t), whose expectation is exactly
  (1 - 1/n) grad TVD (mu holds y_t's own reward with weight 1/n); unscaled, it is about grad TVD / sigma
  with sigma = sqrt(mu_b (1 - mu_b)). Averaged over many keys, both within Monte-Carlo error: a sign, a
  count or a sigma mistake is far outside it."""
  b, t, v, keys = 2, 48, 7, 4000
  s = jax.random.normal(jax.random.key(5), (b, t, v)) * 1.5
  tt = jax.random.normal(jax.random.key(6), (b, t, v)) * 1.5
  mask = np.ones((b, t), np.float32)
  mask[0, :10], mask[1, 30:] = 0, 0
  mask = jnp.asarray(mask)
  n = float(mask.sum())

  def one(key):
    (_, metrics), g = jax.value_and_grad(lambda x: distill.tvdpp(x, tt, mask, norm="sampled", rng=key), has_aux=True)(s)
    return g, metrics["reward_std"]

  g, sigma = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), keys))
  g, sigma = np.asarray(g, np.float64), np.asarray(sigma, np.float64)
  g_tvd = np.asarray(jax.grad(lambda x: distill.tvd(x, tt, mask)[0])(s), np.float64)
  assert np.all(g[:, np.asarray(mask) == 0] == 0)  # masked positions get no gradient

  def check(samples, want, rel):
    err = np.linalg.norm(samples.mean(0) - want)
    se = np.sqrt(samples.var(0).sum() / keys)  # the Monte-Carlo error of the mean, in norm
    assert se < 0.05 * np.linalg.norm(want)  # enough keys for the comparison to mean something
    assert err < 4 * se + rel * np.linalg.norm(want), (err, se, np.linalg.norm(want))

  check(g * (sigma + 1e-6)[:, None, None, None], (1 - 1 / n) * g_tvd, rel=0.0)
  q, p = _np_softmax(s), _np_softmax(tt)
  mu_b = ((q * (p > q)).sum(-1) * np.asarray(mask)).sum() / n
  check(g, g_tvd / np.sqrt(mu_b * (1 - mu_b)), rel=0.05)


@pytest.mark.parametrize(
  "name,kw",
  [("fkl", {}), ("rkl", {}), ("jsd", {}), ("tvd", {}), ("tvdpp", {"norm": "position"}), ("tvdpp", {"norm": "batch"})],
)
def test_masked_tokens_contribute_nothing(name, kw):
  s, t, mask = _logits(0), _logits(1), _mask()
  fn = distill.LOSSES[name]
  g = np.asarray(_grad(fn, s, t, mask, **kw))
  assert np.all(g[np.asarray(mask) == 0] == 0)
  # Changing masked positions' logits changes neither loss nor gradient.
  noise = _logits(7) * (1 - mask)[..., None]
  loss_a = fn(s, t, mask, **kw)[0]
  loss_b = fn(s + noise, t - noise, mask, **kw)[0]
  chex.assert_trees_all_close(loss_a, loss_b, rtol=1e-6)
  g_b = np.asarray(_grad(fn, s + noise, t - noise, mask, **kw))
  np.testing.assert_allclose(g_b, g, atol=1e-7)


def test_teacher_gets_no_gradient():
  s, t, mask = _logits(0), _logits(1), _mask()
  for name in ("fkl", "rkl", "jsd", "tvd", "tvdpp"):
    g = jax.grad(lambda x, name=name: distill.LOSSES[name](s, x, mask)[0])(t)
    assert np.all(np.asarray(g) == 0), name
  g = jax.grad(lambda r: distill.adaspec(s, t, mask, r)[0])(_logits(2))
  assert np.all(np.asarray(g) == 0)


def _np_adaspec(s, t, r, mask, k):
  q, p, qr = _np_softmax(s), _np_softmax(t), _np_softmax(r)
  l_d, l_r = _np_kl(p, q), _np_kl(p, qr)
  gap = l_d - l_r
  valid = np.asarray(mask) > 0
  vals = np.sort(gap[valid])
  pos = (1 - k) * (len(vals) - 1)
  lo = int(np.floor(pos))
  hi = min(lo + 1, len(vals) - 1)
  thr = vals[lo] + (pos - lo) * (vals[hi] - vals[lo])
  keep = valid & (gap >= thr)
  return (l_d * keep).sum() / valid.sum(), keep, thr


@pytest.mark.parametrize("k", [0.4, 0.25, 1.0])
def test_adaspec_matches_numpy_quantile_rule(k):
  s, t, r, mask = _logits(0), _logits(1), _logits(2), _mask()
  loss, metrics = jax.jit(distill.adaspec, static_argnames="k")(s, t, mask, r, k=k)
  want, keep, thr = _np_adaspec(s, t, r, mask, k)
  chex.assert_trees_all_close(loss, want, rtol=1e-5)
  chex.assert_trees_all_close(metrics["threshold"], thr, rtol=1e-5, atol=1e-6)
  n = int(np.asarray(mask).sum())
  assert metrics["kept_fraction"] == pytest.approx(keep.sum() / n)
  # The top-k fraction: ceil-ish of k * n tokens survive (linear interpolation sits between two ranks).
  assert int(np.floor(k * (n - 1))) + 1 <= keep.sum() <= int(np.ceil(k * (n - 1))) + 1
  # Unselected tokens (and masked ones) get exactly zero gradient; selected ones do not.
  g = np.asarray(jax.grad(lambda x: distill.adaspec(x, t, mask, r, k=k)[0])(s))
  assert np.all(g[~keep] == 0)
  assert np.all(np.abs(g[keep]).sum(-1) > 0)
  # With k = 1 every counted token is kept: AdaSPEC is plain FKL.
  if k == 1.0:
    chex.assert_trees_all_close(loss, distill.fkl(s, t, mask)[0], rtol=1e-6)


def test_adaspec_quantile_matches_torch_with_ties():
  torch = pytest.importorskip("torch")
  vals = np.array([[0.5, 0.1, 0.5, 0.5], [0.3, 0.9, 0.5, 0.2]], np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
  for q in (0.0, 0.3, 0.6, 0.75, 1.0):
    got = distill.masked_quantile(jnp.asarray(vals), jnp.asarray(mask), q)
    want = torch.quantile(torch.tensor(vals[mask]), q).item()
    assert float(got) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("k", [0.0, -0.1, 1.5, "x"])
def test_adaspec_bad_k_is_an_error(k):
  s = _logits(0)
  with pytest.raises(SpecjaxError, match="k"):
    distill.adaspec(s, s, _mask(), s, k=k)
  with pytest.raises(SpecjaxError, match="k"):
    distill.make_loss("adaspec", k=k)


def test_registry_and_make_loss():
  assert set(distill.LOSSES) == {"fkl", "rkl", "jsd", "tvd", "tvdpp", "adaspec"}
  s, t, mask = _logits(0), _logits(1), _mask()
  fn = distill.make_loss("jsd", beta=0.2)
  chex.assert_trees_all_close(fn(s, t, mask)[0], distill.jsd(s, t, mask, beta=0.2)[0])
  assert distill.loss_options("tvdpp") == ["norm", "eps", "chunk"]
  with pytest.raises(SpecjaxError, match="unknown distillation loss"):
    distill.make_loss("kl")
  with pytest.raises(SpecjaxError, match="no option"):
    distill.make_loss("fkl", beta=0.5)
  with pytest.raises(SpecjaxError, match="norm"):
    distill.make_loss("tvdpp", norm="vocab")


def test_bf16_inputs_and_shape_errors():
  s, t, mask = _logits(0), _logits(1), _mask()
  loss32, _ = distill.fkl(s, t, mask)
  loss16, _ = distill.fkl(s.astype(jnp.bfloat16), t.astype(jnp.bfloat16), mask)
  assert loss16.dtype == jnp.float32
  chex.assert_trees_all_close(loss16, loss32, rtol=5e-2)
  with pytest.raises(SpecjaxError, match="vocabulary"):
    distill.fkl(s, t[..., :-1], mask)
  with pytest.raises(SpecjaxError, match="mask"):
    distill.fkl(s, t, mask[:, :-1])
  empty, m = distill.tvd(s, t, jnp.zeros((B, T)))
  assert float(empty) == 0.0 and float(m["num_tokens"]) == 0.0
