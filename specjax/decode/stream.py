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

With `features=True` the loop also keeps what a distillation reads of the target (the teacher cache of
`specjax.train.teacher_cache`), at every position i of prompt q's sequence (prompt, then answer):
`features[q, i]` the final-normed hidden state (float16) and `lse[q, i]` the log-sum-exp of the
full-vocabulary logits (float32) after token i. The prefill computes them for the prompt, each step for
the token it feeds; a row whose answer has ended takes one more step, to feed its last token (its
sample is dropped), so every position of the sequence is covered. The samples are drawn as without.

    out = stream(settings, params, queue[Q, P], queue_lens[Q], max_new[Q], num_items, key, batch_size=16)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Bool, Float, Int

from specjax.decode import sampling
from specjax.decode.common import DecodeSettings, Output, commit, forward, prefill
from specjax.models.kv_cache import KVCache
from specjax.models.llama import head_logits

FEATURE_DTYPE = jnp.float16  # what features are kept in (and stored in by make-data); lse stays float32


@struct.dataclass
class StreamResult:
  out: Output  # per prompt: tokens [Q, N+1], n [Q], done [Q]
  steps: Int[Array, ""]  # [B, 1] decode calls
  refills: Int[Array, ""]  # one-row prefills after the first batch
  features: Float[Array, "Q L D"] | None = None  # with features=True: L = P + max_new_tokens
  lse: Float[Array, "Q L"] | None = None


@struct.dataclass
class _State:
  cache: KVCache
  cur: Int[Array, " B"]  # each row's last emitted token, not yet in the cache
  pending: Bool[Array, " B"]  # the row's `cur` is still to be fed (the row is busy)
  row_item: Int[Array, " B"]  # the prompt each row serves (Q: none)
  next_item: Int[Array, ""]  # the first prompt not yet started
  out: Output
  key: jax.Array
  steps: Int[Array, ""]
  refills: Int[Array, ""]
  features: Float[Array, "Q L D"] | None
  lse: Float[Array, "Q L"] | None


