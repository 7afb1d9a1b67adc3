"""Tiny target / drafter checkpoints and distillation datasets for the draft-alignment tests."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from tiny_tokenizer import make_tokenizer

from specjax.checkpoint.orbax_io import load_tokenizer, save_checkpoint
from specjax.models.presets import get_preset
from specjax.models.registry import init_params

PROMPTS = [
  "what is the cat",
  "where is the dog",
  "who sat on the mat",
  "why is the sky blue",
  "how big is the sea",
  "what is red and green",
  "where did the bird fly",
  "is the fish happy",
  "who ran under the tree",
  "what is one and two",
  "how small is the cat",
  "where is the blue fish",
]


def tiny_checkpoint(
  folder: Path, seed: int, init_scale: float = 0.02, vocab: int | None = None, bigram: bool = False, **fields
) -> Path:
  """A random tiny-preset model saved as a specjax checkpoint with the tiny ChatML tokenizer.

  bigram=True zeroes the attention and MLP outputs, so the next-token distribution depends on the current
  token only: a sharp (with a large init_scale) but easily learnable teacher.
  """
  tok_dir = folder.parent / f"{folder.name}-tok"
  tokenizer = load_tokenizer(make_tokenizer(tok_dir))
  cfg = get_preset("tiny").replace(initializer_range=init_scale, **fields)
  if vocab is not None:
    cfg = cfg.replace(vocab_size=vocab)
  eos = tokenizer.eos_token_id
  cfg = cfg.replace(eos_token_id=eos, bos_token_id=tokenizer.bos_token_id)
  params = jax.device_get(init_params(cfg, jax.random.key(seed)))
  if bigram:
    params["layers"]["attn"]["o_proj"]["kernel"] = np.zeros_like(params["layers"]["attn"]["o_proj"]["kernel"])
    params["layers"]["mlp"]["down_proj"]["kernel"] = np.zeros_like(params["layers"]["mlp"]["down_proj"]["kernel"])
  return save_checkpoint(folder, cfg, params, tokenizer=tokenizer)


def prompts_file(folder: Path, prompts=PROMPTS) -> Path:
  import json

  path = folder / "prompts.jsonl"
  path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
  return path


def word_generator(vocab_lo: int = 5, vocab_hi: int = 50, length: int = 12, eos: int = 3):
  """A deterministic stand-in sampler: per seed, random word tokens then EOS (for data-pipeline tests)."""

  def generate(prompt_ids, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in prompt_ids:
      n = int(rng.integers(3, length))
      out.append(rng.integers(vocab_lo, vocab_hi, size=n).tolist() + [eos])
    return out

  return generate


def word_data(target: Path, root: Path, num_samples: int, length: int, **kw) -> Path:
  """A make-data dataset at root/data: the stand-in word sampler's answers to PROMPTS."""
  from specjax.jobs.make_data import make_data

  return make_data(
    target,
    str(prompts_file(root)),
    root / "data",
    num_samples=num_samples,
    check_eval=False,
    generate=word_generator(length=length),
    **kw,
  )
