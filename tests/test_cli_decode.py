"""`specjax generate` and `specjax bench` end to end on tiny checkpoints with a word-level tokenizer."""

from __future__ import annotations

import json

import pytest
from decode_util import model, save_model, tiny, word_tokenizer

from specjax.cli import main

BENCH_FIELDS = {
  "mode", "gamma", "temperature", "batch_size", "prompts", "new_tokens", "target_calls", "acceptance_rate",
  "block_efficiency", "per_position_acceptance", "tokens_per_s", "speedup_vs_ar", "compile_s", "wall_s",
}  # fmt: skip


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  root = tmp_path_factory.mktemp("ckpts")
  tok = word_tokenizer()
  target = save_model(root / "target", *model(tiny(), 0), tok)
  draft = save_model(root / "draft", *model(tiny(layers=1), 1), tok)
  other = save_model(root / "other", *model(tiny(layers=1), 2), word_tokenizer(prefix="x"))
  prompts = root / "prompts.jsonl"
  prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["w1 w2 w3", "w9 w8", "w5 w5 w5 w5 w6"]))
  return {"target": str(target), "draft": str(draft), "other": str(other), "prompts": str(prompts), "root": root}


def _run(capsys, *argv):
  code = main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def test_generate_json_modes_agree(ckpts, capsys):
  common = ["--target", ckpts["target"], "--prompts", ckpts["prompts"], "--max-new-tokens", 10, "--json"]
  code, out, err = _run(capsys, "generate", *common)
  assert code == 0, err
  ar = [json.loads(line) for line in out.splitlines()]
  assert [r["prompt"] for r in ar] == ["w1 w2 w3", "w9 w8", "w5 w5 w5 w5 w6"]
  assert all(r["text"] and r["new_tokens"] == 10 and r["mode"] == "ar" for r in ar)
  assert "tokens/s" in err
  code, out, err = _run(
    capsys, "generate", *common, "--draft", ckpts["draft"], "--mode", "spec", "--gamma", 3, "--batch-size", 2
  )
  assert code == 0, err
  spec = [json.loads(line) for line in out.splitlines()]
  assert [r["text"] for r in spec] == [r["text"] for r in ar]
  for r in spec:
    assert {"target_calls", "draft_calls", "acceptance_rate", "block_efficiency", "per_position_acceptance"} <= set(r)
    assert {"wall_s", "compile_s", "tokens_per_s"} <= set(r)


def test_generate_plain_text_with_chat(ckpts, capsys):
  code, out, err = _run(
    capsys, "generate", "--target", ckpts["target"], "--prompt", "w3 w4", "--chat", "--max-new-tokens", 5,
    "--temperature", 1, "--top-p", 0.9, "--seed", 1,
  )  # fmt: skip
  assert code == 0, err
  assert len(out.strip().split()) <= 5


@pytest.mark.parametrize(
  "extra, match",
  [
    (["--draft", "{other}", "--mode", "spec"], "different tokenizer"),
    (["--mode", "spec", "--draft", "{draft}", "--gamma", "0"], "gamma"),
    (["--mode", "spec"], "needs a draft"),
    (["--prompts", "{root}/empty.jsonl"], "holds no prompts"),
    (["--draft", "{root}/missing"], "does not exist"),
  ],
)
def test_generate_bad_input(ckpts, capsys, extra, match):
  (ckpts["root"] / "empty.jsonl").write_text("")
  extra = [e.format(**ckpts) for e in extra]
  src = [] if "--prompts" in extra else ["--prompt", "w1"]
  code, out, err = _run(capsys, "generate", "--target", ckpts["target"], *src, "--max-new-tokens", 4, *extra)
  assert code == 2 and match in err and "Traceback" not in err


def test_bench_writes_records_and_plot(ckpts, capsys, tmp_path):
  out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
  code, out, err = _run(
    capsys, "bench", "--target", ckpts["target"], "--draft", ckpts["draft"], "--prompts", ckpts["prompts"],
    "--modes", "ar,spec,jacobi", "--gamma", "1,2", "--temperature", "0,1", "--max-new-tokens", 8,
    "--out", out_json, "--plot", out_png,
  )  # fmt: skip
  assert code == 0, err
  records = json.loads(out_json.read_text())
  combos = [(r["mode"], r["gamma"], r["temperature"]) for r in records]
  assert combos == [
    ("ar", None, 0.0), ("spec", 1, 0.0), ("spec", 2, 0.0), ("jacobi", None, 0.0),
    ("ar", None, 1.0), ("spec", 1, 1.0), ("spec", 2, 1.0),
  ]  # fmt: skip
  for r in records:
    assert BENCH_FIELDS <= set(r)
    assert r["prompts"] == 3 and 3 <= r["new_tokens"] <= 24  # EOS may end a sampled answer early
  assert records[0]["speedup_vs_ar"] == 1.0
  greedy = [r for r in records if r["temperature"] == 0]
  assert len({r["new_tokens"] for r in greedy}) == 1  # lossless modes emit the same answers
  assert out_png.stat().st_size > 10_000
  assert "skip jacobi at temperature 1.0" in err


def test_bench_bad_mode(ckpts, capsys, tmp_path):
  code, out, err = _run(
    capsys, "bench", "--target", ckpts["target"], "--prompts", ckpts["prompts"], "--modes", "ar,beam",
    "--max-new-tokens", 4, "--out", tmp_path / "r.json",
  )  # fmt: skip
  assert code == 2 and "beam" in err and not (tmp_path / "r.json").exists()
