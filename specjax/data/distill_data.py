"""Distillation data: the target model's own answers to instruction prompts (`specjax make-data`).

    make_data(target="ckpt/smollm2", prompts="gsm:500,chat:200,code:200", out="data/distill",
              temperature=0.7, top_p=0.95, max_new_tokens=256, batch_size=16)
    ds, meta = load_distill_data("data/distill")

Each prompt goes through the target's chat template (`specjax.data.chat.prompt_text`), the target samples a
response with the compiled batched sampler (`specjax.decode.engine.Engine`, autoregressive mode), and one
row is stored per sample:

    prompt (str), response (str, special tokens removed), tokens (int32 list: templated prompt ids + the
    generated ids exactly as sampled, EOS included when reached), response_mask (uint8 list, 1 on the
    generated ids), prompt_len (int), finished (bool: the response ended with EOS), sample_id (int)

The output is a `datasets` folder (`datasets.load_from_disk`) plus `specjax_data.json` with the
generation settings, the prompt source and the target identity: its path, config and a fingerprint
(a hash of the architecture fields of the config and every parameter's value), so `specjax distill` can
refuse a dataset made by another target. The fingerprint ignores how a model is run (compute and param
dtype, remat: `specjax.models.llama.NON_FUNCTIONAL_FIELDS`), so distilling in bfloat16 accepts a
dataset made in float32.

Long runs: prompts are processed in shards of `shard_size` samples, each written (atomically) to the
work folder `.<out name>.partial/` next to `out` as soon as it is done; progress and throughput go to
stderr. Running the same command again resumes after the last complete shard (each shard's sampling
seed depends only on the seed and the shard index, so a resumed run gives exactly the rows an
uninterrupted one would). When every shard exists they are joined into `out` and the work folder is
removed. A rerun with different settings refuses to mix them.

Sample i uses prompt i mod P (P prompts after filtering), so `num_samples` > P draws several answers per
prompt. Prompts whose templated length exceeds `max_prompt_tokens` are skipped (and counted).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from specjax.errors import SpecjaxError
from specjax.fileio import atomic_write_text, refuse_existing

META_FILE = "specjax_data.json"
FORMAT = "specjax-distill-data-v1"
Generate = Callable[[Sequence[Sequence[int]], int], list[list[int]]]


FEATURES_FILE, LSE_FILE = "features.npy", "teacher_lse.npy"  # written with `make_data(features=True)`
FINGERPRINT_VERSION = 2  # 1 (no version in the metadata): hash of the whole config and the raw parameters


def architecture(config) -> dict[str, Any]:
  """The config fields that define what the model computes (all but `NON_FUNCTIONAL_FIELDS`)."""
  from specjax.models.config import NON_FUNCTIONAL_FIELDS

  return {k: v for k, v in config.to_dict().items() if k not in NON_FUNCTIONAL_FIELDS}


def _hash(config_dict: dict, params, canonical: bool) -> str:
  import jax

  h = hashlib.blake2b(digest_size=16)
  h.update(json.dumps(config_dict, sort_keys=True).encode())
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    arr = np.asarray(jax.device_get(leaf))
    if canonical and jax.numpy.issubdtype(arr.dtype, jax.numpy.floating):
      arr = arr.astype(np.float32)  # exact for every param dtype: the values, not how they are held
    h.update(jax.tree_util.keystr(path).encode())
    h.update(f"{arr.shape}{arr.dtype}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()


def target_fingerprint(config, params) -> str:
  """A hash of a model's architecture fields and every parameter (path, shape and float32 value)."""
  return _hash(architecture(config), params, canonical=True)


