"""make-data: dataset layout, metadata, sharded resume without duplicates or losses, clear errors."""

import json

import numpy as np
import pytest
from align_helpers import PROMPTS, prompts_file, tiny_checkpoint, word_generator

from specjax.data.distill_data import META_FILE, check_same_target, load_distill_data
from specjax.errors import SpecjaxError
from specjax.jobs.make_data import make_data


def _killed_on_call(generate, n):
  """`generate`, except that its n-th call raises KeyboardInterrupt (the run killed mid-way)."""
  calls = []

  def killed(prompt_ids, seed):
    calls.append(seed)
    if len(calls) == n:
      raise KeyboardInterrupt
    return generate(prompt_ids, seed)

  return killed


@pytest.fixture(scope="module")
def target(tmp_path_factory):
  return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "target", seed=0, init_scale=0.5)


def _rows(path):
  ds, _ = load_distill_data(path)
  return [dict(r) for r in ds]


def test_layout_and_metadata(target, tmp_path):
  src = prompts_file(tmp_path)
  out = make_data(
    target,
    str(src),
    tmp_path / "d",
    num_samples=15,
    shard_size=4,
    batch_size=4,
    seed=3,
    check_eval=False,
    generate=word_generator(),
  )
  ds, meta = load_distill_data(out)
  assert len(ds) == 15 and sorted(ds["sample_id"]) == list(range(15))
  assert meta["generation"]["temperature"] == 0.7 and meta["generation"]["seed"] == 3
  assert meta["target"]["config"]["vocab_size"] == 128 and len(meta["target"]["fingerprint"]) == 32
  assert meta["prompts"]["count"] == len(PROMPTS) and meta["num_samples"] == 15
  row = ds[13]
  assert row["prompt"] == PROMPTS[13 % len(PROMPTS)]  # sample i answers prompt i mod P
  n = row["prompt_len"]
  assert len(row["tokens"]) == len(row["response_mask"]) and row["response_mask"] == [0] * n + [1] * (
    len(row["tokens"]) - n
  )
  assert row["tokens"][n - 1] != 3 and row["finished"] and row["tokens"][-1] == 3  # ends with EOS (<|im_end|>)
  assert row["response"] and "<|im_end|>" not in row["response"]
  assert not (tmp_path / ".d.partial").exists()
  assert json.loads((out / META_FILE).read_text()) == meta


def test_resume_after_a_crash_neither_duplicates_nor_loses(target, tmp_path):
  src = str(prompts_file(tmp_path))
  kw = dict(num_samples=22, shard_size=5, batch_size=5, check_eval=False)
  full = make_data(target, src, tmp_path / "ref", generate=word_generator(), **kw)

  gen = word_generator()
  with pytest.raises(KeyboardInterrupt):  # killed while generating the third shard
    make_data(target, src, tmp_path / "d", generate=_killed_on_call(gen, 3), **kw)
  work = tmp_path / ".d.partial"
  assert sorted(p.name for p in work.glob("shard-*")) == ["shard-00000", "shard-00001"]
  assert not (tmp_path / "d").exists()

  resumed_calls = []

  def counting(prompt_ids, seed):
    resumed_calls.append(seed)
    return gen(prompt_ids, seed)

  make_data(target, src, tmp_path / "d", generate=counting, **kw)
  assert len(resumed_calls) == 3  # shards 2, 3, 4 only
  got, want = _rows(tmp_path / "d"), _rows(full)
  assert [r["sample_id"] for r in got] == list(range(22))
  assert got == want  # exactly the rows of the uninterrupted run


def test_resume_refuses_other_settings(target, tmp_path):
  src = str(prompts_file(tmp_path))

  def crash(prompt_ids, seed):
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    make_data(target, src, tmp_path / "d", num_samples=6, shard_size=3, check_eval=False, generate=crash)
  with pytest.raises(SpecjaxError, match="other settings"):
    make_data(
      target,
      src,
      tmp_path / "d",
      num_samples=6,
      shard_size=3,
      temperature=1.0,
      check_eval=False,
      generate=word_generator(),
    )


def test_errors(target, tmp_path):
  src = str(prompts_file(tmp_path))
  (tmp_path / "exists").mkdir()
  with pytest.raises(SpecjaxError, match="already exists"):
    make_data(target, src, tmp_path / "exists", check_eval=False, generate=word_generator())
  with pytest.raises(SpecjaxError, match="longer than max_prompt_tokens"):
    make_data(target, src, tmp_path / "x", max_prompt_tokens=3, check_eval=False, generate=word_generator())
  with pytest.raises(SpecjaxError, match="not a make-data output"):
    load_distill_data(tmp_path)


