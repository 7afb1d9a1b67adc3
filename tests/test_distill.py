"""specjax distill on a tiny target / drafter pair: it aligns, AdaSPEC runs in two stages, bad input is refused."""

import json
import shutil

import datasets
import jax.numpy as jnp
import numpy as np
import pytest
from align_helpers import tiny_checkpoint, word_data

from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer
from specjax.cli import main
from specjax.config import load_config
from specjax.data.distill_batches import ExampleBatches
from specjax.data.distill_data import META_FILE, _features, load_distill_data
from specjax.errors import SpecjaxError
from specjax.losses.distill import fkl
from specjax.models.config import resolve_dtype
from specjax.models.llama import Llama
from specjax.train.distill import DistillConfig, distill

CONFIG = "configs/distill/tiny.yaml"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  root = tmp_path_factory.mktemp("kd")
  target = tiny_checkpoint(root / "target", seed=0, init_scale=0.5, bigram=True)  # sharp, learnable teacher
  student = tiny_checkpoint(root / "student", seed=1, init_scale=0.02)  # near-uniform drafter
  data = word_data(target, root, num_samples=32, length=32, shard_size=16)
  return {"root": root, "target": target, "student": student, "data": data}


def _cfg(pair, *overrides):
  base = [f"target={pair['target']}", f"student={pair['student']}", f"data.path={pair['data']}", "spec_eval.every=-1"]
  return load_config(DistillConfig, CONFIG, base + list(overrides))


def _expected_acceptance(ckpt, pair) -> float:
  """Teacher-forced sum_v min(p, q) over every response token of the dataset."""
  ds, _ = load_distill_data(pair["data"])
  batch = ExampleBatches(ds, len(ds), 48, eval_examples=0).next()
  student, target = load_checkpoint(ckpt), load_checkpoint(pair["target"])
  tokens, pos = jnp.asarray(batch["tokens"]), jnp.asarray(batch["positions"])
  q, _ = Llama(student.config).apply({"params": student.params}, tokens, pos)
  p, _ = Llama(target.config).apply({"params": target.params}, tokens, pos)
  return float(fkl(q, p, jnp.asarray(batch["loss_mask"]))[1]["expected_acceptance"])


@pytest.fixture(scope="module")
def fkl_run(pair):
  out = pair["root"] / "fkl"
  result = distill(_cfg(pair, "steps=16", "optim.lr=1e-2", "optim.min_lr_ratio=1.0"), out)
  return out, result


def test_short_distillation_raises_teacher_forced_acceptance(pair, fkl_run):
  out, result = fkl_run
  assert result.status == "finished" and result.step == 16
  before = _expected_acceptance(pair["student"], pair)
  after = _expected_acceptance(out / "final", pair)
  assert after > before + 0.2, (before, after)
  records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == list(range(1, 17))
  assert {"loss", "expected_acceptance", "grad_norm", "lr"} <= set(records[0])
  assert "eval_expected_acceptance" in records[9] and "eval_loss" in records[-1]
  assert records[-1]["expected_acceptance"] > records[0]["expected_acceptance"]
  meta = json.loads((out / "final" / "model_config.json").read_text())
  assert meta["loss"] == "fkl" and meta["source"] == "specjax distill"


def test_adaspec_second_stage_uses_the_reference(pair, fkl_run):
  out = pair["root"] / "adaspec"
  ref = fkl_run[0] / "final"
  distill(_cfg(pair, "steps=3", "loss=adaspec", f"reference={ref}", "loss_options.k=0.4"), out)
  records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  for r in records:
    assert 0.38 <= r["kept_fraction"] <= 0.45  # top 40% of counted tokens (ties and interpolation included)
    assert r["reference_acceptance"] > r["expected_acceptance"]  # the reference is the better-aligned model


def test_bad_inputs_are_clear_errors(pair, tmp_path):
  root = pair["root"]
  with pytest.raises(SpecjaxError, match="k must be in"):
    distill(_cfg(pair, "loss=adaspec", f"reference={pair['student']}", "loss_options.k=1.5"), tmp_path / "a")
  with pytest.raises(SpecjaxError, match="needs reference"):
    distill(_cfg(pair, "loss=adaspec"), tmp_path / "b")
  other_vocab = tiny_checkpoint(root / "student64", seed=2, vocab=64)
  with pytest.raises(SpecjaxError, match="vocabulary 64"):
    distill(_cfg(pair, f"student={other_vocab}"), tmp_path / "c")
  with pytest.raises(SpecjaxError, match="made by another target"):  # the student as a (wrong) target
    distill(_cfg(pair, f"target={pair['student']}"), tmp_path / "d")
  empty = tmp_path / "empty"
  datasets.Dataset.from_dict({k: [] for k in _features()}, features=_features()).save_to_disk(str(empty))
  shutil.copy(pair["data"] / META_FILE, empty / META_FILE)
  with pytest.raises(SpecjaxError, match="no samples"):
    distill(_cfg(pair, f"data.path={empty}"), tmp_path / "e")
  with pytest.raises(SpecjaxError, match="unknown distillation loss"):
    distill(_cfg(pair, "loss=kl"), tmp_path / "f")
  assert not any((tmp_path / n).exists() for n in "abcdef")


