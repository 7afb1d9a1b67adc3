"""README.md and docs/ point only at what the repository holds, and their commands and code are real.

Fast (no model, no subprocess but one `git ls-files`): every relative link of README.md and docs/*.md
resolves to a path of the repository and, with an `#anchor` into a .md file, to one of its headings
(GitHub's slug rule); every `docs/...` citation in the code, scripts, configs, tests and docs resolves
the same way; no file names the design notes that never were part of the repository; every `specjax
COMMAND` line of a README code block (and of the reference pages of docs/, all but the dated log
docs/results.md, whose commands are a record of what was run) names a real subcommand whose `--help`
parses, and uses only flags that subcommand has; the README's training commands load their config
with their overrides; the README's Python example imports what exists; every repository path named in
inline code (`specjax/...`, `scripts/...`, `configs/...`, `tests/...`, `docs/...`) exists.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
LOG = ROOT / "docs" / "results.md"  # the dated measurement log: its commands are history, not checked
# Design notes that lived outside the repository; nothing may cite them (built so this file does not).
GONE = ("ALGORITHMS" + ".md", "DESIGN" + ".md")
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist", "demo_out"}


def rel(path: Path) -> str:
  return path.relative_to(ROOT).as_posix()


def strip_code(text: str, inline: bool = True) -> str:
  """Markdown prose only: fenced and indented code blocks (and inline code) removed, line count kept."""
  out, fenced = [], False
  for line in text.split("\n"):
    if line.lstrip().startswith("```"):
      fenced = not fenced
      out.append("")
    elif fenced or line.startswith("    ") or line.startswith("\t"):
      out.append("")
    else:
      out.append(re.sub(r"`[^`]*`", "", line) if inline else line)
  return "\n".join(out)


def code_lines(text: str) -> list[str]:
  """The lines of the page's code blocks (4-space indented or fenced), unindented."""
  out, fenced = [], False
  for line in text.split("\n"):
    if line.lstrip().startswith("```"):
      fenced = not fenced
    elif fenced:
      out.append(line)
    elif line.startswith("    "):
      out.append(line[4:])
  return out


def slug(heading: str) -> str:
  """GitHub's anchor for a heading: rendered text, lowercased, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images keep their text
  text = text.replace("`", "").replace("*", "")
  text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # emphasis underscores, not those inside words
  text = text.strip().lower()
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
  """Every heading anchor of a markdown file, with GitHub's -1, -2 suffixes for repeats."""
  seen: dict[str, int] = {}
  out = set()
  for line in strip_code(path.read_text(), inline=False).split("\n"):
    m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
    if not m:
      continue
    base = slug(m.group(1))
    n = seen.get(base, 0)
    seen[base] = n + 1
    out.add(base if n == 0 else f"{base}-{n}")
  return frozenset(out)


def resolve(base: Path, target: str) -> str | None:
  """None when `target` (relative to the folder `base`) is a path of the repository with its anchor."""
  path, _, anchor = target.partition("#")
  if not path:
    file = None  # an anchor into the page itself, checked by the caller
  elif path.startswith("/") or re.match(r"^[a-zA-Z][\w+.-]*:", path):
    return f"{target}: not a relative path inside the repository"
  else:
    file = (base / path).resolve()
    if ROOT != file and ROOT not in file.parents:
      return f"{target}: points outside the repository"
    if not file.exists():
      return f"{target}: no such file in the repository"
  if anchor and file is not None:
    if file.suffix != ".md":
      return f"{target}: an anchor into a file that is not markdown"
    if anchor not in anchors(file):
      return f"{target}: {rel(file)} has no heading with anchor #{anchor}"
  return None


