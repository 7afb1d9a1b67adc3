"""The TR-Jacobi token tree, path scoring and the retrieval chain."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from specjax.decode.jacobi import best_path, retrieval_chain
from specjax.decode.tree import MC_SIM_7B_63, TokenTree
from specjax.errors import SpecjaxError


def test_default_tree_is_retrieval_chain_plus_mc_sim_63():
  tree = TokenTree.default()
  assert len(MC_SIM_7B_63) == 63
  assert tree.num_nodes == 68 and tree.depth == 5 and tree.has_retrieval
  a = tree.arrays
  assert a["mask"].shape == (69, 69)
  # Node (0, 0) (input index of its path) sees the root, (0,) and itself only.
  idx = {p: i + 1 for i, p in enumerate(tree.paths)}
  row = a["mask"][idx[(0, 0)]]
  assert set(np.flatnonzero(row)) == {0, idx[(0,)], idx[(0, 0)]}
  # The retrieval chain is one leaf path of depth 5.
  chain = [0] + [idx[(10,) * d] for d in range(1, 6)]
  assert chain in a["leaf_paths"].tolist()
  # Every leaf path starts at the root; padding is marked unreal.
  assert (a["leaf_paths"][:, 0] == 0).all() and a["real"][:, 0].all()
  depths = a["real"].sum(axis=1) - 1
  assert depths.max() == 5 and depths.min() >= 1


def test_tree_is_data():
  tree = TokenTree(paths=((0,), (1,), (0, 0)), top_k=2)
  assert tree.num_nodes == 3 and tree.depth == 2 and not tree.has_retrieval
  assert tree.arrays["leaf_paths"].tolist() == [[0, 2, 0], [0, 1, 3]]
  assert tree.arrays["real"].tolist() == [[True, True, False], [True, True, True]]
  assert hash(tree) == hash(TokenTree(paths=[[0], [1], [0, 0]], top_k=2))


@pytest.mark.parametrize(
  "paths", [((0, 0),), ((0,), (0,)), ((0,), (5,)), ()], ids=["orphan", "duplicate", "index", "empty"]
)
def test_bad_trees_are_refused(paths):
  with pytest.raises(SpecjaxError):
    TokenTree(paths=paths, top_k=2)


def test_padded_path_slots_never_match():
  # Tree: (0,) with child (0, 0), and (1,), a leaf of depth 1 whose path is padded with the root index.
  tree = TokenTree(paths=((0,), (1,), (0, 0)), top_k=2)
  a = tree.arrays
  #            root (0,) (1,) (0,0)
  toks = jnp.array([[7, 3, 4, 9]])
  # argmax after the root is 4 (so (1,) matches), argmax after (1,) is 7 == the root's token: the padded
  # slot of path [root, (1,), pad->root] would "match" if padding were not masked.
  best = jnp.array([[4, 0, 7, 0]])
  n, pick = best_path(toks, best, jnp.asarray(a["leaf_paths"]), jnp.asarray(a["real"]))
  assert int(n[0]) == 1
  assert a["leaf_paths"][int(pick[0])].tolist()[:2] == [0, 2]
  # With (0,) and (0, 0) both right, the depth-2 path wins.
  best = jnp.array([[3, 9, 7, 0]])
  n, pick = best_path(toks, best, jnp.asarray(a["leaf_paths"]), jnp.asarray(a["real"]))
  assert int(n[0]) == 2 and a["leaf_paths"][int(pick[0])].tolist() == [0, 1, 3]


def test_retrieval_chain_earliest_longest_match():
  #                 0  1  2  3  4  5  6  7  8  9 10 11 12 13
  seq = jnp.array([[1, 2, 3, 4, 5, 9, 2, 3, 4, 6, 7, 2, 3, 4, 0, 0]])
  # context = first 14 tokens; last 3 = (2, 3, 4) occur at 1 and 6; the earliest wins, copy from 4.
  chain = retrieval_chain(seq, jnp.array([14]), 5)
  assert chain.tolist() == [[5, 9, 2, 3, 4]]
  # A shorter match (only the last token) when no full 3-gram recurs; the chain stops at the context end.
  seq2 = jnp.array([[8, 8, 8, 5, 1, 2, 7, 5, 0, 0, 0, 0]])
  chain2 = retrieval_chain(seq2, jnp.array([8]), 4)
  #   last 3 = (2, 7, 5); windows i <= 2: (8,8,8),(8,8,5),(8,5,1): suffix match "5" at i=1 -> copy from 4
  assert chain2.tolist() == [[1, 2, 7, 5]]
  # Too short a context for any window: nothing to copy.
  assert retrieval_chain(seq2, jnp.array([5]), 3).tolist() == [[-1, -1, -1]]
  # The copy runs past the context end: the rest is missing (-1).
  seq3 = jnp.array([[1, 2, 3, 9, 9, 9, 1, 2, 3, 0]])
  assert retrieval_chain(seq3, jnp.array([9]), 5).tolist() == [[9, 9, 9, 1, 2]]
  assert retrieval_chain(seq3, jnp.array([9]), 8).tolist() == [[9, 9, 9, 1, 2, 3, -1, -1]]
