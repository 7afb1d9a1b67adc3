"""Chat / SFT examples -> tokens with the tokenizer's chat template and a response-only loss mask.

    tokens, mask = encode_chat(tokenizer, "What is 2+2?", "4.")

The prompt part is the template applied to the user turn with the generation prompt
(`<|im_start|>assistant\\n` for ChatML); the response part is the rest of the full conversation's text.
The two parts are tokenized separately and concatenated, which is exactly what the model sees when it
generates the response after the prompt. `mask[i] = 1` for response tokens up to and including the
end-of-turn token (eos), 0 for the prompt and for template text after the eos.
"""

from __future__ import annotations

import numpy as np

from specjax.errors import SpecjaxError


def _template(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
  if not getattr(tokenizer, "chat_template", None):
    raise SpecjaxError(
      "the tokenizer has no chat template; chat examples need one (use the target checkpoint's tokenizer)"
    )
  return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def prompt_text(tokenizer, prompt: str, system: str | None = None) -> str:
  """The templated prompt, ending with the assistant generation prompt."""
  messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
  return _template(tokenizer, messages, add_generation_prompt=True)


def encode_chat(tokenizer, prompt: str, response: str, system: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Tokens int32 [N] and loss mask uint8 [N] (1 on response tokens) of one (prompt, response) pair."""
  messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
  head = _template(tokenizer, messages, add_generation_prompt=True)
  full = _template(tokenizer, messages + [{"role": "assistant", "content": response}], add_generation_prompt=False)
  if not full.startswith(head):
    raise SpecjaxError("the tokenizer's chat template does not extend the prompt with the response; cannot mask it")
  head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
  tail_ids = tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"]
  mask = np.ones(len(tail_ids), np.uint8)
  eos = tokenizer.eos_token_id
  if eos is not None and eos in tail_ids:
    last = len(tail_ids) - 1 - tail_ids[::-1].index(eos)
    mask[last + 1 :] = 0
  tokens = np.asarray(list(head_ids) + list(tail_ids), np.int32)
  return tokens, np.concatenate([np.zeros(len(head_ids), np.uint8), mask])
