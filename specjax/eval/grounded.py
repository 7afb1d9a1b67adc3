"""The `grounded` prompt suite: questions and summaries over a given passage (document-grounded tasks).

Passages are prose from the long descriptions (the README shipped in the wheel's METADATA) of the
packages specjax installs (`PACKAGES`, read with `importlib.metadata`, in that order; a missing
package is skipped). Code blocks, tables, badges, HTML, link targets and directives are removed, and
consecutive paragraphs are joined into passages of `MIN_CHARS` to `MAX_CHARS` characters, at most
`PER_PACKAGE` per package. Each passage gets one task, in turn: a summary, a question answered from
the passage only, or a list of its main points. Prompts are ordered passage 1 of every package, then
passage 2, ..., so the first N prompts cover N packages.

Deterministic for a given set of installed package versions (the suite is cached on first use), and
held out from every training source: distillation prompts come from chatterbot-corpus, GSM templates
and standard-library docstrings, pretraining text from the standard library (`specjax.prompts.sources`,
`specjax.data.default_corpus`); none of these packages' READMEs is among them.
"""

from __future__ import annotations

import importlib.metadata
import re

PACKAGES = (
  "numpy",
  "jax",
  "flax",
  "optax",
  "chex",
  "jaxtyping",
  "transformers",
  "datasets",
  "tokenizers",
  "huggingface-hub",
  "gguf",
  "tqdm",
  "tensorboardX",
  "matplotlib",
  "pandas",
  "pyarrow",
  "fsspec",
  "requests",
)
MIN_CHARS, MAX_CHARS, PER_PACKAGE = 400, 1000, 3

TASKS = (
  "Summarize the following passage from the documentation of {name} in two or three sentences.\n\n{passage}",
  "Answer the question using only the passage below.\n\nPassage:\n{passage}\n\n"
  "Question: According to the passage, what is {name} and what is it used for?",
  "Read the passage below and list its main points as short bullet points, using the passage's own words "
  "where possible.\n\n{passage}",
)


def description(name: str) -> str | None:
  """The long description of an installed distribution, None when it is not installed."""
  try:
    meta = importlib.metadata.metadata(name)
  except importlib.metadata.PackageNotFoundError:
    return None
  return meta.get_payload() or meta.get("Description") or ""


_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")  # [text](url) -> text; images vanish with their alt text
_REF = re.compile(r"`([^`<]+?)\s*<[^>]+>`_+")  # rst `text <url>`_ -> text
_TAG = re.compile(r"<[^>]+>")


def _prose(paragraph: str) -> str | None:
  """A paragraph cleaned to plain prose, or None when it is not prose (code, table, list of links...)."""
  lines = [ln.strip() for ln in paragraph.splitlines()]
  if not lines or any(ln.startswith(("|", "..", ":", ">>>", "$ ", "+-", "==", "--", "~~", "<")) for ln in lines):
    return None
  if len(lines) > 1 and all(set(ln) <= set("=-~^*#") for ln in lines[1:]):
    return None  # an rst heading with its underline
  text = " ".join(ln.lstrip("#*- ").strip() for ln in lines)
  text = _TAG.sub("", _REF.sub(r"\1", _LINK.sub(r"\1", text)))
  text = re.sub(r"\s+", " ", text).strip()
  words = text.split()
  if len(words) < 8 or text.count("http") > 1 or sum(w.startswith(("`", "--", "=")) for w in words) > len(words) / 4:
    return None
  if not re.search(r"[.!?:]$", text):
    return None
  return text


def passages(text: str) -> list[str]:
  """Prose passages of MIN_CHARS..MAX_CHARS characters from one README (see the module docstring)."""
  text = re.sub(r"```.*?```", "\n\n", text, flags=re.S)  # fenced code blocks
  text = re.sub(r"::\n\n(?:[ \t]+.*\n|\n)+", ".\n\n", text)  # rst literal blocks
  out, cur = [], ""
  for para in re.split(r"\n\s*\n", text):
    prose = _prose(para)
    if prose is None:
      if len(cur) >= MIN_CHARS:
        out.append(cur)
      cur = ""
      continue
    if len(cur) + len(prose) + 1 > MAX_CHARS:
      if len(cur) >= MIN_CHARS:
        out.append(cur)
      cur = prose if len(prose) <= MAX_CHARS else ""
    else:
      cur = f"{cur} {prose}".strip()
  if len(cur) >= MIN_CHARS:
    out.append(cur)
  return out


def grounded_prompts() -> list[str]:
  """The suite's prompts (see the module docstring)."""
  per_package = []
  for name in PACKAGES:
    text = description(name)
    if text:
      per_package.append((name, passages(text)[:PER_PACKAGE]))
  prompts = []
  for i in range(PER_PACKAGE):
    for name, ps in per_package:
      if i < len(ps):
        prompts.append(TASKS[len(prompts) % len(TASKS)].format(name=name, passage=ps[i]))
  return prompts
