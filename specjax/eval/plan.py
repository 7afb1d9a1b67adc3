"""`specjax plan`: predict the speed of every gamma, draft threshold and tree size from one short run.

Measurement (on the user's prompts, a few are enough; every run is the faster of `runs_per_setting`, 2 by
default, since a short run on a shared machine is easily disturbed): an `ar` run (the baseline and the
number of new tokens per prompt), a run of each planned mode at the largest gamma (per-position acceptance
a_i; for `spec` also a per-round trace of the draft's confidences; for `tr-jacobi` which tree nodes
matched), and the cost of each model call that a plan would make: target calls of every verification
width w as the per-round time of a decode loop making exactly that call (`round_costs`: `ar` for w = 1,
greedy `jacobi` with window w - 1, on one batch of the prompts, prefill subtracted), and draft calls of
1 and 2 tokens, trees and prefills timed in a compiled loop of calls (`specjax.eval.forward.call_costs`).

Model (docs/algorithms.md#the-speed-up-model; every a_i is P(proposal i accepted | 1..i-1 accepted)):

    E[tokens per round](gamma) = 1 + m * sum_{k=1..gamma} prod_{i<=k} a_i
    seconds per round(gamma)   = c_draft(first) + (gamma - 1) * c_draft(1) + c_target(gamma + 1)

m is the share of rounds with a proposal (1 for `spec`). `lookup` (and `datastore`, the same way) makes no
draft calls and is
replayed on a traced run at the largest gamma that proposes from every match (ngram_min 1), which
records each round's match length and how many of its gamma proposals were accepted: with
`ngram_min` = j a round whose match is shorter than j emits one token, any other min(n, gamma) + 1,
and the batch's call is gamma + 1 wide when one of its rows proposes, else one token wide; so every
gamma and every ngram_min (1..ngram) is predicted from one run.
A dynamic draft length (threshold t) is replayed on the traced rounds of the largest
gamma: a row's draft length k is the number of its leading proposals with confidence >= t (0..gamma),
it emits min(n, k) + 1 tokens (n = what it accepted of all gamma proposals), and the batch makes
max_b min(k_b + 1, gamma) draft calls and one target call of width max_b k_b + 1.
`eagle-retrieval` ("hybrid") is replayed on a traced run at the largest gamma (the asked ngram_min): a
row's source (retrieved or drafted) does not depend on gamma and the first gamma proposals of either
source are those of the larger run, so a round emits min(n, gamma) + 1 tokens, and a batched iteration
makes the catch-up draft call (gamma + 1 wide), gamma - 1 one-token draft calls when one of its rows
drafts, and one target call gamma + 1 wide. Its ngram_min and draft threshold are not replayed (a
retrieved round says nothing of what the draft would have proposed).
A smaller TR-Jacobi tree (the default pruned: the retrieval chain
plus the first m Medusa paths) keeps 1 + the deepest of its nodes that matched in the traced rounds,
for one target call as wide as the tree. Predicted time of the prompt set = the prefills + for each
batch, max over its rows of (new tokens - 1) / E[tokens per round] rounds; speed-up = predicted
time of `ar` / predicted time. Assumptions: acceptance does not depend on where rounds start (the
traced rounds stand for those of other settings), a spec or lookup round's bookkeeping costs what a
Jacobi round's does, and for smaller trees the candidates (which depend on the accepted path) are
those of the default tree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from specjax.decode import modes as registry
from specjax.decode.engine import Engine, RunResult, bucket_length
from specjax.decode.sampling import SamplingConfig
from specjax.decode.tree import MC_SIM_7B_63, TokenTree
from specjax.errors import SpecjaxError
from specjax.eval.forward import call_costs

TREE_SIZES = (0, 4, 8, 16, 32, 63)  # Medusa paths kept after the retrieval chain
# The speed models (`Mode.speed_model`): "draft" rounds make draft calls then one verification (replayed
# for every gamma and draft threshold), "match" rounds propose from a context match without draft calls
# (replayed for every gamma and ngram_min), "tree" rounds verify a token tree (replayed for pruned trees),
# "hybrid" rounds propose per row from retrieval or an EAGLE draft (replayed for every gamma).
SPEED_MODELS = ("draft", "match", "tree", "hybrid")


def applicable(engine: Engine, sampling: SamplingConfig) -> list[str]:
  """The planned modes this engine can run at this temperature (the default of `specjax plan`)."""
  out = []
  for name in registry.names():
    m = registry.get(name)
    if m.speed_model is None or (m.greedy_only and not sampling.greedy):
      continue
    if m.needs_draft and (engine.draft_cfg is None or engine.draft_cfg.kind != m.draft_kind):
      continue
    if m.needs_datastore and engine.datastore is None:
      continue
    out.append(name)
  return out


@dataclasses.dataclass
class Costs:
  """Measured seconds per call: target and draft by new tokens per row, prefills by prompt bucket."""

  target: dict[int, float]
  draft: dict[int, float] = dataclasses.field(default_factory=dict)
  prefill_target: dict[int, float] = dataclasses.field(default_factory=dict)
  prefill_draft: dict[int, float] = dataclasses.field(default_factory=dict)
  tree: dict[int, float] = dataclasses.field(default_factory=dict)  # target calls with a tree mask


@dataclasses.dataclass
class Workload:
  """The prompt set as the engine batches it: per batch its bucket and each row's new tokens."""

  batches: list[tuple[int, list[int]]]

  @classmethod
  def of(cls, run: RunResult) -> Workload:
    return cls([(b["bucket"], [len(run.rows[i].tokens) for i in b["rows"]]) for b in run.batches])

  @property
  def new_tokens(self) -> int:
    return sum(sum(news) for _, news in self.batches)


