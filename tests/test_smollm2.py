"""The real target: SmolLM2-135M-Instruct imported from its GGUF agrees with transformers on the same file."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from decode_util import chat_ids, plain_greedy

from specjax.checkpoint.convert import export_hf
from specjax.checkpoint.gguf import builtin_smollm2_path
from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer
from specjax.models.llama import Llama

pytestmark = pytest.mark.slow

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "What is 12 times 7?"]
NEW = 16


@pytest.fixture(scope="module")
def hf_gguf_model():
  from transformers import AutoModelForCausalLM

  path = builtin_smollm2_path()
  return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def test_greedy_matches_transformers_on_gguf(smollm2_ckpt, hf_gguf_model):
  ck = load_checkpoint(smollm2_ckpt)
  tok = load_tokenizer(smollm2_ckpt)
  assert ck.config.vocab_size == 49152 and ck.config.num_layers == 30
  for prompt in PROMPTS:
    ids = chat_ids(tok, prompt)
    ours = plain_greedy(ck.config, ck.params, ids, NEW)
    with torch.no_grad():
      ref = hf_gguf_model.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False)[0, len(ids) :].tolist()
    assert ours == ref, (prompt, tok.decode(ours), tok.decode(ref))


def test_export_loads_in_transformers_with_same_logits(smollm2_ckpt, tmp_path):
  from transformers import AutoModelForCausalLM, AutoTokenizer

  export_hf(smollm2_ckpt, tmp_path / "hf")
  model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
  tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
  ids = chat_ids(tok, PROMPTS[0])
  ck = load_checkpoint(smollm2_ckpt)
  ours, _ = Llama(ck.config).apply({"params": ck.params}, jnp.array([ids]), jnp.arange(len(ids))[None])
  with torch.no_grad():
    ref = model(torch.tensor([ids])).logits.numpy()
  # float32 through 30 layers: differences are at the 1e-4 level on logits of magnitude ~20.
  np.testing.assert_allclose(np.asarray(ours), ref, atol=2e-4, rtol=0)
