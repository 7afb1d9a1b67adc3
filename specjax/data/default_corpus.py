"""The offline default corpus: English prose shipped with the Python standard library.

Every machine that runs specjax has a Python standard library, and it carries edited English prose:

1. the Python language reference and library topics that `help()` shows (`pydoc_data.topics`, a
   plain data module), one document per topic;
2. module, class and function docstrings, read from the library's source files with `ast` (nothing
   is imported or executed), keeping docstrings of at least `min_words` words and dropping doctest
   lines (`>>>`, `...`). Test suites (`test/`, `tests/`, `idle_test/`) and installed third-party
   packages (`site-packages`) are skipped.

`documents()` yields them in a fixed order (topics sorted by name, then sorted source paths).

It is the corpus that `specjax pretrain` uses when `data.source` is `default`; any user corpus replaces it.
The exact text depends on the Python version (Python 3.11: about 4,700 documents, 2 MB of text, 0.5M SmolLM2 tokens).
"""

from __future__ import annotations

import ast
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}


def stdlib_dir() -> Path:
  return Path(sysconfig.get_paths()["stdlib"])


def _source_files(root: Path) -> list[Path]:
  files = []
  for path in root.rglob("*.py"):
    rel = path.relative_to(root).parts
    if any(part in _SKIP_DIRS for part in rel[:-1]):
      continue
    files.append(path)
  return sorted(files)


def _clean(doc: str) -> str:
  lines = [ln for ln in doc.splitlines() if not ln.lstrip().startswith((">>>", "... "))]
  return "\n".join(lines).strip()


def _docstrings(tree: ast.AST) -> Iterator[str]:
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      doc = ast.get_docstring(node, clean=True)
      if doc:
        yield doc


def topics() -> Iterator[str]:
  """The help topics of the language reference (a plain dict of strings in the standard library)."""
  try:
    from pydoc_data.topics import topics as table
  except ImportError:  # some distributions strip pydoc_data
    return
  for name in sorted(table):
    text = table[name].strip()
    if text:
      yield text


def documents(min_words: int = 12, root: str | Path | None = None) -> Iterator[str]:
  """Yield the corpus documents (help topics, then docstrings) in a fixed order."""
  if root is None:
    yield from topics()
  root = Path(root) if root is not None else stdlib_dir()
  for path in _source_files(root):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError, OSError):
      continue
    for doc in _docstrings(tree):
      text = _clean(doc)
      if len(text.split()) >= min_words:
        yield text