def _prompt_lse(cfg, params, feats: Float[Array, "B P D"]) -> Float[Array, "B P"]:
  """Full-vocabulary log-sum-exp at every prompt position, one row at a time ([P, V] logits at most)."""
  return jax.lax.map(lambda f: jax.nn.logsumexp(head_logits(cfg, params, f), axis=-1), feats)


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
  features: bool = False,
) -> StreamResult:
  """Answer the first `num_items` prompts of `queue` with `batch_size` rows (see the module docstring).
  Entries past `num_items` must have `max_new` 0. `s.cache_size` must hold P + max_new_tokens + 1."""
  Q, P = queue.shape
  B = min(batch_size, Q)
  L = P + s.max_new_tokens
  vocab = s.vocab_size
  out = Output.init(Q, s.max_new_tokens, 1, max_new)
  key, k0 = jax.random.split(key)

  def keeps(out: Output, item):
    """A row that emitted for `item` stays busy: to feed its token (always, with features) or to go on."""
    return features | ~out.done[jnp.minimum(item, Q - 1)]

  def run_prefill(prompt, lens):
    logits, cache, *f = prefill(s.target, params, prompt, lens, s.cache_size, vocab, return_features=features)
    return logits, cache, (f[0], _prompt_lse(s.target, params, f[0])) if features else None

  # The first B prompts, prefilled together.
  logits, cache, kept = run_prefill(queue[:B], queue_lens[:B])
  first = sampling.sample(k0, logits, s.sampling)
  row_item = jnp.where(jnp.arange(B) < num_items, jnp.arange(B), Q)
  out, _ = commit(out, _scatter(first, row_item, Q), _served(row_item, Q), max_new, s.eos_ids)
  feats = lse = None
  if features:
    rows, cols = row_item[:, None], jnp.arange(P)[None, :]
    feats = (
      jnp.zeros((Q, L, s.target.hidden_size), FEATURE_DTYPE)
      .at[rows, cols]
      .set(kept[0].astype(FEATURE_DTYPE), mode="drop")
    )
    lse = jnp.zeros((Q, L), jnp.float32).at[rows, cols].set(kept[1], mode="drop")
  served = row_item < Q
  state = _State(
    cache=cache,
    cur=first,
    pending=served & keeps(out, row_item),
    row_item=row_item,
    next_item=jnp.minimum(num_items, B).astype(jnp.int32),
    out=out,
    key=key,
    steps=jnp.int32(0),
    refills=jnp.int32(0),
    features=feats,
    lse=lse,
  )

  def refill(st: _State) -> _State:
    r = jnp.argmax(~st.pending)  # a free row
    q = st.next_item
    key, k = jax.random.split(st.key)
    lg, row, kept = run_prefill(queue[q][None], queue_lens[q][None])
    tok = sampling.sample(k, lg, s.sampling)[0]
    out, _ = commit(st.out, jnp.full((Q, 1), tok), _served(q[None], Q), max_new, s.eos_ids)
    extra = {}
    if features:
      extra = dict(
        features=jax.lax.dynamic_update_slice(st.features, kept[0].astype(FEATURE_DTYPE), (q, 0, 0)),
        lse=jax.lax.dynamic_update_slice(st.lse, kept[1], (q, 0)),
      )
    return st.replace(
      cache=_write_row(st.cache, row, r),
      cur=st.cur.at[r].set(tok),
      pending=st.pending.at[r].set(keeps(out, q)),
      row_item=st.row_item.at[r].set(q),
      next_item=q + 1,
      out=out,
      key=key,
      refills=st.refills + 1,
      **extra,
    )

  def body(st: _State) -> _State:
    waiting = (st.next_item < num_items) & ~jnp.all(st.pending)
    st = jax.lax.cond(waiting, refill, lambda st: st, st)
    active = st.pending
    item = jnp.where(active, st.row_item, Q)
    ended = st.out.done[jnp.minimum(item, Q - 1)]  # (features) a finished row feeding its last token
    key, k = jax.random.split(st.key)
    lengths = st.cache.lengths
    logits, cache, *f = forward(
      s.target,
      params,
      st.cur[:, None],
      lengths[:, None],
      st.cache,
      vocab_size=None if features else vocab,
      return_features=features,
    )
    extra = {}
    if features:
      extra = dict(
        features=st.features.at[item, lengths].set(f[0][:, 0].astype(FEATURE_DTYPE), mode="drop"),
        lse=st.lse.at[item, lengths].set(jax.nn.logsumexp(logits[:, 0], axis=-1), mode="drop"),
      )
      logits = logits[..., :vocab] if vocab is not None else logits
    tok = sampling.sample(k, logits[:, 0], s.sampling)
    emits = active & ~ended
    emit_item = jnp.where(emits, item, Q)
    out, _ = commit(st.out, _scatter(tok, emit_item, Q), _served(emit_item, Q), max_new, s.eos_ids)
    grown = emits & keeps(out, item)
    return st.replace(
      cache=cache.rollback(jnp.where(active, lengths + 1, lengths)),
      cur=jnp.where(emits, tok, st.cur),
      pending=grown,
      out=out,
      key=key,
      steps=st.steps + 1,
      **extra,
    )

  state = jax.lax.while_loop(lambda st: ~jnp.all(st.out.done) | jnp.any(st.pending), body, state)
  return StreamResult(out=state.out, steps=state.steps, refills=state.refills, features=state.features, lse=state.lse)


def _served(item: Int[Array, " B"], Q: int) -> Int[Array, " Q"]:
  """1 for the queue entries some row serves (entries item == Q serve none), else 0: commit's counts."""
  return (item[:, None] == jnp.arange(Q)).any(0).astype(jnp.int32)


def _scatter(tokens: Int[Array, " B"], item: Int[Array, " B"], Q: int) -> Int[Array, "Q 1"]:
  """Row b's token at entry item[b] of a [Q, 1] array (entries item == Q are dropped)."""
  return jnp.zeros((Q, 1), jnp.int32).at[item, 0].set(tokens, mode="drop")
