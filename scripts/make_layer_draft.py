"""Make a "layer-skip" draft from a target checkpoint: its first N decoder layers, final norm and head.

    python scripts/make_layer_draft.py CKPT --layers 4 --out DRAFT_CKPT

The draft shares the target's tokenizer and embeddings, so it is a valid speculative draft without any
training (a trained drafter from `specjax distill` accepts more); see docs/recipes.md#benchmark-scripts.
"""

from __future__ import annotations

import argparse
import sys

import jax

from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer, save_checkpoint
from specjax.errors import SpecjaxError


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("ckpt", help="target checkpoint folder")
  p.add_argument("--layers", type=int, required=True, help="how many of the first decoder layers to keep")
  p.add_argument("--out", required=True, help="new draft checkpoint folder (must not exist)")
  args = p.parse_args(argv)
  try:
    ckpt = load_checkpoint(args.ckpt)
    if not 1 <= args.layers <= ckpt.config.num_layers:
      raise SpecjaxError(f"--layers must be in 1..{ckpt.config.num_layers}, got {args.layers}")
    params = dict(ckpt.params)
    params["layers"] = jax.tree.map(lambda x: x[: args.layers], params["layers"])
    cfg = ckpt.config.replace(num_layers=args.layers)
    meta = {"source": f"first {args.layers} layers of {args.ckpt}"}
    save_checkpoint(args.out, cfg, params, tokenizer=load_tokenizer(args.ckpt), meta=meta)
  except SpecjaxError as e:
    print(f"make_layer_draft: error: {e}", file=sys.stderr)
    return 2
  print(f"wrote draft checkpoint {args.out} ({args.layers} layers)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
