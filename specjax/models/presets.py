"""Named model configurations.

- `tiny`: a random test model (runs in milliseconds).
- `drafter-s`: a drafter for the SmolLM2 vocabulary (49152), about 17M parameters.
- `smollm2-135m`: SmolLM2-135M(-Instruct), the default target.
- `llama2-chat-drafter-115m`: the drafter of Goel et al. 2024 for Llama 2 Chat (vocab 32000, untied).
- `llama2-7b`: Llama 2 7B, for shape checks with `jax.eval_shape` only.
- `llama-3.2-1b`, `llama-3.1-8b`, `qwen2.5-0.5b`, `qwen2.5-7b`, `qwen3-0.6b`, `qwen3-8b`: the published
  architectures (config.json of the base models), for shapes, sharding plans and memory estimates.
"""

from __future__ import annotations

from specjax.errors import SpecjaxError
from specjax.models.llama import LlamaConfig

# Llama 3.1 / 3.2 RoPE scaling (rope_scaling in their config.json).
_LLAMA3_ROPE = dict(
  rope_type="llama3", rope_low_freq_factor=1.0, rope_high_freq_factor=4.0, rope_original_max_positions=8192
)

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
  "llama-3.2-1b": LlamaConfig(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_layers=16,
    num_heads=32,
    num_kv_heads=8,
    head_dim=64,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    rope_factor=32.0,
    **_LLAMA3_ROPE,
    tie_embeddings=True,
    max_position_embeddings=131072,
    bos_token_id=128000,
    eos_token_id=128001,
  ),
  "llama-3.1-8b": LlamaConfig(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    rope_factor=8.0,
    **_LLAMA3_ROPE,
    tie_embeddings=False,
    max_position_embeddings=131072,
    bos_token_id=128000,
    eos_token_id=128001,
  ),
  "qwen2.5-0.5b": LlamaConfig(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_layers=24,
    num_heads=14,
    num_kv_heads=2,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    architecture="qwen2",
    tie_embeddings=True,
    max_position_embeddings=32768,
    bos_token_id=151643,
    eos_token_id=151643,
  ),
  "qwen2.5-7b": LlamaConfig(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    architecture="qwen2",
    tie_embeddings=False,
    max_position_embeddings=131072,
    bos_token_id=151643,
    eos_token_id=151643,
  ),
  "qwen3-0.6b": LlamaConfig(
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_layers=28,
    num_heads=16,
    num_kv_heads=8,
    head_dim=128,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    architecture="qwen3",
    tie_embeddings=True,
    max_position_embeddings=40960,
    bos_token_id=151643,
    eos_token_id=151645,
  ),
  "qwen3-8b": LlamaConfig(
    vocab_size=151936,
    hidden_size=4096,
    intermediate_size=12288,
    num_layers=36,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    architecture="qwen3",
    tie_embeddings=False,
    max_position_embeddings=40960,
    bos_token_id=151643,
    eos_token_id=151645,
  ),
}


def get_preset(name: str) -> LlamaConfig:
  if name not in PRESETS:
    raise SpecjaxError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
  return PRESETS[name]
