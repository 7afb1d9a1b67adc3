"""`specjax make-prompts`, `make-data`, `vocab-map`, `datastore`: what the target writes, and what is built from it."""

from __future__ import annotations

import argparse
from pathlib import Path

from specjax.cli.common import command, csv_list, dtype_arg
from specjax.errors import SpecjaxError


def _make_prompts_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--target", required=True, help="the target's specjax checkpoint (it writes the user requests)")
  p.add_argument("--out", required=True, help="new JSONL file of prompts; rerun the same command to resume")
  p.add_argument("--num-prompts", type=int, required=True, help="distinct prompts to keep")
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--top-p", type=float, default=1.0)
  p.add_argument("--max-new-tokens", type=int, default=128, help="longest request (longer ones are dropped)")
  p.add_argument("--batch-size", type=int, default=32, help="rows per compiled sampler call")
  p.add_argument("--round-size", type=int, default=256, help="requests sampled per round (the resume granularity)")
  p.add_argument("--min-words", type=int, default=3, help="drop shorter requests")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--system", default=None, help="optional system message (default: the template's own)")
  p.add_argument("--no-eval-check", action="store_true", help="keep requests that are evaluation-suite prompts")
  p.add_argument(
    "--openings",
    default=None,
    help="steer the requests' first words, one per request in turn: 'instructions' (built-in verbs: Write, "
    "Explain, Describe, ...), or a text file with one opening per line (default: the target chooses)",
  )


def _openings(spec: str | None) -> list[str] | None:
  from specjax.jobs.make_prompts import INSTRUCTION_OPENINGS

  if spec is None:
    return None
  if spec == "instructions":
    return list(INSTRUCTION_OPENINGS)
  path = Path(spec)
  if not path.is_file():
    raise SpecjaxError(f"--openings must be 'instructions' or a text file with one opening per line; {spec} is neither")
  lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
  if not lines:
    raise SpecjaxError(f"--openings file {spec} has no openings (one per line)")
  return lines


@command(
  "make-prompts",
  "have the target write user requests (Magpie-style): a prompt source for make-data that resembles what users ask",
  _make_prompts_args,
)
def _cmd_make_prompts(args: argparse.Namespace) -> int:
  from specjax.jobs.make_prompts import make_prompts

  make_prompts(
    args.target,
    args.out,
    args.num_prompts,
    temperature=args.temperature,
    top_p=args.top_p,
    max_new_tokens=args.max_new_tokens,
    batch_size=args.batch_size,
    round_size=args.round_size,
    min_words=args.min_words,
    seed=args.seed,
    system=args.system,
    check_eval=not args.no_eval_check,
    openings=_openings(args.openings),
  )
  print(f"wrote prompts {args.out}")
  return 0


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
  p.add_argument(
    "--features",
    action="store_true",
    help="also store the target's features and log-normalisers, kept as it samples (float16, D x 2 + 4 bytes a "
    "token): an EAGLE distillation then runs no teacher pass",
  )
  p.add_argument("--max-prompt-tokens", type=int, default=512, help="skip longer prompts (after the chat template)")
  p.add_argument("--system", default=None, help="optional system message")
  p.add_argument("--no-eval-check", action="store_true", help="skip the check that no prompt is in an evaluation suite")
  p.add_argument(
    "--shuffle",
    action="store_true",
    help="answer the prompts in a seeded random order (every prefix mixes the sources)",
  )
  p.add_argument(
    "--snapshot",
    default=None,
    metavar="DIR",
    help="write the shards this unfinished run (same settings) has done to DIR as a dataset, and exit; the run "
    "stays resumable",
  )
  dtype_arg(p, "the target as it samples (recorded in the dataset; a resume must use the same)")


@command("make-data", "generate a distillation dataset: the target's answers to instruction prompts", _make_data_args)
def _cmd_make_data(args: argparse.Namespace) -> int:
  from specjax.jobs.make_data import make_data

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
    features=args.features,
    shuffle=args.shuffle,
    snapshot=args.snapshot,
    dtype=args.dtype,
  )
  print(f"wrote distillation dataset {args.snapshot or args.out}")
  return 0


def _vocab_map_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--data", required=True, help="a `specjax make-data` dataset: the target's own answers are counted")
  p.add_argument("--size", type=int, required=True, help="K, tokens the drafter's head covers (e.g. 8192)")
  p.add_argument("--vocab-size", type=int, default=None, help="the tokenizer's size (default: the dataset's target)")
  p.add_argument("--out", required=True, help="vocabulary map JSON file to write")


@command(
  "vocab-map",
  "rank the target's generated tokens: the K-token draft vocabulary (pretrain model.head_ids_from=FILE)",
  _vocab_map_args,
)
def _cmd_vocab_map(args: argparse.Namespace) -> int:
  from specjax.data.distill_data import load_distill_data
  from specjax.data.vocab_map import dataset_responses, rank_tokens, write_vocab_map

  _, meta = load_distill_data(args.data)
  vocab = args.vocab_size or int(meta.get("target", {}).get("config", {}).get("vocab_size", 0))
  if not vocab:
    raise SpecjaxError("the dataset does not record its target's vocabulary size; pass --vocab-size")
  responses = list(dataset_responses(args.data))
  ends = {r[-1] for r in responses if r}  # EOS and other end tokens: always proposable
  ids, stats = rank_tokens(responses, vocab, args.size, always=sorted(ends)[:64])
  write_vocab_map(args.out, ids, stats)
  print(
    f"wrote {args.out}: {len(ids)} tokens cover {stats['coverage']:.4f} of {stats['counted_tokens']} generated tokens"
  )
  return 0


def _datastore_args(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--data",
    required=True,
    type=csv_list(str),
    help='comma list of make-data folders (their answers), JSONL files ({"text": ...} or {"prompt": ..., '
    '"response": ...}) and .txt files',
  )
  p.add_argument("--tokenizer", required=True, help="the target's checkpoint (its tokenizer reads the text sources)")
  p.add_argument("--out", required=True, help="new datastore folder (must not exist)")


@command(
  "datastore",
  "build a suffix-array datastore of the target's answers for --mode datastore (retrieval drafting)",
  _datastore_args,
)
def _cmd_datastore(args: argparse.Namespace) -> int:
  from specjax.data.datastore import build_datastore

  ds = build_datastore(args.data, args.tokenizer, args.out)
  m = ds.meta
  print(
    f"wrote datastore {args.out}: {m['num_tokens']} tokens in {m['num_documents']} documents, "
    f"{ds.nbytes / 1e6:.1f} MB, suffix array built in {m['build_s']:.1f}s"
  )
  return 0
