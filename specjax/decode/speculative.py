"""Speculative decoding (draft model + target) as one compiled call, with an optional dynamic draft
length and an optional lookup hybrid.

Each round of the `lax.while_loop`, for every row at once:
1. the draft proposes up to G tokens: one call on the last C committed tokens ending at `cur` (C = 2
   for `spec`, which re-writes the slot of the token before `cur`, missing from the draft cache after a
   fully accepted round; C = G + 1 for `spec-lookup`, whose rows may skip the draft for a whole round),
   then one-token calls in an inner `lax.while_loop` of at most G - 1 steps;
2. one target call scores [cur, y_1..y_G] (G+1 positions);
3. the acceptance rule (`sampling.greedy_accept` / `sampling.rejection_accept`) gives n in 0..k per
   row, k = the row's own draft length; the row emits y_1..y_n and one more token (residual or bonus);
4. both caches are rolled back by length to the row's new committed length.

Dynamic draft length (`draft_threshold`): a row proposes only its leading draft tokens whose confidence
(`sampling.confidence`: the top probability of the processed draft distribution) is at least the
threshold, so 0 <= k <= G; it stops drafting at the first token below it (that token's draft call was
made, but it is not proposed). The inner loop ends as soon as no active row is drafting, so a round
costs 1 + max_b min(k_b, G - 1) draft calls, and the verification call is only as wide as the round
needs: max_b k_b + 1 positions (`lax.switch` over the G + 1 widths, each compiled once), down to a
plain one-token decoding step when no row is confident. Sampling stays exact: k depends only on the
draft's side of the round, positions past k count as rejected, and the residual / bonus distribution is
that of a round of length k (k = 0 is an ordinary sample from the target).

Lookup hybrid (`spec-lookup`): a row whose context contains an earlier occurrence of its last tokens
(`specjax.decode.lookup.lookup`) proposes that occurrence's continuation (G tokens, a point-mass
proposal) and does not draft; the other rows draft as above.

Rows accept different counts, shapes never change, finished rows are frozen with `jnp.where`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Int

from specjax.decode import modes, sampling
from specjax.decode.common import (
  Counters,
  DecodeResult,
  DecodeSettings,
  Output,
  Trace,
  commit,
  extend_sequence,
  forward,
  init_sequence,
  prefill,
  round_tokens,
  start,
  verify_call,
)
from specjax.decode.lookup import lookup
from specjax.decode.modes import Mode
from specjax.models.kv_cache import KVCache


@struct.dataclass
class _State:
  target_cache: KVCache
  draft_cache: KVCache
  length: Int[Array, " B"]  # committed tokens excluding `cur` (= target cache length)
  seq: Int[Array, "B S"]  # the committed sequence, `cur` at index `length`
  out: Output
  counters: Counters
  key: jax.Array
  trace: dict | None = None


@struct.dataclass
class Draft:
  """One round's proposals: tokens [B, G], the processed draft distributions q [B, G, V] (None when
  greedy), each row's draft length k [B] (0..G; 0 = no proposal), each position's confidence [B, G]
  (None unless needed), and the number of draft calls made (the same for every row)."""

  tokens: Array
  q: Array | None
  k: Array
  conf: Array | None
  calls: Array


def draft(
  s: DecodeSettings,
  draft_params,
  cache: KVCache,
  seq: Int[Array, "B S"],
  length: Int[Array, " B"],
  key: jax.Array,
  width: int,
  active: Array,
  skip: Array | None = None,
) -> tuple[Draft, KVCache]:
  """Up to G draft tokens per row (see the module docstring). Rows with `skip` set draft nothing (their
  k is 0) but the draft cache still catches up with their context; inactive rows never keep the inner
  loop going."""
  G, B = s.knobs.gamma, seq.shape[0]
  greedy = s.sampling.greedy
  want_conf = s.knobs.draft_threshold is not None or s.trace
  key, k0 = jax.random.split(key)

  # Catch up: feed the last `width` committed tokens ending at `cur` (the slots are re-written).
  first = jnp.maximum(length + 1 - width, 0)
  toks = jax.vmap(lambda row, i: jax.lax.dynamic_slice(row, (i,), (width,)))(seq, first)
  pos = first[:, None] + jnp.arange(width, dtype=jnp.int32)[None, :]
  logits, cache = forward(
    s.draft,
    draft_params,
    toks,
    pos,
    cache.rollback(first),
    vocab_size=s.vocab_size,
    logits_at=(length - first)[:, None],
  )
  logits = logits[:, 0]  # at `cur`
  cache = cache.rollback(length + 1)

  def propose(k, logits):
    y = sampling.sample(k, logits, s.sampling)
    q = None if greedy else sampling.probabilities(logits, s.sampling)
    c = sampling.confidence(logits, s.sampling) if want_conf else None
    return y, q, c

  y, q1, c1 = propose(k0, logits)
  tokens = jnp.zeros((B, G), jnp.int32).at[:, 0].set(y)
  q = None if greedy else jnp.zeros((B, G, q1.shape[-1]), jnp.float32).at[:, 0].set(q1)
  conf = None if c1 is None else jnp.zeros((B, G), jnp.float32).at[:, 0].set(c1)

  def confident(c):
    return jnp.ones((B,), bool) if s.knobs.draft_threshold is None else c >= s.knobs.draft_threshold

  drafting = jnp.ones((B,), bool) if skip is None else ~skip
  drafting = drafting & confident(c1)  # a token below the threshold is not proposed, nor anything after it
  k = drafting.astype(jnp.int32)
  drafting = drafting & active

  def cond(carry):
    j, _, _, _, _, _, drafting, _ = carry
    return (j < G) & jnp.any(drafting)

  def body(carry):
    j, cache, tokens, q, conf, k, drafting, key = carry
    key, kj = jax.random.split(key)
    prev = jax.lax.dynamic_index_in_dim(tokens, j - 1, axis=1, keepdims=False)
    logits, cache = forward(s.draft, draft_params, prev[:, None], (length + j)[:, None], cache, vocab_size=s.vocab_size)
    y, qj, cj = propose(kj, logits[:, 0])
    tokens = jax.lax.dynamic_update_index_in_dim(tokens, y, j, axis=1)
    if q is not None:
      q = jax.lax.dynamic_update_index_in_dim(q, qj, j, axis=1)
    if conf is not None:
      conf = jax.lax.dynamic_update_index_in_dim(conf, cj, j, axis=1)
    drafting = drafting & confident(cj)
    k = jnp.where(drafting, j + 1, k)
    return j + 1, cache, tokens, q, conf, k, drafting, key

  carry = (jnp.int32(1), cache, tokens, q, conf, k, drafting, key)
  if s.knobs.draft_threshold is None and skip is None:
    # Fixed length: exactly G - 1 more calls; a scan lets XLA see the trip count.
    def scan_body(carry, _):
      return body(carry), None

    carry, _ = jax.lax.scan(scan_body, carry, None, length=G - 1)
  else:
    carry = jax.lax.while_loop(cond, body, carry)
  j, cache, tokens, q, conf, k, _, _ = carry
  return Draft(tokens=tokens, q=q, k=k, conf=conf, calls=j), cache


def _decode(
  s: DecodeSettings, params, draft_params, prompt: Int[Array, "B P"], prompt_lens, max_new, key, hybrid: bool
) -> DecodeResult:
  B = prompt.shape[0]
  G = s.knobs.gamma
  width = G + 1 if hybrid else 2
  key, k0 = jax.random.split(key)
  target_cache, cur, out = start(s, params, prompt, prompt_lens, max_new, k0, slack=G + 1)
  _, draft_cache = prefill(s.draft, draft_params, prompt, prompt_lens, s.cache_size, s.vocab_size)
  trace = None
  if s.trace:
    trace = Trace.init(B, s.max_new_tokens, conf=((G,), jnp.float32), k=((), jnp.int32), n=((), jnp.int32))
  state = _State(
    target_cache=target_cache,
    draft_cache=draft_cache,
    length=prompt_lens.astype(jnp.int32),
    seq=init_sequence(prompt, prompt_lens, cur, s.cache_size),
    out=out,
    counters=Counters.init(B, G),
    key=key,
    trace=trace,
  )

  def body(st: _State) -> _State:
    active = ~st.out.done
    key, k_draft, k_accept = jax.random.split(st.key, 3)
    L = st.length
    cur = jnp.take_along_axis(st.seq, L[:, None], axis=1)[:, 0]
    if hybrid:
      found_tokens, match = lookup(st.seq, L, G, s.knobs.ngram)
      found = match >= s.knobs.ngram_min
      d, draft_cache = draft(s, draft_params, st.draft_cache, st.seq, L, k_draft, width, active, skip=found)
      tokens = jnp.where(found[:, None], found_tokens, d.tokens)
      k = jnp.where(found, G, d.k)
      q = None
      if d.q is not None:
        q = jnp.where(found[:, None, None], sampling.point_mass(found_tokens, d.q.shape[-1]), d.q)
    else:
      d, draft_cache = draft(s, draft_params, st.draft_cache, st.seq, L, k_draft, width, active)
      tokens, k, q = d.tokens, d.k, d.q

    verify = jnp.concatenate([cur[:, None], tokens], axis=1)  # [B, G+1]
    p_logits, target_cache = verify_call(s, params, verify, L, st.target_cache.rollback(L), k, active)
    if s.sampling.greedy:
      n, nxt = sampling.greedy_accept(tokens, p_logits, k)
    else:
      p = sampling.probabilities(p_logits, s.sampling)
      n, nxt = sampling.rejection_accept(k_accept, tokens, q, p, k)

    emitted = round_tokens(tokens, n, nxt)
    out, taken = commit(st.out, emitted, n + 1, max_new, s.eos_ids)
    length = jnp.where(active, L + 1 + n, L)
    counters = st.counters.round(active, drafted=k, accepted=n, taken=taken, target_calls=1, draft_calls=d.calls)
    trace = st.trace
    if s.trace:
      trace = Trace.write(trace, st.counters.target_calls, active, conf=d.conf, k=k, n=n)
    return _State(
      target_cache=target_cache.rollback(length),
      draft_cache=draft_cache,
      length=length,
      seq=extend_sequence(st.seq, emitted, L, active),
      out=out,
      counters=counters,
      key=key,
      trace=trace,
    )

  state = jax.lax.while_loop(lambda st: ~jnp.all(st.out.done), body, state)
  return DecodeResult(out=state.out, counters=state.counters, trace=state.trace)


def decode(
  s: DecodeSettings, params, draft_params, prompt: Int[Array, "B P"], prompt_lens, max_new, key
) -> DecodeResult:
  """Speculative decoding of the target `params` with the draft `draft_params`; see the module doc."""
  return _decode(s, params, draft_params, prompt, prompt_lens, max_new, key, hybrid=False)


def decode_hybrid(
  s: DecodeSettings, params, draft_params, prompt: Int[Array, "B P"], prompt_lens, max_new, key
) -> DecodeResult:
  """Speculative decoding whose rows propose a lookup continuation when their context has one."""
  return _decode(s, params, draft_params, prompt, prompt_lens, max_new, key, hybrid=True)


@dataclasses.dataclass(frozen=True)
class SpecKnobs:
  gamma: int = modes.gamma()
  draft_threshold: float | None = modes.draft_threshold()


@dataclasses.dataclass(frozen=True)
class SpecLookupKnobs(SpecKnobs):
  ngram: int = modes.ngram()
  ngram_min: int | None = modes.ngram_min()


modes.register(
  Mode(
    name="spec",
    decode=decode,
    help="a draft model proposes gamma tokens (or fewer: --draft-threshold), one target call verifies them",
    knobs=SpecKnobs,
    lookahead=lambda k: k.gamma + 1,
    needs_draft=True,
    traced=True,
    speed_model="draft",
  )
)
modes.register(
  Mode(
    name="spec-lookup",
    decode=decode_hybrid,
    help="spec, but a row whose context repeats its last tokens proposes their earlier continuation instead",
    knobs=SpecLookupKnobs,
    lookahead=lambda k: k.gamma + 1,
    configure=modes.complete_ngram,
    needs_draft=True,
  )
)
