"""docs/*.md name only files that exist (links and `docs/...` paths), so no page points at a dropped result."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")  # [text](target#anchor)
DOCS_PATH = re.compile(r"\bdocs/[\w./-]*\w")  # docs/name.ext in prose or a command


def _missing(page: Path) -> list[str]:
  text = page.read_text()
  prose = "\n".join(line for line in text.splitlines() if not line.startswith(("    ", "\t")))  # no code blocks
  links = [t for t in LINK.findall(prose) if "://" not in t and not t.startswith("mailto:")]
  named = [(page.parent / t) for t in links] + [(DOCS.parent / p) for p in DOCS_PATH.findall(text)]
  return sorted({str(p.resolve().relative_to(DOCS.parent)) for p in named if not p.exists()})


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_docs_name_only_files_that_exist(page):
  assert _missing(page) == []