def expected_tokens(accept: Sequence[float | None], gamma: int, match_rate: float = 1.0) -> float:
  """E[tokens per round] = 1 + m * sum_{k<=gamma} prod_{i<=k} a_i (a missing a_i counts as 0)."""
  total, prod = 0.0, 1.0
  for a in list(accept)[:gamma]:
    prod *= a or 0.0
    total += prod
  return 1.0 + match_rate * total


def round_seconds(costs: Costs, gamma: int, draft_calls: float | None = None, first_width: int = 2) -> float:
  """One speculative round: the first draft call, the one-token draft calls, the verification."""
  calls = gamma if draft_calls is None else draft_calls
  return costs.draft[first_width] + (calls - 1) * costs.draft[1] + costs.target[gamma + 1]


def predicted_seconds(work: Workload, costs: Costs, tokens_per_round: float, seconds_per_round: float, draft: bool):
  """Prefills plus rounds: each batch runs until its longest row is done."""
  total = 0.0
  for bucket, news in work.batches:
    total += costs.prefill_target[bucket] + (costs.prefill_draft[bucket] if draft else 0.0)
    total += max(n - 1 for n in news) / tokens_per_round * seconds_per_round
  return total


def threshold_round(
  traces: list[dict[str, np.ndarray]], gamma: int, threshold: float, costs: Costs
) -> tuple[float, float]:
  """(E[tokens per round], seconds per round) of draft length `gamma` with `threshold`, replayed on spec
  traces recorded at a gamma >= `gamma` without a threshold (see the module docstring)."""
  tokens, seconds = [], []
  for tr in traces:
    conf, n, active = tr["conf"][..., :gamma], tr["n"], tr["active"]
    low = conf < threshold  # [B, R, gamma]
    k = np.where(low.any(-1), np.argmax(low, axis=-1), gamma)  # leading confident proposals, 0..gamma
    tokens.append((np.minimum(n, k) + 1)[active])
    iters = active.any(axis=0)
    k_active = np.where(active, k, 0)
    calls = np.minimum(k_active + 1, gamma).max(axis=0)[iters]  # the batch drafts as long as its longest row
    width = k_active.max(axis=0)[iters] + 1  # ... and verifies as wide as its longest proposal
    draft = costs.draft[2] + (calls - 1) * costs.draft[1]
    seconds.append(draft + np.array([costs.target[int(w)] for w in width]))
  return float(np.mean(np.concatenate(tokens))), float(np.mean(np.concatenate(seconds)))


