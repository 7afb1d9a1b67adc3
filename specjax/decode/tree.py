"""Static token trees for TR-Jacobi (tree verification in one forward).

A tree is data: a list of paths. A path (i_1, ..., i_d) is the node at depth d reached by taking, at
each depth t, candidate number i_t of that depth's candidate list (Medusa's convention: candidates are
shared across branches, a node's token depends only on its depth and its last index). Index `top_k`
(one past the top-k candidates) names the retrieval candidate of that depth, so the retrieval chain
is the paths (k,), (k, k), (k, k, k), ... Every prefix of a path must be a node too.

`TokenTree` is frozen and hashable (it sits on the static decoder settings); the arrays the decoder
needs are derived from it as numpy constants.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from specjax.errors import SpecjaxError

# Medusa's "mc_sim_7b_63" sparse tree over top-10 candidates (github FasterDecoding/Medusa,
# medusa/model/medusa_choices.py), in the order the MSN inference code lists it.
MC_SIM_7B_63: tuple[tuple[int, ...], ...] = (
  (0,), (0, 0), (1,), (0, 1), (2,), (0, 0, 0), (1, 0), (0, 2), (3,), (0, 3), (4,), (0, 4), (2, 0), (0, 5),
  (0, 0, 1), (5,), (0, 6), (6,), (0, 7), (0, 1, 0), (1, 1), (7,), (0, 8), (0, 0, 2), (3, 0), (0, 9), (8,),
  (9,), (1, 0, 0), (0, 2, 0), (1, 2), (0, 0, 3), (4, 0), (2, 1), (0, 0, 4), (0, 0, 5), (0, 0, 0, 0),
  (0, 1, 1), (0, 0, 6), (0, 3, 0), (5, 0), (1, 3), (0, 0, 7), (0, 0, 8), (0, 0, 9), (6, 0), (0, 4, 0),
  (1, 4), (7, 0), (0, 1, 2), (2, 0, 0), (3, 1), (2, 2), (8, 0), (0, 5, 0), (1, 5), (1, 0, 1), (0, 2, 1),
  (9, 0), (0, 6, 0), (0, 0, 0, 1), (1, 6), (0, 7, 0),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TokenTree:
  """A static token tree: `paths` over `top_k` candidates per depth (index `top_k` = retrieval)."""

  paths: tuple[tuple[int, ...], ...]
  top_k: int = 10

  def __post_init__(self):
    paths = tuple(tuple(int(i) for i in p) for p in self.paths)
    object.__setattr__(self, "paths", paths)
    if not paths:
      raise SpecjaxError("a token tree needs at least one path")
    if len(set(paths)) != len(paths):
      raise SpecjaxError("a token tree lists the same path twice")
    known = set(paths)
    for p in paths:
      if not p:
        raise SpecjaxError("a token tree path must not be empty (the root is implicit)")
      if any(i < 0 or i > self.top_k for i in p):
        raise SpecjaxError(f"tree path {p}: indices must be in 0..{self.top_k} ({self.top_k} = retrieval)")
      if len(p) > 1 and p[:-1] not in known:
        raise SpecjaxError(f"tree path {p}: its parent {p[:-1]} is not in the tree")

  @classmethod
  def default(cls) -> TokenTree:
    """The TR-Jacobi tree of MSN: a 5-node retrieval chain plus mc_sim_7b_63 (68 nodes)."""
    k = 10
    chain = tuple((k,) * d for d in range(1, 6))
    return cls(paths=chain + MC_SIM_7B_63, top_k=k)

  @property
  def num_nodes(self) -> int:
    return len(self.paths)

  @property
  def depth(self) -> int:
    """D, the longest path."""
    return max(len(p) for p in self.paths)

  @property
  def has_retrieval(self) -> bool:
    return any(self.top_k in p for p in self.paths)

  @functools.cached_property
  def arrays(self) -> dict[str, np.ndarray]:
    """Numpy constants: node depth, candidate column and parent input index [N]; attention mask
    [N+1, N+1] over (root, nodes); leaf paths [P, D+1] of input indices (0 = root) and which entries
    are real."""
    index = {p: i + 1 for i, p in enumerate(self.paths)}  # input index; 0 is the root
    N, D = self.num_nodes, self.depth
    depth = np.array([len(p) for p in self.paths], np.int32)
    column = np.array([p[-1] for p in self.paths], np.int32)
    parent = np.array([index[p[:-1]] if len(p) > 1 else 0 for p in self.paths], np.int32)
    mask = np.zeros((N + 1, N + 1), bool)
    mask[:, 0] = True
    for p, i in index.items():
      for d in range(1, len(p) + 1):
        mask[i, index[p[:d]]] = True
    prefixes = {p[:d] for p in self.paths for d in range(1, len(p))}
    leaves = [p for p in self.paths if p not in prefixes]
    leaf_paths = np.zeros((len(leaves), D + 1), np.int32)
    real = np.zeros((len(leaves), D + 1), bool)
    real[:, 0] = True
    for r, p in enumerate(leaves):
      for d in range(1, len(p) + 1):
        leaf_paths[r, d] = index[p[:d]]
        real[r, d] = True
    return {
      "depth": depth,
      "column": column,
      "parent": parent,
      "mask": mask,
      "leaf_paths": leaf_paths,
      "real": real,
    }
