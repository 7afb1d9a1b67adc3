"""MSN span noise: where it lands, what it draws, and what it leaves alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from specjax.data.noise import make_some_noise, response_bounds, span_starts
from specjax.errors import SpecjaxError

B, T, L = 6, 24, 5
# (prompt length, response length) per row; the rest of the row is padding.
ROWS = [(3, 12), (8, 16), (1, 6), (5, 19), (4, 5), (10, 0)]


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  tokens = np.zeros((B, T), np.int32)
  mask = np.zeros((B, T), bool)
  for b, (p, r) in enumerate(ROWS):
    # all-distinct ids so that every drawn replacement differs from the clean token it replaces
    tokens[b, : p + r] = rng.permutation(1000)[: p + r] + 1
    mask[b, p : p + r] = True
  return jnp.asarray(tokens), jnp.asarray(mask)


def test_bounds():
  _, mask = _batch()
  first, end = response_bounds(mask)
  np.testing.assert_array_equal(first, [p if r else 0 for p, r in ROWS])
  np.testing.assert_array_equal(end, [p + r if r else 0 for p, r in ROWS])


@pytest.mark.parametrize("seed", range(8))
def test_one_span_inside_the_response_drawn_from_the_noised_prefix(seed):
  tokens, mask = _batch(seed)
  clean = np.asarray(tokens).copy()
  noisy = np.asarray(make_some_noise(jax.random.key(seed), tokens, mask, span=L))
  np.testing.assert_array_equal(np.asarray(tokens), clean)  # the caller's clean labels are untouched
  for b, (p, r) in enumerate(ROWS):
    changed = np.flatnonzero(noisy[b] != clean[b])
    if r < L + 1:
      assert changed.size == 0, "rows with a response shorter than span + 1 stay clean"
      continue
    assert changed.size == L
    s = changed[0]
    np.testing.assert_array_equal(changed, np.arange(s, s + L))  # one contiguous span
    assert p <= s < p + r - L  # start in [|S|, |X| - L)
    assert mask[b, changed].all()  # only response positions
    for i in changed:
      assert noisy[b, i] in noisy[b, :i]  # drawn from the current (partly noised) prefix


def test_deterministic_per_key_and_varies_across_keys():
  tokens, mask = _batch()
  a = make_some_noise(jax.random.key(1), tokens, mask)
  b = make_some_noise(jax.random.key(1), tokens, mask)
  c = make_some_noise(jax.random.key(2), tokens, mask)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_start_covers_the_whole_range():
  _, mask = _batch()
  keys = jax.random.split(jax.random.key(0), 400)
  starts = np.asarray(jax.vmap(lambda k: span_starts(k, mask, L))(keys))
  for b, (p, r) in enumerate(ROWS):
    if r < L + 1:
      assert np.all(starts[:, b] == -1)
    else:
      assert set(starts[:, b].tolist()) == set(range(p, p + r - L))


def test_draws_come_from_the_noised_prefix_not_the_clean_one():
  # One prompt token and a short response: many draws land inside the span. A draw from the clean prefix
  # would copy an overwritten clean token, which appears nowhere in the noised prefix.
  tokens = jnp.arange(1, 12, dtype=jnp.int32)[None]
  mask = jnp.arange(11)[None] >= 1
  clean = np.asarray(tokens)[0]
  for seed in range(40):
    noisy = np.asarray(make_some_noise(jax.random.key(seed), tokens, mask, span=L))[0]
    changed = np.flatnonzero(noisy != clean)
    assert changed.size == L
    for i in changed:
      assert noisy[i] in noisy[:i]
      assert noisy[i] in clean[: changed[0]]  # every value traces back to the clean tokens before the span


def test_jit_batch_shapes_and_bad_span():
  tokens, mask = _batch()
  out = jax.jit(make_some_noise, static_argnames="span")(jax.random.key(0), tokens, mask, span=3)
  assert out.shape == tokens.shape and out.dtype == tokens.dtype
  with pytest.raises(SpecjaxError, match="span"):
    make_some_noise(jax.random.key(0), tokens, mask, span=0)
