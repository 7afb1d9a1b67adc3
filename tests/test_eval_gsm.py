"""GSM accuracy: the answer rule and the scoring without a model, the held-out problem stream, and
`specjax eval-gsm` / `specjax side-by-side` on tiny random checkpoints (shape only)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from align_helpers import tiny_checkpoint

from specjax.cli import main
from specjax.errors import SpecjaxError
from specjax.eval.gsm import eval_gsm, extract_answer, gsm_problems, is_correct, score


@pytest.mark.parametrize(
  "text, want",
  [
    ("12 + 58 = 70, so the answer is 70.", "70"),
    ("It costs $1,234.50 in total", "1234.50"),
    ("The change is -5 degrees", "-5"),
    ("10-3", "3"),  # a difference, not minus three
    ("3,4,5", "5"),  # a list, not a thousands-separated number
    ("Step 2: 7.0.", "7.0"),  # the full stop is not a decimal point
    ("no number at all", None),
    ("", None),
  ],
)
def test_extract_answer_is_the_last_number(text, want):
  assert extract_answer(text) == want


def test_score_compares_numbers_not_strings():
  answers = ["so 70.", "It is 70.0", "the total is 1,200", "about 2.5 hours", "I don't know", "93 then 94"]
  refs = ["70", "70", "1200", "2.50", "5", "93"]
  got = score(answers, refs)
  assert got["correct_each"] == [True, True, True, True, False, False]  # the last number counts, not the first
  assert got["extracted"] == ["70", "70.0", "1200", "2.5", None, "94"]
  assert (got["n"], got["correct"], got["accuracy"]) == (6, 4, pytest.approx(4 / 6))
  assert not is_correct("70", "71")
  with pytest.raises(SpecjaxError, match="2 answers for 1 references"):
    score(["1", "2"], ["1"])
  with pytest.raises(SpecjaxError, match="no answers"):
    score([], [])


class _Tokenizer:
  """A stand-in: each prompt encodes to one id (its index), each answer id decodes to a fixed text."""

  chat_template = "user turn"

  def __init__(self, questions, texts):
    self.questions, self.texts = questions, texts

  def apply_chat_template(self, messages, add_generation_prompt, tokenize):
    return [self.questions.index(messages[0]["content"])]

  def decode(self, tokens, skip_special_tokens):
    return self.texts[tokens[0]]


class _Engine:
  """Answers each prompt with its own id, as a greedy `ar` run."""

  def __init__(self):
    self.calls = []

  def run(self, prompts, mode, max_new_tokens, batch_size):
    self.calls.append((mode, max_new_tokens, batch_size))
    return SimpleNamespace(rows=[SimpleNamespace(tokens=list(p)) for p in prompts], wall_s=0.1)


def test_eval_gsm_scores_the_decoded_answers():
  problems = [{"question": "q one", "reference": "12"}, {"question": "q two", "reference": "7"}]
  engine = _Engine()
  tok = _Tokenizer(["q one", "q two"], ["4 + 8 = 12", "it is 8"])
  got = eval_gsm(engine, tok, problems, max_new_tokens=32, batch_size=2, excluded=3)
  assert engine.calls == [("ar", 32, 2)]  # greedy ar, the fixed budget
  assert (got["n"], got["correct"], got["accuracy"], got["excluded"]) == (2, 1, 0.5, 3)
  assert [p["correct"] for p in got["problems"]] == [True, False]
  want = {"question": "q two", "reference": "7", "answer": "it is 8", "extracted": "8", "correct": False}
  assert got["problems"][1] == want
  with pytest.raises(SpecjaxError, match="max_new_tokens must be >= 1"):
    eval_gsm(engine, tok, problems, max_new_tokens=0)


def test_gsm_problems_are_the_suite_stream_minus_the_excluded():
  from specjax.prompts.suites import _gsm

  suite = _gsm()  # the `gsm` bench suite: the same seed, the same stream
  first, excluded = gsm_problems(4)
  assert [p["question"] for p in first] == suite[:4] and excluded == 0
  assert all(p["reference"].lstrip("-").replace(".", "").isdigit() for p in first)
  held, excluded = gsm_problems(4, exclude=[suite[1].upper()])  # compared as normalised text
  assert [p["question"] for p in held] == [suite[0], *suite[2:5]] and excluded == 1
  with pytest.raises(SpecjaxError, match=">= 1"):
    gsm_problems(0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("gsm")
  return root, tiny_checkpoint(root / "a", seed=0), tiny_checkpoint(root / "b", seed=1)


def test_eval_gsm_cli_on_a_tiny_model(tiny, capsys):
  root, a, _ = tiny
  out = root / "gsm.json"
  assert main(["eval-gsm", "--target", str(a), "--limit", "3", "--max-new-tokens", "3", "--out", str(out)]) == 0
  rec = json.loads(out.read_text())
  assert rec["n"] == len(rec["problems"]) == 3 and rec["correct"] == sum(p["correct"] for p in rec["problems"])
  assert set(rec["problems"][0]) == {"question", "reference", "answer", "extracted", "correct"}
  assert rec["max_new_tokens"] == 3 and rec["seed"] == 42 and 0 <= rec["accuracy"] <= 1
  assert "GSM accuracy" in capsys.readouterr().out
  bad = root / "bad.json"
  assert main(["eval-gsm", "--target", str(a), "--limit", "0", "--out", str(bad)]) == 2
  assert ">= 1" in capsys.readouterr().err and not bad.exists()


def test_side_by_side_cli(tiny, capsys):
  root, a, b = tiny
  prompts = root / "p.jsonl"
  prompts.write_text('{"prompt": "what is the cat"}\n{"prompt": "who sat on the mat"}\n')
  out = root / "side.json"
  argv = ["side-by-side", "--targets", f"{a},{b}", "--names", "a,b", "--prompts", str(prompts), "--max-new-tokens", "3"]
  assert main(argv + ["--out", str(out)]) == 0
  rec = json.loads(out.read_text())
  assert [r["prompt"] for r in rec["prompts"]] == ["what is the cat", "who sat on the mat"]
  assert all(set(r) == {"prompt", "a", "b"} for r in rec["prompts"]) and rec["models"] == {"a": str(a), "b": str(b)}
  one_name = ["side-by-side", "--targets", f"{a},{b}", "--names", "a", "--prompts", str(prompts)]
  assert main(one_name + ["--max-new-tokens", "3", "--out", str(root / "x.json")]) == 2
  assert "one distinct name per target" in capsys.readouterr().err
