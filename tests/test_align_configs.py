"""Every configs/distill and configs/msn file loads into its dataclass, with valid loss options."""

from pathlib import Path

import pytest

from specjax.config import config_class, load_config
from specjax.losses.distill import LOSSES, make_loss

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted((ROOT / "configs" / "distill").glob("*.yaml")) + sorted((ROOT / "configs" / "msn").glob("*.yaml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads(path):
  cfg = load_config(config_class(path.parent.name), path)
  assert cfg.steps >= 1 and cfg.data.batch_size >= 1
  if path.parent.name == "distill":
    make_loss(cfg.loss, **cfg.loss_options)


def test_one_distill_config_per_loss():
  names = {p.stem for p in FILES if p.parent.name == "distill"}
  assert set(LOSSES) <= names
  for loss in LOSSES:
    assert load_config(config_class("distill"), ROOT / "configs" / "distill" / f"{loss}.yaml").loss == loss
