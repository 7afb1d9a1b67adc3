"""CLI smoke tests of lookup, spec-lookup, the dynamic draft length and `specjax plan` on tiny checkpoints."""

from __future__ import annotations

import json

import pytest
from decode_util import model, save_model, tiny, word_tokenizer

from specjax.cli import main

pytestmark = pytest.mark.slow  # runs long: scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  root = tmp_path_factory.mktemp("ckpts")
  tok = word_tokenizer()
  target = save_model(root / "target", *model(tiny(), 0), tok)
  draft = save_model(root / "draft", *model(tiny(layers=1), 1), tok)
  prompts = root / "prompts.jsonl"
  lines = ["w1 w2 w3 w1 w2 w3 w1 w2", "w9 w8", "w5 w5 w5 w5 w6"]
  prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in lines))
  return {"target": str(target), "draft": str(draft), "prompts": str(prompts)}


def _run(capsys, *argv):
  code = main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def test_generate_new_modes_agree_with_ar(ckpts, capsys):
  common = ["--target", ckpts["target"], "--prompts", ckpts["prompts"], "--max-new-tokens", 10, "--json"]
  code, out, err = _run(capsys, "generate", *common)
  assert code == 0, err
  ar = [json.loads(line)["text"] for line in out.splitlines()]
  for extra in (
    ["--mode", "lookup", "--gamma", 3, "--ngram", 2],
    ["--mode", "lookup", "--gamma", 2, "--ngram-min", 2, "--batch-size", 3],
    ["--mode", "spec", "--draft", ckpts["draft"], "--draft-threshold", 0.5, "--batch-size", 2],
    ["--mode", "spec-lookup", "--draft", ckpts["draft"], "--gamma", 2],
  ):
    code, out, err = _run(capsys, "generate", *common, *extra)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == ar, extra
    assert rows[0]["mode"] == extra[1] and "drafted_tokens" in rows[0]


@pytest.mark.parametrize(
  "extra, match",
  [(["--mode", "lookup", "--ngram", 0], "ngram"), (["--mode", "spec-lookup"], "needs a draft model")],
)
def test_generate_bad_new_flags(ckpts, capsys, extra, match):
  code, out, err = _run(
    capsys, "generate", "--target", ckpts["target"], "--prompt", "w1", "--max-new-tokens", 4, *extra
  )
  assert code == 2 and match in err and "Traceback" not in err


def test_bench_new_modes_and_thresholds(ckpts, capsys, tmp_path):
  out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
  code, out, err = _run(
    capsys, "bench", "--target", ckpts["target"], "--draft", ckpts["draft"], "--prompts", ckpts["prompts"],
    "--modes", "ar,spec,lookup,spec-lookup", "--gamma", "2", "--draft-threshold", "none,0.5", "--max-new-tokens", 8,
    "--out", out_json, "--plot", out_png,
  )  # fmt: skip
  assert code == 0, err
  records = json.loads(out_json.read_text())
  combos = [(r["mode"], r["gamma"], r["draft_threshold"]) for r in records]
  assert combos == [
    ("ar", None, None), ("spec", 2, None), ("spec", 2, 0.5), ("lookup", 2, None),
    ("spec-lookup", 2, None), ("spec-lookup", 2, 0.5),
  ]  # fmt: skip
  assert len({r["new_tokens"] for r in records}) == 1  # greedy: the same answers
  assert out_png.stat().st_size > 10_000


def test_plan_prints_predicted_beside_measured(ckpts, capsys, tmp_path):
  out_json = tmp_path / "plan.json"
  code, out, err = _run(
    capsys, "plan", "--target", ckpts["target"], "--draft", ckpts["draft"], "--prompts", ckpts["prompts"],
    "--modes", "spec,lookup", "--gamma", "1,2", "--draft-threshold", "0.5", "--measure", "1", "--max-new-tokens", 8,
    "--repeat", 1, "--runs", 1, "--out", out_json,
  )  # fmt: skip
  assert code == 0, err
  assert "recommended:" in out and "meas x" in out
  report = json.loads(out_json.read_text())
  assert {r["mode"] for r in report["rows"]} == {"ar", "spec", "lookup"}
  code, out, err = _run(
    capsys, "plan", "--target", ckpts["target"], "--prompts", ckpts["prompts"], "--modes", "spec",
    "--max-new-tokens", 4,
  )  # fmt: skip
  assert code == 2 and "needs a draft" in err