def _legacy_fingerprint_matches(saved: dict, want: str, config, params) -> bool:
  """Version 1 (datasets made before FINGERPRINT_VERSION): same architecture and same raw parameters."""
  try:
    same_arch = architecture(type(config).from_dict(saved)) == architecture(config)
  except (SpecjaxError, TypeError):
    return False
  return same_arch and _hash(saved, params, canonical=False) == want


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

  Returns:
    `out`.
  """
  import datasets

  from specjax.checkpoint.orbax_io import load_checkpoint, load_tokenizer
  from specjax.data.chat import prompt_text
  from specjax.prompts.sources import load_sources
  from specjax.prompts.suites import check_disjoint, eval_prompts

  datasets.disable_progress_bars()
  out = refuse_existing(out)
  for name, v in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size), ("shard_size", shard_size)):
    if v < 1:
      raise SpecjaxError(f"{name} must be >= 1, got {v}")
  if num_samples is not None and num_samples < 1:
    raise SpecjaxError(f"num_samples must be >= 1, got {num_samples}")
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
  # Every setting is checked before anything is written, so a corrected rerun is not refused as "other settings".
  from specjax.decode.sampling import SamplingConfig

  SamplingConfig(temperature=temperature, top_p=top_p)
  context = ckpt.config.max_position_embeddings
  longest = max(len(p) for p in ids)
  if longest + max_new_tokens > context:
    raise SpecjaxError(
      f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} needs {longest + max_new_tokens} positions, "
      f"but the target's context holds {context}; lower --max-new-tokens or --max-prompt-tokens"
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
    },
    "generation": {
      "temperature": temperature,
      "top_p": top_p,
      "max_new_tokens": max_new_tokens,
      "batch_size": batch_size,
      "seed": seed,
      "sampler": "specjax.decode.engine (ar, refilled rows)" if generate is None else "custom",
    },
    "num_samples": total,
    "shard_size": shard_size,
  }
  if features:
    meta["features"] = {"dtype": "float16", "dim": ckpt.config.hidden_size, "lse_dtype": "float32"}
  work = out.parent / f".{out.name}.partial"
  work.mkdir(parents=True, exist_ok=True)
  meta_path = work / META_FILE
  if meta_path.exists():
    saved = json.loads(meta_path.read_text())
    if saved != json.loads(json.dumps(meta)):
      raise SpecjaxError(
        f"{work} holds an unfinished make-data run with other settings; rerun with the same settings to resume, "
        "or delete that folder"
      )
  else:
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")

  eos_ids = end_ids(ckpt, tokenizer)
  if generate is None:
    generate = target_sampler(
      ckpt,
      tokenizer,
      temperature=temperature,
      top_p=top_p,
      max_new_tokens=max_new_tokens,
      batch_size=batch_size,
      features=features,
    )
  n_shards = -(-total // shard_size)
  t0, new_tokens = time.perf_counter(), 0
  for shard in range(n_shards):
    dest = work / f"shard-{shard:05d}"
    if dest.exists():
      continue
    lo, hi = shard * shard_size, min(total, (shard + 1) * shard_size)
    rows_prompt = [i % len(kept) for i in range(lo, hi)]
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
    tmp = work / f".tmp-{dest.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset.from_dict(records, features=_features()).save_to_disk(str(tmp))
    if features:
      np.save(tmp / FEATURES_FILE, np.concatenate([f for f, _ in kept_f]))
      np.save(tmp / LSE_FILE, np.concatenate([z for _, z in kept_f]))
    os.replace(tmp, dest)
    _progress(hi, total, new_tokens, t0, getattr(generate, "compile_s", 0.0))

  shards = [datasets.load_from_disk(str(work / f"shard-{s:05d}")) for s in range(n_shards)]
  full = datasets.concatenate_datasets(shards)
  full.info.description = json.dumps(meta)
  final_tmp = work / ".final"
  shutil.rmtree(final_tmp, ignore_errors=True)
  full.save_to_disk(str(final_tmp))
  if features:
    _join_arrays([work / f"shard-{s:05d}" for s in range(n_shards)], final_tmp)
  atomic_write_text(final_tmp / META_FILE, json.dumps(meta, indent=2) + "\n")
  os.replace(final_tmp, out)
  shutil.rmtree(work, ignore_errors=True)
  print(f"make-data: wrote {len(full)} samples to {out}", file=sys.stderr)
  return out


def _join_arrays(shards: Sequence[Path], out: Path) -> None:
  """The shards' feature and log-normaliser arrays joined in row order into `out`, one shard at a time."""
  for name in (FEATURES_FILE, LSE_FILE):
    parts = [np.load(s / name, mmap_mode="r") for s in shards]
    shape = (sum(len(p) for p in parts), *parts[0].shape[1:])
    joined = np.lib.format.open_memmap(out / name, "w+", parts[0].dtype, shape)
    at = 0
    for p in parts:
      joined[at : at + len(p)] = p
      at += len(p)
    joined.flush()
    del joined


def stored_features(path: str | os.PathLike, meta: dict):
  """(features [tokens, D] float16, lse [tokens] float32), memory-mapped, of a make-data output made with
  `features=True` (rows back to back in dataset order), or None for one made without."""
  if "features" not in meta:
    return None
  path = Path(path)
  return np.load(path / FEATURES_FILE, mmap_mode="r"), np.load(path / LSE_FILE, mmap_mode="r")


def _features():
  import datasets

  return datasets.Features(
    {
      "prompt": datasets.Value("string"),
      "response": datasets.Value("string"),
      "tokens": datasets.Sequence(datasets.Value("int32")),
      "response_mask": datasets.Sequence(datasets.Value("uint8")),
      "prompt_len": datasets.Value("int32"),
      "finished": datasets.Value("bool"),
      "sample_id": datasets.Value("int64"),
    }
  )


def load_distill_data(path: str | os.PathLike):
  """(datasets.Dataset, metadata dict) of a make-data output; clear errors for anything else or empty."""
  import datasets

  path = Path(path)
  meta_path = path / META_FILE
  if not meta_path.is_file():
    raise SpecjaxError(f"{path} is not a make-data output (no {META_FILE}); build one with `specjax make-data`")
  meta = json.loads(meta_path.read_text())
  if meta.get("format") != FORMAT:
    raise SpecjaxError(f"{path}: unknown data format {meta.get('format')!r} (expected {FORMAT})")
  try:
    ds = datasets.load_from_disk(str(path))
  except IndexError:  # a dataset saved with zero rows has no data file to read
    ds = []
  except (FileNotFoundError, ValueError) as e:
    raise SpecjaxError(f"{path}: cannot read the dataset ({e}); rebuild it with `specjax make-data`") from None
  if len(ds) == 0:
    raise SpecjaxError(f"{path} holds no samples; rebuild it with `specjax make-data`")
  return ds, meta


def check_same_target(meta: dict, config, params, data_path: str | os.PathLike = "the dataset") -> None:
  """Raise SpecjaxError unless the dataset was generated by this target model (same architecture and
  parameters; the dtypes and remat it runs with do not matter)."""
  want = meta["target"]["fingerprint"]
  got = target_fingerprint(config, params)
  if meta["target"].get("fingerprint_version") == FINGERPRINT_VERSION:
    same = want == got
  else:
    same = _legacy_fingerprint_matches(meta["target"].get("config", {}), want, config, params)
  if not same:
    raise SpecjaxError(
      f"{data_path} was made by another target ({meta['target']['path']}, fingerprint {want[:12]}) than the one "
      f"given (fingerprint {got[:12]}); distil against the target that generated the data, or rebuild it"
    )
