"""From checkpoint folders and text to an `Engine` and token lists, and back to text.

engine, tok = load_engine("ckpt/target", "ckpt/draft")  # dtype="auto": bfloat16 on GPU/TPU, float32 on CPU
ids = encode(tok, ["What is 2 + 2?"], chat=True)
run = engine.run(ids, "spec", max_new_tokens=64)
texts = [decode_tokens(tok, r.tokens) for r in run.rows]
texts = greedy_answers(engine, tok, ["What is 2 + 2?"], max_new_tokens=64)   # the same, in one call
"""

from __future__ import annotations

import os
from pathlib import Path

from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer
from specjax.checkpoint.packed import load_draft
from specjax.decode.engine import Engine
from specjax.errors import SpecjaxError
from specjax.models.config import resolve_dtype


def check_same_tokenizer(target_tok, draft_tok, draft_path: str | os.PathLike) -> None:
  """Refuse a draft whose tokenizer differs from the target's (token ids would mean different text)."""
  if draft_tok.get_vocab() != target_tok.get_vocab():
    raise SpecjaxError(
      f"the draft {draft_path} has a different tokenizer from the target ({len(draft_tok)} vs {len(target_tok)} "
      "tokens, or the same size with other ids); speculative decoding needs a draft trained with the target's "
      "tokenizer"
    )


def eos_ids(tokenizer, cfg) -> tuple[int, ...]:
  """The tokens that end an answer: the tokenizer's EOS and the model config's."""
  ids = {tokenizer.eos_token_id, cfg.eos_token_id}
  return tuple(sorted(int(i) for i in ids if i is not None))


def load_engine(
  target: str | os.PathLike,
  draft: str | os.PathLike | None = None,
  max_len: int | None = None,
  datastore: str | os.PathLike | None = None,
  dtype: str = "auto",
):
  """Load the target (and draft) checkpoints, the target's tokenizer and optionally a datastore (refused
  when built with another tokenizer); return (Engine, tokenizer). Both models compute, and keep their KV
  caches, in `dtype` ("auto": `specjax.models.config.default_compute_dtype`), whatever compute dtype their
  checkpoints were saved with; parameters keep their stored dtype."""
  compute = resolve_dtype(dtype)  # refused before anything is read
  tgt = load_checkpoint(target)
  tok = load_tokenizer(target)
  d_cfg = d_params = None
  if draft is not None:
    d = load_draft(draft, tgt)  # a packed draft (only its trained tensors) is rebuilt from the target
    if any((Path(draft) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
      check_same_tokenizer(tok, load_tokenizer(draft), draft)
    d_cfg, d_params = d.config.replace(dtype=compute), d.params
  store = None
  if datastore is not None:
    from specjax.data.datastore import check_tokenizer, load_datastore

    store = load_datastore(datastore)
    check_tokenizer(store, tok, datastore)
  # The Engine refuses a model with fewer embedding rows than the tokenizer has tokens.
  engine = Engine(
    tgt.config.replace(dtype=compute),
    tgt.params,
    d_cfg,
    d_params,
    eos_ids=eos_ids(tok, tgt.config),
    vocab_size=len(tok),
    max_len=max_len,
    datastore=store,
  )
  return engine, tok


def encode(tokenizer, texts: list[str], chat: bool = False) -> list[list[int]]:
  """Token ids of each prompt; with `chat`, wrapped as one user turn by the tokenizer's chat template."""
  out = []
  for text in texts:
    if chat:
      if not getattr(tokenizer, "chat_template", None):
        raise SpecjaxError("--chat needs a tokenizer with a chat template; this checkpoint's tokenizer has none")
      ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
      )
      if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    else:
      ids = tokenizer(text)["input_ids"]
    out.append([int(i) for i in ids])
  return out


def decode_tokens(tokenizer, tokens: list[int]) -> str:
  """The answer's text, special tokens (EOS) dropped."""
  return tokenizer.decode(tokens, skip_special_tokens=True)


def greedy_answers(engine, tokenizer, texts: list[str], max_new_tokens: int, batch_size: int = 1) -> list[str]:
  """The engine target's greedy (`ar`) answers to `texts`, each sent as one user turn of the chat template:
  what a model says, for quality checks beside the speed ones."""
  run = engine.run(encode(tokenizer, texts, chat=True), "ar", max_new_tokens=max_new_tokens, batch_size=batch_size)
  return [decode_tokens(tokenizer, r.tokens) for r in run.rows]
