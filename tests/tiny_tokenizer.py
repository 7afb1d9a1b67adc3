"""A tiny word-level tokenizer with a ChatML chat template, built locally (no hub) for tests."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = (
  "the a cat dog bird fish sat ran flew swam on under over near mat tree sky sea and then it was red blue green "
  "big small happy sad what is who where why how yes no one two three four five system user assistant"
).split()
SPECIALS = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def make_tokenizer(folder: str | Path) -> Path:
  """Write tokenizer files into `folder` (loadable with specjax.checkpoint.orbax_io.load_tokenizer)."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  vocab = {tok: i for i, tok in enumerate(SPECIALS + ["\n"] + WORDS)}
  tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.WhitespaceSplit()])
  fast = PreTrainedTokenizerFast(
    tokenizer_object=tk, unk_token="<unk>", bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
  )
  fast.chat_template = CHATML
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  fast.save_pretrained(str(folder))
  return folder


def make_corpus(path: str | Path, n_docs: int = 200, seed: int = 0) -> Path:
  """A JSONL corpus of short patterned stories (learnable in a few steps)."""
  import json

  rng = random.Random(seed)
  animals, places, colors = ["cat", "dog", "bird", "fish"], ["mat", "tree", "sky", "sea"], ["red", "blue", "green"]
  verbs = {"cat": "sat", "dog": "ran", "bird": "flew", "fish": "swam"}
  lines = []
  for _ in range(n_docs):
    sents = []
    for _ in range(rng.randint(1, 4)):
      a = rng.choice(animals)
      sents.append(
        f"the {rng.choice(colors)} {a} {verbs[a]} {rng.choice(['on', 'under', 'over', 'near'])} the {rng.choice(places)}"
      )
    lines.append(json.dumps({"text": " and then ".join(sents)}))
  path = Path(path)
  path.write_text("\n".join(lines) + "\n")
  return path
