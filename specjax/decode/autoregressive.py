"""Autoregressive decoding as one compiled call: prefill, then `lax.while_loop` one token at a time.

Also home of `DecodeSettings`, the static (hashable) description every decoder is compiled for, and of
the common decoder signature

    decode(settings, target_params, draft_params, prompt[B,P], prompt_lens[B], max_new[B], key)
      -> DecodeResult

(`draft_params` is None for the target-only decoders).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Int

from specjax.decode import sampling
from specjax.decode.common import Counters, DecodeResult, Output, commit, forward, prefill
from specjax.decode.sampling import SamplingConfig
from specjax.models.kv_cache import KVCache
from specjax.models.llama import LlamaConfig


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """Everything a decoder is compiled for except array shapes.

  Attributes:
    target: the target model's config.
    max_new_tokens: N, the most tokens any row may generate (rows may ask for fewer via `max_new`).
    cache_size: S, KV cache slots per row (prompt + N + the decoder's look-ahead must fit).
    sampling: temperature / top-k / top-p.
    eos_ids: tokens that end a row (the EOS token is kept in the output).
    vocab_size: logits are cut to this many entries (the shared tokenizer's size), None = all.
    draft: the draft model's config (speculative decoding only).
    gamma: G, draft tokens per speculative round.
    window: W, Jacobi draft slots.
    tree: the TR-Jacobi token tree (`specjax.decode.tree.TokenTree`).
  """

  target: LlamaConfig
  max_new_tokens: int
  cache_size: int
  sampling: SamplingConfig = SamplingConfig()
  eos_ids: tuple[int, ...] = ()
  vocab_size: int | None = None
  draft: LlamaConfig | None = None
  gamma: int = 4
  window: int = 5
  tree: object | None = None


@struct.dataclass
class _State:
  cache: KVCache
  cur: Int[Array, B]  # last emitted token, not yet in the cache
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
  logits, cache = prefill(s.target, params, prompt, prompt_lens, s.cache_size, s.vocab_size)
  cur = sampling.sample(k0, logits, s.sampling)
  out, _ = commit(
    Output.init(B, s.max_new_tokens, 1, max_new), cur[:, None], jnp.ones((B,), jnp.int32), max_new, s.eos_ids
  )
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
