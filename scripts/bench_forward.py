"""Milliseconds per model call beside the machine's memory floor, measured in one run.

    python scripts/bench_forward.py --target ckpt/smollm2 [--draft ckpt/draft] [--json out.json]
    python scripts/bench_forward.py --target smollm2-135m --dtype bfloat16 --batch 1,16,64   # e.g. on a GPU

For the target and a draft (default: a random `drafter-s`, whose cost does not depend on its values),
prints the median time of one call with T new tokens per row (T = 1, 2, 3, 5, 8, 16, 69: a decode step,
speculative verification of gamma + 1 tokens, a TR-Jacobi tree) at batch 1 and 16, on a cache holding
200 tokens, beside the floor (one matrix-vector product streaming as many bytes as the model's weights)
and the fraction of the floor reached, floor / call. `--scan` adds the training (scanned) layout.
`--target` also takes a model preset name (`specjax.models.presets`): random weights of that shape,
which time the same as the real ones, so a machine without the checkpoint (an accelerator host) can
be measured. `--dtype` casts weights and compute (float32 default; bfloat16 is the accelerator path).
`--decode N` also times whole compiled `ar` decodes of the target (N new tokens per row, sampling at
T=0.7, top-p 0.95, no EOS, compile excluded) at each batch size: tokens/s, and batch B's against batch 1's;
B prompts decoded as one block (`Engine.run`), and 4B prompts of random answer lengths (N/4..N) through
B refilled rows (`Engine.stream`, what make-data runs), against batch 1 on the same 4B prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np

from specjax.checkpoint.orbax_io import load_checkpoint
from specjax.decode.engine import Engine
from specjax.decode.sampling import SamplingConfig
from specjax.errors import SpecjaxError
from specjax.eval.forward import call_costs, floor_s, host, param_bytes
from specjax.fileio import atomic_write_text
from specjax.models.config import DTYPES, ModelConfig
from specjax.models.presets import PRESETS, get_preset
from specjax.models.registry import init_params

WIDTHS = (1, 2, 3, 5, 8, 16, 69)
SAMPLING = SamplingConfig(temperature=0.7, top_p=0.95)


def _csv_ints(text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a comma list of positive integers, got {text!r}") from None
  if any(v < 1 for v in values):
    raise argparse.ArgumentTypeError(f"expected a comma list of positive integers, got {text!r}")
  return values


def _model(name: str) -> tuple[ModelConfig, dict]:
  """(config, params) of a checkpoint, or of a preset with random weights when `name` is not a path."""
  if not Path(name).exists() and name in PRESETS:
    cfg = get_preset(name)
    return cfg, init_params(cfg, jax.random.key(0))
  ck = load_checkpoint(name)
  return ck.config, ck.params


def _cast(cfg: ModelConfig, params: dict, dtype: str) -> tuple[ModelConfig, dict]:
  cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
  return cfg, jax.tree.map(lambda x: x.astype(cfg.weight_dtype), params)


def _decode_rates(cfg: ModelConfig, params: dict, batches: list[int], prompt_len: int, new: int) -> list[dict]:
  """Tokens/s of compiled `ar` sampling, per batch size: B prompts as one block, and 4B prompts with
  answers of random lengths through B refilled rows (EOS is simulated by per-prompt max_new_tokens)."""
  engine = Engine(cfg, params)
  prompts = [[(7 * i + j) % cfg.vocab_size + 1 for j in range(prompt_len)] for i in range(4 * max(batches))]
  records = []
  print(f"{'ar decode':<18} {'B':>3} {'new':>4} {'tokens/s':>9} {'x B=1':>6}")
  for B in batches:
    for _ in range(2):  # the first run compiles and warms up
      rate = engine.run(prompts[:B], "ar", max_new_tokens=new, sampling=SAMPLING, batch_size=B).metrics["tokens_per_s"]
    records.append(dict(model="target ar decode", batch=B, new_tokens=new, tokens_per_s=rate))
    print(f"{'ar decode':<18} {B:>3} {new:>4} {rate:>9.1f} {rate / records[0]['tokens_per_s']:>6.2f}")
  return records + _stream_rates(engine, prompts, batches, new)


def _stream_rates(engine: Engine, prompts: list[list[int]], batches: list[int], new: int) -> list[dict]:
  """Refilled rows (`Engine.stream`) on 4B prompts whose answers end at random lengths in new/4..new,
  B rows against one row on the same prompts."""
  rng = np.random.default_rng(0)
  records = []
  print(f"{'refilled rows':<18} {'B':>3} {'new':>4} {'tokens/s':>9} {'x B=1':>6}   (4B answers of random length)")
  for B in batches:
    ps = prompts[: 4 * B]
    ends = rng.integers(max(1, new // 4), new + 1, size=len(ps)).tolist()
    rates = {}
    for rows in sorted({1, B}):
      for _ in range(2):  # the first run compiles and warms up
        run = engine.stream(ps, max_new_tokens=new, per_prompt=ends, sampling=SAMPLING, batch_size=rows)
        rates[rows] = run.metrics["tokens_per_s"]
    records.append(dict(model="target refilled rows", batch=B, new_tokens=new, tokens_per_s=rates[B]))
    records[-1]["vs_one_row"] = rates[B] / rates[1]
    print(f"{'refilled rows':<18} {B:>3} {new:>4} {rates[B]:>9.1f} {rates[B] / rates[1]:>6.2f}")
  return records


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--target", required=True, help="specjax checkpoint of the target, or a preset name (random weights)")
  ap.add_argument("--draft", help="specjax checkpoint of a draft (default: random drafter-s)")
  ap.add_argument("--batch", type=_csv_ints, default=[1, 16], help="comma list of batch sizes")
  ap.add_argument("--widths", type=_csv_ints, default=list(WIDTHS), help="comma list of new tokens per call")
  ap.add_argument("--fill", type=int, default=200, help="tokens already in the cache")
  ap.add_argument("--repeat", type=int, default=5)
  ap.add_argument("--scan", action="store_true", help="also time the scanned (training) layout of the target")
  ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="weights and compute dtype")
  ap.add_argument("--decode", type=int, default=0, metavar="N", help="also time ar decodes of N new tokens")
  ap.add_argument("--json", help="write the records here")
  a = ap.parse_args()
  batches, widths = a.batch, a.widths
  try:
    target = _model(a.target)
    draft = _model(a.draft) if a.draft else None
  except SpecjaxError as e:
    print(f"bench_forward: error: {e}", file=sys.stderr)
    return 2
  if draft is None:
    cfg = get_preset("drafter-s").replace(vocab_size=target[0].vocab_size)
    draft = (cfg, init_params(cfg, jax.random.key(1)))
  models = [("target", *target), ("draft", *draft)]
  if a.scan:
    models.insert(1, ("target (scanned)", *target))
  models = [(name, *_cast(cfg, params, a.dtype)) for name, cfg, params in models]
  print(f"host: {host()}; {jax.devices()[0].device_kind} ({jax.default_backend()}), {a.dtype}")

  records = []
  size = a.fill + max(widths)
  print(f"{'model':<18} {'B':>3} {'T':>4} {'ms/call':>9} {'floor ms':>9} {'floor/call':>10} {'x T=1':>6}")
  for name, cfg, params in models:
    nbytes = param_bytes(params)
    for B in batches:
      costs = call_costs(cfg, params, B, widths, a.fill, size, a.repeat, fast_layout="scanned" not in name)
      floor = floor_s(nbytes, DTYPES[a.dtype])  # measured right after, under the same load
      for T, s in costs.items():
        rec = dict(model=name, params_mb=nbytes / 1e6, batch=B, new_tokens=T, ms=s * 1e3, floor_ms=floor * 1e3)
        rec.update(floor_fraction=floor / s, vs_one_token=s / costs[widths[0]])
        records.append(rec)
        print(
          f"{name:<18} {B:>3} {T:>4} {s * 1e3:>9.1f} {floor * 1e3:>9.1f} {floor / s:>10.2f} {s / costs[widths[0]]:>6.2f}"
        )
  if a.decode:
    records += _decode_rates(*models[0][1:], batches, a.fill, a.decode)
  if a.json:
    atomic_write_text(a.json, json.dumps(records, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
