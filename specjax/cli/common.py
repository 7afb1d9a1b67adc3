"""What every subcommand module shares: the command table, list parsing, the training commands' arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable

COMMANDS: list[
  tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]
] = []

PROMPTS_HELP = 'JSONL file of {"prompt": ...} lines, or a built-in suite: mt-bench|humaneval|gsm|grounded'


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
  """Register a subcommand: its name, one line of help, a function adding its arguments, its handler."""

  def register(fn):
    COMMANDS.append((name, help, add_args, fn))
    return fn

  return register


def csv_list(kind):
  def parse(text: str):
    try:
      return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}s, got {text!r}") from None

  return parse


def dtype_arg(p: argparse.ArgumentParser, what: str) -> None:
  """`--dtype`: the compute dtype of the models a command runs (and of their KV caches)."""
  from specjax.models.config import COMPUTE_DTYPES

  p.add_argument(
    "--dtype",
    default="auto",
    choices=COMPUTE_DTYPES,
    help=f"compute dtype of {what} (parameters keep theirs; logits stay float32); auto = bfloat16 on GPU/TPU, "
    "float32 on CPU",
  )


def train_args(kind: str, example: str):
  def add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help=f"YAML file of a {kind} (e.g. {example})")
    p.add_argument("--out", required=True, help="run folder; running again with the same folder resumes")
    p.add_argument("--steps", type=int, default=None, help="length of the run and of its LR schedule (= steps=N)")
    p.add_argument("--stop-at", type=int, default=None, help="end early at step M with a checkpoint (rerun to finish)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (dotted for sections: optim.lr=1e-3)")

  return add


def run_training(args: argparse.Namespace, cls, fn) -> int:
  from specjax.config import load_config

  overrides = list(args.overrides) + ([f"steps={args.steps}"] if args.steps is not None else [])
  cfg = load_config(cls, args.config, overrides)
  result = fn(cfg, args.out, stop_at=args.stop_at)
  if result.status == "signal":
    return 128 + int(result.signum)
  if result.status == "stopped":
    print(f"stopped at step {result.step} of {cfg.steps}; rerun without --stop-at to finish")
  return 0
