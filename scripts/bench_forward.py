"""Milliseconds per model call beside the machine's memory floor, measured in one run.

    python scripts/bench_forward.py --target ckpt/smollm2 [--draft ckpt/draft] [--json out.json]

For the target and a draft (default: a random `drafter-s`, whose cost does not depend on its values),
prints the median time of one call with T new tokens per row (T = 1, 2, 3, 5, 8, 16, 69: a decode step,
speculative verification of gamma + 1 tokens, a TR-Jacobi tree) at batch 1 and 16, on a cache holding
200 tokens, beside the floor (one matrix-vector product streaming as many bytes as the model's weights)
and the fraction of the floor reached, floor / call. `--scan` adds the training (scanned) layout.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax

from specjax.checkpoint.orbax_io import load_checkpoint
from specjax.errors import SpecjaxError
from specjax.eval.forward import call_costs, floor_s, param_bytes
from specjax.fileio import atomic_write_text
from specjax.models.llama import init_params
from specjax.models.presets import get_preset

WIDTHS = (1, 2, 3, 5, 8, 16, 69)


def _csv_ints(text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a comma list of positive integers, got {text!r}") from None
  if any(v < 1 for v in values):
    raise argparse.ArgumentTypeError(f"expected a comma list of positive integers, got {text!r}")
  return values


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--target", required=True, help="specjax checkpoint of the target")
  ap.add_argument("--draft", help="specjax checkpoint of a draft (default: random drafter-s)")
  ap.add_argument("--batch", type=_csv_ints, default=[1, 16], help="comma list of batch sizes")
  ap.add_argument("--widths", type=_csv_ints, default=list(WIDTHS), help="comma list of new tokens per call")
  ap.add_argument("--fill", type=int, default=200, help="tokens already in the cache")
  ap.add_argument("--repeat", type=int, default=5)
  ap.add_argument("--scan", action="store_true", help="also time the scanned (training) layout of the target")
  ap.add_argument("--json", help="write the records here")
  a = ap.parse_args()
  batches, widths = a.batch, a.widths
  try:
    target = load_checkpoint(a.target)
    draft = load_checkpoint(a.draft) if a.draft else None
  except SpecjaxError as e:
    print(f"bench_forward: error: {e}", file=sys.stderr)
    return 2
  if draft is not None:
    models = [("target", target.config, target.params), ("draft", draft.config, draft.params)]
  else:
    cfg = get_preset("drafter-s").replace(vocab_size=target.config.vocab_size)
    models = [("target", target.config, target.params), ("draft drafter-s", cfg, init_params(cfg, jax.random.key(0)))]
  if a.scan:
    models.insert(1, ("target (scanned)", target.config, target.params))

  records = []
  size = a.fill + max(widths)
  print(f"{'model':<18} {'B':>3} {'T':>4} {'ms/call':>9} {'floor ms':>9} {'floor/call':>10} {'x T=1':>6}")
  for name, cfg, params in models:
    nbytes = param_bytes(params)
    for B in batches:
      costs = call_costs(cfg, params, B, widths, a.fill, size, a.repeat, fast_layout="scanned" not in name)
      floor = floor_s(nbytes)  # measured right after, under the same load
      for T, s in costs.items():
        rec = dict(model=name, params_mb=nbytes / 1e6, batch=B, new_tokens=T, ms=s * 1e3, floor_ms=floor * 1e3)
        rec.update(floor_fraction=floor / s, vs_one_token=s / costs[widths[0]])
        records.append(rec)
        print(
          f"{name:<18} {B:>3} {T:>4} {s * 1e3:>9.1f} {floor * 1e3:>9.1f} {floor / s:>10.2f} {s / costs[widths[0]]:>6.2f}"
        )
  if a.json:
    atomic_write_text(a.json, json.dumps(records, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