def test_bfloat16_distillation_accepts_its_own_dataset(pair, tmp_path):
  """distill changes the target's dtype (and remat) before checking that it made the data."""
  result = distill(_cfg(pair, "dtype=bfloat16", "logging.eval_every=0"), tmp_path / "bf16", stop_at=1)
  assert result.step == 1 and np.isfinite(result.last_loss)


def test_held_out_evaluation_runs_once_per_eval_step(pair, tmp_path, monkeypatch):
  from specjax.train import step as step_lib

  calls = []
  make = step_lib.make_eval_step

  def counting(*args, **kwargs):
    fn = make(*args, **kwargs)

    def run(*a, **kw):
      calls.append(1)
      return fn(*a, **kw)

    return run

  monkeypatch.setattr(step_lib, "make_eval_step", counting)
  distill(_cfg(pair, "steps=4", "logging.eval_every=2", "data.eval_batches=1"), tmp_path / "o")
  records = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
  assert ["eval_loss" in r for r in records] == [False, True, False, True]
  assert len(calls) == 2  # steps 2 and 4, one held-out batch each


def test_cli_prints_the_error_without_traceback(pair, tmp_path, capsys):
  argv = ["distill", "--config", CONFIG, "--out", str(tmp_path / "o"), f"target={pair['target']}"]
  argv += [f"student={pair['student']}", f"data.path={pair['data']}", "loss=tvdpp", "loss_options.norm=vocab"]
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert "specjax distill: error: tvdpp norm must be one of" in err and "Traceback" not in err
  assert np.isfinite(_expected_acceptance(pair["student"], pair))


def test_bad_data_settings_are_refused_before_the_run_folder_is_written(pair, tmp_path):
  with pytest.raises(SpecjaxError, match="data.loss_on must be response or all"):
    distill(_cfg(pair, "data.loss_on=prompt"), tmp_path / "bad")
  assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
  "overrides,match",
  [
    (("spec_eval.every=2", "spec_eval.gamma=0"), "gamma .draft tokens per round. must be >= 1"),
    (("spec_eval.every=0", "spec_eval.temperatures=[0.0, -1.0]"), "temperature must be >= 0"),
    (("spec_eval.every=2", "spec_eval.max_new_tokens=100000"), "prompt 0 has .* tokens; with max_new_tokens=100000"),
    (("spec_eval.every=0", "spec_eval.batch_size=0"), "batch size must be >= 1"),
    (("spec_eval.every=0", "data.eval_examples=0"), "no prompts are held out"),
    (("on_policy.fraction=0.5", "on_policy.temperature=-1.0"), "temperature must be >= 0"),
    (("on_policy.fraction=0.5", "on_policy.max_new_tokens=0"), "max_new_tokens must be >= 1"),
  ],
)
def test_bad_hook_settings_fail_before_anything_is_written(pair, tmp_path, overrides, match):
  """A setting a hook would refuse only when it first runs (its period, or the end) fails at once."""
  out = tmp_path / "bad"
  with pytest.raises(SpecjaxError, match=match):
    distill(_cfg(pair, "steps=2", "checkpoint.every=1", *overrides), out)
  assert not out.exists()


def _reference_copy(src, dst, **meta):
  """A copy of checkpoint `src` whose model_config.json record is updated with `meta` (None: removed)."""
  shutil.copytree(src, dst)
  record = json.loads((dst / "model_config.json").read_text())
  record.update(meta)
  record = {k: v for k, v in record.items() if v is not None}
  (dst / "model_config.json").write_text(json.dumps(record))
  return dst


