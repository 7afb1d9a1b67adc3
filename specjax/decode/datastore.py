"""Datastore drafting (REST / SAM-decoding style, no draft model) as one compiled call.

Each round, for every row at once: binary-search the datastore's suffix array (`specjax.data.datastore`,
a fixed log2 N + 1 steps) for the row's last n context tokens, n = `ngram` first, then shorter down to
`ngram_min`; the longest n that occurs with at least one token after it proposes up to G tokens that
followed one such occurrence, stopping at the end of its document. Which occurrence: one followed by
the most frequent next token, approximately (`frequent_slot`: the next tokens of a match range are
sorted, so 4 evenly spaced probes and two binary searches each measure the blocks of the likely
candidates). Measured on held-out stdlib prose (a word-level store of 0.27M tokens, ngram 3..1, gamma 4,
matched continuations scored against the real text), tokens accepted per matched round: the first
occurrence of the range 0.80, its middle 0.83, the 4 probes 0.87, the exact most frequent 0.88.

One target call verifies [cur, y_1..y_k] with the acceptance rule of lookup drafting
(`specjax.decode.lookup.point_decode`: q = one-hot, exact; greedy is token-identical to `ar`); see
docs/algorithms.md#datastore-drafting.

`combined` runs both retrievals every round (`combined`): a row proposes the lookup match in its own
context (`specjax.decode.lookup.lookup`, gamma tokens) or the datastore match, whichever is longer (the
context on a tie: the row's own text); the proposal is still a function of the committed sequence, so
the acceptance is the same and as exact. `eagle-retrieval` (`specjax.decode.hybrid`) adds an EAGLE
draft for the rows where neither match is long enough.

The datastore arrays are traced arguments of the compiled decoder (put on the device once per Engine,
passed where draft modes get the draft's parameters), never constants of the program: a new datastore
of the same size reuses the executable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Int

from specjax.data.datastore import SEPARATOR
from specjax.decode import modes
from specjax.decode.common import DecodeResult, DecodeSettings
from specjax.decode.lookup import LookupKnobs, lookup, point_decode
from specjax.decode.modes import Mode

PROBES = 4  # slots of a match range whose next-token blocks are measured (`frequent_slot`)
PAST_END = SEPARATOR - 1  # what a suffix reads past the array's end: below every token and the separator


@struct.dataclass
class Store:
  """The datastore on the device: tokens [N] int32 (SEPARATOR between documents) and its suffix array [N]."""

  tokens: Int[Array, " N"]
  suffix_array: Int[Array, " N"]


def _read(store: Store, start: Int[Array, "*b"], width: int) -> Int[Array, "*b W"]:
  """tokens[start : start + width], PAST_END beyond the array."""
  N = store.tokens.shape[0]
  idx = start[..., None] + jnp.arange(width)
  return jnp.where(idx < N, store.tokens[jnp.clip(idx, 0, N - 1)], PAST_END)


def _below(store: Store, slot, query: Int[Array, " n"], strict: bool) -> Array:
  """Whether the suffix at `slot` of the suffix array, cut to len(query) tokens, is < query (`strict`)
  or <= query."""
  s = _read(store, store.suffix_array[slot], query.shape[0])
  diff = s != query
  first = jnp.argmax(diff)
  less = jnp.any(diff) & (s[first] < query[first])
  return less if strict else less | ~jnp.any(diff)


def match_range(
  store: Store, query: Int[Array, " n"], continued: bool = False
) -> tuple[Int[Array, ""], Int[Array, ""]]:
  """[lo, hi): the slots of the suffix array whose suffixes start with `query` (lo == hi: none), by two
  binary searches of a fixed N.bit_length() steps each. With `continued` only those where a token
  follows the query (not a document's end): they sort after the others, from the first suffix that is
  not below query + [0]."""
  N = store.suffix_array.shape[0]

  def bound(q, strict):
    def step(_, lh):
      lo, hi = lh
      mid = (lo + hi) // 2
      go_right = (lo < hi) & _below(store, jnp.minimum(mid, N - 1), q, strict)
      return jnp.where(go_right, mid + 1, lo), jnp.where((lo < hi) & ~go_right, mid, hi)

    return jax.lax.fori_loop(0, N.bit_length(), step, (jnp.int32(0), jnp.int32(N)))[0]

  first = jnp.concatenate([query, jnp.zeros((1,), query.dtype)]) if continued else query
  return bound(first, True), bound(query, False)


def frequent_slot(store: Store, query: Int[Array, " n"], lo, hi) -> Int[Array, ""]:
  """A slot in [lo, hi) (the occurrences of `query` that have a next token) whose next token is the most
  frequent one, approximately: the next tokens of the range are sorted, so PROBES evenly spaced slots
  hit every token that follows more than 1/PROBES of the occurrences; each probe's block (the slots
  with its next token) is found by two more binary searches, and the middle of the largest wins."""
  N = store.suffix_array.shape[0]
  probes = lo + ((2 * jnp.arange(PROBES) + 1) * (hi - lo)) // (2 * PROBES)
  after = _read(store, store.suffix_array[jnp.clip(probes, 0, N - 1)] + query.shape[0], 1)  # [PROBES, 1]
  longer = jnp.concatenate([jnp.broadcast_to(query, (PROBES, query.shape[0])), after], axis=1)
  block_lo, block_hi = jax.vmap(lambda q: match_range(store, q))(longer)
  best = jnp.argmax(block_hi - block_lo)
  return jnp.clip(block_lo[best] + jnp.maximum(block_hi[best] - block_lo[best] - 1, 0) // 2, 0, N - 1)


def retrieve(
  store: Store, seq: Int[Array, "B S"], length: Int[Array, " B"], gamma: int, ngram: int, ngram_min: int
) -> tuple[Int[Array, "B G"], Int[Array, " B"], Int[Array, " B"]]:
  """For each row with context `seq[b, :length[b] + 1]`: up to G proposals (what follows an occurrence
  of its longest suffix of n in ngram..ngram_min tokens found in the store, one whose next token is the
  most frequent: `frequent_slot`), how many are real (k, 0..G: they stop at a document's end) and that
  n (0: no proposal)."""
  S = seq.shape[1]

  def one(row, L):
    tokens, k, m = jnp.zeros((gamma,), jnp.int32), jnp.int32(0), jnp.int32(0)
    for n in range(ngram_min, ngram + 1):  # later (longer) matches overwrite shorter ones
      query = row[jnp.clip(L - n + 1 + jnp.arange(n), 0, S - 1)]
      lo, hi = match_range(store, query, continued=True)
      nxt = _read(store, store.suffix_array[frequent_slot(store, query, lo, hi)] + n, gamma)
      real = jnp.cumprod(nxt >= 0).sum().astype(jnp.int32)
      ok = (L + 1 >= n) & (hi > lo) & (real > 0)
      tokens = jnp.where(ok, jnp.maximum(nxt, 0), tokens)
      k, m = jnp.where(ok, real, k), jnp.where(ok, n, m)
    return tokens, k, m

  return jax.vmap(one)(seq, length)


def decode(
  s: DecodeSettings, params, store: Store, prompt: Int[Array, "B P"], prompt_lens, max_new, key
) -> DecodeResult:
  """Datastore decoding with at most `s.knobs.gamma` proposals per round; see the module docstring."""

  def propose(seq, length):
    return retrieve(store, seq, length, s.knobs.gamma, s.knobs.ngram, s.knobs.ngram_min)

  return point_decode(s, params, prompt, prompt_lens, max_new, key, propose)


def combined(
  store: Store, seq: Int[Array, "B S"], length: Int[Array, " B"], gamma: int, ngram: int, ngram_min: int
) -> tuple[Int[Array, "B G"], Int[Array, " B"], Int[Array, " B"], Array]:
  """Per row the longer of its lookup match in its own context (`lookup`, G proposals) and its datastore
  match (`retrieve`), the context on a tie (the row's own text): the proposals [B, G], how many are real
  (k; 0: neither match is `ngram_min` long), the match length and whether the context's match won."""
  d_tokens, d_k, d_m = retrieve(store, seq, length, gamma, ngram, ngram_min)
  c_tokens, c_m = lookup(seq, length, gamma, ngram)
  context = (c_m >= ngram_min) & (c_m >= d_m)
  tokens = jnp.where(context[:, None], c_tokens, d_tokens)
  return tokens, jnp.where(context, gamma, d_k), jnp.where(context, c_m, d_m), context


def decode_combined(
  s: DecodeSettings, params, store: Store, prompt: Int[Array, "B P"], prompt_lens, max_new, key
) -> DecodeResult:
  """Per row the longer of the lookup match and the datastore match proposes; see the module docstring."""

  def propose(seq, length):
    return combined(store, seq, length, s.knobs.gamma, s.knobs.ngram, s.knobs.ngram_min)[:3]

  return point_decode(s, params, prompt, prompt_lens, max_new, key, propose)


def _mode(name: str, decode, help: str, speed_model: str | None) -> Mode:
  return Mode(
    name=name,
    decode=decode,
    help=help,
    knobs=LookupKnobs,  # the same knobs as lookup: gamma, ngram, ngram_min
    lookahead=lambda k: k.gamma + 1,
    configure=modes.complete_ngram,
    needs_datastore=True,
    traced=True,
    speed_model=speed_model,
  )


modes.register(
  _mode(
    "datastore",
    decode,
    "no draft model: propose what followed the last n tokens in a datastore of the target's answers",
    "match",  # the planner replays its traces as lookup's
  )
)
modes.register(
  _mode(
    "combined",
    decode_combined,
    "datastore and lookup: per row the longer match, in the context or the datastore, proposes",
    None,
  )
)
