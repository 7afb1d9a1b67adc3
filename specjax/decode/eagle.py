"""Speculative decoding with an EAGLE-style draft (`specjax.models.eagle`) as one compiled call.

The draft reads the target's features, so the two models hand each other state every round. Draft
position t holds the pair (f_{t-1}, s_t): the target feature of the token before s_t, and s_t. Its
cache covers positions 1..L for a row whose committed length is L (`cur` = s_L included), and those
entries always hold *true* target features. A round, for every row at once:

1. the draft proposes y_1 from the logits the previous round left (those at `cur`), then makes G - 1
   one-token calls, each on (its own predicted feature, the token it just proposed);
2. one target call scores [cur, y_1..y_G] and returns the features f_L..f_{L+G} of those positions;
3. the acceptance rule keeps n of the proposals plus one token (greedy: token-identical to `ar`;
   sampling: exact rejection sampling with the draft's q);
4. catch-up: the draft cache is rolled back to L (dropping the entries built on predicted features)
   and one draft call of width G + 1 writes the pairs (f_{L+i}, s_{L+i+1}) for i = 0..n with the true
   features; its logits at the new `cur` give the next round's y_1. Rollback is setting lengths.

The prefill runs the target over the prompt (returning its features) and the draft over the pairs
(f_{t-1}, s_t), t = 1..P (the last pair holds `cur`). A round costs one target call of width G + 1 and
G draft calls (G - 1 of width 1, one of width G + 1). With `draft_threshold` the draft length is dynamic
as in `spec` (`specjax.decode.speculative`): a row proposes its leading tokens of draft confidence >= the
threshold (0..G), the draft loop stops when no row is drafting, and the verification call is only
max_b k_b + 1 wide.

An `override` (`eagle-retrieval`, `specjax.decode.hybrid`) replaces the draft's proposals of some rows:
each round it reads the committed sequence and gives per row proposals [B, G] and how many are real (k;
0: the row keeps the draft's). Those rows do not draft (the draft loop runs while some other row does,
so a round where every row is overridden makes only the catch-up call), their proposals are verified as
point masses (q = one-hot) and the catch-up afterwards is the same as for any row. The choice reads only
the committed sequence, never the draft's draws, so the acceptance stays exact. With `DecodeSettings.trace`
each round records the override's per-row label (`source`, 0 for a drafted round), k and the accepted n.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Float, Int

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
  round_tokens,
  start,
  verify_call,
)
from specjax.decode.modes import Mode
from specjax.decode.speculative import SpecKnobs
from specjax.models.kv_cache import KVCache


@struct.dataclass
class _State:
  target_cache: KVCache
  draft_cache: KVCache  # pairs at positions 1..length (true features only)
  length: Int[Array, " B"]  # committed tokens excluding `cur`
  seq: Int[Array, "B S"]  # the committed sequence, `cur` at index `length`
  logits: Float[Array, "B V"]  # the draft's logits at `cur`: the next round's first proposal
  feature: Float[Array, "B D"]  # the draft's predicted feature at `cur` (input of its next call)
  out: Output
  counters: Counters
  key: jax.Array
  trace: dict | None = None  # per round: source, k, n (`DecodeSettings.trace`)


Override = Callable[[Int[Array, "B S"], Int[Array, " B"]], tuple[Int[Array, "B G"], Int[Array, " B"], Int[Array, " B"]]]
"""(seq, length) -> (proposals [B, G], how many are real k [B] (0: the row drafts), a label [B] > 0 where
k > 0 that the trace records as `source`)."""


def _catch_up(s: DecodeSettings, draft_params, cache: KVCache, tokens, features, first, count):
  """Write the draft pairs (features[:, i], tokens[:, i]) at positions first + i (slot first + i - 1)
  for i < count; return the logits and predicted feature at i = count - 1 and the cache at length
  first + count - 1."""
  W = tokens.shape[1]
  pos = first[:, None] + jnp.arange(W, dtype=jnp.int32)[None, :]
  last = jnp.maximum(count - 1, 0)[:, None]
  logits, cache, g = forward(
    s.draft,
    draft_params,
    tokens,
    pos,
    cache.rollback(first - 1),
    vocab_size=s.vocab_size,
    logits_at=last,
    features=features,
    return_features=True,
  )
  g = jnp.take_along_axis(g, last[..., None], axis=1)[:, 0]
  return logits[:, 0], g, cache.rollback(first + count - 1)


def decode(
  s: DecodeSettings,
  params,
  draft_params,
  prompt: Int[Array, "B P"],
  prompt_lens,
  max_new,
  key,
  override: Override | None = None,
) -> DecodeResult:
  """Speculative decoding of the target `params` with the EAGLE draft `draft_params`, the rows `override`
  picks proposing its tokens instead; see the module doc."""
  B, P = prompt.shape
  G = s.knobs.gamma
  key, k0 = jax.random.split(key)
  lens = prompt_lens.astype(jnp.int32)

  target_cache, cur, out, feats = start(s, params, prompt, prompt_lens, max_new, k0, slack=G + 1, return_features=True)
  seq = init_sequence(prompt, prompt_lens, cur, s.cache_size)
  d_logits, g, draft_cache = _catch_up(
    s, draft_params, s.draft.init_cache(B, s.cache_size), seq[:, 1 : P + 1], feats, jnp.ones_like(lens), lens
  )
  state = _State(
    target_cache=target_cache,
    draft_cache=draft_cache,
    length=lens,
    seq=seq,
    logits=d_logits,
    feature=g,
    out=out,
    counters=Counters.init(B, G),
    key=key,
    trace=Trace.init(B, s.max_new_tokens, source=((), jnp.int32), k=((), jnp.int32), n=((), jnp.int32))
    if s.trace
    else None,
  )
  fixed = s.knobs.draft_threshold is None and override is None  # every row drafts G tokens every round

  def body(st: _State) -> _State:
    active = ~st.out.done
    key, k_first, k_draft, k_accept = jax.random.split(st.key, 4)
    L = st.length
    cur = jnp.take_along_axis(st.seq, L[:, None], axis=1)[:, 0]
    greedy = s.sampling.greedy

    def confident(logits):
      if s.knobs.draft_threshold is None:
        return jnp.ones((B,), bool)
      return sampling.confidence(logits, s.sampling) >= s.knobs.draft_threshold

    y = sampling.sample(k_first, st.logits, s.sampling)
    tokens = jnp.zeros((B, G), jnp.int32).at[:, 0].set(y)
    q = None
    if not greedy:
      q = (
        jnp.zeros((B, G, st.logits.shape[-1]), jnp.float32).at[:, 0].set(sampling.probabilities(st.logits, s.sampling))
      )
    if override is None:
      use, source = jnp.zeros((B,), bool), jnp.zeros((B,), jnp.int32)
    else:  # read from the committed sequence alone, before any draw of this round
      o_tokens, o_k, source = override(st.seq, L)
      use = o_k > 0
      source = jnp.where(use, source, 0)
    drafting = active & ~use & confident(st.logits)
    k = drafting.astype(jnp.int32)

    def step(carry):
      j, cache, tokens, q, g, k, drafting, key = carry
      key, kj = jax.random.split(key)
      prev = jax.lax.dynamic_index_in_dim(tokens, j - 1, axis=1, keepdims=False)
      logits, cache, g_new = forward(
        s.draft,
        draft_params,
        prev[:, None],
        (L + j)[:, None],
        cache,
        vocab_size=s.vocab_size,
        features=g[:, None],
        return_features=True,
      )
      logits = logits[:, 0]
      tokens = jax.lax.dynamic_update_index_in_dim(tokens, sampling.sample(kj, logits, s.sampling), j, axis=1)
      if q is not None:
        q = jax.lax.dynamic_update_index_in_dim(q, sampling.probabilities(logits, s.sampling), j, axis=1)
      drafting = drafting & confident(logits)
      k = jnp.where(drafting, j + 1, k)
      return j + 1, cache, tokens, q, g_new[:, 0], k, drafting, key

    carry = (jnp.int32(1), st.draft_cache, tokens, q, st.feature, k, drafting, k_draft)
    if fixed:  # exactly G - 1 calls (a scan shows XLA the trip count)
      carry, _ = jax.lax.scan(lambda c, _: (step(c), None), carry, None, length=G - 1)
    else:  # until no row is drafting
      carry = jax.lax.while_loop(lambda c: (c[0] < G) & jnp.any(c[6]), step, carry)
    calls, draft_cache, tokens, q, _, k, _, _ = carry
    if s.knobs.draft_threshold is None:
      k = jnp.full((B,), G, jnp.int32)
    if override is not None:
      tokens = jnp.where(use[:, None], o_tokens, tokens)
      k = jnp.where(use, o_k, k)
      if q is not None:
        q = jnp.where(use[:, None, None], sampling.point_mass(o_tokens, q.shape[-1]), q)

    verify = jnp.concatenate([cur[:, None], tokens], axis=1)  # [B, G+1]
    p_logits, target_cache, feats = verify_call(
      s, params, verify, L, st.target_cache.rollback(L), k, active, features=True
    )
    if greedy:
      n, nxt = sampling.greedy_accept(tokens, p_logits, k)
    else:
      n, nxt = sampling.rejection_accept(k_accept, tokens, q, sampling.probabilities(p_logits, s.sampling), k)

    emitted = round_tokens(tokens, n, nxt)
    out, taken = commit(st.out, emitted, n + 1, max_new, s.eos_ids)
    length = jnp.where(active, L + 1 + n, L)
    d_logits, g, draft_cache = _catch_up(s, draft_params, draft_cache, emitted, feats, L + 1, length - L)
    # A finished row's catch-up wrote nothing that counts (count 0 keeps its length); keep its old state.
    d_logits = jnp.where(active[:, None], d_logits, st.logits)
    g = jnp.where(active[:, None], g, st.feature)
    trace = st.trace
    if s.trace:
      trace = Trace.write(trace, st.counters.target_calls, active, source=source, k=k, n=n)
    return _State(
      target_cache=target_cache.rollback(length),
      draft_cache=draft_cache,
      length=length,
      seq=extend_sequence(st.seq, emitted, L, active),
      logits=d_logits,
      feature=g,
      out=out,
      counters=st.counters.round(active, drafted=k, accepted=n, taken=taken, target_calls=1, draft_calls=calls),
      key=key,
      trace=trace,
    )

  state = jax.lax.while_loop(lambda st: ~jnp.all(st.out.done), body, state)
  return DecodeResult(out=state.out, counters=state.counters, trace=state.trace)


modes.register(
  Mode(
    name="eagle",
    decode=decode,
    help="an EAGLE-style draft (reads the target's features) proposes gamma tokens, one target call verifies them",
    knobs=SpecKnobs,
    lookahead=lambda k: k.gamma + 1,
    needs_draft=True,
    draft_kind="eagle",
  )
)
