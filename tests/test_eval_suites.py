"""Prompt sources: JSONL files and the built-in offline suites."""

from __future__ import annotations

import json
import types

import pytest

from specjax.errors import SpecjaxError
from specjax.eval import suites


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("SPECJAX_CACHE", str(tmp_path / "cache"))


def test_jsonl(tmp_path):
  f = tmp_path / "p.jsonl"
  f.write_text('{"prompt": "a"}\n\n{"prompt": "b", "id": 3}\n')
  assert suites.load_prompts(str(f)) == ["a", "b"]


@pytest.mark.parametrize(
  "text, match",
  [
    ("", "holds no prompts"),
    ("\n\n", "holds no prompts"),
    ('{"prompt": 1}\n', "line 1"),
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


def test_gsm_is_deterministic():
  first = suites._gsm()
  assert first == suites._gsm()


def test_missing_package_is_installed(monkeypatch, tmp_path):
  calls = []
  state = {"installed": False}

  def find_spec(name):
    return types.SimpleNamespace(submodule_search_locations=[str(tmp_path)]) if state["installed"] else None

  def run(cmd, **kw):
    calls.append(cmd)
    state["installed"] = True
    return types.SimpleNamespace(returncode=0, stderr="")

  monkeypatch.setattr(suites.importlib.util, "find_spec", find_spec)
  monkeypatch.setattr(suites.subprocess, "run", run)
  assert suites._package_dir("fake_mod", "fake-pkg", no_deps=True) == tmp_path
  assert calls and calls[0][-2:] == ["--no-deps", "fake-pkg"]

  state["installed"] = False
  monkeypatch.setattr(suites.subprocess, "run", lambda cmd, **kw: types.SimpleNamespace(returncode=1, stderr="no net"))
  with pytest.raises(SpecjaxError, match="pip install --no-deps fake-pkg"):
    suites._package_dir("fake_mod", "fake-pkg", no_deps=True)
