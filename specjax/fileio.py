"""Writing outputs so that no half-written folder ever survives.

`atomic_dir(dest)` yields a temporary sibling folder; on success it is renamed to `dest` in one step,
on any error it is deleted. An existing `dest` is refused up front (never overwritten).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from specjax.errors import SpecjaxError


def refuse_existing(dest: str | os.PathLike) -> Path:
  dest = Path(dest)
  if dest.exists():
    raise SpecjaxError(f"output {dest} already exists; choose another --out or remove it first")
  return dest


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
  """Yield a temporary folder that becomes `dest` only if the block finishes without an error."""
  dest = refuse_existing(dest)
  dest.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
  try:
    yield tmp
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; give it the permissions of a normal folder
    os.replace(tmp, dest)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Write a small text file via a temporary file and rename."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  try:
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def json_lines(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
  """(where, record) for each non-blank line of a JSONL file, `where` being "path:line" for messages;
  a line that is not JSON is refused with its place."""
  path = Path(path)
  with path.open(encoding="utf-8") as fh:
    for i, line in enumerate(fh, 1):
      if not line.strip():
        continue
      try:
        yield f"{path}:{i}", json.loads(line)
      except json.JSONDecodeError as e:
        raise SpecjaxError(f"{path}:{i}: not valid JSON ({e.msg}); each line must be one JSON object") from None
