"""Drafter shapes chosen by measured cost: each candidate's call cost relative to the target's (c), and
the speed-up it would give at a block efficiency tau, measured in one run on this machine.

    python scripts/drafter_shapes.py --target ckpt/smollm2 --json shapes.json [--alpha 0.6]

For every candidate (layers x width x draft vocabulary K) prints c = draft one-token call / target one-token
call (random parameters: a call's cost does not depend on the values) and c_verify = target (gamma+1)-token
call / target one-token call. With a per-position acceptance alpha (i.i.d. model, docs/algorithms.md#the-speed-up-model)
the predicted speed-up of gamma draft tokens per round is

    speedup(gamma) = (1 + alpha + ... + alpha^gamma) / (gamma * c + c_verify(gamma))

(both in units of one target call); the best gamma is reported. A candidate is worth training only when
its predicted speed-up at a reachable alpha beats the smaller ones: pick by this number, not by size.
"""

from __future__ import annotations

import argparse
import json

import jax

from specjax.checkpoint.orbax_io import read_config
from specjax.eval.forward import call_costs
from specjax.models.presets import get_preset
from specjax.models.registry import init_params

# (name, layers, width, mlp, heads, kv heads, K): K = 0 is the full vocabulary
CANDIDATES = [
  ("s-full", 4, 256, 768, 4, 2, 0),
  ("s-k16k", 4, 256, 768, 4, 2, 16384),
  ("s-k8k", 4, 256, 768, 4, 2, 8192),
  ("s-k4k", 4, 256, 768, 4, 2, 4096),
  ("2x256-k8k", 2, 256, 768, 4, 2, 8192),
  ("4x384-k8k", 4, 384, 1024, 6, 2, 8192),
  ("6x256-k8k", 6, 256, 768, 4, 2, 8192),
]


def candidate_config(layers: int, width: int, mlp: int, heads: int, kv: int, k: int):
  cfg = get_preset("drafter-s").replace(
    num_layers=layers, hidden_size=width, intermediate_size=mlp, num_heads=heads, num_kv_heads=kv
  )
  return cfg.replace(head_ids=tuple(range(k))) if k else cfg


def predicted_speedup(alpha: float, c: float, c_verify: dict[int, float]) -> tuple[int, float]:
  best = (0, 0.0)
  for g, cv in c_verify.items():
    s = sum(alpha**i for i in range(g + 1)) / (g * c + cv)
    best = max(best, (g, s), key=lambda x: x[1])
  return best


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--target", required=True, help="specjax checkpoint of the target (only its config is read)")
  ap.add_argument("--alpha", default="0.5,0.6,0.7", help="comma list of per-position acceptances to predict at")
  ap.add_argument("--gammas", default="1,2,3,4,5,6")
  ap.add_argument("--only", default=None, help="comma list of candidate names")
  ap.add_argument("--repeat", type=int, default=7)
  ap.add_argument("--json", help="write the records here")
  a = ap.parse_args()
  gammas = [int(g) for g in a.gammas.split(",")]
  alphas = [float(x) for x in a.alpha.split(",")]
  t_cfg, _ = read_config(a.target)
  t_params = init_params(t_cfg, jax.random.key(0))
  widths = sorted({1} | {g + 1 for g in gammas})
  t = call_costs(t_cfg, t_params, 1, widths, cache_fill=200, cache_size=272, repeat=a.repeat)
  del t_params
  c_verify = {g: t[g + 1] / t[1] for g in gammas}
  print(
    f"target: 1-token call {t[1] * 1e3:.1f} ms; c_verify " + ", ".join(f"g{g}={v:.2f}" for g, v in c_verify.items())
  )
  records = {"target_call_s": t, "c_verify": c_verify, "candidates": []}
  for name, *shape in CANDIDATES:
    if a.only and name not in a.only.split(","):
      continue
    cfg = candidate_config(*shape)
    params = init_params(cfg, jax.random.key(1))
    d = call_costs(cfg, params, 1, [1, 2], cache_fill=200, cache_size=272, repeat=a.repeat)
    c = d[1] / t[1]
    pred = {str(al): predicted_speedup(al, c, c_verify) for al in alphas}
    rec = {"name": name, "shape": shape, "draft_call_s": d[1], "c": c, "predicted": pred}
    records["candidates"].append(rec)
    print(
      f"{name:12s} {d[1] * 1e3:6.2f} ms  c={c:.3f}  "
      + "  ".join(f"alpha {al}: {s:.2f}x (gamma {g})" for al, (g, s) in pred.items()),
      flush=True,
    )
  if a.json:
    with open(a.json, "w") as f:
      json.dump(records, f, indent=1)


if __name__ == "__main__":
  main()
