"""Named model configurations.

- `tiny`: a random test model (runs in milliseconds).
- `drafter-s`: a drafter for the SmolLM2 vocabulary (49152), about 17M parameters.
- `smollm2-135m`: SmolLM2-135M(-Instruct), the default target.
- `llama2-chat-drafter-115m`: the drafter of Goel et al. 2024 for Llama 2 Chat (vocab 32000, untied).
- `llama2-7b`: Llama 2 7B, for shape checks with `jax.eval_shape` only.
"""

from __future__ import annotations

from specjax.errors import SpecjaxError
from specjax.models.llama import LlamaConfig

PRESETS: dict[str, LlamaConfig] = {
  "tiny": LlamaConfig(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    rope_theta=10000.0,
    max_position_embeddings=512,
  ),
  "drafter-s": LlamaConfig(
    vocab_size=49152,
    hidden_size=256,
    intermediate_size=768,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_embeddings=True,
    max_position_embeddings=8192,
    bos_token_id=1,
    eos_token_id=2,
  ),
  "smollm2-135m": LlamaConfig(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_layers=30,
    num_heads=9,
    num_kv_heads=3,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_embeddings=True,
    max_position_embeddings=8192,
    bos_token_id=1,
    eos_token_id=2,
  ),
  "llama2-chat-drafter-115m": LlamaConfig(
    vocab_size=32000,
    hidden_size=1024,
    intermediate_size=2816,
    num_layers=4,
    num_heads=8,
    num_kv_heads=8,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_embeddings=False,
    max_position_embeddings=4096,
    bos_token_id=1,
    eos_token_id=2,
  ),
  "llama2-7b": LlamaConfig(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_layers=32,
    num_heads=32,
    num_kv_heads=32,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_embeddings=False,
    max_position_embeddings=4096,
    bos_token_id=1,
    eos_token_id=2,
  ),
}


def get_preset(name: str) -> LlamaConfig:
  if name not in PRESETS:
    raise SpecjaxError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
  return PRESETS[name]
