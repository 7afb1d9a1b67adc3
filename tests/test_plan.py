"""The planner: its model on synthetic inputs, and one short end-to-end plan on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
from decode_util import engine, model, prompts, tiny
from test_decode_eagle import eagle_pair

from specjax.decode.sampling import SamplingConfig
from specjax.decode.tree import MC_SIM_7B_63, TokenTree
from specjax.errors import SpecjaxError
from specjax.eval.plan import (
  Costs,
  Workload,
  applicable,
  expected_tokens,
  hybrid_round,
  lookup_round,
  plan,
  predicted_seconds,
  pruned_trees,
  round_seconds,
  table,
  threshold_round,
  tree_round,
)


def test_expected_tokens():
  assert expected_tokens([1.0, 1.0, 1.0], 3) == 4.0
  assert expected_tokens([0.5, 0.5, 0.5], 2) == pytest.approx(1 + 0.5 + 0.25)
  assert expected_tokens([0.8, 0.5, None], 3) == pytest.approx(1 + 0.8 + 0.4)  # a never-reached position adds 0
  assert expected_tokens([0.5, 0.5], 2, match_rate=0.5) == pytest.approx(1 + 0.5 * 0.75)
  # i.i.d. acceptance beta: (1 - beta^(gamma+1)) / (1 - beta), docs/algorithms.md#the-speed-up-model
  assert expected_tokens([0.6] * 4, 4) == pytest.approx((1 - 0.6**5) / (1 - 0.6))


def test_round_and_total_seconds():
  costs = Costs(
    target={1: 1.0, 3: 2.0, 5: 3.0}, draft={1: 0.1, 2: 0.15}, prefill_target={16: 5.0}, prefill_draft={16: 1.0}
  )
  assert round_seconds(costs, 4) == pytest.approx(0.15 + 3 * 0.1 + 3.0)
  assert round_seconds(costs, 4, draft_calls=2.5) == pytest.approx(0.15 + 1.5 * 0.1 + 3.0)
  work = Workload([(16, [11, 21]), (16, [6])])
  # Each batch: its prefills, then (longest row - 1) / tokens-per-round rounds.
  assert predicted_seconds(work, costs, 2.0, 3.0, draft=True) == pytest.approx(6 + 10 * 3 + 6 + 2.5 * 3)
  assert predicted_seconds(work, costs, 1.0, 1.0, draft=False) == pytest.approx(5 + 20 + 5 + 5)
  assert work.new_tokens == 38


def test_threshold_replay():
  # Two rows, three rounds, traced at gamma 3 without a threshold.
  conf = np.array([[[0.9, 0.2, 0.9], [0.1, 0.9, 0.9], [0.9, 0.9, 0.9]], [[0.9, 0.9, 0.4], [0.5, 0.5, 0.5], [0, 0, 0]]])
  n = np.array([[3, 0, 2], [1, 3, 0]])
  active = np.array([[True, True, True], [True, True, False]])
  trace = {"conf": conf, "n": n, "active": active}
  # Draft calls cost 1 (the first) and 10 (each one-token call); a verification of width w costs 100 w.
  costs = Costs(target={w: 100.0 * w for w in range(1, 5)}, draft={1: 10.0, 2: 1.0})
  # threshold 0.3: k = [[1, 0, 3], [3, 3, -]]; tokens = min(n, k) + 1 = [[2, 1, 3], [2, 4]]
  tokens, seconds = threshold_round([trace], 3, 0.3, costs)
  assert tokens == pytest.approx(np.mean([2, 1, 3, 2, 4]))
  # per iteration: calls = max_b min(k + 1, 3) = [3, 3, 3], widths = max_b k + 1 = [4, 4, 4]
  assert seconds == pytest.approx(1 + 2 * 10 + 400)
  tokens, seconds = threshold_round([trace], 2, 0.95, costs)  # every confidence below: k = 0, plain steps
  assert tokens == 1.0 and seconds == pytest.approx(1 + 100)
  tokens, seconds = threshold_round([trace], 2, 0.0, costs)  # never below: the fixed length
  assert tokens == pytest.approx(np.mean([3, 1, 3, 2, 3])) and seconds == pytest.approx(1 + 10 + 300)
  tokens, seconds = threshold_round([trace], 3, 0.6, costs)  # k = [[1, 0, 3], [2, 0, -]]: widths [3, 1, 4]
  assert tokens == pytest.approx(np.mean([2, 1, 3, 2, 1]))
  assert seconds == pytest.approx(np.mean([1 + 20 + 300, 1 + 0 + 100, 1 + 20 + 400]))


def test_lookup_replay():
  # Two rows, three rounds, traced at gamma 4 with ngram_min 1: match lengths m, accepted counts n.
  m = np.array([[3, 1, 0], [2, 3, 0]])
  n = np.array([[4, 0, 0], [1, 2, 0]])
  active = np.array([[True, True, True], [True, True, False]])
  trace = {"m": m, "n": n, "active": active}
  costs = Costs(target={1: 1.0, 3: 2.0, 5: 3.0})
  # ngram_min 1: every matched round proposes; tokens min(n, gamma) + 1; a call is wide when a row proposes.
  tokens, seconds = lookup_round([trace], 4, 1, costs)
  assert tokens == pytest.approx(np.mean([5, 1, 1, 2, 3])) and seconds == pytest.approx(np.mean([3, 3, 1]))
  # ngram_min 3: only the 3-token matches propose; gamma 2 caps what they keep.
  tokens, seconds = lookup_round([trace], 2, 3, costs)
  assert tokens == pytest.approx(np.mean([3, 1, 1, 1, 3])) and seconds == pytest.approx(np.mean([2, 2, 1]))
  # Batch 1 (row 0 alone): its round without a proposal is a one-token call.
  one = {k: v[:1] for k, v in trace.items()}
  assert lookup_round([one], 4, 2, costs) == pytest.approx((np.mean([5, 1, 1]), np.mean([3, 1, 1])))


def test_hybrid_replay():
  # Two rows, three rounds of eagle-retrieval traced at gamma 3: source 0 drafted, 1 and 2 retrieved.
  source = np.array([[0, 1, 2], [1, 0, 0]])
  n = np.array([[2, 3, 1], [0, 1, 0]])
  active = np.array([[True, True, True], [True, True, False]])
  trace = {"source": source, "n": n, "active": active}
  costs = Costs(target={w: 100.0 * w for w in range(1, 5)}, draft={1: 10.0, 2: 1.0, 3: 2.0, 4: 3.0})
  # gamma 3: tokens min(n, 3) + 1; iterations 0 and 1 have a drafting row (catch-up + 2 one-token calls),
  # iteration 2 only a retrieving one (the catch-up alone); every verification is 4 wide.
  tokens, seconds = hybrid_round([trace], 3, costs)
  assert tokens == pytest.approx(np.mean([3, 4, 2, 1, 2]))
  assert seconds == pytest.approx(np.mean([3 + 20 + 400, 3 + 20 + 400, 3 + 400]))
  # gamma 1: one token proposed, no one-token draft calls, a 2-token catch-up and verification.
  assert hybrid_round([trace], 1, costs) == pytest.approx((np.mean([2, 2, 2, 1, 2]), 1 + 200))


def test_tree_replay_and_pruning():
  trees = pruned_trees()
  assert [t.num_nodes for t in trees] == [5, 9, 13, 21, 37, 68]
  assert trees[-1] == TokenTree.default()
  full = TokenTree.default()
  idx = {p: i for i, p in enumerate(full.paths)}
  ok = np.zeros((1, 3, full.num_nodes), bool)
  ok[0, 0, [idx[(10,)], idx[(10, 10)], idx[(10, 10, 10)]]] = True  # the retrieval chain to depth 3
  ok[0, 1, [idx[(0,)], idx[(0, 0)]]] = True  # the top candidate twice
  ok[0, 2, [idx[(1,)], idx[(1, 0)], idx[(1, 0, 0)]]] = True  # only in the bigger trees
  trace = {"ok": ok, "active": np.ones((1, 3), bool)}
  assert tree_round([trace], full, full) == pytest.approx((4 + 3 + 4) / 3)
  chain_only = trees[0]
  assert tree_round([trace], full, chain_only) == pytest.approx((4 + 1 + 1) / 3)
  small = TokenTree(paths=((10,), (10, 10), (10, 10, 10), (10, 10, 10, 10), (10, 10, 10, 10, 10)) + MC_SIM_7B_63[:8])
  assert (1, 0, 0) not in small.paths and tree_round([trace], full, small) == pytest.approx((4 + 3 + 3) / 3)
  with pytest.raises(SpecjaxError, match="not in the traced tree"):
    tree_round([trace], chain_only, full)


def test_plan_end_to_end():
  eng = engine(model(tiny(), 0), model(tiny(layers=1), 1))
  lines = []
  report = plan(
    eng, prompts([5, 9]), max_new_tokens=12, modes=("spec", "lookup", "tr-jacobi"), gammas=(1, 2), thresholds=(0.5,),
    measure=(1,), measure_thresholds=(0.5,), repeat=1, runs_per_setting=1, log=lines.append,
  )  # fmt: skip
  rows = report["rows"]
  keys = [(r["mode"], r["gamma"], r["draft_threshold"] or r["ngram_min"], r["tree_nodes"]) for r in rows]
  assert keys[:8] == [
    ("ar", None, None, None),
    ("spec", 1, None, None), ("spec", 1, 0.5, None), ("spec", 2, None, None), ("spec", 2, 0.5, None),
    ("lookup", 1, 1, None), ("lookup", 1, 2, None), ("lookup", 1, 3, None),
  ]  # fmt: skip
  assert [k[3] for k in keys if k[0] == "tr-jacobi"] == [5, 9, 13, 21, 37, 68]
  measured = {k for k, r in zip(keys, rows, strict=True) if "measured_speedup" in r}
  # lookup: the traced run (largest gamma, ngram_min 1) and the asked gamma at the default ngram_min (3)
  assert measured == {
    ("ar", None, None, None), ("spec", 1, None, None), ("spec", 2, None, None), ("spec", 2, 0.5, None),
    ("lookup", 2, 1, None), ("lookup", 1, 3, None), ("tr-jacobi", None, None, 68),
  }  # fmt: skip
  lk = rows[keys.index(("lookup", 2, 1, None))]  # the traced run itself: the replay is exact for greedy
  assert lk["tokens_per_round"] == pytest.approx(lk["measured_tokens_per_round"])
  for r in rows:
    assert r["tokens_per_round"] >= 1 and r["predicted_tokens_per_s"] > 0
  # With an unrelated draft nothing is accepted: the model predicts about one token per round.
  spec2 = rows[keys.index(("spec", 2, None, None))]
  assert spec2["tokens_per_round"] == pytest.approx(spec2["measured_tokens_per_round"], abs=0.2)
  assert rows[0]["predicted_speedup"] == pytest.approx(1.0)
  text = table(report)
  assert "recommended:" in text and "pred x" in text and "nodes=68" in text and "nmin=3" in text
  assert any("measuring" in line for line in lines)


def test_plan_eagle_retrieval():
  eng = engine(*eagle_pair())
  assert "eagle-retrieval" in applicable(eng, SamplingConfig()) and "spec" not in applicable(eng, SamplingConfig())
  report = plan(
    eng, prompts([5, 9], vocab=16), max_new_tokens=12, modes=("eagle-retrieval",), gammas=(1, 2), thresholds=(),
    ngram=2, ngram_min=1, repeat=1, runs_per_setting=1, log=lambda line: None,
  )  # fmt: skip
  rows = {(r["mode"], r["gamma"], r["ngram_min"]): r for r in report["rows"]}
  assert set(rows) == {("ar", None, None), ("eagle-retrieval", 1, 1), ("eagle-retrieval", 2, 1)}
  assert "measured_speedup" not in rows[("eagle-retrieval", 1, 1)]  # predicted from the gamma 2 run
  for g in (1, 2):
    r = rows[("eagle-retrieval", g, 1)]
    assert 1 <= r["tokens_per_round"] <= g + 1 and r["predicted_tokens_per_s"] > 0
  # greedy: the replay is the traced run's own rounds, but for a last round cut at max_new_tokens
  traced = rows[("eagle-retrieval", 2, 1)]
  assert traced["tokens_per_round"] == pytest.approx(traced["measured_tokens_per_round"], abs=0.3)
  assert set(report["costs"]["draft"]) == {1, 2, 3}  # one-token calls and the catch-ups of gamma 1 and 2


def test_plan_refusals():
  eng = engine(model(tiny(), 0))
  with pytest.raises(SpecjaxError, match="needs a draft"):
    plan(eng, prompts([5]), max_new_tokens=4, modes=("spec",))
  with pytest.raises(SpecjaxError, match=r"runs per measured setting \(--runs\) must be >= 1"):
    plan(eng, prompts([5]), max_new_tokens=4, modes=("lookup",), runs_per_setting=0)
  with pytest.raises(SpecjaxError, match="needs a datastore"):
    plan(eng, prompts([5]), max_new_tokens=4, modes=("datastore",))
  with pytest.raises(SpecjaxError, match="no speed model of 'jacobi'"):
    plan(eng, prompts([5]), max_new_tokens=4, modes=("jacobi",))
  with pytest.raises(SpecjaxError, match="unknown decoding mode"):
    plan(eng, prompts([5]), max_new_tokens=4, modes=("beam",))