def test_other_target_is_detected(target, tmp_path):
  from specjax.checkpoint.orbax_io import load_checkpoint

  src = str(prompts_file(tmp_path))
  out = make_data(target, src, tmp_path / "d", num_samples=3, check_eval=False, generate=word_generator())
  _, meta = load_distill_data(out)
  same = load_checkpoint(target)
  check_same_target(meta, same.config, same.params)
  other = load_checkpoint(tiny_checkpoint(tmp_path / "other", seed=1, init_scale=0.5))
  with pytest.raises(SpecjaxError, match="made by another target"):
    check_same_target(meta, other.config, other.params, out)
  params = dict(same.params)
  params["norm"] = {"scale": np.asarray(same.params["norm"]["scale"]) + 1e-3}
  with pytest.raises(SpecjaxError, match="made by another target"):
    check_same_target(meta, same.config, params, out)


def test_fingerprint_ignores_how_the_target_runs(target, tmp_path):
  """dtype / param_dtype / remat do not change the model (distill runs the target in bfloat16); fields that
  change the function do. Datasets made before the fingerprint version still check against their target."""
  import hashlib

  import jax

  from specjax.checkpoint.orbax_io import load_checkpoint

  src = str(prompts_file(tmp_path))
  out = make_data(target, src, tmp_path / "d", num_samples=3, check_eval=False, generate=word_generator())
  _, meta = load_distill_data(out)
  same = load_checkpoint(target)
  bf16 = load_checkpoint(target, config=same.config.replace(dtype="bfloat16", remat=True))
  check_same_target(meta, bf16.config, bf16.params, out)
  check_same_target(meta, same.config.replace(param_dtype="bfloat16"), same.params, out)
  with pytest.raises(SpecjaxError, match="made by another target"):
    check_same_target(meta, same.config.replace(rope_theta=500000.0), same.params, out)

  # version 1: no fingerprint_version, a hash of the whole config and the raw parameters
  h = hashlib.blake2b(digest_size=16)
  h.update(json.dumps(same.config.to_dict(), sort_keys=True).encode())
  leaves = jax.tree_util.tree_flatten_with_path(same.params)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    arr = np.asarray(leaf)
    h.update(jax.tree_util.keystr(path).encode())
    h.update(f"{arr.shape}{arr.dtype}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  old = {"target": {"path": "t", "config": same.config.to_dict(), "fingerprint": h.hexdigest()}}
  check_same_target(old, bf16.config, same.params, out)
  with pytest.raises(SpecjaxError, match="made by another target"):
    check_same_target(old, same.config.replace(rope_theta=500000.0), same.params, out)
  other = load_checkpoint(tiny_checkpoint(tmp_path / "other", seed=1, init_scale=0.5))
  with pytest.raises(SpecjaxError, match="made by another target"):
    check_same_target(old, other.config, other.params, out)


def test_compiled_sampler_answers_through_the_chat_template(target, tmp_path):
  import jax.numpy as jnp

  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer
  from specjax.data.chat import prompt_text
  from specjax.models.llama import Llama

  src = str(prompts_file(tmp_path, PROMPTS[:5]))
  out = make_data(target, src, tmp_path / "d", temperature=0.0, max_new_tokens=6, batch_size=4, check_eval=False)
  ds, meta = load_distill_data(out)
  assert len(ds) == 5 and meta["generation"]["sampler"].startswith("specjax.decode.engine")
  tok, ckpt = load_tokenizer(target), load_checkpoint(target)
  model = Llama(ckpt.config)
  for row in ds:
    n = row["prompt_len"]
    assert row["tokens"][:n] == tok(prompt_text(tok, row["prompt"]), add_special_tokens=False)["input_ids"]
    assert 1 <= len(row["tokens"]) - n <= 6
    x = jnp.asarray([row["tokens"]], jnp.int32)
    logits, _ = model.apply({"params": ckpt.params}, x, jnp.arange(x.shape[1])[None])
    greedy = np.asarray(jnp.argmax(logits[0, n - 1 : -1, : len(tok)], -1)).tolist()
    assert greedy == row["tokens"][n:]  # temperature 0: every response token is the target's argmax


# --- make-prompts: the target writes the training prompts -------------------------------------------


def _request_generator(tok, calls):
  """A stand-in sampler drawing user requests (and the rows make-prompts must drop) from a fixed pool."""
  eos = tok.eos_token_id
  ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
  good = [
    ids(f"{a} is the {b} {c}") + [eos] for a in ("what", "why", "how") for b in ("red", "blue") for c in ("cat", "dog")
  ]
  bad = [ids("what is the big cat"), ids("yes") + [eos], ids("where is the big sea") + [eos]]  # unfinished, short, eval

  def generate(prompt_ids, seed):
    calls.append([list(p) for p in prompt_ids])
    rng = np.random.default_rng(seed)
    return (bad + [good[i] for i in rng.integers(0, len(good), size=len(prompt_ids))])[: len(prompt_ids)]

  return generate


def test_make_prompts_keeps_finished_distinct_held_out_requests_and_resumes(target, tmp_path, monkeypatch):
  from specjax.checkpoint.orbax_io import load_tokenizer
  from specjax.jobs.make_prompts import make_prompts, user_prefix
  from specjax.prompts import suites

  monkeypatch.setattr(suites, "eval_prompts", lambda: ["Where is the BIG  sea"])
  tok = load_tokenizer(target)
  kw = dict(num_prompts=9, round_size=6, batch_size=3, min_words=2)
  calls = []
  ref = make_prompts(target, tmp_path / "ref.jsonl", generate=_request_generator(tok, calls), **kw)
  assert {tuple(p) for c in calls for p in c} == {tuple(tok(user_prefix(tok), add_special_tokens=False)["input_ids"])}
  assert user_prefix(tok) == "<|im_start|>user\n"
  kept = [json.loads(ln)["prompt"] for ln in ref.read_text().splitlines()]
  assert len(kept) == 9 == len(set(kept))
  assert all(p.endswith(("cat", "dog")) and len(p.split()) == 5 for p in kept)  # no unfinished, short or eval row

  calls = []
  gen = _request_generator(tok, calls)
  with pytest.raises(KeyboardInterrupt):  # killed in the second round
    make_prompts(target, tmp_path / "p.jsonl", generate=_killed_on_call(gen, 2), **kw)
  work = tmp_path / ".p.jsonl.partial"
  assert json.loads((work / "meta.json").read_text())["rounds"] == 1 and not (tmp_path / "p.jsonl").exists()
  for other in ({"min_words": 3}, {"batch_size": 2}):
    with pytest.raises(SpecjaxError, match="other settings"):
      make_prompts(target, tmp_path / "p.jsonl", generate=gen, **{**kw, **other})
  out = make_prompts(target, tmp_path / "p.jsonl", generate=gen, **kw)
  assert out.read_text() == ref.read_text() and not work.exists()  # resumed = uninterrupted
  with pytest.raises(SpecjaxError, match="already exists"):
    make_prompts(target, out, generate=gen, **kw)


def test_make_prompts_gives_up_keeping_what_it_has(target, tmp_path):
  from specjax.jobs.make_prompts import make_prompts

  # the random tiny target rarely closes a user turn in 4 tokens: the compiled sampler runs, then the limit stops it
  with pytest.raises(SpecjaxError, match=r"kept \d+ of 1000 prompts in 1 rounds"):
    make_prompts(
      target, tmp_path / "p.jsonl", 1000, max_new_tokens=4, round_size=8, batch_size=4, max_rounds=1, check_eval=False
    )
  assert json.loads((tmp_path / ".p.jsonl.partial" / "meta.json").read_text())["rounds"] == 1
  with pytest.raises(SpecjaxError, match="num_prompts must be >= 1"):
    make_prompts(target, tmp_path / "q.jsonl", 0)


def test_make_prompts_openings_steer_each_request_in_turn(target, tmp_path, capsys):
  from specjax.checkpoint.orbax_io import load_tokenizer
  from specjax.cli import main
  from specjax.jobs.make_prompts import make_prompts, user_prefix

  tok = load_tokenizer(target)
  ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
  calls = []
  gen = _request_generator(tok, calls)
  kw = dict(num_prompts=5, round_size=5, batch_size=5, min_words=2, check_eval=False)
  out = make_prompts(target, tmp_path / "p.jsonl", openings=["Write", " Explain me "], generate=gen, **kw)
  head = user_prefix(tok)
  # continuation i of round r starts with opening (5 r + i) mod 2: rounds 0 and 1 alternate from opposite ends
  assert calls[0] == [ids(head + o) for o in ("Write", "Explain me", "Write", "Explain me", "Write")]
  assert calls[1][0] == ids(head + "Explain me")
  kept = [json.loads(ln)["prompt"] for ln in out.read_text().splitlines()]
  assert len(kept) == 5 and all(p.startswith(("Write", "Explain me")) for p in kept)
  # the opening, then the continuation's text as the target wrote it (row 0 of round 0 was unfinished)
  assert kept[:2] == ["Explain meyes", "Writewhere is the big sea"]

  with pytest.raises(KeyboardInterrupt):  # killed in the second round
    make_prompts(target, tmp_path / "q.jsonl", openings=["Write"], generate=_killed_on_call(gen, 2), **kw)
  with pytest.raises(SpecjaxError, match="other settings"):  # a resume with other openings is refused
    make_prompts(target, tmp_path / "q.jsonl", openings=["Explain"], generate=gen, **kw)
  with pytest.raises(SpecjaxError, match="non-empty"):
    make_prompts(target, tmp_path / "r.jsonl", openings=["Write", " "], generate=gen, **kw)
  empty = tmp_path / "none.txt"
  empty.write_text("\n\n")
  for spec, msg in ((str(empty), "has no openings"), (str(tmp_path / "missing.txt"), "neither")):
    assert (
      main(
        [
          "make-prompts",
          "--target",
          str(target),
          "--out",
          str(tmp_path / "s.jsonl"),
          "--num-prompts",
          "1",
          "--openings",
          spec,
        ]
      )
      == 2
    )
    assert msg in capsys.readouterr().err
  assert not (tmp_path / "s.jsonl").exists()


@pytest.mark.parametrize(
  "bad, message",
  [
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=1.5), "top-p"),
    (dict(max_new_tokens=100_000), "context holds"),
  ],
)
def test_bad_settings_write_nothing(target, tmp_path, bad, message):
  # Checked before the work folder exists: the corrected rerun starts clean instead of being refused.
  src = prompts_file(tmp_path)
  kw = dict(num_samples=4, shard_size=4, batch_size=4, check_eval=False)
  with pytest.raises(SpecjaxError, match=message):
    make_data(target, str(src), tmp_path / "d", **kw, **bad)
  assert not (tmp_path / ".d.partial").exists() and not (tmp_path / "d").exists()
  make_data(target, str(src), tmp_path / "d", **kw, generate=word_generator())


