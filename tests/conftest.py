"""Test setup: 8 host CPU devices (for sharding tests) before jax is imported, and shared fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(items):
  """Files with a `slow` test first (stable otherwise). `make test` hands whole files to two workers in
  collection order; starting the longest ones first keeps one worker from finishing the suite alone."""
  slow = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def smollm2_ckpt(tmp_path_factory):
  """The real target, SmolLM2-135M-Instruct, imported once per test session from the installed GGUF."""
  from specjax.checkpoint.convert import import_model
  from specjax.checkpoint.gguf import builtin_smollm2_path
  from specjax.errors import SpecjaxError

  try:
    builtin_smollm2_path()
  except SpecjaxError as e:  # a missing test dependency is a failure, never a silent skip
    pytest.fail(f"{e}. `make install` installs it with the other test dependencies", pytrace=False)
  return import_model("smollm2-135m-instruct", tmp_path_factory.mktemp("smollm2") / "ckpt")


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
  """Drop JAX's compiled executables after each test module. A worker runs many modules in one process
  (`make test`: two workers; plain `pytest`: one), and without this the executables of every earlier
  module stay loaded: after a few hundred of them XLA's CPU compiler crashed (a segmentation fault while
  compiling and loading a decoder)."""
  yield
  import gc

  import jax

  jax.clear_caches()
  gc.collect()
