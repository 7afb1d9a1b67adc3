"""`specjax eval-gsm` and `specjax side-by-side`: what a fine-tune did to the answers (quality), beside
`specjax bench` (speed)."""

from __future__ import annotations

import argparse

from specjax.cli.common import PROMPTS_HELP, command, csv_list


def _gsm_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--target", required=True, help="model checkpoint folder")
  p.add_argument("--limit", type=int, default=100, help="number of held-out gsm_symbolic problems")
  p.add_argument("--max-new-tokens", type=int, default=256, help="the fixed answer budget (greedy)")
  p.add_argument("--batch-size", type=int, default=8)
  p.add_argument(
    "--exclude", help="prompts never to evaluate on (the training data: a make-data folder, or any " + PROMPTS_HELP
  )
  p.add_argument("--out", required=True, help="results JSON file (accuracy and every problem's answer)")


@command("eval-gsm", "GSM exact-match accuracy on held-out reasoning-gym problems (greedy, last number)", _gsm_args)
def _cmd_eval_gsm(args: argparse.Namespace) -> int:
  import json

  from specjax.decode.text import load_engine
  from specjax.eval.gsm import eval_gsm, gsm_problems
  from specjax.fileio import atomic_write_text
  from specjax.prompts.suites import load_prompts

  exclude = load_prompts(args.exclude) if args.exclude else []
  problems, excluded = gsm_problems(args.limit, exclude=exclude)
  engine, tok = load_engine(args.target)
  result = eval_gsm(engine, tok, problems, args.max_new_tokens, batch_size=args.batch_size, excluded=excluded)
  record = {"target": str(args.target), "exclude": args.exclude, **result}
  atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
  print(f"GSM accuracy {result['correct']}/{result['n']} = {result['accuracy']:.3f}; wrote {args.out}")
  return 0


def _side_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--targets", type=csv_list(str), required=True, help="comma list of model checkpoint folders")
  p.add_argument("--names", type=csv_list(str), help="comma list of column names (default: the folders)")
  p.add_argument("--prompts", required=True, help=PROMPTS_HELP)
  p.add_argument("--limit", type=int, default=10, help="use only the first N prompts")
  p.add_argument("--max-new-tokens", type=int, default=128)
  p.add_argument("--out", required=True, help="JSON file: per prompt, each model's greedy answer")


@command("side-by-side", "greedy chat answers of several models to the same prompts, side by side", _side_args)
def _cmd_side_by_side(args: argparse.Namespace) -> int:
  import json

  from specjax.decode.text import greedy_answers, load_engine
  from specjax.errors import SpecjaxError
  from specjax.fileio import atomic_write_text
  from specjax.prompts.suites import load_prompts

  names = args.names or args.targets
  if len(names) != len(args.targets) or len(set(names)) != len(names):
    raise SpecjaxError(f"--names needs one distinct name per target ({len(args.targets)}), got {names}")
  texts = load_prompts(args.prompts)[: args.limit]
  answers = {}
  for name, target in zip(names, args.targets, strict=True):
    engine, tok = load_engine(target)
    answers[name] = greedy_answers(engine, tok, texts, args.max_new_tokens)
  rows = [{"prompt": t, **{n: answers[n][i] for n in names}} for i, t in enumerate(texts)]
  record = {"models": dict(zip(names, args.targets, strict=True)), "max_new_tokens": args.max_new_tokens}
  record.update(decoding="greedy ar, chat template", prompts=rows)
  atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
  print(f"wrote {len(rows)} prompts x {len(names)} models to {args.out}")
  return 0
