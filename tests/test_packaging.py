"""pyproject.toml: the package metadata builds without setuptools deprecation warnings."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_metadata_builds_without_deprecation_warnings(tmp_path):
  pyproject = (ROOT / "pyproject.toml").read_text()
  assert re.search(r'^license = "Apache-2\.0"$', pyproject, re.M)  # an SPDX expression, not a table
  floor = re.search(r'requires = \["setuptools>=(\d+)"\]', pyproject)
  assert floor and int(floor.group(1)) >= 77  # the first setuptools that reads SPDX license strings
  src = tmp_path / "src"
  (src / "specjax").mkdir(parents=True)
  shutil.copy(ROOT / "pyproject.toml", src)
  shutil.copy(ROOT / "README.md", src)
  (src / "specjax" / "__init__.py").write_text("")
  (src / "meta").mkdir()
  code = "from setuptools import build_meta as b; print(b.prepare_metadata_for_build_wheel('meta'))"
  proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert "Deprecat" not in proc.stderr and "deprecat" not in proc.stderr, proc.stderr
  meta = (src / "meta" / proc.stdout.strip().splitlines()[-1] / "METADATA").read_text()
  assert "License-Expression: Apache-2.0" in meta
