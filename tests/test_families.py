"""Model families against transformers' own classes: Llama 3.x (llama3 and linear RoPE scaling), Mistral,
Qwen2/2.5 and Qwen3, each a random tiny model.

Per family: float32 logits of a full forward and of cached decoding (prefill, then one-token steps)
within 1e-4 of transformers, at positions past the original context for the scaled RoPE; HF -> specjax
-> HF bit-identical tensors, reloaded by the family's own class; greedy generation token-identical to
`generate`. Then GGUF import (qwen2, qwen3, llama with llama3 RoPE factors), presets, refusals.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from specjax.checkpoint import hf
from specjax.checkpoint.convert import export_hf, import_model
from specjax.checkpoint.gguf import GGUF_TO_HF, GGUFModel, llama3_rope_from_factors
from specjax.checkpoint.orbax_io import load_checkpoint
from specjax.decode.engine import Engine
from specjax.errors import SpecjaxError
from specjax.models.llama import LlamaConfig, ModelConfig, rope_frequencies
from specjax.models.presets import get_preset
from specjax.models.registry import count_params, init_params, model_for, param_shapes

FAST = {"xla_backend_optimization_level": 0}
T = 80  # tokens per row: past the original context (64) of the scaled-RoPE models
BASE = dict(
  vocab_size=96,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
  rms_norm_eps=1e-6,
  initializer_range=0.1,
  bos_token_id=1,
  eos_token_id=2,
)
LLAMA3 = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
# name: (transformers class, config overrides, what specjax must read from config.json)
FAMILIES = {
  "llama3": (
    "LlamaForCausalLM",
    dict(
      max_position_embeddings=256,
      tie_word_embeddings=True,
      rope_parameters={**LLAMA3, "rope_theta": 1e4, "original_max_position_embeddings": 64},
    ),
    dict(architecture="llama", rope_type="llama3", rope_factor=4.0, rope_original_max_positions=64),
  ),
  "llama-linear": (
    "LlamaForCausalLM",
    dict(max_position_embeddings=64, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
    dict(architecture="llama", rope_type="linear", rope_factor=2.0, tie_embeddings=False),
  ),
  "mistral": (
    "MistralForCausalLM",
    dict(max_position_embeddings=256, sliding_window=None, head_dim=16, rope_parameters={"rope_theta": 1e6}),
    dict(architecture="mistral", head_dim=16),
  ),
  "qwen2": (
    "Qwen2ForCausalLM",
    dict(max_position_embeddings=256, tie_word_embeddings=True, rope_parameters={"rope_theta": 1e6}),
    dict(architecture="qwen2", qkv_bias=True, tie_embeddings=True),
  ),
  "qwen3": (
    "Qwen3ForCausalLM",
    dict(max_position_embeddings=256, head_dim=16, rope_parameters={"rope_theta": 1e6}),
    dict(architecture="qwen3", qk_norm=True, head_dim=16, tie_embeddings=False),
  ),
}


def make_hf_model(folder, family: str, seed: int = 0, **extra):
  """A random tiny transformers model of `family`, saved to `folder` (norms and biases random too)."""
  cls_name, overrides, _ = FAMILIES[family]
  cls = getattr(transformers, cls_name)
  torch.manual_seed(seed)
  model = cls(cls.config_class(**{**BASE, **overrides, **extra})).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5)
      elif name.endswith("bias"):
        p.normal_(0.0, 0.5)
  model.save_pretrained(folder)
  return model


def hf_logits(model, tokens) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens))).logits.float().numpy()


def _tokens(B: int, n: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, BASE["vocab_size"], (B, n))


def _positions(B: int, n: int, start: int = 0):
  return jnp.broadcast_to(jnp.arange(start, start + n), (B, n))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
  """(name, transformers model, HF folder, specjax checkpoint) for each family, imported once."""
  root = tmp_path_factory.mktemp(request.param)
  model = make_hf_model(root / "hf", request.param)
  import_model(root / "hf", root / "ck")
  return request.param, model, root, load_checkpoint(root / "ck")


def test_config_fields_follow_the_family(family):
  name, _, _, ck = family
  for field, value in FAMILIES[name][2].items():
    assert getattr(ck.config, field) == value, field


def test_full_and_cached_logits_match_transformers(family):
  _, model, _, ck = family
  cfg, B = ck.config, 2
  tokens = _tokens(B, T)
  want = hf_logits(model, tokens)
  apply = jax.jit(lambda p, t, pos, c: model_for(cfg).apply({"params": p}, t, pos, c))
  full, _ = apply(ck.params, jnp.asarray(tokens), _positions(B, T), None)
  np.testing.assert_allclose(np.asarray(full), want, atol=1e-4, rtol=0)
  # Prefill up to P, then one token at a time through the KV cache (all past position 64).
  P = T - 8
  logits, cache = apply(ck.params, jnp.asarray(tokens[:, :P]), _positions(B, P), cfg.init_cache(B, T))
  steps = [logits]
  for t in range(P, T):
    logits, cache = apply(ck.params, jnp.asarray(tokens[:, t : t + 1]), _positions(B, 1, t), cache)
    steps.append(logits)
  np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, axis=1)), want, atol=1e-4, rtol=0)


def test_hf_round_trip_is_identical_and_loads_in_its_own_class(family):
  name, model, root, _ = family
  export_hf(root / "ck", root / "back")
  a, b = load_file(root / "hf" / "model.safetensors"), load_file(root / "back" / "model.safetensors")
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  config = json.loads((root / "back" / "config.json").read_text())
  cls_name = FAMILIES[name][0]
  assert config["architectures"] == [cls_name] and config["model_type"] == model.config.model_type
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(root / "back").eval()
  assert type(reloaded).__name__ == cls_name
  tokens = _tokens(2, T, seed=1)
  np.testing.assert_array_equal(hf_logits(reloaded, tokens), hf_logits(model, tokens))
  # ... and its config imports back to the same specjax config (head_dim is written out explicitly).
  again, cfg = hf.config_from_hf(config), load_checkpoint(root / "ck").config
  assert again.dh == cfg.dh and again.replace(head_dim=cfg.head_dim) == cfg


def test_greedy_generation_matches_transformers_generate(family):
  _, model, _, ck = family
  prompts = [_tokens(1, 9, seed=2)[0].tolist(), _tokens(1, 14, seed=3)[0].tolist()]
  run = Engine(ck.config, ck.params, compiler_options=FAST).run(prompts, "ar", max_new_tokens=6, batch_size=2)
  for prompt, row in zip(prompts, run.rows, strict=True):
    with torch.no_grad():
      out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert row.tokens == out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("name", ["llama3", "mistral", "qwen2", "qwen3"])
def test_import_keeps_the_folders_tokenizer(tmp_path, name):
  """A generic tokenizer.json (BPE of <unk> <s> </s>, no <|endoftext|>) with exactly as many tokens as
  embedding rows. transformers loads a qwen2 folder's tokenizer as Qwen2Tokenizer, which adds
  <|endoftext|> and swaps the pre-tokenizer: the checkpoint must keep the folder's tokenizer instead,
  or `generate` refuses the model it just imported."""
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers

  from specjax.checkpoint.orbax_io import load_tokenizer
  from specjax.decode.text import load_engine

  bpe = Tokenizer(models.BPE(unk_token="<unk>"))
  bpe.pre_tokenizer = pre_tokenizers.Whitespace()
  trainer = trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
  bpe.train_from_iterator(["the cat sat on the mat and the dog ran under the tree"] * 20, trainer)
  source = transformers.PreTrainedTokenizerFast(
    tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
  )
  make_hf_model(tmp_path / "hf", name, vocab_size=len(source))
  source.save_pretrained(tmp_path / "hf")
  import_model(tmp_path / "hf", tmp_path / "ck")
  tok = load_tokenizer(tmp_path / "ck")
  assert len(tok) == len(source) and tok.get_vocab() == source.get_vocab()
  assert "<|endoftext|>" not in tok.get_vocab() and tok.pad_token is None
  text = "the cat, the dog! sat on the mat"  # ',' and '!' are unknown: the pre-tokenizer must stay Whitespace
  assert tok(text).input_ids == source(text).input_ids
  engine, _ = load_engine(tmp_path / "ck")  # refused when the tokenizer outgrows the embedding
  assert engine.vocab_size == len(source)


# ----------------------------------------------------------------------------------------------- GGUF


def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
  """llama.cpp's converter direction for llama q/k rows: per head, (half, pair) -> (pair, half)."""
  return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_divisors(rope: dict, dh: int) -> np.ndarray:
  """The rope_freqs tensor llama.cpp writes for llama3 scaling: inv_freq / scaled inv_freq per frequency."""
  inv = 1.0 / rope["rope_theta"] ** (np.arange(0, dh, 2) / dh)
  old, f = rope["original_max_position_embeddings"], rope["factor"]
  lo, hi = rope["low_freq_factor"], rope["high_freq_factor"]
  out = []
  for wavelen in 2 * np.pi / inv:
    if wavelen < old / hi:
      out.append(1.0)
    elif wavelen > old / lo:
      out.append(f)
    else:
      smooth = (old / wavelen - lo) / (hi - lo)
      out.append(1 / ((1 - smooth) / f + smooth))
  return np.asarray(out, np.float32)