def test_adaspec_refuses_a_reference_that_is_not_the_students_fkl_run(pair, fkl_run, tmp_path):
  """AdaSPEC's reference must be the student's start distilled with fkl (against this target): the student
  itself, a copy of it, a model that was not distilled, one distilled with another loss, from another
  start or against another target are refused before anything is written."""

  def refused(name, path, match):
    with pytest.raises(SpecjaxError, match=match):
      distill(_cfg(pair, "steps=1", "loss=adaspec", f"reference={path}"), tmp_path / f"run-{name}")
    assert not (tmp_path / f"run-{name}").exists(), name

  refused("student", pair["student"], "is the student itself")
  from specjax.train.reference import fingerprint

  ref = fkl_run[0] / "final"
  meta = json.loads((ref / "model_config.json").read_text())
  assert meta["student_fingerprint"] == fingerprint(pair["student"])  # what distill records for the check
  assert meta["target_fingerprint"] == json.loads((pair["data"] / META_FILE).read_text())["target"]["fingerprint"]
  distilled = {"source": "specjax distill", "loss": "fkl", "student": str(pair["student"])}
  cases = {
    "copy": (
      _reference_copy(
        pair["student"], tmp_path / "copy", **distilled, student_fingerprint=fingerprint(pair["student"])
      ),
      "has the student's own parameters",
    ),
    "pretrained": (tiny_checkpoint(tmp_path / "other", seed=5), "is not a model distilled with loss=fkl"),
    "rkl": (_reference_copy(ref, tmp_path / "rkl", loss="rkl"), "is not a model distilled with loss=fkl"),
    "start": (_reference_copy(ref, tmp_path / "start", student_fingerprint="0" * 32), "from another start"),
    "old": (_reference_copy(ref, tmp_path / "old", student_fingerprint=None, student="elsewhere"), "another start"),
    "target": (_reference_copy(ref, tmp_path / "target", target_fingerprint="0" * 32), "against another target"),
  }
  for name, (path, match) in cases.items():
    refused(name, path, match)


def test_real_speculative_measurements_and_on_policy_mixing(pair, tmp_path, monkeypatch):
  """The spec eval's metrics, the seeded on-policy draws, and that an on-policy step's batch holds the
  current drafter's own samples for the batch's prompts (not the dataset's responses)."""
  import jax

  from specjax.decode.engine import Engine
  from specjax.decode.sampling import SamplingConfig
  from specjax.train.hooks import OnPolicy, OnPolicyConfig, batch_prompts

  seen = []
  hook = OnPolicy.hook

  def recording(self, params, batch, step):
    new, scalars = hook(self, params, batch, step)
    seen.append((jax.device_get(params), batch, new, step, scalars["on_policy"]))
    return new, scalars

  monkeypatch.setattr(OnPolicy, "hook", recording)
  out = tmp_path / "onpolicy"
  cfg = _cfg(pair, "steps=4", "spec_eval.every=2", "spec_eval.temperatures=[0.0, 1.0]", "on_policy.fraction=0.5")
  distill(cfg, out)
  records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  draws = OnPolicy(OnPolicyConfig(fraction=0.5), None, (3,), seed=0, batch_size=8, engine=False)
  assert [r["on_policy"] for r in records] == [float(draws.draw(s)) for s in range(4)]
  assert 0 < sum(r["on_policy"] for r in records) < 4  # both kinds of step happened (seeded draw)
  for r in (records[1], records[3]):  # measured at steps 2 and 4 (the values: test_spec_eval_measures_...)
    assert {f"spec_t{t}_{k}" for t in "01" for k in ("acceptance_rate", "block_efficiency")} <= set(r)
  assert "spec_t0_acceptance_rate" not in records[0]

  student, target = load_checkpoint(pair["student"]), load_checkpoint(pair["target"])
  eos_ids = {e for e in (load_tokenizer(pair["target"]).eos_token_id, target.config.eos_token_id) if e is not None}
  sampling = SamplingConfig(temperature=cfg.on_policy.temperature)
  assert [on for *_, on in seen] == [r["on_policy"] for r in records]
  for params, before, after, step, on in seen:
    if not on:
      assert after is before
      continue
    prompts = batch_prompts(before)
    assert batch_prompts(after) == prompts  # the batch's own prompts, continued
    engine = Engine(student.config.replace(dtype=resolve_dtype(cfg.dtype), remat=False), params, eos_ids=eos_ids)
    run = engine.run(
      prompts, "ar", max_new_tokens=cfg.on_policy.max_new_tokens, sampling=sampling, batch_size=8, seed=step
    )
    for i, (p, row) in enumerate(zip(prompts, run.rows, strict=True)):
      want = (p + list(row.tokens))[: cfg.data.seq_len]
      n = int(after["response_mask"][i].sum())
      assert n > 0 and after["tokens"][i, : len(want)].tolist() == want, i
      assert after["response_mask"][i, len(p) : len(want)].all()
    assert not np.array_equal(after["tokens"], before["tokens"])


