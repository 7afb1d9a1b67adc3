"""Batched autoregressive sampling of a queue of prompts, refilling each row as soon as its answer ends.

A batch decoded as one block (`Engine.run`) runs until its longest answer ends, and its finished rows
idle meanwhile: with answers of very different lengths, batch 16 gains little over batch 1. Here B rows
serve a queue of Q prompts inside one compiled `lax.while_loop`:

- the first B prompts are prefilled together, as in `ar`;
- each iteration, if a row is free (its answer ended at EOS or at its max_new) and prompts are waiting,
  the next prompt is prefilled into that row alone (a [1, P] call whose keys and values are written
  into the row's slots of the batch cache) and its first token sampled; one row per iteration, which
  keeps up because answers rarely end in the same step;
- then one [B, 1] call advances every busy row by one token.

The output is indexed by prompt, not by row: `tokens[q, :n[q]]` is prompt q's answer. Every token is
drawn by the same sampler as `ar` from the same distribution, so answers are distributed exactly as
`ar`'s (greedy answers are identical; sampled ones use other random draws).

    out = stream(settings, params, queue[Q, P], queue_lens[Q], max_new[Q], num_items, key, batch_size=16)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Int

from specjax.decode import sampling
from specjax.decode.common import DecodeSettings, Output, commit, forward, prefill
from specjax.models.kv_cache import KVCache


@struct.dataclass
class StreamResult:
  out: Output  # per prompt: tokens [Q, N+1], n [Q], done [Q]
  steps: Int[Array, ""]  # [B, 1] decode calls
  refills: Int[Array, ""]  # one-row prefills after the first batch


@struct.dataclass
class _State:
  cache: KVCache
  cur: Int[Array, " B"]  # each row's last emitted token, not yet in the cache
  row_item: Int[Array, " B"]  # the prompt each row serves (Q: none)
  next_item: Int[Array, ""]  # the first prompt not yet started
  out: Output
  key: jax.Array
  steps: Int[Array, ""]
  refills: Int[Array, ""]


def _write_row(cache: KVCache, row: KVCache, r: Int[Array, ""]) -> KVCache:
  """`cache` with row r replaced by the one-row cache `row` (keys, values and length)."""
  put = lambda big, small: jax.lax.dynamic_update_slice_in_dim(big, small, r, axis=0)  # noqa: E731
  return KVCache(
    k=tuple(put(a, b) for a, b in zip(cache.k, row.k, strict=True)),
    v=tuple(put(a, b) for a, b in zip(cache.v, row.v, strict=True)),
    lengths=put(cache.lengths, row.lengths),
  )


def stream(
  s: DecodeSettings,
  params,
  queue: Int[Array, "Q P"],
  queue_lens: Int[Array, " Q"],
  max_new: Int[Array, " Q"],
  num_items: Int[Array, ""],
  key: jax.Array,
  batch_size: int,
) -> StreamResult:
  """Answer the first `num_items` prompts of `queue` with `batch_size` rows (see the module docstring).
  Entries past `num_items` must have `max_new` 0. `s.cache_size` must hold P + max_new_tokens + 1."""
  Q, P = queue.shape
  B = min(batch_size, Q)
  vocab = s.vocab_size
  out = Output.init(Q, s.max_new_tokens, 1, max_new)
  key, k0 = jax.random.split(key)

  # The first B prompts, prefilled together.
  logits, cache = prefill(s.target, params, queue[:B], queue_lens[:B], s.cache_size, vocab)
  first = sampling.sample(k0, logits, s.sampling)
  row_item = jnp.where(jnp.arange(B) < num_items, jnp.arange(B), Q)
  out, _ = commit(out, _scatter(first, row_item, Q), _served(row_item, Q), max_new, s.eos_ids)
  state = _State(
    cache=cache,
    cur=first,
    row_item=row_item,
    next_item=jnp.minimum(num_items, B).astype(jnp.int32),
    out=out,
    key=key,
    steps=jnp.int32(0),
    refills=jnp.int32(0),
  )

  def busy(st: _State):
    item = jnp.minimum(st.row_item, Q - 1)
    return (st.row_item < Q) & ~st.out.done[item]

  def refill(st: _State) -> _State:
    r = jnp.argmax(~busy(st))  # a free row
    q = st.next_item
    key, k = jax.random.split(st.key)
    lg, row = prefill(s.target, params, queue[q][None], queue_lens[q][None], s.cache_size, vocab)
    tok = sampling.sample(k, lg, s.sampling)[0]
    out, _ = commit(st.out, jnp.full((Q, 1), tok), _served(q[None], Q), max_new, s.eos_ids)
    return st.replace(
      cache=_write_row(st.cache, row, r),
      cur=st.cur.at[r].set(tok),
      row_item=st.row_item.at[r].set(q),
      next_item=q + 1,
      out=out,
      key=key,
      refills=st.refills + 1,
    )

  def body(st: _State) -> _State:
    waiting = (st.next_item < num_items) & ~jnp.all(busy(st))
    st = jax.lax.cond(waiting, refill, lambda st: st, st)
    active = busy(st)
    key, k = jax.random.split(st.key)
    lengths = st.cache.lengths
    logits, cache = forward(s.target, params, st.cur[:, None], lengths[:, None], st.cache, vocab_size=vocab)
    tok = sampling.sample(k, logits[:, 0], s.sampling)
    item = jnp.where(active, st.row_item, Q)
    out, _ = commit(st.out, _scatter(tok, item, Q), _served(item, Q), max_new, s.eos_ids)
    return st.replace(
      cache=cache.rollback(jnp.where(active, lengths + 1, lengths)),
      cur=jnp.where(active, tok, st.cur),
      out=out,
      key=key,
      steps=st.steps + 1,
    )

  state = jax.lax.while_loop(lambda st: ~jnp.all(st.out.done), body, state)
  return StreamResult(out=state.out, steps=state.steps, refills=state.refills)


def _served(item: Int[Array, " B"], Q: int) -> Int[Array, " Q"]:
  """1 for the queue entries some row serves (entries item == Q serve none), else 0: commit's counts."""
  return (item[:, None] == jnp.arange(Q)).any(0).astype(jnp.int32)


def _scatter(tokens: Int[Array, " B"], item: Int[Array, " B"], Q: int) -> Int[Array, "Q 1"]:
  """Row b's token at entry item[b] of a [Q, 1] array (entries item == Q are dropped)."""
  return jnp.zeros((Q, 1), jnp.int32).at[item, 0].set(tokens, mode="drop")