def round_costs(
  engine: Engine,
  prompts: Sequence[Sequence[int]],
  widths: Sequence[int],
  max_new_tokens: int,
  batch_size: int,
  prefill: dict[int, float],
  repeat: int = 2,
) -> dict[int, float]:
  """Seconds per round of a compiled decode loop whose every round makes one target call of width w:
  `ar` for w = 1, greedy `jacobi` with window w - 1 otherwise, run on `prompts` with each batch's
  prefill (`prefill[bucket]`, timed apart) subtracted; the fastest of `repeat` runs. The target's calls
  are timed where the decoders pay them: a 2-token call timed alone in a compiled loop cost about what a
  one-token call costs, but about 1.27x inside a decoder's loop on this project's CPU."""
  out = {}
  for w in widths:
    mode, knobs = (registry.baseline().name, {}) if w == 1 else ("jacobi", {"window": w - 1})  # jacobi: a w-wide call
    times = []
    for _ in range(repeat):
      run = engine.run(prompts, mode, max_new_tokens=max_new_tokens, batch_size=batch_size, **knobs)
      rounds = max(1, sum(b["iterations"] for b in run.batches))
      times.append((run.wall_s - sum(prefill[b["bucket"]] for b in run.batches)) / rounds)
    out[w] = max(min(times), 1e-9)
  return out


def lookup_round(traces: list[dict[str, np.ndarray]], gamma: int, ngram_min: int, costs: Costs) -> tuple[float, float]:
  """(E[tokens per round], seconds per round) of lookup with `gamma` and `ngram_min`, replayed on lookup
  traces recorded at a gamma >= `gamma` with ngram_min 1 (see the module docstring)."""
  tokens, seconds = [], []
  for tr in traces:
    m, n, active = tr["m"], tr["n"], tr["active"]
    proposes = active & (m >= ngram_min)
    tokens.append((np.where(proposes, np.minimum(n, gamma), 0) + 1)[active])
    wide = proposes.any(axis=0)[active.any(axis=0)]  # one call per batched iteration
    seconds.append(np.where(wide, costs.target[gamma + 1], costs.target[1]))
  return float(np.mean(np.concatenate(tokens))), float(np.mean(np.concatenate(seconds)))


def hybrid_round(traces: list[dict[str, np.ndarray]], gamma: int, costs: Costs) -> tuple[float, float]:
  """(E[tokens per round], seconds per round) of eagle-retrieval with `gamma` (no threshold), replayed on
  its traces recorded at a gamma >= `gamma` (`source` 0: a drafted round; see the module docstring)."""
  tokens, seconds = [], []
  for tr in traces:
    source, n, active = tr["source"], tr["n"], tr["active"]
    tokens.append((np.minimum(n, gamma) + 1)[active])
    drafts = (active & (source == 0)).any(axis=0)[active.any(axis=0)]  # per batched iteration
    draft = costs.draft[gamma + 1] + np.where(drafts, gamma - 1, 0) * costs.draft[1]
    seconds.append(draft + costs.target[gamma + 1])
  return float(np.mean(np.concatenate(tokens))), float(np.mean(np.concatenate(seconds)))


def pruned_trees(sizes: Sequence[int] = TREE_SIZES) -> list[TokenTree]:
  """The default TR-Jacobi tree pruned to its retrieval chain plus the first m Medusa paths."""
  full = TokenTree.default()
  chain = tuple(p for p in full.paths if p not in MC_SIM_7B_63)
  return [TokenTree(paths=chain + MC_SIM_7B_63[:m], top_k=full.top_k) for m in sizes]


