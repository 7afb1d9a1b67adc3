"""Speculative decoding (draft model + target) as one compiled call.

Each round of the `lax.while_loop`, for every row at once:
1. the draft proposes y_1..y_G: one 2-token call on [prev, cur] (re-writing the slot of `prev`, which
   is missing from the draft cache after a fully accepted round), then G-1 one-token calls in a
   `lax.scan` -- G draft calls in all;
2. one target call scores [cur, y_1..y_G] (G+1 positions);
3. the acceptance rule (`sampling.greedy_accept` / `sampling.rejection_accept`) gives n in 0..G per row;
   the row emits y_1..y_n and one more token (residual or bonus);
4. both caches are rolled back by length to the row's new committed length.

Rows accept different counts, shapes never change, finished rows are frozen with `jnp.where`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Int

from specjax.decode import sampling
from specjax.decode.common import Counters, DecodeResult, DecodeSettings, Output, commit, forward, prefill, start
from specjax.models.kv_cache import KVCache


@struct.dataclass
class _State:
  target_cache: KVCache
  draft_cache: KVCache
  length: Int[Array, " B"]  # committed tokens excluding `cur` (= target cache length)
  prev: Int[Array, " B"]  # the committed token before `cur`
  cur: Int[Array, " B"]
  out: Output
  counters: Counters
  key: jax.Array


def _draft(s: DecodeSettings, draft_params, cache: KVCache, length, prev, cur, key):
  """G draft tokens [B, G] and their draft logits [B, G, V] (None when greedy), plus the draft cache."""
  G = s.gamma
  keys = jax.random.split(key, G)
  cache = cache.rollback(length - 1)
  toks = jnp.stack([prev, cur], axis=1)
  pos = jnp.stack([length - 1, length], axis=1)
  logits, cache = forward(s.draft, draft_params, toks, pos, cache, vocab_size=s.vocab_size)
  first_logits = logits[:, 1]
  y = sampling.sample(keys[0], first_logits, s.sampling)

  def step(carry, k):
    cache, y, pos = carry
    logits, cache = forward(s.draft, draft_params, y[:, None], pos[:, None], cache, vocab_size=s.vocab_size)
    y_next = sampling.sample(k, logits[:, 0], s.sampling)
    return (cache, y_next, pos + 1), (y_next, None if s.sampling.greedy else logits[:, 0])

  (cache, _, _), (ys, q_logits) = jax.lax.scan(step, (cache, y, length + 1), keys[1:])
  tokens = jnp.concatenate([y[:, None], ys.T], axis=1)
  if q_logits is not None:
    q_logits = jnp.concatenate([first_logits[:, None], jnp.swapaxes(q_logits, 0, 1)], axis=1)
  return tokens, q_logits, cache


def decode(
  s: DecodeSettings, params, draft_params, prompt: Int[Array, "B P"], prompt_lens, max_new, key
) -> DecodeResult:
  """Speculative decoding of the target `params` with the draft `draft_params`; see the module doc."""
  B = prompt.shape[0]
  G = s.gamma
  key, k0 = jax.random.split(key)
  target_cache, cur, out = start(s, params, prompt, prompt_lens, max_new, k0, slack=G + 1)
  _, draft_cache = prefill(s.draft, draft_params, prompt, prompt_lens, s.cache_size, s.vocab_size)
  prev = jnp.take_along_axis(prompt, (prompt_lens - 1)[:, None], axis=1)[:, 0]
  state = _State(
    target_cache=target_cache,
    draft_cache=draft_cache,
    length=prompt_lens.astype(jnp.int32),
    prev=prev,
    cur=cur,
    out=out,
    counters=Counters.init(B, G),
    key=key,
  )

  def cond(st: _State):
    return ~jnp.all(st.out.done)

  def body(st: _State) -> _State:
    active = ~st.out.done
    key, k_draft, k_accept = jax.random.split(st.key, 3)
    L = st.length
    draft_tokens, q_logits, draft_cache = _draft(s, draft_params, st.draft_cache, L, st.prev, st.cur, k_draft)

    verify = jnp.concatenate([st.cur[:, None], draft_tokens], axis=1)  # [B, G+1]
    pos = L[:, None] + jnp.arange(G + 1, dtype=jnp.int32)[None, :]
    p_logits, target_cache = forward(
      s.target, params, verify, pos, st.target_cache.rollback(L), vocab_size=s.vocab_size
    )
    if s.sampling.greedy:
      n, nxt = sampling.greedy_accept(draft_tokens, p_logits)
    else:
      p = sampling.probabilities(p_logits, s.sampling)
      q = sampling.probabilities(q_logits, s.sampling)
      n, nxt = sampling.rejection_accept(k_accept, draft_tokens, q, p)

    emitted = jnp.concatenate([draft_tokens, nxt[:, None]], axis=1)
    emitted = jnp.where(jnp.arange(G + 1)[None, :] == n[:, None], nxt[:, None], emitted)
    out, taken = commit(st.out, emitted, n + 1, max_new, s.eos_ids)
    new_prev = jnp.where(n > 0, jnp.take_along_axis(draft_tokens, jnp.maximum(n - 1, 0)[:, None], axis=1)[:, 0], st.cur)
    length = jnp.where(active, L + 1 + n, L)
    counters = st.counters.round(active, drafted=G, accepted=n, taken=taken, target_calls=1, draft_calls=G)
    return _State(
      target_cache=target_cache.rollback(length),
      draft_cache=draft_cache,
      length=length,
      prev=jnp.where(active, new_prev, st.prev),
      cur=jnp.where(active, nxt, st.cur),
      out=out,
      counters=counters,
      key=key,
    )

  state = jax.lax.while_loop(cond, body, state)
  return DecodeResult(out=state.out, counters=state.counters)
