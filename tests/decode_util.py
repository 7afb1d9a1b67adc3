"""Shared helpers of the decoding tests: small random models and an engine that compiles quickly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from specjax.decode.engine import Engine
from specjax.models.llama import LlamaConfig
from specjax.models.presets import get_preset
from specjax.models.registry import init_params

FAST = {"xla_backend_optimization_level": 0}  # halves XLA compile time; results are unchanged


def tiny(vocab_size: int = 128, layers: int = 2, init: float = 0.5) -> LlamaConfig:
  """The tiny preset with peaked (large-init) logits, so argmax never sits on a near-tie."""
  return get_preset("tiny").replace(vocab_size=vocab_size, num_layers=layers, initializer_range=init)


def model(cfg: LlamaConfig, seed: int):
  return cfg, init_params(cfg, jax.random.key(seed))


def perturbed(target, scale: float, seed: int = 5):
  """The target with Gaussian noise added to every parameter: a draft that agrees often, not always."""
  cfg, params = target
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  noisy = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
  return cfg, jax.tree.unflatten(tree, noisy)


def engine(target, draft=None, **kw) -> Engine:
  d_cfg, d_params = draft if draft is not None else (None, None)
  return Engine(target[0], target[1], d_cfg, d_params, compiler_options=FAST, **kw)


def prompts(lengths, vocab: int = 128, seed: int = 0) -> list[list[int]]:
  rng = np.random.default_rng(seed)
  return [rng.integers(0, vocab, size=n).tolist() for n in lengths]


CHAT_TEMPLATE = (
  "{% for m in messages %}<user> {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<bot>{% endif %}"
)


def word_tokenizer(vocab_size: int = 128, prefix: str = "w"):
  """An offline word-level tokenizer: [UNK], <eos>, <user>, <bot> and words w0, w1, ..."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  special = ["[UNK]", "<eos>", "<user>", "<bot>"]
  vocab = {t: i for i, t in enumerate(special + [f"{prefix}{i}" for i in range(vocab_size - len(special))])}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<eos>")
  fast.chat_template = CHAT_TEMPLATE
  return fast


def save_model(path, cfg: LlamaConfig, params, tokenizer=None):
  from specjax.checkpoint.orbax_io import save_checkpoint

  return save_checkpoint(path, cfg, params, tokenizer=tokenizer)


def chat_ids(tok, prompt):
  """A prompt through the tokenizer's chat template, as the real-model tests feed it."""
  text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
  return tok(text, add_special_tokens=False)["input_ids"]


def plain_greedy(cfg, params, ids, n):
  """A plain cached greedy loop: the reference for the real models (the compiled engine is tested elsewhere)."""
  from specjax.models.registry import model_for

  model = model_for(cfg)
  step = jax.jit(lambda p, t, q, c: model.apply({"params": p}, t, q, c))
  cache = cfg.init_cache(1, len(ids) + n)
  logits, cache = step(params, jnp.array([ids]), jnp.arange(len(ids))[None], cache)
  out = []
  for i in range(n):
    out.append(int(jnp.argmax(logits[0, -1])))
    if out[-1] == cfg.eos_token_id:
      break
    logits, cache = step(params, jnp.array([[out[-1]]]), jnp.array([[len(ids) + i]]), cache)
  return out