def tree_round(traces: list[dict[str, np.ndarray]], full: TokenTree, tree: TokenTree) -> float:
  """E[tokens per round] of `tree` (a subset of `full`'s paths), replayed on `full`'s traced rounds."""
  index = {p: i for i, p in enumerate(full.paths)}
  missing = [p for p in tree.paths if p not in index]
  if missing:
    raise SpecjaxError(f"tree paths {missing[:3]} are not in the traced tree")
  cols = np.array([index[p] for p in tree.paths])
  depth = np.array([len(p) for p in tree.paths])
  out = []
  for tr in traces:
    ok = tr["ok"][..., cols]  # [B, R, n]
    acc = np.max(np.where(ok, depth, 0), axis=-1)
    out.append((acc + 1)[tr["active"]])
  return float(np.mean(np.concatenate(out)))


def _speedup(a: float | None, b: float | None) -> float | None:
  return a / b if a and b else None


def plan(
  engine: Engine,
  prompts: Sequence[Sequence[int]],
  *,
  max_new_tokens: int,
  modes: Sequence[str] | None = None,
  gammas: Sequence[int] = (1, 2, 3, 4, 5, 6, 8),
  thresholds: Sequence[float] = (0.3, 0.5, 0.7, 0.9),
  measure: Sequence[int] = (),
  measure_thresholds: Sequence[float] = (),
  ngram: int = 3,
  ngram_min: int | None = None,
  batch_size: int = 1,
  sampling: SamplingConfig = SamplingConfig(),
  seed: int = 0,
  repeat: int = 5,
  runs_per_setting: int = 2,
  log=print,
) -> dict:
  """Measure, predict and compare (see the module docstring). Returns {"rows": [...], "best": {...},
  "costs": {...}}; a row has mode, gamma, draft_threshold, tree_nodes, tokens_per_round,
  seconds_per_round, predicted_tokens_per_s, predicted_speedup and, where it ran, measured_* too."""
  if not gammas:
    raise SpecjaxError("plan needs at least one gamma")
  if runs_per_setting < 1:
    raise SpecjaxError(f"runs per measured setting (--runs) must be >= 1, got {runs_per_setting}")
  if any(g < 1 for g in gammas):
    raise SpecjaxError(f"every gamma must be >= 1, got {list(gammas)}")
  base = registry.baseline().name
  modes = applicable(engine, sampling) if modes is None else [m for m in modes if m != base]
  planned = [m for m in registry.names() if registry.get(m).speed_model]
  for m in modes:
    mode = registry.get(m)  # an unknown name lists the registered modes
    if mode.speed_model not in SPEED_MODELS:
      raise SpecjaxError(f"plan has no speed model of {m!r}; it plans {', '.join(planned)}")
    if mode.needs_draft and (engine.draft_cfg is None or engine.draft_cfg.kind != mode.draft_kind):
      raise SpecjaxError(f"planning {m} needs a draft model of kind {mode.draft_kind!r} (--draft CKPT)")
    if mode.needs_datastore and engine.datastore is None:
      raise SpecjaxError(f"planning {m} needs a datastore (--datastore DS, built with `specjax datastore`)")
    if mode.greedy_only and not sampling.greedy:
      raise SpecjaxError(f"{m} is greedy only; plan it at temperature 0")
  model = {m: registry.get(m).speed_model for m in modes}
  drafted, matched, treed, hybrid = ([m for m in modes if model[m] == k] for k in SPEED_MODELS)
  G = max(gammas)
  run_kw = dict(max_new_tokens=max_new_tokens, sampling=sampling, batch_size=batch_size, seed=seed)

  def measured(mode: str, **knobs) -> RunResult:
    """The faster of `runs_per_setting` runs (the same seed, so the same tokens: the least disturbed
    timing, as `specjax bench --repeat` keeps)."""
    return min((engine.run(prompts, mode, **knobs, **run_kw) for _ in range(runs_per_setting)), key=lambda r: r.wall_s)

  log(f"measuring: {base}")
  ar = measured(base)
  work = Workload.of(ar)
  trees = pruned_trees()
  buckets = sorted({b for b, _ in work.batches})
  widths = set(range(1, G + 2)) if drafted and thresholds else {1} | {g + 1 for g in gammas}
  draft_widths = ({1, 2} if drafted else set()) | ({1} | {g + 1 for g in gammas} if hybrid else set())
  tree_widths = {t.num_nodes + 1 for t in trees} if treed else set()
  S = max(buckets) + max_new_tokens + max(widths | tree_widths)
  fill = max(buckets) + max_new_tokens // 2
  log(f"measuring call costs: target widths {sorted(widths)}, tree widths {sorted(tree_widths)}")
  costs = Costs(target={})
  if tree_widths:  # tree verification passes an explicit [B, T, T] mask
    tree_costs = call_costs(
      engine.target_cfg, engine.target_params, batch_size, sorted(tree_widths), fill, S, repeat, mask=True
    )
    costs.tree = tree_costs
  for b in buckets:
    costs.prefill_target[b] = call_costs(engine.target_cfg, engine.target_params, batch_size, [b], 0, S, repeat)[b]
  sample, sample_new = prompts[:batch_size], min(max_new_tokens, 48)  # one batch times the verification widths
  b = bucket_length(max(len(p) for p in sample), engine.max_len - sample_new)
  if b not in costs.prefill_target:
    costs.prefill_target[b] = call_costs(engine.target_cfg, engine.target_params, batch_size, [b], 0, S, repeat)[b]
  costs.target = round_costs(engine, sample, sorted(widths), sample_new, batch_size, costs.prefill_target)
  if draft_widths:  # (an EAGLE draft's call is timed on zero features: the cost is the same)
    costs.draft = call_costs(engine.draft_cfg, engine.draft_params, batch_size, sorted(draft_widths), fill, S, repeat)
    for b in buckets:
      costs.prefill_draft[b] = call_costs(engine.draft_cfg, engine.draft_params, batch_size, [b], 0, S, repeat)[b]

  ar_pred = predicted_seconds(work, costs, 1.0, costs.target[1], draft=False)
  rows = []

  def row(mode, gamma, tokens, seconds, draft, threshold=None, tree=None, measured=None, ngram_min=None):
    t = predicted_seconds(work, costs, tokens, seconds, draft)
    r = dict(
      mode=mode,
      gamma=gamma,
      draft_threshold=threshold,
      ngram_min=ngram_min,
      tree_nodes=tree.num_nodes if tree is not None else None,
      tokens_per_round=tokens,
      seconds_per_round=seconds,
      predicted_tokens_per_s=work.new_tokens / t,
      predicted_speedup=ar_pred / t,
    )
    if measured is not None:
      m = measured.metrics
      r.update(
        measured_tokens_per_round=m["block_efficiency"],
        measured_tokens_per_s=m["tokens_per_s"],
        measured_speedup=_speedup(m["tokens_per_s"], ar.metrics["tokens_per_s"]),
      )
    rows.append(r)

  row(base, None, 1.0, costs.target[1], False, measured=ar)

  for name in drafted:
    log(f"measuring: {name} gamma={G} (traced)")
    runs = {(G, None): measured(name, gamma=G, trace=True)}
    for g in measure:
      if (g, None) not in runs:
        log(f"measuring: {name} gamma={g}")
        runs[(g, None)] = measured(name, gamma=g)
    for t in measure_thresholds:
      log(f"measuring: {name} gamma={G} threshold={t}")
      runs[(G, t)] = measured(name, gamma=G, draft_threshold=t)
    accept = runs[(G, None)].metrics["per_position_acceptance"]
    traces = runs[(G, None)].traces
    for g in sorted(gammas):
      row(name, g, expected_tokens(accept, g), round_seconds(costs, g), True, measured=runs.get((g, None)))
      for t in thresholds:
        tokens, seconds = threshold_round(traces, g, t, costs)
        row(name, g, tokens, seconds, True, threshold=t, measured=runs.get((g, t)))

  for name in matched:
    log(f"measuring: {name} gamma={G} ngram_min=1 (traced)")
    measured_min = ngram if ngram_min is None else ngram_min
    runs = {(G, 1): measured(name, gamma=G, ngram=ngram, ngram_min=1, trace=True)}
    for g in measure:
      if (g, measured_min) not in runs:
        log(f"measuring: {name} gamma={g} ngram_min={measured_min}")
        runs[(g, measured_min)] = measured(name, gamma=g, ngram=ngram, ngram_min=measured_min)
    traces = runs[(G, 1)].traces
    for g in sorted(gammas):
      for j in range(1, ngram + 1):
        tokens, seconds = lookup_round(traces, g, j, costs)
        row(name, g, tokens, seconds, False, ngram_min=j, measured=runs.get((g, j)))

  for name in hybrid:
    measured_min = ngram if ngram_min is None else ngram_min
    log(f"measuring: {name} gamma={G} ngram_min={measured_min} (traced)")
    runs = {G: measured(name, gamma=G, ngram=ngram, ngram_min=measured_min, trace=True)}
    for g in measure:
      if g not in runs:
        log(f"measuring: {name} gamma={g} ngram_min={measured_min}")
        runs[g] = measured(name, gamma=g, ngram=ngram, ngram_min=measured_min)
    for g in sorted(gammas):
      tokens, seconds = hybrid_round(runs[G].traces, g, costs)
      row(name, g, tokens, seconds, True, ngram_min=measured_min, measured=runs.get(g))

  for name in treed:
    log(f"measuring: {name} (default tree, traced)")
    full = TokenTree.default()
    run = measured(name, tree=full, trace=True)
    for tree in trees:
      tokens = tree_round(run.traces, full, tree)
      seconds = costs.tree[tree.num_nodes + 1]
      row(name, None, tokens, seconds, False, tree=tree, measured=run if tree == full else None)

  best = {}
  for r in rows:
    if r["mode"] != base and r["predicted_speedup"] > best.get(r["mode"], {}).get("predicted_speedup", 0):
      best[r["mode"]] = r
  overall = max(rows, key=lambda r: r["predicted_speedup"])
  return {
    "rows": rows,
    "best": best,
    "recommended": overall,
    "costs": dataclasses.asdict(costs),
    "new_tokens": work.new_tokens,
    "dtype": engine.target_cfg.dtype,  # the call costs are those of this compute dtype
  }


