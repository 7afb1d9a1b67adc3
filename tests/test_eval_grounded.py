"""The `grounded` prompt suite: deterministic, passage-grounded, held out from the training sources."""

from __future__ import annotations

from specjax.eval import grounded
from specjax.eval.grounded import grounded_prompts, passages
from specjax.prompts import sources, suites


def test_passages_keep_prose_only():
  readme = """# Title

[![badge](https://img.shields.io/x.svg)](https://x)

Toolkit is a library for doing things with arrays. It is fast, it is small, and it has a
[friendly API](https://example.org) that many people use every day for their work.

It also reads files of many formats, writes them back, and checks them against a schema that
the user provides. Errors are reported with the line and column where they happened.

Installing it takes one command, and the documentation explains every option with examples that
run as they are written, so that new users can start in minutes rather than hours.

```python
import toolkit
toolkit.run()
```

| col | col |
| --- | --- |
"""
  out = passages(readme * 2)
  assert out and all(grounded.MIN_CHARS <= len(p) <= grounded.MAX_CHARS for p in out)
  text = " ".join(out)
  assert "friendly API that many" in text and "http" not in text and "import toolkit" not in text and "|" not in text


def test_suite_is_deterministic_grounded_and_held_out():
  a, b = grounded_prompts(), grounded_prompts()
  assert a == b and len(a) >= 16
  assert any(p.startswith("Summarize") for p in a) and any("Question:" in p for p in a)
  assert len({p.split("\n\n", 1)[1][:80] for p in a}) == len(a)  # one prompt per passage
  # The first prompts are the first passages of different packages, in PACKAGES order.
  firsts = [ps[0] for ps in (passages(grounded.description(n) or "") for n in grounded.PACKAGES) if ps]
  assert all(passage in prompt for passage, prompt in zip(firsts[:8], a[:8], strict=True))
  # No training prompt source shares a prompt with it.
  train = sources.load_sources("summarize:300,code:300")
  assert suites.check_disjoint(train, a) == len(train)
