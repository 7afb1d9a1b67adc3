"""Pretraining end to end on the tiny preset: loss falls, exact resume, SIGTERM, NaN stop, bad input."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from train_util import logged_losses, pretrain_assets, pretrain_config

from specjax.checkpoint.orbax_io import load_checkpoint, save_checkpoint
from specjax.config import config_to_dict, load_config
from specjax.errors import SpecjaxError
from specjax.models.config import resolve_dtype
from specjax.models.presets import get_preset
from specjax.models.registry import init_params
from specjax.train.embed_init import project_embedding
from specjax.train.pretrain import PretrainConfig, model_config, pretrain

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "pretrain" / "tiny.yaml"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  return pretrain_assets(tmp_path_factory.mktemp("assets"))


def test_loss_falls_and_resume_is_exact(tmp_path, assets):
  full = pretrain(pretrain_config(assets), tmp_path / "full")
  assert full.status == "finished" and full.step == 20
  losses = logged_losses(tmp_path / "full")
  assert len(losses) == 20 and np.mean(losses[-3:]) < losses[0] - 0.5
  records = [json.loads(ln) for ln in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
  assert {"step", "loss", "lr", "tokens_per_s"} <= set(records[0])
  assert "eval_loss" in records[9] and "eval_loss" in records[19]
  assert any((tmp_path / "full" / "tensorboard").iterdir())

  part = pretrain(pretrain_config(assets), tmp_path / "split", stop_at=10)
  assert part.status == "stopped" and not (tmp_path / "split" / "final").exists()
  rest = pretrain(pretrain_config(assets), tmp_path / "split")
  assert rest.step == 20
  assert logged_losses(tmp_path / "split") == losses  # bit-identical
  a = load_checkpoint(tmp_path / "full" / "final")
  b = load_checkpoint(tmp_path / "split" / "final")
  assert a.config == model_config(pretrain_config(assets).model) and a.meta["steps"] == 20
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert (tmp_path / "full" / "final" / "tokenizer.json").is_file()
  # a finished run stays finished
  again = pretrain(pretrain_config(assets), tmp_path / "full")
  assert again.step == 20 and again.last_loss is None


def test_bad_input(tmp_path, assets):
  tok, corpus = assets
  with pytest.raises(SpecjaxError, match="no tokenizer"):
    pretrain(load_config(PretrainConfig, TINY), tmp_path / "a")
  with pytest.raises(SpecjaxError, match="does not exist"):
    pretrain(pretrain_config(assets, f"data.source={tmp_path / 'nope.txt'}"), tmp_path / "b")
  with pytest.raises(SpecjaxError, match="unknown config key"):
    pretrain_config(assets, "optim.lrate=1")
  with pytest.raises(SpecjaxError, match="multiple of"):
    pretrain(pretrain_config(assets, "data.batch_size=6"), tmp_path / "c")
  # a checkpoint of another model size
  other = get_preset("tiny").replace(hidden_size=32)
  save_checkpoint(tmp_path / "other", other, init_params(other, jax.random.key(0)))
  with pytest.raises(SpecjaxError, match="another model size"):
    pretrain(pretrain_config(assets, f"model.init_from={tmp_path / 'other'}"), tmp_path / "d")
  # resuming a folder with a different model
  (tmp_path / "e").mkdir()
  recorded = pretrain_config(assets, f"model.dtype={resolve_dtype('auto')}")  # run_config.json holds the resolved dtype
  (tmp_path / "e" / "run_config.json").write_text(json.dumps(config_to_dict(recorded)))
  with pytest.raises(SpecjaxError, match=r"different config \(keys \['model.fields.hidden_size'\]\)"):
    pretrain(pretrain_config(assets, "model.fields={hidden_size: 32}"), tmp_path / "e")


def test_freeze_holds_named_parameters(tmp_path, assets):
  mcfg = model_config(pretrain_config(assets).model)
  save_checkpoint(tmp_path / "start", mcfg, init_params(mcfg, jax.random.key(3)))
  steps = ["steps=3", f"model.init_from={tmp_path / 'start'}"]
  frozen = [*steps, "optim.freeze=embed_tokens,norm"]
  run = pretrain(pretrain_config(assets, *frozen), tmp_path / "frozen")
  assert run.status == "finished"
  before = load_checkpoint(tmp_path / "start").params
  after = load_checkpoint(tmp_path / "frozen" / "final").params
  assert set(before) >= {"embed_tokens", "norm", "layers"}
  for name in before:
    pairs = zip(jax.tree.leaves(before[name]), jax.tree.leaves(after[name]), strict=True)
    same = [np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs]
    assert all(same) if name in ("embed_tokens", "norm") else not any(same), name
  # a stopped run resumes exactly (the optimizer state holds nothing for the frozen parameters)
  assert pretrain(pretrain_config(assets, *frozen), tmp_path / "split", stop_at=2).status == "stopped"
  assert pretrain(pretrain_config(assets, *frozen), tmp_path / "split").step == 3
  assert logged_losses(tmp_path / "split") == logged_losses(tmp_path / "frozen")
  # unknown names and freezing everything are refused before anything is written
  with pytest.raises(SpecjaxError, match=r"optim.freeze names \['lm_hed'\]"):
    pretrain(pretrain_config(assets, *steps, "optim.freeze=lm_hed"), tmp_path / "bad")
  with pytest.raises(SpecjaxError, match="nothing would train"):
    pretrain(pretrain_config(assets, *steps, f"optim.freeze={','.join(before)}"), tmp_path / "all")
  assert not (tmp_path / "bad").exists() and not (tmp_path / "all").exists()


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
  from specjax.cli import main

  rc = main(["pretrain", "--config", str(TINY), "--out", str(tmp_path / "x"), "optim.bogus=1"])
  err = capsys.readouterr().err
  assert rc == 2 and "unknown config key" in err and "Traceback" not in err


def test_embedding_projection():
  cfg = get_preset("tiny").replace(hidden_size=16, num_heads=2, num_kv_heads=1)
  rng = np.random.default_rng(0)
  target = rng.standard_normal((cfg.vocab_size, 4)) @ rng.standard_normal((4, 48))  # rank 4
  for method in ("pca", "projection"):
    emb = project_embedding(target, cfg, method)
    assert emb.shape == (cfg.vocab_size, 16)
    np.testing.assert_allclose(emb.std(), cfg.initializer_range, rtol=1e-3)
  # pca keeps the target's geometry: pairwise distances are preserved up to one scale
  emb = project_embedding(target, cfg, "pca")
  tc = target - target.mean(0)
  d_t = np.linalg.norm(tc[:10, None] - tc[None, :10], axis=-1)
  d_e = np.linalg.norm(emb[:10, None] - emb[None, :10], axis=-1)
  np.testing.assert_allclose(d_e / d_e.max(), d_t / d_t.max(), atol=1e-4)
  with pytest.raises(SpecjaxError, match="vocabulary"):
    project_embedding(target[:10], cfg, "pca")


def test_pluggable_loss_with_frozen_teacher():
  """The reuse contract: loss_fn(params, batch, rng, frozen); frozen is neither donated nor trained."""
  import jax.numpy as jnp

  from specjax.models.llama import Llama
  from specjax.parallel.sharding import MeshConfig, make_mesh, put_batch
  from specjax.train import step as S
  from specjax.train.optim import OptimConfig, make_optimizer

  cfg = get_preset("tiny")
  mesh = make_mesh(MeshConfig(data=2, fsdp=4))
  tx, sched = make_optimizer(OptimConfig(lr=1e-2, warmup_steps=0), 5)
  sh = S.state_shardings(cfg, tx, mesh)
  teacher_sh = S.param_shardings(cfg, mesh)
  teacher = jax.device_put(init_params(cfg, jax.random.key(7)), teacher_sh)
  before = jax.device_get(teacher)

  def loss_fn(params, batch, rng, frozen):
    t_logits, _ = Llama(cfg).apply({"params": frozen}, batch["tokens"], batch["positions"])
    s_logits, _ = Llama(cfg).apply({"params": params}, batch["tokens"], batch["positions"])
    loss = jnp.mean((jax.nn.log_softmax(s_logits) - jax.nn.log_softmax(t_logits)) ** 2)
    return loss, {"noise": jax.random.uniform(rng)}

  fn = S.make_train_step(loss_fn, tx, sched, mesh, sh, frozen_shardings=teacher_sh)
  state = S.create_state(cfg, tx, sh, seed=0)
  toks = np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 16)).astype(np.int32)
  batch = {"tokens": toks, "positions": np.tile(np.arange(16, dtype=np.int32), (8, 1))}
  losses, noise = [], []
  for _ in range(4):
    state, m = fn(state, put_batch(batch, mesh), teacher)
    losses.append(float(m["loss"]))
    noise.append(float(m["noise"]))
  assert losses[-1] < losses[0]
  assert len(set(noise)) == 4  # a fresh key every step
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(teacher)), strict=True):
    np.testing.assert_array_equal(a, b)  # still alive (not donated) and unchanged


def test_weight_decay_spares_norms_and_biases():
  """Decay is decided by name: stacked [L, D] norm scales and biases are never decayed, kernels are."""
  import optax

  from specjax.train.optim import OptimConfig, decay_mask, make_optimizer

  cfg = get_preset("tiny")
  params = jax.device_get(init_params(cfg, jax.random.key(0)))
  assert params["layers"]["input_norm"]["scale"].shape == (cfg.num_layers, cfg.hidden_size)
  # the layouts another model family adds: q/k norms and q/k/v biases, stacked like every layer param
  L, D = cfg.num_layers, cfg.hidden_size
  params["layers"]["attn"]["q_norm"] = {"scale": np.ones((L, 16), np.float32)}
  params["layers"]["attn"]["q_proj"]["bias"] = np.ones((L, D), np.float32)
  mask = decay_mask(params)
  assert mask["embed_tokens"]["embedding"] and mask["layers"]["attn"]["q_proj"]["kernel"]
  assert mask["layers"]["mlp"]["down_proj"]["kernel"]
  assert not mask["norm"]["scale"] and not mask["layers"]["input_norm"]["scale"]
  assert not mask["layers"]["post_attn_norm"]["scale"] and not mask["layers"]["attn"]["q_norm"]["scale"]
  assert not mask["layers"]["attn"]["q_proj"]["bias"]

  # one update with zero gradients: only decay moves parameters, and never a norm scale
  tx, _ = make_optimizer(OptimConfig(lr=0.1, warmup_steps=0, weight_decay=0.5, clip_norm=0.0), 10)
  updates, _ = tx.update(jax.tree.map(np.zeros_like, params), tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["layers"]["input_norm"]["scale"], params["layers"]["input_norm"]["scale"])
  np.testing.assert_array_equal(new["layers"]["attn"]["q_proj"]["bias"], params["layers"]["attn"]["q_proj"]["bias"])
  assert not np.allclose(new["layers"]["attn"]["q_proj"]["kernel"], params["layers"]["attn"]["q_proj"]["kernel"])


def test_run_config_is_written_atomically(tmp_path, monkeypatch):
  """A crash while writing run_config.json leaves no half-written file that would block the rerun."""
  from specjax.train.trainer import check_run_config

  real = Path.write_text

  def crash(self, text, *args, **kwargs):
    real(self, text[: len(text) // 2])
    raise OSError("disk full")

  monkeypatch.setattr(Path, "write_text", crash)
  with pytest.raises(OSError, match="disk full"):
    check_run_config(tmp_path / "run", {"steps": 20, "optim": {"lr": 0.1}})
  monkeypatch.undo()
  assert list((tmp_path / "run").iterdir()) == []
  check_run_config(tmp_path / "run", {"steps": 20, "optim": {"lr": 0.1}})
  assert json.loads((tmp_path / "run" / "run_config.json").read_text()) == {"steps": 20, "optim": {"lr": 0.1}}