def _f(x, spec):
  return "-" if x is None else format(x, spec)


def setting(r: dict) -> str:
  """A plan row's knobs as text, e.g. `gamma=4 thr=0.5` or `nodes=21`."""
  parts = []
  if r.get("gamma") is not None:
    parts.append(f"gamma={r['gamma']}")
  if r.get("draft_threshold") is not None:
    parts.append(f"thr={r['draft_threshold']:g}")
  if r.get("ngram_min") is not None:
    parts.append(f"nmin={r['ngram_min']}")
  if r.get("tree_nodes") is not None:
    parts.append(f"nodes={r['tree_nodes']}")
  return " ".join(parts)


def table(report: dict) -> str:
  """The plan as a text table, predicted beside measured where a setting ran."""
  head = (
    f"{'mode':<10} {'setting':<18} {'tok/round':>9} {'ms/round':>8} {'pred tok/s':>10} {'pred x':>7} "
    f"{'meas tok/round':>14} {'meas tok/s':>10} {'meas x':>7} {'error':>7}"
  )
  lines = [head, "-" * len(head)]
  for r in report["rows"]:
    ms, pm = r.get("measured_speedup"), r["predicted_speedup"]
    err = None if ms is None else pm / ms - 1
    lines.append(
      f"{r['mode']:<10} {setting(r):<18} {r['tokens_per_round']:>9.2f} {1000 * r['seconds_per_round']:>8.1f} "
      f"{r['predicted_tokens_per_s']:>10.1f} {pm:>7.2f} {_f(r.get('measured_tokens_per_round'), '.2f'):>14} "
      f"{_f(r.get('measured_tokens_per_s'), '.1f'):>10} {_f(ms, '.2f'):>7} {_f(err, '+.1%'):>7}"
    )
  rec = report["recommended"]
  lines.append(f"recommended: {rec['mode']} {setting(rec)} (predicted speed-up {rec['predicted_speedup']:.2f}x vs ar)")
  for mode, r in report["best"].items():
    lines.append(f"best {mode}: {setting(r)} (predicted {r['predicted_speedup']:.2f}x)")
  return "\n".join(lines)
