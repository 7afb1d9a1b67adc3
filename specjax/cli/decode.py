"""`specjax generate`, `bench`, `plan`: decoding, with every registered mode and its knobs (flags derived from the
mode registry, `specjax.decode.modes`)."""

from __future__ import annotations

import argparse
import sys

from specjax.cli.common import PROMPTS_HELP, command, csv_list, dtype_arg


class _Modes:
  """The registered decoding modes, read from the registry only when argparse needs them (checking a
  --mode value or printing its help), so that `specjax --help` does not import the decoders."""

  def _names(self):
    from specjax.decode.modes import names

    return names()

  def __contains__(self, name):
    return name in self._names()

  def __iter__(self):
    return iter(self._names())

  def __len__(self):
    return len(self._names())


def _check_modes(names: list[str]) -> None:
  from specjax.decode import modes

  for name in names:
    modes.get(name)  # an unknown name is an error that lists the registered modes


def _decode_args(p: argparse.ArgumentParser, bench: bool) -> None:
  p.add_argument("--target", required=True, help="target model checkpoint folder")
  p.add_argument("--draft", help="draft model checkpoint folder (same tokenizer as the target)")
  p.add_argument(
    "--datastore",
    help="a `specjax datastore` folder (for --mode datastore and combined; eagle-retrieval reads one if given)",
  )
  if bench:
    p.add_argument("--prompts", required=True, help=PROMPTS_HELP)
    p.add_argument(
      "--modes", type=csv_list(str), default=["ar", "spec"], help="comma list of registered decoding modes"
    )
    p.add_argument("--temperature", type=csv_list(float), default=[0.0], help="comma list of temperatures")
    p.add_argument("--batch-size", type=csv_list(int), default=[1], help="comma list of batch sizes")
    p.add_argument("--out", required=True, help="results JSON file")
    p.add_argument("--plot", help="also write this PNG plot")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--repeat", type=int, default=1, help="run each combination N times, keep the fastest")
  else:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompts", help=PROMPTS_HELP)
    p.add_argument("--mode", default="ar", choices=_Modes(), help="a registered decoding mode")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--json", action="store_true", help="one JSON object per prompt: prompt, text and metrics")
  _knob_args(p, bench)
  p.add_argument("--top-p", type=float, default=1.0)
  p.add_argument("--top-k", type=int, default=0, help="0 = off")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max-new-tokens", type=int, required=True)
  p.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
  dtype_arg(p, "the target and the draft")


def _knob_args(p: argparse.ArgumentParser, bench: bool) -> None:
  """One flag per knob of the registered modes (`Mode.knobs`); the bench takes a comma list of values for
  the knobs it sweeps. Unset flags are None: the mode's default."""
  from specjax.decode import modes

  group = p.add_argument_group("mode knobs (each mode reads its own; see `specjax.decode.modes`)")
  for name, f in modes.knob_fields().items():
    meta = f.metadata
    if meta["parse"] is None:
      continue
    readers = ", ".join(n for n in modes.names() if name in {g.name for g in modes.get(n).fields})
    if bench and meta["sweep"] is not None:
      sweep = ",".join("none" if v is None else str(v) for v in meta["sweep"])
      kind, text = csv_list(meta["parse"]), f"{meta['help']}; a comma list, one run each (default {sweep})"
    else:
      kind, text = meta["parse"], f"{meta['help']} (default {'none' if f.default is None else f.default})"
    group.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=f"{readers}: {text}")


def _knob_values(args: argparse.Namespace) -> dict:
  """The knob flags the user set."""
  from specjax.decode import modes

  return {n: getattr(args, n) for n in modes.knob_fields() if getattr(args, n, None) is not None}


@command("generate", "decode prompts with any registered mode and print the text", lambda p: _decode_args(p, False))
def _cmd_generate(args: argparse.Namespace) -> int:
  import json

  from specjax.decode import modes
  from specjax.decode.sampling import SamplingConfig
  from specjax.decode.text import decode_tokens, encode, load_engine
  from specjax.prompts.suites import load_prompts

  sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
  texts = [args.prompt] if args.prompt is not None else load_prompts(args.prompts)
  engine, tok = load_engine(args.target, args.draft, datastore=args.datastore, dtype=args.dtype)
  ids = encode(tok, texts, chat=args.chat)
  run = engine.run(
    ids,
    args.mode,
    max_new_tokens=args.max_new_tokens,
    sampling=sampling,
    batch_size=args.batch_size,
    seed=args.seed,
    **_knob_values(args),
  )
  for text, row in zip(texts, run.rows, strict=True):
    answer = decode_tokens(tok, row.tokens)
    if args.json:
      print(json.dumps({"prompt": text, "text": answer, "mode": args.mode, **row.metrics}), flush=True)
    else:
      print(answer, flush=True)
  m = run.metrics
  summary = (
    f"{m['new_tokens']} tokens in {m['wall_s']:.2f}s ({m['tokens_per_s']:.1f} tokens/s), compile {m['compile_s']:.1f}s"
  )
  if not modes.get(args.mode).baseline:
    summary += f", block efficiency {m['block_efficiency'] or 0:.2f}, acceptance {m['acceptance_rate'] or 0:.2f}"
  print(f"[{args.mode}] {summary}", file=sys.stderr)
  return 0


