"""Jacobi and TR-Jacobi decoding (greedy, target only), each one compiled `lax.while_loop`.

docs/algorithms.md#jacobi-and-tr-jacobi; the TR-Jacobi details follow the official MSN inference code
(github wyxstriker/MakeSomeNoiseInference, model/noise_forward.py).

Jacobi (window W): feed [cur, g_1..g_W] causally; with a_j = argmax after input j, accept the longest
prefix with g_i == a_{i-1}, emit those n tokens plus a_n; the next guesses are a_{n+1}..a_W, topped
up with random context tokens (cold start: W random context tokens).

TR-Jacobi: candidates per depth d = 1..D are the top-k tokens of the previous forward's logits along
the best path beyond the accepted part, plus a retrieval chain (the last 3 context tokens matched
against earlier context, earliest longest match, copy the next D tokens); missing candidates are
random context tokens. The static tree (`TokenTree`, default 5 retrieval + 63 Medusa nodes) is
verified in one forward with an ancestor mask, node position = committed length + depth. The
root-to-leaf path with the most consecutive matches (first on ties) is accepted; padded path slots
never match. Its nodes' KV entries are compacted behind the prefix; next root = argmax at its last
accepted node. Both are lossless w.r.t. the target's own greedy decoding.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Bool, Int

from specjax.decode import modes, sampling
from specjax.decode.common import (
  Counters,
  DecodeResult,
  DecodeSettings,
  Output,
  Trace,
  commit,
  forward,
  random_context_tokens,
  round_tokens,
  start,
)
from specjax.decode.modes import Mode
from specjax.decode.tree import TokenTree
from specjax.errors import SpecjaxError
from specjax.models.kv_cache import KVCache

NGRAM = 3  # retrieval matches the last (up to) 3 context tokens


@struct.dataclass
class _State:
  cache: KVCache
  length: Int[Array, " B"]  # committed tokens excluding `cur`
  cur: Int[Array, " B"]
  seq: Int[Array, "B S"]  # the committed sequence: seq[b, :length[b] + 1] (prompt, answer, cur)
  guess: Array  # Jacobi: [B, W] guesses; TR-Jacobi: [B, D, K+1] candidates (-1 = missing)
  out: Output
  counters: Counters
  key: jax.Array
  trace: dict | None = None  # TR-Jacobi with `s.trace`: which tree nodes matched, per round


def _start(s: DecodeSettings, params, prompt, prompt_lens, max_new, key, slack: int, positions: int):
  """Prefill, first token, and the sequence buffer; returns (state without guesses, key for guesses)."""
  if not s.sampling.greedy:
    raise SpecjaxError("Jacobi and TR-Jacobi decoding are greedy only; use --temperature 0")
  B, P = prompt.shape
  key, k0, k1 = jax.random.split(key, 3)
  cache, cur, out = start(s, params, prompt, prompt_lens, max_new, k1, slack=slack)
  seq = jnp.zeros((B, s.cache_size), jnp.int32).at[:, :P].set(prompt)
  seq = jax.vmap(lambda row, t, i: row.at[i].set(t))(seq, cur, prompt_lens)
  state = _State(
    cache=cache,
    length=prompt_lens.astype(jnp.int32),
    cur=cur,
    seq=seq,
    guess=None,
    out=out,
    counters=Counters.init(B, positions),
    key=key,
  )
  return state, k0


def _advance(st: _State, cache: KVCache, emitted, n, max_new, eos_ids, drafted: int, guess) -> _State:
  """Commit `emitted[:, :n+1]` (n accepted guesses and the new `cur`), update the sequence buffer."""
  active = ~st.out.done
  out, taken = commit(st.out, emitted, n + 1, max_new, eos_ids)
  length = jnp.where(active, st.length + 1 + n, st.length)
  cur = jnp.where(active, jnp.take_along_axis(emitted, n[:, None], axis=1)[:, 0], st.cur)
  seq = jax.vmap(lambda row, e, i: jax.lax.dynamic_update_slice(row, e, (i,)))(st.seq, emitted, st.length + 1)
  seq = jnp.where(active[:, None], seq, st.seq)
  return _State(
    cache=cache.rollback(length),
    length=length,
    cur=cur,
    seq=seq,
    guess=jnp.where(active.reshape((-1,) + (1,) * (guess.ndim - 1)), guess, st.guess),
    out=out,
    counters=st.counters.round(active, drafted=drafted, accepted=n, taken=taken),
    key=st.key,
    trace=st.trace,
  )


def decode_jacobi(
  s: DecodeSettings, params, draft_params, prompt: Int[Array, "B P"], prompt_lens, max_new, key
) -> DecodeResult:
  """Jacobi decoding with window `s.knobs.window`."""
  del draft_params
  W = s.knobs.window
  state, k_guess = _start(s, params, prompt, prompt_lens, max_new, key, W + 1, W)
  state = state.replace(guess=random_context_tokens(k_guess, state.seq, state.length, (W,)))

  def body(st: _State) -> _State:
    key, k_fill = jax.random.split(st.key)
    L = st.length
    toks = jnp.concatenate([st.cur[:, None], st.guess], axis=1)  # [B, W+1]
    pos = L[:, None] + jnp.arange(W + 1, dtype=jnp.int32)[None, :]
    logits, cache = forward(s.target, params, toks, pos, st.cache.rollback(L), vocab_size=s.vocab_size)
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B, W+1]
    n = sampling.leading_true(st.guess == best[:, :-1])
    nxt = jnp.take_along_axis(best, n[:, None], axis=1)  # a_n [B, 1]
    emitted = round_tokens(st.guess, n, nxt[:, 0])  # g_1..g_n, then a_n at index n
    idx = n[:, None] + 1 + jnp.arange(W)[None, :]
    shifted = jnp.take_along_axis(best, jnp.minimum(idx, W), axis=1)
    new_guess = jnp.where(idx <= W, shifted, random_context_tokens(k_fill, st.seq, L, (W,)))
    return _advance(st.replace(key=key), cache, emitted, n, max_new, s.eos_ids, W, new_guess)

  state = jax.lax.while_loop(lambda st: ~jnp.all(st.out.done), body, state)
  return DecodeResult(out=state.out, counters=state.counters)


def retrieval_chain(seq: Int[Array, "B S"], lengths: Int[Array, " B"], count: int) -> Int[Array, "B C"]:
  """For each row with context seq[b, :lengths[b]]: find the earliest window seq[i:i+3], i + 3 <=
  lengths - 3, with the longest match to a suffix of the last 3 tokens, and return the `count` tokens
  after it (-1 where the context runs out or no window exists)."""
  S = seq.shape[1]

  def one(row, n):
    i = jnp.arange(S)
    tail = jax.lax.dynamic_slice(row, (jnp.maximum(n - NGRAM, 0),), (NGRAM,))
    match = jnp.ones((S,), jnp.int32)
    score = jnp.zeros((S,), jnp.int32)
    for t in reversed(range(NGRAM)):  # count matching tokens from the end of the n-gram
      match = match * (row[jnp.minimum(i + t, S - 1)] == tail[t]).astype(jnp.int32)
      score = score + match
    valid = i + 2 * NGRAM <= n
    score = jnp.where(valid, score, -1)
    start = jnp.argmax(score) + NGRAM
    idx = start + jnp.arange(count)
    ok = valid.any() & (idx < n)
    return jnp.where(ok, row[jnp.minimum(idx, S - 1)], -1)

  return jax.vmap(one)(seq, lengths)


def best_path(
  toks: Int[Array, "B N+1"], best: Int[Array, "B N+1"], leaf_paths: Int[Array, "P D+1"], real: Bool[Array, "P D+1"]
) -> tuple[Int[Array, " B"], Int[Array, " B"]]:
  """Accepted length and index of the root-to-leaf path with the most consecutive matches
  (node token == argmax at its parent; the first such path on ties). Padded slots (`real` False)
  never match, whatever tokens sit at the index they point to."""
  path_in, path_out = toks[:, leaf_paths], best[:, leaf_paths]  # [B, P, D+1]
  match = (path_in[..., 1:] == path_out[..., :-1]) & real[None, :, 1:]
  reward = sampling.leading_true(match)  # [B, P]
  return jnp.max(reward, axis=1).astype(jnp.int32), jnp.argmax(reward, axis=1)


def decode_tree(
  s: DecodeSettings, params, draft_params, prompt: Int[Array, "B P"], prompt_lens, max_new, key
) -> DecodeResult:
  """TR-Jacobi decoding over the static tree `s.knobs.tree`."""
  del draft_params
  tree = s.knobs.tree
  a = tree.arrays
  K, D, N = tree.top_k, tree.depth, tree.num_nodes
  depth, column = jnp.asarray(a["depth"]), jnp.asarray(a["column"])
  leaf_paths, real = jnp.asarray(a["leaf_paths"]), jnp.asarray(a["real"])
  state, _ = _start(s, params, prompt, prompt_lens, max_new, key, D + 1, D)
  B = prompt.shape[0]

  def with_retrieval(cand, seq, length):
    if not tree.has_retrieval:
      return cand
    return cand.at[:, :, K].set(retrieval_chain(seq, length + 1, D))

  cand = with_retrieval(jnp.full((B, D, K + 1), -1, jnp.int32), state.seq, state.length)
  state = state.replace(guess=cand)
  if s.trace:
    state = state.replace(trace=Trace.init(B, s.max_new_tokens, ok=((N,), bool)))
  parent = jnp.asarray(a["parent"])
  ancestors = jnp.asarray(a["mask"][1:, 1:])  # [N, N]: node j is node i's ancestor or itself
  mask = jnp.broadcast_to(jnp.asarray(a["mask"]), (B, N + 1, N + 1))
  node_pos = jnp.concatenate([jnp.zeros((1,), jnp.int32), depth])

  def body(st: _State) -> _State:
    key, k_fill = jax.random.split(st.key)
    L = st.length
    cand = jnp.where(st.guess >= 0, st.guess, random_context_tokens(k_fill, st.seq, L, (D, K + 1)))
    nodes = cand[:, depth - 1, column]  # [B, N]
    toks = jnp.concatenate([st.cur[:, None], nodes], axis=1)  # [B, N+1]
    pos = L[:, None] + node_pos[None, :]
    logits, cache = forward(s.target, params, toks, pos, st.cache.rollback(L), mask, vocab_size=s.vocab_size)
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B, N+1]

    n, pick = best_path(toks, best, leaf_paths, real)
    bpath = leaf_paths[pick]  # [B, D+1] input indices, 0 = root
    breal = real[pick]
    nxt = jnp.take_along_axis(best, jnp.take_along_axis(bpath, n[:, None], axis=1), axis=1)[:, 0]
    emitted = round_tokens(jnp.take_along_axis(toks, bpath[:, 1:], axis=1), n, nxt)  # the path's tokens, then nxt

    # Accepted nodes sit at slots L + index; gather them to L + 1 .. L + n.
    cache = cache.compact(L + 1, L[:, None] + bpath[:, 1:], n)

    # Next candidates: top-k of the logits at the path nodes after the accepted ones.
    j = n[:, None] + 1 + jnp.arange(D)[None, :]  # [B, D] index into the path
    jc = jnp.minimum(j, D)
    ok = (j <= D) & jnp.take_along_axis(breal, jc, axis=1)
    src = jnp.take_along_axis(bpath, jc, axis=1)
    top = jax.lax.top_k(jnp.take_along_axis(logits, src[..., None], axis=1), K)[1].astype(jnp.int32)
    new_cand = jnp.full((B, D, K + 1), -1, jnp.int32).at[:, :, :K].set(jnp.where(ok[..., None], top, -1))

    nst = _advance(st.replace(key=key), cache, emitted, n, max_new, s.eos_ids, D, new_cand)
    if s.trace:  # node i "ok": its token and every ancestor's equal the argmax at their parent
      match = nodes == jnp.take(best, parent, axis=1)  # [B, N]
      ok = ~jnp.any(ancestors[None] & ~match[:, None, :], axis=-1)
      nst = nst.replace(trace=Trace.write(st.trace, st.counters.target_calls, ~st.out.done, ok=ok))
    return nst.replace(guess=with_retrieval(nst.guess, nst.seq, nst.length))

  state = jax.lax.while_loop(lambda st: ~jnp.all(st.out.done), body, state)
  return DecodeResult(out=state.out, counters=state.counters, trace=state.trace)


@dataclasses.dataclass(frozen=True)
class JacobiKnobs:
  window: int = modes.knob(
    5,
    "Jacobi window: guesses per call",
    parse=int,
    sweep=(5,),  # `specjax bench --window 1,2,3,4` runs one window after another beside one `ar`
    check=lambda w: w >= 1,
    rule="the Jacobi window must be >= 1",
    short="W",
  )


@dataclasses.dataclass(frozen=True)
class TreeKnobs:
  tree: TokenTree | None = modes.knob(None, "the TR-Jacobi token tree (None: `TokenTree.default()`)")


def _default_tree(k: TreeKnobs) -> TreeKnobs:
  return k if k.tree is not None else TreeKnobs(tree=TokenTree.default())


modes.register(
  Mode(
    name="jacobi",
    decode=decode_jacobi,
    help="target only: the last token plus W guesses per call, the correct prefix kept (greedy)",
    knobs=JacobiKnobs,
    lookahead=lambda k: k.window + 1,
    greedy_only=True,
  )
)
modes.register(
  Mode(
    name="tr-jacobi",
    decode=decode_tree,
    help="target only: a token tree (top-k candidates + a retrieval chain) per call, tree attention (greedy)",
    knobs=TreeKnobs,
    lookahead=lambda k: k.tree.num_nodes + 1,
    configure=_default_tree,
    greedy_only=True,
    traced=True,
    speed_model="tree",
  )
)
