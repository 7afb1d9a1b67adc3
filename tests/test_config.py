"""Every YAML under configs/ loads into its dataclass; bad keys and values are clear errors."""

from pathlib import Path

import pytest

from specjax.config import CONFIG_KINDS, config_class, config_to_dict, load_config
from specjax.errors import SpecjaxError
from specjax.train.pretrain import PretrainConfig, model_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
YAMLS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name in CONFIG_KINDS)


@pytest.mark.parametrize("path", YAMLS, ids=[str(p.relative_to(CONFIGS)) for p in YAMLS])
def test_every_config_loads(path):
  cls = config_class(path.parent.name)  # every stage is on this branch: an ImportError is a bug, not a skip
  cfg = load_config(cls, path)
  if isinstance(cfg, PretrainConfig):
    model_config(cfg.model)  # the model section resolves to a valid LlamaConfig


def test_pretrain_configs_exist():
  names = {p.name for p in YAMLS if p.parent.name == "pretrain"}
  assert {"drafter-s.yaml", "tiny.yaml"} <= names


def test_unknown_and_mistyped_keys():
  path = CONFIGS / "pretrain" / "tiny.yaml"
  with pytest.raises(SpecjaxError, match=r"unknown config key.*optim\.learning_rate.*valid keys.*lr"):
    load_config(PretrainConfig, path, ["optim.learning_rate=1e-3"])
  with pytest.raises(SpecjaxError, match="steps: expected an integer"):
    load_config(PretrainConfig, path, ["steps=many"])
  with pytest.raises(SpecjaxError, match="must be one of"):
    load_config(PretrainConfig, path, ["model.init_embed=magic"])
  cfg = load_config(PretrainConfig, path, ["optim.lr=0.5", "model.fields={hidden_size: 32}"])
  assert cfg.optim.lr == 0.5 and model_config(cfg.model).hidden_size == 32
  with pytest.raises(SpecjaxError, match="unknown keys"):
    model_config(load_config(PretrainConfig, path, ["model.fields={hidden: 32}"]).model)


def test_training_configs_share_one_trainer_section():
  from specjax.train.trainer import TrainerConfig

  shared = {"steps", "seed", "optim", "mesh", "checkpoint", "logging"}
  for kind in CONFIG_KINDS:
    cls = config_class(kind)
    assert issubclass(cls, TrainerConfig) and shared <= {f.name for f in cls.__dataclass_fields__.values()}


def test_a_run_recorded_before_a_setting_existed_resumes_at_its_default(tmp_path):
  import json

  from specjax.train.distill import DistillConfig
  from specjax.train.trainer import check_run_config

  cfg = DistillConfig(target="t", student="s")
  record, defaults = config_to_dict(cfg), config_to_dict(DistillConfig())
  old = {k: v for k, v in record.items() if k != "remat"}  # written before `remat` existed
  old["data"] = {k: v for k, v in record["data"].items() if k != "eval_examples"}
  (tmp_path / "run_config.json").write_text(json.dumps(old))
  check_run_config(tmp_path, record, defaults)  # the missing settings are their defaults: same run
  with pytest.raises(SpecjaxError, match=r"different config \(keys \['remat'\]\)"):
    check_run_config(tmp_path, config_to_dict(DistillConfig(target="t", student="s", remat=True)), defaults)
  with pytest.raises(SpecjaxError, match=r"different config \(keys \['data.eval_examples', 'remat'\]\)"):
    check_run_config(tmp_path, record)  # without the defaults, the missing settings differ
