"""msn-train: the noised-input / clean-label loss and a tiny end-to-end run through the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from align_helpers import tiny_checkpoint, word_data

from specjax.checkpoint.orbax_io import load_checkpoint
from specjax.cli import main
from specjax.data.distill_batches import ExampleBatches
from specjax.data.distill_data import load_distill_data
from specjax.data.noise import make_some_noise
from specjax.errors import SpecjaxError
from specjax.losses.lm import cross_entropy
from specjax.models.llama import Llama
from specjax.train.distill import DistillDataConfig
from specjax.train.msn import held_out_loss, make_clean_loss, make_msn_loss, msn_inputs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("msn")
  model = tiny_checkpoint(root / "model", seed=0, init_scale=0.2)
  data = word_data(model, root, num_samples=24, length=20)
  return root, model, data


def _first_batch(setup):
  """The first training batch (8 x 48) of the setup's data, on the device, and its model's checkpoint."""
  _, model, data = setup
  ds, _ = load_distill_data(data)
  batch = {k: jnp.asarray(v) for k, v in ExampleBatches(ds, 8, 48, eval_examples=0).next().items()}
  return batch, load_checkpoint(model)


def test_loss_feeds_noised_tokens_and_scores_clean_labels(setup):
  batch, ckpt = _first_batch(setup)
  rng = jax.random.key(3)
  loss, _ = make_msn_loss(ckpt.config, span=5)(ckpt.params, batch, rng, None)
  noisy = make_some_noise(rng, batch["tokens"], batch["response_mask"], span=5)
  assert int(jnp.sum(noisy != batch["tokens"])) > 0
  logits, _ = Llama(ckpt.config).apply({"params": ckpt.params}, noisy, batch["positions"])
  want, _ = cross_entropy(logits, batch["targets"], batch["loss_mask"])  # labels: the clean next tokens
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
  clean, _ = make_clean_loss(ckpt.config)(ckpt.params, batch, rng, None)
  assert float(clean) != pytest.approx(float(loss))


@pytest.fixture(scope="module")
def msn_run(setup):
  root, model, data = setup
  out = root / "run"
  argv = ["msn-train", "--config", "configs/msn/tiny.yaml", "--out", str(out), f"model={model}", f"data.path={data}"]
  assert main(argv + ["--steps", "6"]) == 0
  return out


def test_msn_train_cli_end_to_end(setup, msn_run, capsys):
  root, model, _ = setup
  records = [json.loads(line) for line in (msn_run / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == list(range(1, 7)) and all(np.isfinite(r["loss"]) for r in records)
  assert "eval_loss" in records[4]
  meta = json.loads((msn_run / "final" / "model_config.json").read_text())
  assert meta["source"] == "specjax msn-train" and meta["span"] == 3
  assert main(["msn-train", "--config", "configs/msn/tiny.yaml", "--out", str(root / "bad"), f"model={model}"]) == 2
  assert "data.path is not set" in capsys.readouterr().err
  bad = ["msn-train", "--config", "configs/msn/tiny.yaml", "--out", str(root / "bad2"), f"model={model}"]
  assert main(bad + [f"data.path={setup[2]}", "data.loss_on=prompt"]) == 2
  assert "data.loss_on must be response or all" in capsys.readouterr().err
  assert not (root / "bad2").exists()  # refused before the run folder is written


def test_msn_model_decodes_with_jacobi_and_tr_jacobi(msn_run):
  from specjax.decode.engine import Engine

  ckpt = load_checkpoint(msn_run / "final")
  engine = Engine(ckpt.config, ckpt.params, eos_ids=(3,), vocab_size=50)
  prompts = [[2, 48, 7, 9, 3, 2, 49], [2, 48, 5, 3, 2, 49]]
  ar = engine.run(prompts, "ar", max_new_tokens=8, batch_size=2)
  for mode in ("jacobi", "tr-jacobi"):
    run = engine.run(prompts, mode, max_new_tokens=8, batch_size=2, window=3)
    assert [r.tokens for r in run.rows] == [r.tokens for r in ar.rows]  # lossless w.r.t. greedy decoding


def test_span_zero_is_the_clean_control(setup):
  batch, ckpt = _first_batch(setup)
  rng = jax.random.key(3)
  np.testing.assert_array_equal(msn_inputs(rng, batch, 0), batch["tokens"])  # no noise: the clean tokens
  assert int(jnp.sum(msn_inputs(rng, batch, 5) != batch["tokens"])) > 0
  control, _ = make_msn_loss(ckpt.config, span=0)(ckpt.params, batch, rng, None)
  clean, _ = make_clean_loss(ckpt.config)(ckpt.params, batch, rng, None)
  np.testing.assert_allclose(float(control), float(clean), rtol=1e-6)
  for bad in (-1, True, 2.5):
    with pytest.raises(SpecjaxError, match="span must be an integer >= 0"):
      make_msn_loss(ckpt.config, span=bad)


def test_bad_span_is_refused_before_the_run_folder_is_written(setup, capsys):
  root, model, data = setup
  argv = ["msn-train", "--config", "configs/msn/tiny.yaml", "--out", str(root / "neg"), f"model={model}"]
  assert main(argv + [f"data.path={data}", "span=-1"]) == 2
  assert "span must be an integer >= 0" in capsys.readouterr().err
  assert not (root / "neg").exists()


def test_held_out_loss_is_the_runs_eval_loss(msn_run):
  records = [json.loads(line) for line in (msn_run / "metrics.jsonl").read_text().splitlines()]
  saved = json.loads((msn_run / "run_config.json").read_text())
  got = held_out_loss(msn_run / "final", DistillDataConfig(**saved["data"]), dtype=saved["dtype"])
  assert got["eval_loss"] == pytest.approx(records[-1]["eval_loss"], rel=1e-5)  # the same held-out rows
  assert got["tokens"] > 0 and got["batches"] == saved["data"]["eval_batches"]