def test_reduced_vocabulary_student_distils_and_keeps_its_map(pair, tmp_path):
  """vocab-map and reduce-vocab from the CLI, then distillation of the reduced drafter with a spec eval."""
  vocab = tmp_path / "vocab.json"
  assert main(["vocab-map", "--data", str(pair["data"]), "--size", "40", "--out", str(vocab)]) == 0
  ids = tuple(json.loads(vocab.read_text())["ids"])
  reduced = tmp_path / "reduced"
  assert main(["reduce-vocab", str(pair["student"]), "--map", str(vocab), "--out", str(reduced)]) == 0
  out = tmp_path / "kd"
  cfg = _cfg(pair, f"student={reduced}", "steps=4", "spec_eval.every=4", "spec_eval.temperatures=[0.0, 1.0]")
  distill(cfg, out)
  final = load_checkpoint(out / "final")
  assert final.config.head_ids == ids
  records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  last = {k: v for r in records for k, v in r.items()}
  assert 0.0 < last["eval_expected_acceptance_full"] <= last["eval_expected_acceptance"]
  assert "spec_t1_block_efficiency" in last  # the reduced drafter decodes (its values: decode tests)


def test_eagle_draft_distils_and_decodes(pair, tmp_path):
  """eagle-init from the CLI, distillation on the target's features (teacher-forced first-proposal
  acceptance rises, the feature loss falls), the spec eval in eagle mode, and its refusals."""
  from specjax.decode.engine import Engine

  vocab = tmp_path / "vocab.json"
  assert main(["vocab-map", "--data", str(pair["data"]), "--size", "40", "--out", str(vocab)]) == 0
  draft = tmp_path / "eagle0"
  assert main(["eagle-init", str(pair["target"]), "--map", str(vocab), "--out", str(draft)]) == 0
  out = tmp_path / "eagle"
  overrides = ("steps=16", "optim.lr=1e-2", "optim.min_lr_ratio=1.0", "spec_eval.every=16", "eagle.steps=2")
  distill(_cfg(pair, f"student={draft}", *overrides), out)
  records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  assert records[-1]["expected_acceptance"] > records[0]["expected_acceptance"] + 0.2, (records[0], records[-1])
  assert records[-1]["feature_loss"] < records[0]["feature_loss"]
  assert records[-1]["expected_acceptance_step1"] > records[-1]["expected_acceptance_step2"] > 0
  assert "spec_t0_block_efficiency" in records[-1]  # the spec eval ran in eagle mode
  final = load_checkpoint(out / "final")
  assert final.config.kind == "eagle" and final.config.head_ids == tuple(json.loads(vocab.read_text())["ids"])
  target = load_checkpoint(pair["target"])
  run = Engine(target.config, target.params, final.config, final.params).run([[3, 4, 5]], "eagle", max_new_tokens=8)
  assert (
    run.rows[0].tokens == Engine(target.config, target.params).run([[3, 4, 5]], "ar", max_new_tokens=8).rows[0].tokens
  )
  with pytest.raises(SpecjaxError, match="cannot generate alone"):
    distill(_cfg(pair, f"student={draft}", "on_policy.fraction=0.5"), tmp_path / "bad1")
  with pytest.raises(SpecjaxError, match="only applies to an eagle draft"):
    distill(_cfg(pair, "eagle.feature_weight=2.0"), tmp_path / "bad2")
  assert not (tmp_path / "bad1").exists() and not (tmp_path / "bad2").exists()


def test_spec_eval_measures_the_drafter_it_is_given():
  """SpecEval decodes with the parameters of each call: a drafter equal to the target accepts every
  proposal, greedy and sampled (acceptance 1, gamma + 1 tokens per target call: the answer is whole
  rounds, no EOS); an unrelated drafter does not."""
  from decode_util import model, tiny

  from specjax.train.distill import SpecEval, SpecEvalConfig

  gamma, target_cfg = 3, tiny(vocab_size=64)
  _, target = model(target_cfg, 0)
  _, unrelated = model(target_cfg, 1)
  cfg = SpecEvalConfig(gamma=gamma, max_new_tokens=1 + 4 * (gamma + 1), temperatures=(0.0, 1.0), batch_size=2)
  spec = SpecEval(cfg, target_cfg, target, target_cfg, [[5, 9, 3], [11, 2, 8, 4]], eos_ids=(), mode="spec")
  other = spec(unrelated)
  assert other["spec_t0_acceptance_rate"] < 1.0 and other["spec_t0_block_efficiency"] < gamma + 1, other
  same = {f"spec_t{t}_{k}": v for t in "01" for k, v in (("acceptance_rate", 1.0), ("block_efficiency", gamma + 1.0))}
  assert spec(target) == same