def links(text: str) -> list[tuple[int, str]]:
  """(line, target) of every inline link and image, and of every reference definition, outside code."""
  prose = strip_code(text)
  out = []
  for i, line in enumerate(prose.split("\n"), 1):
    for m in re.finditer(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
      out.append((i, m.group(1)))
    m = re.match(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", line)
    if m:
      out.append((i, m.group(1)))
  return out


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
  text = page.read_text()
  problems = []
  for line, target in links(text):
    if re.match(r"^(https?|mailto):", target):
      continue  # a web address is not a file of the repository
    err = resolve(page.parent, target)
    if err is None and target.startswith("#") and target[1:] not in anchors(page):
      err = f"{target}: no heading of {rel(page)} has that anchor"
    if err:
      problems.append(f"{rel(page)}:{line}: {err}")
  assert not problems, "\n".join(problems)


def project_files() -> list[Path]:
  """The repository's files: tracked and untracked-but-not-ignored (a walk where git is missing)."""
  if shutil.which("git") and (ROOT / ".git").exists():
    proc = subprocess.run(
      ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
      cwd=ROOT,
      capture_output=True,
      check=False,
    )
    if proc.returncode == 0:
      return [ROOT / p for p in proc.stdout.decode().split("\0") if p and (ROOT / p).is_file()]
  files = []
  for p in ROOT.rglob("*"):
    if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(ROOT).parts) and ".egg-info" not in str(p):
      files.append(p)
  return files


def citing_files() -> list[Path]:
  """Where a `docs/...` citation may sit: the package, scripts, configs, tests, docs and the README."""
  out = sorted((ROOT / "specjax").rglob("*.py"))
  out += sorted(p for p in (ROOT / "scripts").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
  out += sorted(p for p in (ROOT / "configs").rglob("*") if p.is_file())
  out += sorted(p for p in (ROOT / "tests").glob("*.py") if p.name != Path(__file__).name)
  out += PAGES + [ROOT / "Makefile", ROOT / "pyproject.toml"]
  return [p for p in out if p.is_file()]


CITATION = re.compile(r"(?<![\w/.-])docs/[\w./-]*[\w](?:#[\w-]*[\w])?")


def test_docs_citations_resolve():
  problems = []
  for f in citing_files():
    text = f.read_text(errors="replace")
    if f.suffix == ".md":
      text = re.sub(r"\]\([^)]*\)", "]()", text)  # link targets are relative to the page: checked above
    for i, line in enumerate(text.split("\n"), 1):
      for m in CITATION.finditer(line):
        err = resolve(ROOT, m.group(0))
        if err:
          problems.append(f"{rel(f)}:{i}: {err}")
  assert not problems, "\n".join(problems)


def test_no_file_names_the_notes_outside_the_repository():
  hits = []
  for f in project_files():
    try:
      data = f.read_bytes()
    except OSError:
      continue
    for name in GONE:
      if name.encode() in data:
        hits.append(f"{rel(f)} names {name}")
  assert not hits, "\n".join(hits) + "\n(cite docs/algorithms.md and the docs/ pages instead)"


@cache
def subcommands() -> dict[str, argparse.ArgumentParser]:
  from specjax.cli import build_parser

  parser = build_parser()
  (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
  return dict(sub.choices)


COMMAND = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:\S*/)?(?:python[\d.]*\s+-m\s+)?specjax\s+(\S+)(.*)$")


def commands(page: Path) -> list[tuple[str, str]]:
  """(command line, rest) of every `specjax COMMAND ...` line of the page's code blocks, continuations joined."""
  joined, cur = [], ""
  for line in code_lines(page.read_text()):
    line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
    cur += line.strip()
    if cur.endswith("\\"):
      cur = cur[:-1] + " "
      continue
    joined.append(cur)
    cur = ""
  joined.append(cur)
  out = []
  for line in joined:
    for part in re.split(r"\s*(?:&&|;)\s*", line):
      m = COMMAND.match(part.strip())
      if m:
        out.append((m.group(0), m.group(1)))
  return out


CHECKED = [README, *(p for p in DOCS if p != LOG)]


@pytest.mark.parametrize("page", CHECKED, ids=rel)
def test_commands_are_real(page):
  cmds = commands(page)
  if page == README:
    assert len(cmds) >= 8, f"the README shows {len(cmds)} specjax commands; the whole job takes about eight"
  parsers = subcommands()
  problems = []
  for line, name in cmds:
    if name not in parsers:
      problems.append(f"{rel(page)}: `specjax {name}` is not a subcommand ({', '.join(parsers)}): {line}")
      continue
    options = {o for a in parsers[name]._actions for o in a.option_strings}
    for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", line):
      if flag not in options:
        problems.append(f"{rel(page)}: `specjax {name}` has no {flag}: {line}")
  assert not problems, "\n".join(problems)


def test_every_command_named_in_the_readme_parses_help():
  from specjax.cli import build_parser

  names = sorted({name for _, name in commands(README)} & set(subcommands()))
  assert names
  parser = build_parser()
  for name in names:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
      parser.parse_args([name, "--help"])
    assert exit_.value.code == 0, name
    assert out.getvalue().startswith("usage: specjax " + name), out.getvalue()[:200]


def test_slug_rule():
  assert slug("2026-11-23: the recipe, `BUDGET=short`") == "2026-11-23-the-recipe-budgetshort"
  assert slug("Lookup, spec-lookup and dynamic draft length: the knobs") == (
    "lookup-spec-lookup-and-dynamic-draft-length-the-knobs"
  )
  assert slug("2026-11-23: EAGLE with the teacher cache and 4.3x the data") == (
    "2026-11-23-eagle-with-the-teacher-cache-and-43x-the-data"
  )
  assert slug("Prompts the target writes (`specjax make-prompts`)") == "prompts-the-target-writes-specjax-make-prompts"
  assert slug("snake_case_name") == "snake_case_name"


TRAINING = {
  "pretrain": ("specjax.train.pretrain", "PretrainConfig"),
  "distill": ("specjax.train.distill", "DistillConfig"),
  "msn-train": ("specjax.train.msn", "MsnConfig"),
}


def test_readme_training_overrides_are_config_keys():
  """`specjax pretrain / distill / msn-train --config YAML key=value ...` in the README loads as written."""
  import importlib
  import shlex

  from specjax.config import load_config

  checked = 0
  for line, name in commands(README):
    if name not in TRAINING:
      continue
    module, cls = TRAINING[name]
    words = shlex.split(line.replace("[", " ").replace("]", " "))
    config = words[words.index("--config") + 1]
    overrides = [w for w in words if "=" in w and not w.startswith("-") and re.match(r"^[a-z_][\w.]*=", w)]
    load_config(getattr(importlib.import_module(module), cls), ROOT / config, overrides)
    checked += 1
  assert checked


def python_blocks(page: Path) -> list[str]:
  return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.M | re.S)


def test_readme_python_example_imports_resolve():
  import ast
  import importlib

  blocks = python_blocks(README)
  assert blocks, "the README shows the Python API in a ```python block"
  for block in blocks:
    for node in ast.walk(ast.parse(block)):
      if isinstance(node, ast.ImportFrom):
        module = importlib.import_module(node.module)
        for alias in node.names:
          assert hasattr(module, alias.name), f"README: {node.module} has no {alias.name}"
      elif isinstance(node, ast.Import):
        for alias in node.names:
          importlib.import_module(alias.name)


# `specjax/...`, `scripts/...`, `configs/...`, `tests/...`, `docs/...` in inline code: paths of the repository.
REPO_PATH = re.compile(r"`((?:specjax|scripts|configs|tests|docs)/[^`\s]*)`")


def expand(path: str) -> list[str]:
  m = re.search(r"\{([^{}]*)\}", path)
  if not m:
    return [path]
  return [x for alt in m.group(1).split(",") for x in expand(path[: m.start()] + alt + path[m.end() :])]


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_named_repository_paths_exist(page):
  """A file or folder of the repository named in inline code (e.g. `specjax/decode/modes.py`) exists."""
  problems = []
  for i, line in enumerate(page.read_text().split("\n"), 1):
    for m in REPO_PATH.finditer(line):
      for path in expand(m.group(1).split("#")[0].rstrip(".,:;")):
        if any(c in path for c in "*?["):
          ok = any(ROOT.glob(path))
        else:
          ok = (ROOT / path).exists()
        if not ok:
          problems.append(f"{rel(page)}:{i}: `{path}` is not a path of the repository")
  assert not problems, "\n".join(problems)
