"""The make-data job: the target model's own answers to instruction prompts (`specjax make-data`).

    make_data(target="ckpt/smollm2", prompts="gsm:500,chat:200,code:200", out="data/distill",
              temperature=0.7, top_p=0.95, max_new_tokens=256, batch_size=16)

Each prompt goes through the target's chat template (`specjax.data.chat.prompt_text`), the target samples a
response with the compiled batched sampler (`specjax.decode.engine.Engine`, autoregressive mode), and one
row per sample is written in the format of `specjax.data.distill_data` (read back with `load_distill_data`).

Long runs: prompts are processed in shards of `shard_size` samples, each written (atomically) to the
work folder `.<out name>.partial/` next to `out` as soon as it is done; progress and throughput go to
stderr. Running the same command again resumes after the last complete shard (each shard's sampling
seed depends only on the seed and the shard index, so a resumed run gives exactly the rows an
uninterrupted one would). When every shard exists they are joined into `out` and the work folder is
removed. A rerun with different settings refuses to mix them; every setting is checked before anything
is written, so a corrected rerun is not refused.

Sample i uses prompt i mod P (P prompts after filtering), so `num_samples` > P draws several answers per
prompt; with `shuffle` it uses prompt order[i mod P] for a seeded permutation `order`, so that every
prefix of a long run (what a snapshot or an interrupted campaign holds) mixes the spec's sources alike.
`snapshot` writes the shards done so far as a dataset of its own and leaves the run resumable: train on
what a long campaign has made while it goes on. Prompts whose templated length exceeds `max_prompt_tokens` are skipped (and counted).

The target samples in `dtype` ("auto": bfloat16 on GPU/TPU, float32 on CPU; `specjax.models.config`), recorded
as `generation.dtype` in the meta: the two sample different answers, so a resume in another dtype is refused.
Stored features are float16 and log-normalisers float32 whatever the compute dtype.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specjax.config import differences
from specjax.data.distill_data import (
  FINGERPRINT_VERSION,
  FORMAT,
  META_FILE,
  join_shards,
  shard_path,
  target_fingerprint,
  write_shard,
)
from specjax.errors import SpecjaxError
from specjax.fileio import atomic_write_text, refuse_existing

Generate = Callable[[Sequence[Sequence[int]], int], list[list[int]]]


def engine_generate(
  config, params, *, eos_ids, temperature, top_p, max_new_tokens, batch_size, vocab_size=None, features=False
) -> Generate:
  """The default generator: the compiled batched sampler of `specjax.decode.engine` (autoregressive, with
  `batch_size` rows refilled as soon as their answer ends: `Engine.stream`).

  `vocab_size` (the tokenizer's size, when the embedding table is padded past it) keeps padded ids out.
  With `features` each answer is `(ids, features [n, D] float16, lse [n] float32)` over prompt + answer.
  """
  from specjax.decode.engine import Engine
  from specjax.decode.sampling import SamplingConfig

  engine = Engine(config, params, eos_ids=eos_ids, vocab_size=vocab_size)
  sampling = SamplingConfig(temperature=temperature, top_p=top_p)

  def generate(prompt_ids: Sequence[Sequence[int]], seed: int) -> list[list[int]]:
    run = engine.stream(
      list(prompt_ids),
      max_new_tokens=max_new_tokens,
      sampling=sampling,
      batch_size=batch_size,
      seed=seed,
      features=features,
    )
    generate.compile_s += run.compile_s  # reported apart from the sampling speed
    if features:
      return [(row.tokens, row.features, row.lse) for row in run.rows]
    return [row.tokens for row in run.rows]

  generate.compile_s = 0.0
  return generate


def end_ids(ckpt, tokenizer) -> set[int]:
  """The ids that end an answer: the tokenizer's end-of-turn token and the model config's EOS."""
  return {int(e) for e in (tokenizer.eos_token_id, ckpt.config.eos_token_id) if e is not None}


def target_sampler(ckpt, tokenizer, *, temperature, top_p, max_new_tokens, batch_size, features=False) -> Generate:
  """`engine_generate` for a loaded checkpoint and its tokenizer (stops at `end_ids`, no padded ids)."""
  return engine_generate(
    ckpt.config,
    ckpt.params,
    eos_ids=tuple(end_ids(ckpt, tokenizer)),
    temperature=temperature,
    top_p=top_p,
    max_new_tokens=max_new_tokens,
    batch_size=batch_size,
    vocab_size=min(len(tokenizer), ckpt.config.vocab_size),
    features=features,
  )


def check_sampling(
  ckpt,
  prompt_ids: Sequence[Sequence[int]],
  temperature: float,
  top_p: float,
  max_new_tokens: int,
  batch_size: int,
  fix: str,
) -> None:
  """The sampler's settings and room for the prompts, checked by a job before it writes anything: a
  failure later would leave a work folder behind that refuses the corrected rerun as "other settings"."""
  from specjax.decode.engine import check_prompts
  from specjax.decode.sampling import SamplingConfig

  SamplingConfig(temperature=temperature, top_p=top_p)
  context = ckpt.config.max_position_embeddings
  check_prompts(prompt_ids, max_new_tokens, batch_size, context, holder="the target's context", fix=fix)


def _shard_seed(seed: int, shard: int) -> int:
  return int.from_bytes(hashlib.sha256(f"make-data:{seed}:{shard}".encode()).digest()[:4], "little") >> 1


def _progress(done: int, total: int, tokens: int, t0: float, compile_s: float = 0.0) -> None:
  dt = max(time.perf_counter() - t0 - compile_s, 1e-9)
  print(
    f"make-data: {done}/{total} samples, {tokens / dt:.1f} new tokens/s (compile {compile_s:.0f}s excluded)",
    file=sys.stderr,
    flush=True,
  )


def make_data(
  target: str | os.PathLike,
  prompts: str,
  out: str | os.PathLike,
  *,
  temperature: float = 0.7,
  top_p: float = 0.95,
  max_new_tokens: int = 256,
  batch_size: int = 16,
  num_samples: int | None = None,
  seed: int = 0,
  shard_size: int = 256,
  max_prompt_tokens: int = 512,
  system: str | None = None,
  check_eval: bool = True,
  generate: Generate | None = None,
  features: bool = False,
  shuffle: bool = False,
  snapshot: str | os.PathLike | None = None,
  dtype: str = "auto",
) -> Path:
  """Build (or resume building) a distillation dataset; see the module docstring.

  Args:
    target: the target's specjax checkpoint folder (params, config, tokenizer with a chat template).
    prompts: a prompt source spec (`specjax.prompts.sources.load_sources`).
    out: the dataset folder to create (must not exist).
    temperature, top_p, max_new_tokens: sampling settings of the target.
    batch_size: rows per compiled sampler call.
    num_samples: samples to generate (default: one per prompt).
    seed: prompt shuffling / gsm generation and sampling seed.
    shard_size: samples per shard (the resume granularity).
    max_prompt_tokens: prompts longer than this after templating are skipped.
    system: optional system message for the chat template.
    check_eval: fail if a prompt is in an evaluation suite (`specjax.prompts.suites.check_disjoint`).
    generate: replaces the compiled sampler (`fn(prompt_ids, seed) -> generated ids per prompt`).
    features: also store the target's features and log-normalisers at every position, kept as it samples
      (`FEATURES_FILE`, `LSE_FILE`; read by the teacher cache, which then runs no teacher pass).
    shuffle: answer the prompts in a seeded random order instead of the spec's.
    snapshot: instead of generating, write the complete shards of this unfinished run (same settings)
      to this new folder as a dataset, and return it; the run itself stays resumable.
    dtype: the target's compute dtype as it samples: "auto", "float32" or "bfloat16".

  Returns:
    `out`.
  """
  import datasets

  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer
  from specjax.data.chat import prompt_text
  from specjax.models.config import resolve_dtype
  from specjax.prompts.sources import load_sources
  from specjax.prompts.suites import check_disjoint, eval_prompts

  datasets.disable_progress_bars()
  if snapshot is None:
    out = refuse_existing(out)
  else:
    out, snapshot = Path(out), refuse_existing(snapshot)
  for name, v in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size), ("shard_size", shard_size)):
    if v < 1:
      raise SpecjaxError(f"{name} must be >= 1, got {v}")
  if num_samples is not None and num_samples < 1:
    raise SpecjaxError(f"num_samples must be >= 1, got {num_samples}")
  compute = resolve_dtype(dtype)
  ckpt = load_checkpoint(target)
  tokenizer = load_tokenizer(target)
  evals = eval_prompts() if check_eval else []
  texts = load_sources(prompts, seed=seed, exclude=evals)
  if check_eval:
    check_disjoint(texts, evals)
  kept, ids, skipped = [], [], 0
  for t in texts:
    p_ids = tokenizer(prompt_text(tokenizer, t, system), add_special_tokens=False)["input_ids"]
    if len(p_ids) > max_prompt_tokens:
      skipped += 1
      continue
    kept.append(t)
    ids.append([int(i) for i in p_ids])
  if not kept:
    raise SpecjaxError(f"every prompt is longer than max_prompt_tokens={max_prompt_tokens}; raise it")
  check_sampling(
    ckpt, ids, temperature, top_p, max_new_tokens, batch_size, fix="lower --max-new-tokens or --max-prompt-tokens"
  )
  if skipped:
    print(f"make-data: skipped {skipped} prompts longer than {max_prompt_tokens} tokens", file=sys.stderr)
  total = num_samples or len(kept)
  fingerprint = target_fingerprint(ckpt.config, ckpt.params)
  meta: dict[str, Any] = {
    "format": FORMAT,
    "target": {
      "path": str(Path(target).resolve()),
      "config": ckpt.config.to_dict(),
      "fingerprint": fingerprint,
      "fingerprint_version": FINGERPRINT_VERSION,
    },
    "prompts": {
      "source": prompts,
      "count": len(kept),
      "skipped_too_long": skipped,
      "hash": hashlib.sha256("\n\0".join(kept).encode()).hexdigest(),
      "system": system,
      **({"order": "shuffled"} if shuffle else {}),
    },
    "generation": {
      "temperature": temperature,
      "top_p": top_p,
      "max_new_tokens": max_new_tokens,
      "batch_size": batch_size,
      "seed": seed,
      "sampler": "specjax.decode.engine (ar, refilled rows)" if generate is None else "custom",
      "dtype": compute,
    },
    "num_samples": total,
    "shard_size": shard_size,
  }
  if features:
    meta["features"] = {"dtype": "float16", "dim": ckpt.config.hidden_size, "lse_dtype": "float32"}
  work = out.parent / f".{out.name}.partial"
  meta_path = work / META_FILE
  if snapshot is not None:
    return _snapshot(work, meta, total, shard_size, snapshot)
  work.mkdir(parents=True, exist_ok=True)
  if meta_path.exists():
    _check_same_settings(work, meta, "rerun with the same settings to resume, or delete that folder")
  else:
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")

  eos_ids = end_ids(ckpt, tokenizer)
  if generate is None:
    generate = target_sampler(
      dataclasses.replace(ckpt, config=ckpt.config.replace(dtype=compute)),
      tokenizer,
      temperature=temperature,
      top_p=top_p,
      max_new_tokens=max_new_tokens,
      batch_size=batch_size,
      features=features,
    )
  n_shards = -(-total // shard_size)
  order = list(range(len(kept)))
  if shuffle:
    random.Random(f"make-data-order:{seed}").shuffle(order)
  t0, new_tokens = time.perf_counter(), 0
  for shard in range(n_shards):
    if shard_path(work, shard).exists():
      continue
    lo, hi = shard * shard_size, min(total, (shard + 1) * shard_size)
    rows_prompt = [order[i % len(kept)] for i in range(lo, hi)]
    gen = generate([ids[j] for j in rows_prompt], _shard_seed(seed, shard))
    if len(gen) != hi - lo:
      raise SpecjaxError(f"the generator returned {len(gen)} responses for {hi - lo} prompts")
    records: dict[str, list] = {k: [] for k in ("prompt", "response", "tokens", "response_mask", "prompt_len")}
    records.update(finished=[], sample_id=[])
    kept_f: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (j, g) in enumerate(zip(rows_prompt, gen, strict=True)):
      if features:
        if not isinstance(g, tuple) or len(g) != 3:
          raise SpecjaxError("features=True needs a generator that returns (ids, features, lse) per answer")
        g, f, z = g
        if len(f) != len(ids[j]) + len(g) or len(z) != len(f):
          raise SpecjaxError(f"the generator returned features of {len(f)} positions for {len(ids[j]) + len(g)} tokens")
        kept_f.append((np.asarray(f, np.float16), np.asarray(z, np.float32)))
      g = [int(t) for t in g]
      records["prompt"].append(kept[j])
      records["response"].append(tokenizer.decode(g, skip_special_tokens=True))
      records["tokens"].append(ids[j] + g)
      records["response_mask"].append([0] * len(ids[j]) + [1] * len(g))
      records["prompt_len"].append(len(ids[j]))
      records["finished"].append(bool(g) and g[-1] in eos_ids)
      records["sample_id"].append(lo + i)
      new_tokens += len(g)
    arrays = (np.concatenate([f for f, _ in kept_f]), np.concatenate([z for _, z in kept_f])) if features else None
    write_shard(work, shard, records, arrays)
    _progress(hi, total, new_tokens, t0, getattr(generate, "compile_s", 0.0))

  rows = join_shards(work, n_shards, out, meta)
  print(f"make-data: wrote {rows} samples to {out}", file=sys.stderr)
  return out


def _check_same_settings(work: Path, meta: dict, fix: str) -> None:
  """Refuse a run folder whose recorded settings are not `meta` (compared as the JSON it was written as),
  naming the settings that differ. A run recorded before `generation.dtype` existed sampled in its target
  config's compute dtype, which is what it is compared as."""
  recorded, now = json.loads((work / META_FILE).read_text()), json.loads(json.dumps(meta))
  generation = recorded.get("generation")
  if isinstance(generation, dict) and "dtype" not in generation:
    generation["dtype"] = recorded.get("target", {}).get("config", {}).get("dtype", "float32")
  if recorded != now:
    diff = ", ".join(differences(recorded, now))
    raise SpecjaxError(f"{work} holds an unfinished make-data run with other settings ({diff}); {fix}")


def _snapshot(work: Path, meta: dict, total: int, shard_size: int, dest: Path) -> Path:
  """The leading complete shards of the run in `work` (whose settings must be `meta`) joined into `dest`."""
  from specjax.data.distill_data import shard_path

  if not (work / META_FILE).is_file():
    raise SpecjaxError(f"no unfinished make-data run at {work} to snapshot (it is done, or never started)")
  _check_same_settings(work, meta, "give the same settings to snapshot it")
  done = 0
  while done * shard_size < total and shard_path(work, done).exists():
    done += 1
  if done == 0:
    raise SpecjaxError(f"the run at {work} has no complete shard yet; nothing to snapshot")
  rows = min(total, done * shard_size)
  snap_meta = dict(meta, num_samples=rows, snapshot={"of_samples": total, "shards": done})
  join_shards(work, done, dest, snap_meta, keep_work=True)
  print(f"make-data: snapshot of {rows}/{total} samples written to {dest}", file=sys.stderr)
  return dest
