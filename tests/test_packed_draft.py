"""Packed drafts (`specjax pack-draft`): only trained tensors stored, the copied ones rebuilt from the target
and checked against its hash; loaded by `--draft` as it is, greedy output identical to `ar`."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from decode_util import model, save_model, tiny, word_tokenizer

from specjax.checkpoint.orbax_io import load_checkpoint
from specjax.checkpoint.packed import PACKED_FILE, TENSORS_FILE, load_draft, load_packed, pack_draft
from specjax.cli import main
from specjax.errors import SpecjaxError
from specjax.models.registry import from_target


def _trained(params, seed: int = 7, keep=("embed_tokens",)):
  """The draft as training leaves it: every tensor moved except the frozen ones in `keep`."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  moved = [
    v if path[0].key in keep else v + 0.01 * jax.random.normal(k, v.shape, v.dtype)
    for (path, v), k in zip(leaves, keys, strict=True)
  ]
  return jax.tree_util.tree_unflatten(tree, moved)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  root = tmp_path_factory.mktemp("packed")
  tok = word_tokenizer()
  target = model(tiny(), 0)
  cfg, params = from_target(*target, num_layers=1, head_ids=tuple(range(0, 128, 2)), seed=1)
  save_model(root / "target", *target, tok)
  save_model(root / "other", *model(tiny(), 3), tok)
  # the same embedding, other layers: the draft would read other features, so it is refused too
  save_model(root / "tuned", target[0], _trained(target[1], keep=("embed_tokens",)), tok)
  save_model(root / "eagle", cfg, _trained(params), tok)
  save_model(root / "frozen_head", cfg, _trained(params, keep=("embed_tokens", "lm_head")), tok)
  prompts = root / "prompts.jsonl"
  prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["w1 w2 w3", "w9 w8 w9 w8", "w5 w5 w6"]))
  return root


def test_pack_keeps_only_trained_tensors_and_rebuilds_the_rest(ckpts):
  record = pack_draft(ckpts / "eagle", ckpts / "target", ckpts / "p16")
  assert record["from_target"] == {"embed_tokens/embedding": "copy"}
  assert "embed_tokens/embedding" not in record["stored"] and "lm_head/kernel" in record["stored"]
  frozen = pack_draft(ckpts / "frozen_head", ckpts / "target", ckpts / "p_head", dtype="float32")
  assert frozen["from_target"] == {"embed_tokens/embedding": "copy", "lm_head/kernel": "head"}
  target = load_checkpoint(ckpts / "target")
  for name, tol in (("p16", 1e-3), ("p_head", 0.0)):
    src = load_checkpoint(ckpts / ("eagle" if name == "p16" else "frozen_head"))
    back = load_draft(ckpts / name, target)
    assert back.config == src.config
    jax.tree.map(lambda a, b, t=tol: np.testing.assert_allclose(a, b, atol=t, rtol=t), back.params, src.params)
  # the stored file holds the trained part only: the checkpoint's bytes less the embedding and head
  src = load_checkpoint(ckpts / "frozen_head").params
  full = sum(np.asarray(v).nbytes for v in jax.tree.leaves(src))
  copied = np.asarray(src["embed_tokens"]["embedding"]).nbytes + np.asarray(src["lm_head"]["kernel"]).nbytes
  stored = (ckpts / "p_head" / TENSORS_FILE).stat().st_size
  assert full - copied < stored < full - copied + 4096  # + the safetensors header


def test_another_target_and_corruption_are_refused(ckpts):
  pack_draft(ckpts / "eagle", ckpts / "target", ckpts / "p_ref")
  with pytest.raises(SpecjaxError, match="trained for another target"):
    load_packed(ckpts / "p_ref", load_checkpoint(ckpts / "other"))
  with pytest.raises(SpecjaxError, match="trained for another target"):
    load_packed(ckpts / "p_ref", load_checkpoint(ckpts / "tuned"))
  with pytest.raises(SpecjaxError, match="is a packed draft"):
    load_checkpoint(ckpts / "p_ref")
  with pytest.raises(SpecjaxError, match="already exists"):
    pack_draft(ckpts / "eagle", ckpts / "target", ckpts / "p_ref")
  with pytest.raises(SpecjaxError, match="nothing but tensors of the target"):
    pack_draft(ckpts / "target", ckpts / "target", ckpts / "p_untrained")
  assert not (ckpts / "p_untrained").exists()
  with pytest.raises(SpecjaxError, match="--dtype"):
    pack_draft(ckpts / "eagle", ckpts / "target", ckpts / "p_bad", dtype="int8")
  assert not (ckpts / "p_bad").exists()
  import shutil

  broken = ckpts / "p_broken"
  shutil.copytree(ckpts / "p_ref", broken)
  (broken / TENSORS_FILE).write_bytes(b"not safetensors")
  with pytest.raises(SpecjaxError, match="corrupt"):
    load_packed(broken, load_checkpoint(ckpts / "target"))
  (broken / PACKED_FILE).write_text("{")
  with pytest.raises(SpecjaxError, match="corrupt"):
    load_packed(broken, load_checkpoint(ckpts / "target"))


def test_cli_bench_greedy_identical_and_unpack(ckpts, capsys):
  assert main(["pack-draft", str(ckpts / "eagle"), "--target", str(ckpts / "target"), "--out", str(ckpts / "cli")]) == 0
  assert "from the target: embed_tokens/embedding (copy)" in capsys.readouterr().out
  common = ["generate", "--target", str(ckpts / "target"), "--prompts", str(ckpts / "prompts.jsonl")]
  common += ["--max-new-tokens", "12", "--json"]
  assert main(common) == 0
  ar = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
  assert main(common + ["--draft", str(ckpts / "cli"), "--mode", "eagle", "--gamma", "3"]) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r["text"] for r in rows] == ar and sum(r["target_calls"] for r in rows) > 0
  assert main(["unpack-draft", str(ckpts / "cli"), "--target", str(ckpts / "target"), "--out", str(ckpts / "un")]) == 0
  assert main(["pack-draft", str(ckpts / "cli"), "--target", str(ckpts / "target"), "--out", str(ckpts / "x")]) == 2
  assert "already packed" in capsys.readouterr().err
  un = load_checkpoint(ckpts / "un")
  assert un.config == load_checkpoint(ckpts / "eagle").config
