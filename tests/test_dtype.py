"""Compute dtypes: what "auto" resolves to, bfloat16 decoding and its KV cache, `--dtype` on the commands,
make-data's recorded dtype, and mixed-precision training (bfloat16 compute over float32 parameters)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from align_helpers import prompts_file, tiny_checkpoint, word_data, word_generator
from decode_util import FAST, perturbed, tiny, word_tokenizer

from specjax.checkpoint.orbax_io import load_checkpoint, save_checkpoint
from specjax.cli import build_parser, main
from specjax.config import load_config
from specjax.data.distill_data import META_FILE, load_distill_data, stored_features
from specjax.decode.common import prefill
from specjax.decode.text import load_engine
from specjax.errors import SpecjaxError
from specjax.jobs.make_data import make_data
from specjax.models import config as config_module
from specjax.models.config import default_compute_dtype, resolve_dtype
from specjax.models.registry import init_params, model_for

BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)


def _dtypes(tree) -> set:
  return {jnp.dtype(x.dtype) for x in jax.tree.leaves(tree)}


@pytest.mark.parametrize("backend, want", [("gpu", "bfloat16"), ("tpu", "bfloat16"), ("cpu", "float32")])
def test_auto_is_bfloat16_on_gpu_and_tpu_only(monkeypatch, backend, want):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert default_compute_dtype() == want and resolve_dtype("auto") == want
  assert resolve_dtype("float32") == "float32" and resolve_dtype("bfloat16") == "bfloat16"  # explicit wins


def test_a_bad_compute_dtype_is_refused():
  with pytest.raises(SpecjaxError, match="compute dtype must be 'auto' or one of float32, bfloat16"):
    resolve_dtype("float8")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  """A tiny target (peaked logits: wide greedy margins) and a draft near it, saved with a tokenizer."""
  root = tmp_path_factory.mktemp("dtype")
  cfg = tiny()
  params = jax.device_get(init_params(cfg, jax.random.key(0)))
  tok = word_tokenizer(cfg.vocab_size)  # every id a token: greedy picks over the whole vocabulary
  target = save_checkpoint(root / "target", cfg, params, tokenizer=tok)
  draft = save_checkpoint(root / "draft", *perturbed((cfg, params), 0.02), tokenizer=tok)
  return {"root": root, "cfg": cfg, "params": params, "target": target, "draft": draft}


def test_kv_cache_follows_the_compute_dtype(pair):
  tokens, lens = jnp.zeros((2, 8), jnp.int32), jnp.asarray([8, 5])
  for name, want in (("float32", F32), ("bfloat16", BF16)):
    cfg = pair["cfg"].replace(dtype=name)
    assert _dtypes(cfg.init_cache(2, 16).k + cfg.init_cache(2, 16).v) == {want}
    logits, cache = jax.eval_shape(lambda p, t, n, c=cfg: prefill(c, p, t, n, 16), pair["params"], tokens, lens)
    assert _dtypes((cache.k, cache.v)) == {want}  # written back in its own dtype by the prefill
    assert logits.dtype == F32  # logits stay float32


def test_bfloat16_decoding_matches_float32_where_margins_allow(pair):
  f32, _ = load_engine(pair["target"], dtype="float32")
  bf16, _ = load_engine(pair["target"], pair["draft"], dtype="bfloat16")
  f32.compiler_options = bf16.compiler_options = FAST
  assert f32.target_cfg.dtype == "float32"
  assert bf16.target_cfg.dtype == bf16.draft_cfg.dtype == "bfloat16"
  assert _dtypes((bf16.target_params, bf16.draft_params)) == {F32}  # parameters keep their dtype
  prompt = [[84, 117, 66, 79, 124]]
  want = f32.run(prompt, "ar", max_new_tokens=6).rows[0].tokens

  # The logits of the whole sequence: bfloat16's error, and float32's greedy margins along the answer.
  seq = jnp.asarray([prompt[0] + want[:-1]])
  pos = jnp.arange(seq.shape[1])[None]
  logits = {
    name: model_for(pair["cfg"].replace(dtype=name)).apply({"params": pair["params"]}, seq, pos)[0][0]
    for name in ("float32", "bfloat16")
  }
  assert logits["bfloat16"].dtype == F32
  answer = {name: x[len(prompt[0]) - 1 :] for name, x in logits.items()}  # the rows that chose the answer
  err = jnp.max(jnp.abs(answer["bfloat16"] - answer["float32"]), axis=-1)
  top2 = jnp.sort(answer["float32"], axis=-1)[:, -2:]
  assert 0 < float(err.max()) < 0.05 * float(jnp.abs(answer["float32"]).max())  # bfloat16 computed, and close
  safe = np.asarray(top2[:, 1] - top2[:, 0] > 2 * err)  # greedy cannot flip at these positions
  k = len(safe) if safe.all() else int(np.argmin(safe))
  assert k >= 3, f"only {k} leading tokens have margins wider than bfloat16's error; pick another prompt"
  for mode in ("ar", "spec"):
    assert bf16.run(prompt, mode, max_new_tokens=6).rows[0].tokens[:k] == want[:k], mode


def _parse_cases(pair, prompts):
  t, d = str(pair["target"]), str(pair["draft"])
  return {
    "generate": ["generate", "--target", t, "--prompt", "w5 w6", "--max-new-tokens", "2"],
    "bench": ["bench", "--target", t, "--draft", d, "--prompts", prompts, "--max-new-tokens", "2", "--out", "x"],
    "plan": ["plan", "--target", t, "--draft", d, "--prompts", prompts],
    "make-data": ["make-data", "--target", t, "--prompts", prompts, "--out", "x"],
  }


@pytest.mark.parametrize("command", ["generate", "bench", "plan", "make-data"])
def test_dtype_flag_reaches_each_command(pair, tmp_path, monkeypatch, capsys, command):
  argv = _parse_cases(pair, str(prompts_file(tmp_path)))[command]
  parser = build_parser(command)
  assert parser.parse_args(argv).dtype == "auto"
  with pytest.raises(SystemExit):
    parser.parse_args([*argv, "--dtype", "float8"])
  assert "invalid choice: 'float8'" in capsys.readouterr().err

  seen = []

  def stop(*args, dtype, **kw):
    seen.append(dtype)
    raise SpecjaxError("stopped here")

  monkeypatch.setattr("specjax.decode.text.load_engine", stop)
  monkeypatch.setattr("specjax.jobs.make_data.make_data", stop)
  assert main([*argv, "--dtype", "bfloat16"]) == 2 and seen == ["bfloat16"]


def test_make_data_records_its_dtype_and_refuses_another_on_resume(pair, tmp_path):
  src, out = str(prompts_file(tmp_path)), tmp_path / "d"
  kw = dict(num_samples=6, shard_size=3, check_eval=False)

  def crash(prompt_ids, seed):
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    make_data(pair["target"], src, out, generate=crash, dtype="float32", **kw)
  meta_path = tmp_path / ".d.partial" / META_FILE
  assert json.loads(meta_path.read_text())["generation"]["dtype"] == "float32"
  with pytest.raises(SpecjaxError, match=r"other settings \(generation.dtype\)"):
    make_data(pair["target"], src, out, generate=word_generator(), dtype="bfloat16", **kw)
  assert not out.exists()

  # A run recorded before the field sampled in its target's float32: it resumes in float32.
  meta = json.loads(meta_path.read_text())
  del meta["generation"]["dtype"]
  meta_path.write_text(json.dumps(meta))
  make_data(pair["target"], src, out, generate=word_generator(), dtype="float32", **kw)
  assert load_distill_data(out)[1]["generation"]["dtype"] == "float32"


def test_bfloat16_sampling_keeps_float16_features(pair, tmp_path):
  out = make_data(
    pair["target"],
    str(prompts_file(tmp_path)),
    tmp_path / "d",
    num_samples=2,
    max_new_tokens=4,
    batch_size=2,
    check_eval=False,
    features=True,
    dtype="bfloat16",
  )
  _, meta = load_distill_data(out)
  assert meta["generation"]["dtype"] == "bfloat16" and meta["features"]["dtype"] == "float16"
  features, lse = stored_features(out, meta)
  assert features.dtype == np.float16 and lse.dtype == np.float32
  assert np.isfinite(features).all() and np.isfinite(lse).all()


def test_pretrain_resolves_auto_once(monkeypatch):
  from specjax.train.pretrain import ModelSection, model_config

  assert model_config(ModelSection(preset="tiny")).dtype == "float32"  # this CPU
  monkeypatch.setattr(config_module, "default_compute_dtype", lambda: "bfloat16")  # as on a GPU or TPU
  cfg = model_config(ModelSection(preset="tiny"))
  assert cfg.dtype == "bfloat16" and cfg.param_dtype == "float32"
  assert model_config(ModelSection(preset="tiny", dtype="float32")).dtype == "float32"
  with pytest.raises(SpecjaxError, match="compute dtype"):
    model_config(ModelSection(preset="tiny", dtype="half"))


def test_distill_on_an_accelerator_computes_in_bfloat16_over_float32_params(tmp_path, monkeypatch):
  from specjax.train.distill import DistillConfig, distill

  monkeypatch.setattr(config_module, "default_compute_dtype", lambda: "bfloat16")
  target = tiny_checkpoint(tmp_path / "target", seed=0, init_scale=0.5)
  student = tiny_checkpoint(tmp_path / "student", seed=1)
  data = word_data(target, tmp_path, num_samples=16, length=16, shard_size=16)
  overrides = [f"target={target}", f"student={student}", f"data.path={data}", "spec_eval.every=-1", "steps=1"]
  result = distill(load_config(DistillConfig, "configs/distill/tiny.yaml", overrides), tmp_path / "run")
  assert result.step == 1 and np.isfinite(result.last_loss)
  assert json.loads((tmp_path / "run" / "run_config.json").read_text())["dtype"] == "bfloat16"
  final = load_checkpoint(tmp_path / "run" / "final")
  assert _dtypes(final.params) == {F32} and final.config.dtype == "float32"  # whoever runs it chooses
