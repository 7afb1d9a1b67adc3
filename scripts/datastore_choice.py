"""Which occurrence of a datastore match to copy: measured on held-out prose.

A word-level datastore of 90% of the standard library's prose (`specjax.data.default_corpus`); at random
positions of the other 10% the last `ngram` words are looked up (longest match first, down to one word)
and the continuation of one occurrence is compared with the real next words. Printed per choice: how
often its first proposal is right and how many of its gamma proposals would be accepted per matched
round (the leading ones that equal the real text). Choices: the first occurrence of the suffix-array
range, its middle, the exact most frequent next token, and what the decoder does (`retrieve`).

    python scripts/datastore_choice.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from specjax.data.datastore import from_tokens, join_documents
from specjax.data.default_corpus import documents
from specjax.decode.datastore import Store, match_range, retrieve

GAMMA, NGRAM, POSITIONS = 4, 3, 3000


def accepted(proposal, truth) -> int:
  n = 0
  for a, b in zip(proposal, truth, strict=False):
    if a != b:
      break
    n += 1
  return n


def main() -> None:
  vocab: dict[str, int] = {}
  ids = [[vocab.setdefault(w, len(vocab)) for w in d.lower().split()] for d in documents()]
  rng = np.random.default_rng(0)
  perm = rng.permutation(len(ids))
  held, train = [ids[i] for i in perm[: len(ids) // 10]], [ids[i] for i in perm[len(ids) // 10 :]]
  ds = from_tokens(join_documents(train), {"vocab_size": len(vocab), "vocab_sha256": "words"})
  store = Store(tokens=jnp.asarray(ds.tokens), suffix_array=jnp.asarray(ds.suffix_array))
  queries, truths = [], []
  while len(queries) < POSITIONS:
    d = held[rng.integers(len(held))]
    if len(d) >= NGRAM + GAMMA + 1:
      p = int(rng.integers(NGRAM - 1, len(d) - GAMMA))
      queries.append(d[p - NGRAM + 1 : p + 1])
      truths.append(d[p + 1 : p + 1 + GAMMA])
  queries = np.array(queries)
  tok, sa = ds.tokens, ds.suffix_array

  def continuation(pos: int) -> list[int]:
    out = []
    for t in tok[pos : pos + GAMMA]:
      if t < 0:
        break
      out.append(int(t))
    return out

  search = jax.jit(jax.vmap(lambda q: match_range(store, q, continued=True)))
  ranges: dict[int, tuple[int, int, int]] = {}
  for n in range(NGRAM, 0, -1):  # the longest match wins
    lo, hi = (np.asarray(x) for x in search(jnp.asarray(queries[:, NGRAM - n :], jnp.int32)))
    for i in range(len(queries)):
      if i not in ranges and hi[i] > lo[i]:
        ranges[i] = (n, int(lo[i]), int(hi[i]))
  scores: dict[str, list[tuple[bool, int]]] = {"first": [], "middle": [], "most frequent": []}
  for i, (n, lo, hi) in ranges.items():
    nxt = tok[sa[lo:hi] + n]
    _, first, counts = np.unique(nxt, return_index=True, return_counts=True)
    j = int(np.argmax(counts))
    slots = {"first": lo, "middle": lo + (hi - lo - 1) // 2, "most frequent": lo + first[j] + (counts[j] - 1) // 2}
    for name, slot in slots.items():
      a = accepted(continuation(int(sa[slot]) + n), truths[i])
      scores[name].append((a > 0, a))
  lengths = jnp.full((len(queries),), NGRAM - 1)
  toks, k, _ = jax.jit(lambda q: retrieve(store, q, lengths, GAMMA, NGRAM, 1))(jnp.asarray(queries, jnp.int32))
  toks, k = np.asarray(toks), np.asarray(k)
  scores["retrieve (4 probes)"] = [
    (a > 0, a) for a in (accepted(toks[i, : k[i]], truths[i]) for i in range(len(queries)) if k[i])
  ]
  print(f"{len(ds.tokens)} store tokens, {len(queries)} held-out positions, {len(ranges)} matched; gamma {GAMMA}")
  for name, s in scores.items():
    s = np.array(s)
    print(f"{name:>20}: first proposal right {s[:, 0].mean():.3f}, accepted per matched round {s[:, 1].mean():.3f}")


if __name__ == "__main__":
  main()
