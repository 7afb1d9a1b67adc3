"""Checkpoints in and out: transformers parity, HF round trip, GGUF layout, Orbax folders, bad input."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

from specjax.checkpoint.convert import export_hf, import_model
from specjax.checkpoint.gguf import unpermute_rows
from specjax.checkpoint.orbax_io import load_checkpoint
from specjax.cli import main
from specjax.errors import SpecjaxError
from specjax.models.llama import Llama

HF_CONFIGS = {
  "gqa_untied_theta5e5": dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=5e5, tie_word_embeddings=False),
  "mha_tied": dict(num_attention_heads=4, num_key_value_heads=4, rope_theta=1e4, tie_word_embeddings=True),
  "mqa_tied_theta1e5": dict(num_attention_heads=4, num_key_value_heads=1, rope_theta=1e5, tie_word_embeddings=True),
}


def make_hf_model(folder, seed=0, **overrides):
  torch.manual_seed(seed)
  kw = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
  )
  kw.update(overrides)
  model = LlamaForCausalLM(HFLlamaConfig(**kw)).eval()
  with torch.no_grad():  # random norms too, so a swapped norm would show
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5)
  model.save_pretrained(folder)
  return model


def hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens))).logits.float().numpy()


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_logits_parity_with_transformers(tmp_path, name):
  model = make_hf_model(tmp_path / "hf", **HF_CONFIGS[name])
  import_model(tmp_path / "hf", tmp_path / "ck")
  ck = load_checkpoint(tmp_path / "ck")
  assert ck.config.tie_embeddings == HF_CONFIGS[name]["tie_word_embeddings"]
  assert ck.config.rope_theta == HF_CONFIGS[name]["rope_theta"]
  tokens = np.random.default_rng(0).integers(0, 96, (2, 17))
  positions = jnp.broadcast_to(jnp.arange(17), (2, 17))
  ours, _ = Llama(ck.config).apply({"params": ck.params}, jnp.asarray(tokens), positions)
  np.testing.assert_allclose(np.asarray(ours), hf_logits(model, tokens), atol=1e-4, rtol=0)


def test_hf_round_trip_is_identical(tmp_path):
  make_hf_model(tmp_path / "hf", **HF_CONFIGS["gqa_untied_theta5e5"])
  import_model(tmp_path / "hf", tmp_path / "ck")
  export_hf(tmp_path / "ck", tmp_path / "back")
  a, b = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # ... and transformers loads the export and computes the same logits.
  reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "back").eval()
  original = LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
  tokens = np.arange(20).reshape(2, 10)
  np.testing.assert_array_equal(hf_logits(reloaded, tokens), hf_logits(original, tokens))


def test_sharded_safetensors_import(tmp_path):
  make_hf_model(tmp_path / "hf", **HF_CONFIGS["mha_tied"])
  whole = load_file(tmp_path / "hf" / "model.safetensors")
  os.remove(tmp_path / "hf" / "model.safetensors")
  names = sorted(whole)
  save_file({k: whole[k] for k in names[: len(names) // 2]}, tmp_path / "hf" / "model-00001-of-00002.safetensors")
  save_file({k: whole[k] for k in names[len(names) // 2 :]}, tmp_path / "hf" / "model-00002-of-00002.safetensors")
  import_model(tmp_path / "hf", tmp_path / "ck")
  export_hf(tmp_path / "ck", tmp_path / "back")
  back = load_file(tmp_path / "back" / "model.safetensors")
  for k in whole:
    np.testing.assert_array_equal(whole[k], back[k])


def test_unpermute_inverts_llama_cpp_permutation():
  """llama.cpp interleaves the rotary halves of each head's rows; unpermute_rows undoes it."""
  n_heads, dh, d = 3, 8, 5
  w = np.random.default_rng(0).normal(size=(n_heads * dh, d))
  permuted = w.reshape(n_heads, 2, dh // 2, d).swapaxes(1, 2).reshape(w.shape)  # the converter's direction
  np.testing.assert_array_equal(unpermute_rows(permuted, n_heads), w)


def _cli(*args):
  return main([str(a) for a in args])


def _no_leftovers(folder):
  return [p for p in os.listdir(folder) if ".tmp-" in p] == []


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
  make_hf_model(tmp_path / "hf", **HF_CONFIGS["mha_tied"])
  # An output folder that exists.
  (tmp_path / "exists").mkdir()
  assert _cli("import", tmp_path / "hf", "--out", tmp_path / "exists") == 2
  assert "already exists" in capsys.readouterr().err
  # A source that does not exist.
  assert _cli("import", tmp_path / "nope", "--out", tmp_path / "o1") == 2
  assert "not found" in capsys.readouterr().err
  # Missing and corrupt config.json.
  bad = tmp_path / "bad"
  bad.mkdir()
  assert _cli("import", bad, "--out", tmp_path / "o2") == 2
  assert "no config.json" in capsys.readouterr().err
  (bad / "config.json").write_text("{not json")
  assert _cli("import", bad, "--out", tmp_path / "o3") == 2
  assert "not valid JSON" in capsys.readouterr().err
  # Unsupported architecture, named.
  cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
  (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
  assert _cli("import", bad, "--out", tmp_path / "o4") == 2
  assert "GPT2LMHeadModel is not supported" in capsys.readouterr().err
  # Missing tensor and mis-shaped tensor.
  (bad / "config.json").write_text(json.dumps(cfg))
  weights = load_file(tmp_path / "hf" / "model.safetensors")
  save_file({k: v for k, v in weights.items() if "layers.1.mlp.up_proj" not in k}, bad / "model.safetensors")
  assert _cli("import", bad, "--out", tmp_path / "o5") == 2
  assert "missing tensors ['model.layers.1.mlp.up_proj.weight']" in capsys.readouterr().err
  weights["model.norm.weight"] = np.ones(7, np.float32)
  save_file(weights, bad / "model.safetensors")
  assert _cli("import", bad, "--out", tmp_path / "o6") == 2
  assert "model.norm.weight has shape (7,)" in capsys.readouterr().err
  # Corrupt safetensors.
  (bad / "model.safetensors").write_bytes(b"\x00garbage")
  assert _cli("import", bad, "--out", tmp_path / "o7") == 2
  assert "not a readable safetensors" in capsys.readouterr().err
  # A GGUF that is not a GGUF / not llama.
  (tmp_path / "x.gguf").write_bytes(b"GGUF but not really")
  assert _cli("import", tmp_path / "x.gguf", "--out", tmp_path / "o8") == 2
  assert "not a readable GGUF" in capsys.readouterr().err
  # Export from something that is not a checkpoint; export onto an existing folder.
  assert _cli("export-hf", tmp_path / "hf", "--out", tmp_path / "o9") == 2
  assert "not a specjax checkpoint" in capsys.readouterr().err
  for i in range(1, 10):
    assert not (tmp_path / f"o{i}").exists()
  assert _no_leftovers(tmp_path)


def test_non_llama_gguf_is_refused(tmp_path):
  gguf = pytest.importorskip("gguf")
  path = tmp_path / "gpt2.gguf"
  writer = gguf.GGUFWriter(str(path), "gpt2")
  writer.add_block_count(1)
  writer.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(SpecjaxError, match="GGUF architecture 'gpt2' is not supported"):
    import_model(path, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def test_checkpoint_from_another_size_is_refused(tmp_path):
  make_hf_model(tmp_path / "hf", **HF_CONFIGS["mha_tied"])
  import_model(tmp_path / "hf", tmp_path / "ck")
  record = json.loads((tmp_path / "ck" / "model_config.json").read_text())
  record["model"]["hidden_size"] = 64
  (tmp_path / "ck" / "model_config.json").write_text(json.dumps(record))
  with pytest.raises(SpecjaxError, match="do not match the model config"):
    load_checkpoint(tmp_path / "ck")