@command(
  "bench", "benchmark decoding modes on the same prompts; JSON records and a plot", lambda p: _decode_args(p, True)
)
def _cmd_bench(args: argparse.Namespace) -> int:
  import json

  from specjax.decode import modes
  from specjax.decode.text import encode, load_engine
  from specjax.eval.bench import bench, plot
  from specjax.fileio import atomic_write_text
  from specjax.prompts.suites import load_prompts

  _check_modes(args.modes)
  knobs = _knob_values(args)
  texts = load_prompts(args.prompts)[: args.limit]
  engine, tok = load_engine(args.target, args.draft, datastore=args.datastore, dtype=args.dtype)
  records = bench(
    engine,
    encode(tok, texts, chat=args.chat),
    args.modes,
    args.temperature,
    args.batch_size,
    args.max_new_tokens,
    sweeps={k: v for k, v in knobs.items() if modes.knob_fields()[k].metadata["sweep"] is not None},
    knobs={k: v for k, v in knobs.items() if modes.knob_fields()[k].metadata["sweep"] is None},
    top_p=args.top_p,
    top_k=args.top_k,
    seed=args.seed,
    repeat=args.repeat,
    log=lambda line: print(line, file=sys.stderr, flush=True),
  )
  atomic_write_text(args.out, json.dumps(records, indent=1) + "\n")
  print(f"wrote {len(records)} records to {args.out}")
  if args.plot:
    plot(records, args.plot)
    print(f"wrote plot {args.plot}")
  return 0


def _plan_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--target", required=True, help="target model checkpoint folder")
  p.add_argument("--draft", help="draft model checkpoint folder (needed to plan spec)")
  p.add_argument("--datastore", help="a `specjax datastore` folder (needed to plan datastore)")
  p.add_argument("--prompts", required=True, help=PROMPTS_HELP)
  p.add_argument("--limit", type=int, default=4, help="use only the first N prompts (a short measurement)")
  p.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
  p.add_argument("--max-new-tokens", type=int, default=64)
  p.add_argument(
    "--modes",
    type=csv_list(str),
    default=None,
    help="comma list of modes that have a speed model (default: every one this target and draft can run)",
  )
  p.add_argument(
    "--gamma", type=csv_list(int), default=[1, 2, 3, 4, 5, 6, 8], help="gammas to predict (the largest is run)"
  )
  p.add_argument("--draft-threshold", type=csv_list(float), default=[0.3, 0.5, 0.7, 0.9], help="thresholds to predict")
  p.add_argument(
    "--measure", type=csv_list(int), default=[], help="also run these gammas to compare with the prediction"
  )
  p.add_argument(
    "--measure-threshold", type=csv_list(float), default=[], help="also run these thresholds (largest gamma)"
  )
  p.add_argument("--ngram", type=int, default=3, help="lookup: match the last N tokens")
  p.add_argument(
    "--ngram-min", type=int, default=None, help="lookup: the shortest match of the measured runs (default: ngram)"
  )
  p.add_argument("--batch-size", type=int, default=1)
  p.add_argument("--temperature", type=float, default=0.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--repeat", type=int, default=5, help="timed calls per call cost (the median is kept)")
  p.add_argument("--runs", type=int, default=2, help="runs per measured setting (the fastest is kept)")
  p.add_argument("--out", help="also write the plan as JSON")
  dtype_arg(p, "the target and the draft")


@command(
  "plan", "predict tokens/s of every gamma, draft threshold and tree size from one short measurement", _plan_args
)
def _cmd_plan(args: argparse.Namespace) -> int:
  import json

  from specjax.decode.sampling import SamplingConfig
  from specjax.decode.text import encode, load_engine
  from specjax.eval.plan import plan, table
  from specjax.fileio import atomic_write_text
  from specjax.prompts.suites import load_prompts

  if args.modes:
    _check_modes(args.modes)
  texts = load_prompts(args.prompts)[: args.limit]
  engine, tok = load_engine(args.target, args.draft, datastore=args.datastore, dtype=args.dtype)
  report = plan(
    engine,
    encode(tok, texts, chat=args.chat),
    max_new_tokens=args.max_new_tokens,
    modes=args.modes,
    gammas=args.gamma,
    thresholds=args.draft_threshold,
    measure=args.measure,
    measure_thresholds=args.measure_threshold,
    ngram=args.ngram,
    ngram_min=args.ngram_min,
    batch_size=args.batch_size,
    sampling=SamplingConfig(temperature=args.temperature),
    seed=args.seed,
    repeat=args.repeat,
    runs_per_setting=args.runs,
    log=lambda line: print(line, file=sys.stderr, flush=True),
  )
  print(table(report))
  if args.out:
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(f"wrote plan {args.out}")
  return 0