@pytest.mark.parametrize(
  "bad, message",
  [
    (dict(temperature=-1.0), "temperature"),
    (dict(top_p=2.0), "top-p"),
    (dict(max_new_tokens=100_000), "context holds"),
    (dict(max_rounds=-1), "max_rounds"),
  ],
)
def test_make_prompts_bad_settings_write_nothing(target, tmp_path, bad, message):
  # Checked before the work folder exists: the corrected rerun starts clean instead of being refused.
  from specjax.checkpoint.orbax_io import load_tokenizer
  from specjax.jobs.make_prompts import make_prompts

  kw = dict(num_prompts=3, round_size=6, batch_size=3, min_words=2, check_eval=False)
  with pytest.raises(SpecjaxError, match=message):
    make_prompts(target, tmp_path / "p.jsonl", **kw, **bad)
  assert not (tmp_path / ".p.jsonl.partial").exists() and not (tmp_path / "p.jsonl").exists()
  make_prompts(target, tmp_path / "p.jsonl", generate=_request_generator(load_tokenizer(target), []), **kw)


def test_shuffled_order_and_snapshot_of_a_running_campaign(target, tmp_path):
  src = str(prompts_file(tmp_path))
  kw = dict(num_samples=2 * len(PROMPTS), shard_size=3, batch_size=3, check_eval=False, shuffle=True)
  full = make_data(target, src, tmp_path / "ref", generate=word_generator(), **kw)
  rows = _rows(full)
  order = [r["prompt"] for r in rows]
  assert order != [PROMPTS[i % len(PROMPTS)] for i in range(len(rows))]  # not the spec's order
  assert sorted(order[: len(PROMPTS)]) == sorted(PROMPTS)  # each prompt once per pass over the spec
  assert order[len(PROMPTS) :] == order[: len(PROMPTS)]
  assert load_distill_data(full)[1]["prompts"]["order"] == "shuffled"

  with pytest.raises(SpecjaxError, match="no unfinished make-data run"):
    make_data(target, src, tmp_path / "d", generate=word_generator(), snapshot=tmp_path / "s0", **kw)
  gen = word_generator()
  with pytest.raises(KeyboardInterrupt):  # the campaign, stopped during its third shard
    make_data(target, src, tmp_path / "d", generate=_killed_on_call(gen, 3), **kw)
  with pytest.raises(SpecjaxError, match="other settings"):
    make_data(target, src, tmp_path / "d", generate=gen, snapshot=tmp_path / "s1", **{**kw, "shuffle": False})
  snap = make_data(target, src, tmp_path / "d", generate=gen, snapshot=tmp_path / "s2", **kw)
  ds, meta = load_distill_data(snap)
  assert [dict(r) for r in ds] == rows[:6] and meta["num_samples"] == 6
  assert meta["snapshot"] == {"of_samples": len(rows), "shards": 2}
  assert (tmp_path / ".d.partial" / "shard-00001").exists()  # the run goes on from where it was
  assert _rows(make_data(target, src, tmp_path / "d", generate=gen, **kw)) == rows
