"""`eagle-retrieval`: an EAGLE draft and retrieval as the sources of one compiled loop (SAM-decoding style).

Each round, for every row at once, the proposal comes from one of three sources:

- the row's own context: the lookup match (`specjax.decode.lookup.lookup`, gamma tokens);
- the datastore: its match (`specjax.decode.datastore.retrieve`, up to gamma tokens), only when the
  engine has a datastore; with both, the longer match wins, the context on a tie (`combined`'s rule);
- the EAGLE draft: its own proposals, with its distribution q (and its dynamic length with
  `draft_threshold`).

A row whose longest retrieval match is at least `ngram_min` tokens long (default `ngram`) proposes the
retrieved continuation as a point mass (q = one-hot), every other row the draft's tokens. The loop is
eagle's (`specjax.decode.eagle.decode` with this rule as its `override`): retrieving rows do not keep the
draft loop going, so a round where every row retrieves costs the catch-up draft call and the verification,
and the catch-up writes the true features of whatever was committed, so the draft cache never depends on
the source. The source is a function of the committed sequence (and the fixed datastore) only, never of
the draft's draws, so each round is an exact speculative round of its row's source and sampling draws from
the target's distribution; greedy output is token-identical to `ar`.

With `trace` each round records its `source` (0 the draft, 1 the context, 2 the datastore: `SOURCES`), its
proposal count k and the accepted n; `source_rounds` counts the rounds of each source, and `specjax plan`
replays every gamma from one traced run (`specjax.eval.plan.hybrid_round`).

A mode of its own rather than a knob of `combined`: combined's loop (`specjax.decode.lookup.point_decode`)
has no draft and needs a datastore, this one is eagle's loop, whose draft cache bookkeeping it must keep,
with the datastore optional; the retrieval rule itself is shared (`specjax.decode.datastore.combined`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from specjax.decode import eagle, modes
from specjax.decode.common import DecodeResult, DecodeSettings
from specjax.decode.datastore import Store, combined
from specjax.decode.lookup import lookup
from specjax.decode.modes import Mode
from specjax.decode.speculative import SpecLookupKnobs

SOURCES = ("draft", "context", "datastore")  # the trace's `source` values, by index


def retrieval(
  store: Store | None, seq: Int[Array, "B S"], length: Int[Array, " B"], gamma: int, ngram: int, ngram_min: int
) -> tuple[Int[Array, "B G"], Int[Array, " B"], Int[Array, " B"]]:
  """Per row with context `seq[b, :length[b] + 1]`: the retrieved proposals [B, G], how many are real (k:
  0 where no match of the context, or of the datastore when there is one, is `ngram_min` long) and their
  source (an index of `SOURCES`; 0 where k is 0)."""
  if store is None:
    tokens, m = lookup(seq, length, gamma, ngram)
    found = m >= ngram_min
    return tokens, jnp.where(found, gamma, 0), found.astype(jnp.int32)
  tokens, k, _, context = combined(store, seq, length, gamma, ngram, ngram_min)
  return tokens, k, jnp.where(k > 0, jnp.where(context, 1, 2), 0)


def decode(s: DecodeSettings, params, aids, prompt: Int[Array, "B P"], prompt_lens, max_new, key) -> DecodeResult:
  """EAGLE decoding whose rows propose a retrieved continuation when they have one; `aids` is the pair
  (the draft's parameters, the datastore's arrays or None). See the module docstring."""
  draft_params, store = aids
  k = s.knobs

  def override(seq, length):
    return retrieval(store, seq, length, k.gamma, k.ngram, k.ngram_min)

  return eagle.decode(s, params, draft_params, prompt, prompt_lens, max_new, key, override=override)


def source_rounds(traces: list[dict[str, np.ndarray]]) -> dict[str, int]:
  """How many rounds (row rounds, over every traced batch) proposed from each source."""
  counts = np.zeros(len(SOURCES), np.int64)
  for tr in traces:
    counts += np.bincount(tr["source"][tr["active"]], minlength=len(SOURCES))[: len(SOURCES)]
  return {name: int(c) for name, c in zip(SOURCES, counts, strict=True)}


modes.register(
  Mode(
    name="eagle-retrieval",
    decode=decode,
    help="eagle, but a row with a long enough lookup or datastore match proposes the retrieved continuation",
    knobs=SpecLookupKnobs,  # gamma, draft_threshold, ngram, ngram_min
    lookahead=lambda k: k.gamma + 1,
    configure=modes.complete_ngram,
    needs_draft=True,
    draft_kind="eagle",
    reads_datastore=True,
    traced=True,
    speed_model="hybrid",
  )
)
