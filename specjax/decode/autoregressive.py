"""Autoregressive decoding as one compiled call: prefill, then `lax.while_loop` one token at a time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Int

from specjax.decode import modes, sampling
from specjax.decode.common import Counters, DecodeResult, DecodeSettings, Output, commit, forward, start
from specjax.decode.modes import Mode
from specjax.models.kv_cache import KVCache


@struct.dataclass
class _State:
  cache: KVCache
  cur: Int[Array, " B"]  # last emitted token, not yet in the cache
  out: Output
  counters: Counters
  key: jax.Array


def decode(
  s: DecodeSettings, params, draft_params, prompt: Int[Array, "B P"], prompt_lens, max_new, key
) -> DecodeResult:
  """Target-only autoregressive decoding (greedy or sampled). `draft_params` is ignored."""
  del draft_params
  B = prompt.shape[0]
  key, k0 = jax.random.split(key)
  cache, cur, out = start(s, params, prompt, prompt_lens, max_new, k0, slack=1)
  state = _State(cache=cache, cur=cur, out=out, counters=Counters.init(B, 0), key=key)

  def cond(st: _State):
    return ~jnp.all(st.out.done)

  def body(st: _State) -> _State:
    active = ~st.out.done
    key, k = jax.random.split(st.key)
    lengths = st.cache.lengths
    logits, cache = forward(s.target, params, st.cur[:, None], lengths[:, None], st.cache, vocab_size=s.vocab_size)
    tok = sampling.sample(k, logits[:, 0], s.sampling)
    out, _ = commit(st.out, tok[:, None], jnp.ones((B,), jnp.int32), max_new, s.eos_ids)
    cache = cache.rollback(jnp.where(active, lengths + 1, lengths))
    counters = st.counters.round(active, drafted=0, accepted=jnp.zeros((B,), jnp.int32))
    return _State(cache=cache, cur=jnp.where(active, tok, st.cur), out=out, counters=counters, key=key)

  state = jax.lax.while_loop(cond, body, state)
  return DecodeResult(out=state.out, counters=state.counters)


modes.register(
  Mode(
    name="ar",
    decode=decode,
    help="target only, one token per call (greedy, temperature, top-k, top-p)",
    lookahead=lambda k: 1,
    baseline=True,
  )
)