def write_gguf(path, model, arch: str):
  """A GGUF of a transformers model, laid out as llama.cpp's converter lays it out (float32 tensors)."""
  import gguf

  c = model.config.to_dict()
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(c["num_hidden_layers"])
  w.add_context_length(c["max_position_embeddings"])
  w.add_embedding_length(c["hidden_size"])
  w.add_feed_forward_length(c["intermediate_size"])
  w.add_head_count(c["num_attention_heads"])
  w.add_head_count_kv(c["num_key_value_heads"])
  w.add_rope_freq_base(c["rope_parameters"]["rope_theta"])
  w.add_layer_norm_rms_eps(c["rms_norm_eps"])
  w.add_vocab_size(c["vocab_size"])
  if c.get("head_dim"):
    w.add_key_length(c["head_dim"])
    w.add_value_length(c["head_dim"])
  names = {hf_name: key for key, hf_name in GGUF_TO_HF.items()}
  for name, t in model.state_dict().items():
    layer = name.split(".")[2] if name.startswith("model.layers.") else None
    key = names[name.replace(f".{layer}.", ".{i}.", 1) if layer else name].format(i=layer)
    t = t.float().numpy()
    if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
      heads = c["num_attention_heads"] if "q_proj" in name else c["num_key_value_heads"]
      t = _llama_cpp_permute(t, heads)
    if name == "lm_head.weight" and c["tie_word_embeddings"]:
      continue
    w.add_tensor(key, np.ascontiguousarray(t))
  if c["rope_parameters"].get("rope_type") == "llama3":
    w.add_tensor(
      "rope_freqs.weight", _llama3_divisors(c["rope_parameters"], c["hidden_size"] // c["num_attention_heads"])
    )
    w.add_rope_scaling_orig_ctx_len(c["rope_parameters"]["original_max_position_embeddings"])
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


@pytest.mark.parametrize("name,arch", [("qwen2", "qwen2"), ("qwen3", "qwen3"), ("llama3", "llama")])
def test_gguf_import_matches_transformers(tmp_path, name, arch):
  pytest.importorskip("gguf")
  model = make_hf_model(tmp_path / "hf", name, seed=4)
  path = write_gguf(tmp_path / f"{name}.gguf", model, arch)
  got = GGUFModel(path).config
  want = hf.config_from_hf(json.loads((tmp_path / "hf" / "config.json").read_text()))
  assert got.rms_norm_eps == np.float32(want.rms_norm_eps)  # GGUF metadata holds float32
  # No tokenizer metadata here (so no bos/eos), and GGUF does not record initializer_range.
  want = want.replace(rms_norm_eps=got.rms_norm_eps, bos_token_id=None, eos_token_id=None, initializer_range=0.02)
  assert got.dh == want.dh and got == want.replace(head_dim=got.head_dim)
  import_model(path, tmp_path / "ck")
  ck = load_checkpoint(tmp_path / "ck")
  tokens = _tokens(2, T, seed=5)
  ours, _ = model_for(ck.config).apply({"params": ck.params}, jnp.asarray(tokens), _positions(2, T))
  np.testing.assert_allclose(np.asarray(ours), hf_logits(model, tokens), atol=1e-4, rtol=0)


def test_llama3_rope_is_recovered_from_llama_cpp_divisors():
  """A Llama 3.1 / 3.2 GGUF carries its RoPE scaling as rope_freqs (the original context is not written)."""
  for preset in ("llama-3.1-8b", "llama-3.2-1b"):
    cfg = get_preset(preset)
    rope = dict(rope_theta=cfg.rope_theta, original_max_position_embeddings=8192, factor=cfg.rope_factor)
    divisors = _llama3_divisors({**rope, "low_freq_factor": 1.0, "high_freq_factor": 4.0}, cfg.dh)
    plain = cfg.replace(rope_type="default", rope_factor=1.0, rope_original_max_positions=None)
    assert llama3_rope_from_factors(divisors, plain, 8192) == cfg
    np.testing.assert_allclose(rope_frequencies(plain) / rope_frequencies(cfg), divisors, rtol=1e-6)
  with pytest.raises(SpecjaxError, match="do not follow Llama 3's rule"):
    llama3_rope_from_factors(np.linspace(1, 8, plain.dh // 2), plain, 8192)


def _gguf_metadata_only(path, **extra):
  """A qwen2 GGUF with complete metadata (and one tensor) plus `extra` writer calls."""
  import gguf

  w = gguf.GGUFWriter(str(path), "qwen2")
  for call, value in dict(
    block_count=1,
    context_length=64,
    embedding_length=8,
    feed_forward_length=8,
    head_count=2,
    head_count_kv=1,
    vocab_size=16,
    **extra,
  ).items():
    getattr(w, f"add_{call}")(value)
  w.add_tensor("token_embd.weight", np.zeros((16, 8), np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def test_gguf_refusals(tmp_path):
  gguf = pytest.importorskip("gguf")
  assert GGUFModel(_gguf_metadata_only(tmp_path / "ok.gguf")).config.architecture == "qwen2"
  with pytest.raises(SpecjaxError, match="sliding-window attention \\(window 16 < context 64\\)"):
    GGUFModel(_gguf_metadata_only(tmp_path / "swa.gguf", sliding_window=16))
  with pytest.raises(SpecjaxError, match="RoPE scaling of type 'yarn' is not supported"):
    GGUFModel(_gguf_metadata_only(tmp_path / "yarn.gguf", rope_scaling_type=gguf.RopeScalingType.YARN))
  linear = GGUFModel(
    _gguf_metadata_only(tmp_path / "lin.gguf", rope_scaling_type=gguf.RopeScalingType.LINEAR, rope_scaling_factor=4.0)
  )
  assert (linear.config.rope_type, linear.config.rope_factor) == ("linear", 4.0)


# ------------------------------------------------------------------------------- configs and presets

# config.json of published checkpoints, as they are on the Hugging Face hub (transformers 4.x layout).
PUBLISHED = {
  "llama-3.1-8b": {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192,
      "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "vocab_size": 128256,
  },
  "qwen2.5-0.5b": {
    "architectures": ["Qwen2ForCausalLM"],
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 896,
    "initializer_range": 0.02,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "max_window_layers": 24,
    "model_type": "qwen2",
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
  },
  "qwen3-0.6b": {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
  },
}
MISTRAL_V01 = {
  "architectures": ["MistralForCausalLM"],
  "hidden_size": 4096,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "vocab_size": 32000,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_config_json_imports_as_the_preset(name):
  assert hf.config_from_hf(PUBLISHED[name]) == get_preset(name)


def test_presets_parameter_counts():
  """The published sizes (embeddings counted once when tied)."""
  counts = {
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.1-8b": 8_030_261_248,
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-7b": 7_615_616_512,
    "qwen3-0.6b": 596_049_920,
    "qwen3-8b": 8_190_735_360,
  }
  for name, n in counts.items():
    assert count_params(param_shapes(get_preset(name))) == n, name
  shapes = param_shapes(get_preset("qwen3-0.6b"))["layers"]["attn"]
  assert shapes["q_norm"]["scale"].shape == (28, 128) and shapes["q_proj"]["kernel"].shape == (28, 1024, 2048)
  assert param_shapes(get_preset("qwen2.5-7b"))["layers"]["attn"]["k_proj"]["bias"].shape == (28, 512)


def test_config_json_of_older_versions_still_loads():
  """A model_config.json written before the families has no architecture: it is a llama; llama configs
  serialise exactly as before (dataset fingerprints hash them)."""
  old_keys = {
    "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
    "rope_theta", "rms_norm_eps", "tie_embeddings", "max_position_embeddings", "initializer_range",
    "bos_token_id", "eos_token_id", "dtype", "param_dtype", "remat",
  }  # fmt: skip
  old = get_preset("smollm2-135m").to_dict()
  assert set(old) == old_keys
  cfg = ModelConfig.from_dict(old)
  assert cfg.architecture == "llama" and not cfg.qkv_bias and not cfg.qk_norm and cfg.rope_type == "default"
  assert LlamaConfig is ModelConfig
  for name in ("qwen2.5-0.5b", "qwen3-0.6b", "llama-3.1-8b"):
    d = get_preset(name).to_dict()
    assert ModelConfig.from_dict(d) == get_preset(name)
    assert "qkv_bias" not in d and "qk_norm" not in d  # implied by the architecture
  # Changing the architecture brings its features along.
  assert get_preset("tiny").replace(architecture="qwen3").qk_norm
  base = {**get_preset("tiny").to_dict(), "architecture": "qwen2"}
  assert ModelConfig.from_dict(base).qkv_bias


def test_user_errors_are_clear():
  tiny = get_preset("tiny")
  with pytest.raises(SpecjaxError, match="unknown architecture 'gpt2'; supported: llama, mistral, qwen2, qwen3"):
    tiny.replace(architecture="gpt2")
  with pytest.raises(SpecjaxError, match="RoPE scaling type 'yarn' is not supported"):
    tiny.replace(rope_type="yarn")
  with pytest.raises(SpecjaxError, match="architecture 'qwen2' has qkv_bias=True"):
    tiny.replace(architecture="qwen2", qkv_bias=False)
  with pytest.raises(SpecjaxError, match="rope_low_freq_factor < rope_high_freq_factor"):
    tiny.replace(rope_type="llama3", rope_low_freq_factor=4.0)
  published = PUBLISHED["llama-3.1-8b"]
  with pytest.raises(SpecjaxError, match="RoPE scaling of type 'yarn' is not supported"):
    hf.config_from_hf({**published, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
  with pytest.raises(SpecjaxError, match="llama3 RoPE scaling lacks the field 'low_freq_factor'"):
    hf.config_from_hf({**published, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
  with pytest.raises(SpecjaxError, match="sliding-window attention \\(window 4096 < context 32768\\)"):
    hf.config_from_hf(MISTRAL_V01)
  assert hf.config_from_hf({**MISTRAL_V01, "sliding_window": None}).architecture == "mistral"  # v0.2 and later
  assert hf.config_from_hf({**MISTRAL_V01, "sliding_window": 32768}).architecture == "mistral"
  qwen = PUBLISHED["qwen2.5-0.5b"]
  with pytest.raises(SpecjaxError, match="sliding-window attention \\(window 4096 < context 32768\\)"):
    hf.config_from_hf({**qwen, "use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 12})
  # Only layers from max_window_layers on slide; here none do.
  hf.config_from_hf({**qwen, "use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 24})
  with pytest.raises(SpecjaxError, match="attention_bias=true is not supported"):
    hf.config_from_hf({**PUBLISHED["qwen3-0.6b"], "attention_bias": True})
  with pytest.raises(SpecjaxError, match="Qwen2MoeForCausalLM is not supported"):
    hf.config_from_hf({**qwen, "model_type": "qwen2_moe", "architectures": ["Qwen2MoeForCausalLM"]})


# ------------------------------------------------------------------------------ drafting across families


def test_draft_of_another_family_must_share_the_tokenizer():
  """A llama draft for a qwen3 target: speculative greedy == the target's greedy; a draft with another
  vocabulary is refused, naming the tokenizer."""
  target_cfg = get_preset("tiny").replace(architecture="qwen3", initializer_range=0.5)
  draft_cfg = get_preset("tiny").replace(num_layers=1, initializer_range=0.5)
  target = init_params(target_cfg, jax.random.key(0))
  draft = init_params(draft_cfg, jax.random.key(1))
  engine = Engine(target_cfg, target, draft_cfg, draft, compiler_options=FAST)
  prompts = [[5, 9, 3, 7], [11, 2, 8]]
  ar = engine.run(prompts, "ar", max_new_tokens=8, batch_size=2)
  spec = engine.run(prompts, "spec", max_new_tokens=8, gamma=3, batch_size=2)
  assert [r.tokens for r in spec.rows] == [r.tokens for r in ar.rows]
  other = draft_cfg.replace(vocab_size=64)
  with pytest.raises(SpecjaxError, match="the draft must use the target's tokenizer"):
    Engine(target_cfg, target, other, init_params(other, jax.random.key(2)))
