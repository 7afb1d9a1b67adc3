"""GSM exact-match accuracy: greedy chat answers to held-out reasoning-gym gsm_symbolic problems, each
scored by the last number it writes (`specjax eval-gsm`).

    problems = gsm_problems(100, exclude=training_prompts)
    result = eval_gsm(engine, tokenizer, problems, max_new_tokens=256)
    result["accuracy"], result["problems"][i]   # {question, reference, answer, extracted, correct}

Problems: reasoning-gym's `gsm_symbolic` generator with seed `GSM_SEED` (42), the seed of the `gsm` bench
suite (`specjax.prompts.suites`): the stream is the same for any size, so the first 80 problems are that
suite's prompts. The training source `gsm` draws from seed `GSM_TRAIN_SEED_BASE + seed`, and make-data
refuses training prompts equal to a suite prompt; past the 80th problem a template could in principle repeat
a training problem, so `exclude` (eval-gsm --exclude DATA: the fine-tune's make-data folder) drops every
problem whose normalised text is among the given prompts, and the result counts them (`excluded`).
Repeats inside the stream are dropped too. The reference is the generator's numeric answer.

The prompt is the question alone, as one user turn of the chat template (what the `gsm` bench suite
sends), decoded greedily for at most `max_new_tokens` tokens: a fixed budget, so an answer cut short
before its result is scored as written.

Answer rule (`extract_answer`): the last number in the answer text, where a number is an optional minus
sign (not right after a letter, digit or dot, so `10-3` ends in `3`), digits with optional thousands
commas (`1,234`) and an optional decimal part (`2.50`); a trailing full stop is not a decimal point. The
answer is correct when that number equals the reference numerically (`2.50` = `2.5`, `70.0` = `70`). An
answer without a number is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fractions import Fraction

from specjax.errors import SpecjaxError

GSM_SEED = 42  # the `gsm` bench suite's seed (specjax.prompts.suites.GSM_SEED)
NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
RULE = "the last number in the answer (thousands commas allowed), equal to the reference as a number"


def extract_answer(text: str) -> str | None:
  """The last number written in `text` (commas removed), or None when it holds none (see the module
  docstring for the rule)."""
  last = None
  for m in NUMBER.finditer(text):
    number, before = m.group(), text[m.start() - 1 : m.start()]
    if number.startswith("-") and (before.isalnum() or before in "._"):
      number = number[1:]  # `10-3`: a difference, not a negative number
    last = number
  return None if last is None else last.replace(",", "")


def as_number(text: str) -> Fraction:
  """A number's exact value (`Fraction("2.50") == Fraction(5, 2)`); a SpecjaxError for anything else."""
  try:
    return Fraction(text.replace(",", "").strip())
  except (ValueError, ZeroDivisionError):
    raise SpecjaxError(f"{text!r} is not a number") from None


def is_correct(answer: str, reference: str) -> bool:
  """Whether the last number of `answer` equals `reference` numerically."""
  got = extract_answer(answer)
  return got is not None and as_number(got) == as_number(reference)


def score(answers: Sequence[str], references: Sequence[str]) -> dict:
  """Exact-match accuracy of answers against numeric references: `{n, correct, accuracy, extracted,
  correct_each}` (per answer: its extracted number, or None, and whether it is right)."""
  if len(answers) != len(references):
    raise SpecjaxError(f"{len(answers)} answers for {len(references)} references")
  if not references:
    raise SpecjaxError("no answers to score")
  extracted = [extract_answer(a) for a in answers]
  right = [is_correct(a, r) for a, r in zip(answers, references, strict=True)]
  return {
    "n": len(right),
    "correct": sum(right),
    "accuracy": sum(right) / len(right),
    "extracted": extracted,
    "correct_each": right,
  }


def gsm_problems(n: int, exclude: Iterable[str] = (), seed: int = GSM_SEED) -> tuple[list[dict], int]:
  """The first `n` gsm_symbolic problems of `seed` not in `exclude` (by normalised text), as
  `{"question", "reference"}`, and how many were skipped for being in `exclude`."""
  from specjax.packages import import_package
  from specjax.prompts.sources import prompt_hash

  if n < 1:
    raise SpecjaxError(f"the number of GSM problems must be >= 1, got {n}")
  rg = import_package("reasoning_gym", "the GSM accuracy evaluation")
  banned = {prompt_hash(p) for p in exclude}
  size = n
  while True:  # the stream is the same for any size: grow it until n problems are left
    items = list(rg.create_dataset("gsm_symbolic", size=size, seed=seed))
    out, seen, excluded = [], set(), 0
    for item in items:
      h = prompt_hash(item["question"])
      if h in seen:
        continue
      seen.add(h)
      if h in banned:
        excluded += 1
        continue
      out.append({"question": item["question"], "reference": str(item["answer"])})
      if len(out) == n:
        return out, excluded
    if size >= 4 * n + 64:
      raise SpecjaxError(f"only {len(out)} of {n} GSM problems are left after excluding {excluded}")
    size = 2 * size + 16


def eval_gsm(
  engine, tokenizer, problems: Sequence[dict], max_new_tokens: int, batch_size: int = 8, excluded: int = 0
) -> dict:
  """Greedy chat answers (`ar`) of the engine's target to `problems` (from `gsm_problems`, which skipped
  `excluded` of them), scored by `score`: the accuracy, the settings and every problem with its answer."""
  import time

  from specjax.decode.text import greedy_answers

  if max_new_tokens < 1:
    raise SpecjaxError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  t0 = time.perf_counter()
  answers = greedy_answers(engine, tokenizer, [p["question"] for p in problems], max_new_tokens, batch_size)
  wall_s = time.perf_counter() - t0
  s = score(answers, [p["reference"] for p in problems])
  return {
    "source": "reasoning-gym gsm_symbolic",
    "seed": GSM_SEED,
    "excluded": excluded,
    "n": s["n"],
    "correct": s["correct"],
    "accuracy": s["accuracy"],
    "rule": RULE,
    "max_new_tokens": max_new_tokens,
    "decoding": "greedy ar, chat template, the question as the user turn",
    "wall_s": wall_s,  # compile included
    "problems": [
      {**p, "answer": a, "extracted": x, "correct": c}
      for p, a, x, c in zip(problems, answers, s["extracted"], s["correct_each"], strict=True)
    ],
  }
