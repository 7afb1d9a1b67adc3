"""Lookup drafting (no draft model) as one compiled call: the draft is copied from the context.

Each round, for every row at once: find the latest earlier occurrence of the row's last n context
tokens (prompt + answer so far, `cur` included), n = `ngram` first, then shorter down to `ngram_min`
(default: `ngram`, only full-length matches); propose the G tokens that followed it. The continuation is copied LZ77-style: when it reaches the end of the
context it goes on from its own start, so a repeating pattern is proposed for all G tokens. One target
call scores [cur, y_1..y_G] and the speculative acceptance rule keeps 0..G of them plus one token:

- greedy: accept y_i while it is the target's argmax (token-identical to greedy `ar`);
- sampling: the proposal is deterministic, q = one-hot(y), so y_i is accepted with probability p_i(y_i)
  and on rejection the next token is drawn from p_i with y_i removed and renormalised (the residual
  max(0, p - q)); after G acceptances the bonus token is drawn from p_{G+1}. Exact.

A row with no match proposes nothing (k = 0): its round is one ordinary decoding step; only real
proposals count as drafted tokens. When no active row has a match the round makes a one-token target
call instead of the G+1-wide one (`lax.cond`), so a prompt set without repeats costs what `ar` costs.

Short matches are poor guesses: on the grounded suite the first proposal was accepted 46% of the time
when every match proposed and 83% when only three-token matches did, and where a wide call costs about
two one-token calls (a CPU) proposing from short matches loses more than it gains. Hence `ngram_min` defaults to `ngram`;
`specjax plan` predicts every `ngram_min` from one traced run (`trace` records each round's match
length and accepted count).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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
  round_tokens,
  start,
)
from specjax.decode.modes import Mode
from specjax.models.kv_cache import KVCache


def lookup(
  seq: Int[Array, "B S"], length: Int[Array, " B"], gamma: int, ngram: int
) -> tuple[Int[Array, "B G"], Int[Array, " B"]]:
  """For each row with context `seq[b, :length[b] + 1]`: the G tokens after the latest earlier
  occurrence of its longest matching suffix, and that suffix's length (0..`ngram`; 0: no match).

  An occurrence ending at index e < length matches n tokens when seq[e - t] == seq[length - t] for
  t < n. The longest n wins, then the latest e; the proposal is seq[e + 1 + (j mod (length - e))].
  """
  S = seq.shape[1]

  def one(row, L):
    e = jnp.arange(S)
    run = jnp.ones((S,), bool)
    score = jnp.zeros((S,), jnp.int32)
    for t in range(ngram):
      run = run & (e - t >= 0) & (L - t >= 0) & (row[jnp.clip(e - t, 0, S - 1)] == row[jnp.maximum(L - t, 0)])
      score = score + run.astype(jnp.int32)
    score = jnp.where(e < L, score, 0)
    best = jnp.argmax(score * S + e)  # longest, then latest
    period = jnp.maximum(L - best, 1)
    idx = best + 1 + jnp.arange(gamma) % period
    return row[jnp.minimum(idx, S - 1)], score[best]

  return jax.vmap(one)(seq, length)


@struct.dataclass
class _State:
  cache: KVCache
  length: Int[Array, " B"]  # committed tokens excluding `cur`
  seq: Int[Array, "B S"]  # the committed sequence, `cur` at index `length`
  out: Output
  counters: Counters
  key: jax.Array
  trace: dict | None = None  # per round: match length m and accepted count n (`DecodeSettings.trace`)


Propose = Callable[[Int[Array, "B S"], Int[Array, " B"]], tuple[Int[Array, "B G"], Int[Array, " B"], Int[Array, " B"]]]


def point_decode(
  s: DecodeSettings, params, prompt: Int[Array, "B P"], prompt_lens, max_new, key, propose: Propose
) -> DecodeResult:
  """The decode loop of every mode whose proposals are deterministic (q = one-hot): lookup, datastore.

  Each round `propose(seq, length)` gives each row's proposals [B, G], how many of them are real (k in
  0..G; 0: none) and the match length the trace records; one target call verifies [cur, y_1..y_k] (a
  one-token call when no active row proposes) and the acceptance rule of the module docstring keeps
  0..k of them plus one token. Exact for any `propose` that reads only the committed sequence.
  """
  B, G = prompt.shape[0], s.knobs.gamma
  key, k0 = jax.random.split(key)
  cache, cur, out = start(s, params, prompt, prompt_lens, max_new, k0, slack=G + 1)
  state = _State(
    cache=cache,
    length=prompt_lens.astype(jnp.int32),
    seq=init_sequence(prompt, prompt_lens, cur, s.cache_size),
    out=out,
    counters=Counters.init(B, G),
    key=key,
    trace=Trace.init(B, s.max_new_tokens, m=((), jnp.int32), n=((), jnp.int32)) if s.trace else None,
  )

  def body(st: _State) -> _State:
    active = ~st.out.done
    key, k_accept = jax.random.split(st.key)
    L = st.length
    cur = jnp.take_along_axis(st.seq, L[:, None], axis=1)[:, 0]
    tokens, k, match = propose(st.seq, L)
    k = k.astype(jnp.int32)
    cache = st.cache.rollback(L)

    def wide(cache):
      verify = jnp.concatenate([cur[:, None], tokens], axis=1)  # [B, G+1]
      pos = L[:, None] + jnp.arange(G + 1, dtype=jnp.int32)[None, :]
      return forward(s.target, params, verify, pos, cache, vocab_size=s.vocab_size)

    def narrow(cache):  # nothing to verify: one token, its logits stand for every position
      logits, cache = forward(s.target, params, cur[:, None], L[:, None], cache, vocab_size=s.vocab_size)
      return jnp.broadcast_to(logits, (B, G + 1, logits.shape[-1])), cache

    logits, cache = jax.lax.cond(jnp.any((k > 0) & active), wide, narrow, cache)
    if s.sampling.greedy:
      n, nxt = sampling.greedy_accept(tokens, logits, k)
    else:
      p = sampling.probabilities(logits, s.sampling)
      n, nxt = sampling.rejection_accept(k_accept, tokens, sampling.point_mass(tokens, p.shape[-1]), p, k)
    emitted = round_tokens(tokens, n, nxt)
    out, taken = commit(st.out, emitted, n + 1, max_new, s.eos_ids)
    length = jnp.where(active, L + 1 + n, L)
    trace = st.trace
    if s.trace:
      trace = Trace.write(trace, st.counters.target_calls, active, m=match, n=n)
    return _State(
      cache=cache.rollback(length),
      length=length,
      seq=extend_sequence(st.seq, emitted, L, active),
      out=out,
      counters=st.counters.round(active, drafted=k, accepted=n, taken=taken),
      key=key,
      trace=trace,
    )

  state = jax.lax.while_loop(lambda st: ~jnp.all(st.out.done), body, state)
  return DecodeResult(out=state.out, counters=state.counters, trace=state.trace)


@dataclasses.dataclass(frozen=True)
class LookupKnobs:
  gamma: int = modes.gamma()
  ngram: int = modes.ngram()
  ngram_min: int | None = modes.ngram_min()


def decode(
  s: DecodeSettings, params, draft_params, prompt: Int[Array, "B P"], prompt_lens, max_new, key
) -> DecodeResult:
  """Lookup decoding with at most `s.knobs.gamma` proposals per round; see the module docstring."""
  del draft_params

  def propose(seq, length):
    tokens, match = lookup(seq, length, s.knobs.gamma, s.knobs.ngram)
    return tokens, jnp.where(match >= s.knobs.ngram_min, s.knobs.gamma, 0), match

  return point_decode(s, params, prompt, prompt_lens, max_new, key, propose)


modes.register(
  Mode(
    name="lookup",
    decode=decode,
    help="no draft model: propose the continuation of the latest earlier occurrence of the last n tokens",
    knobs=LookupKnobs,
    lookahead=lambda k: k.gamma + 1,
    configure=modes.complete_ngram,
    traced=True,
    speed_model="match",
  )
)
