"""The host side of decoding: batching, length buckets, compile cache, timing and metrics.

    engine = Engine(target_cfg, target_params, draft_cfg, draft_params, eos_ids=(2,))
    run = engine.run(prompt_token_lists, "spec", max_new_tokens=64, gamma=4, batch_size=4)
    run.rows[i].tokens, run.rows[i].metrics, run.metrics, run.compile_s, run.wall_s

The modes and their knobs (each mode's own dataclass: gamma, window, tree, ngram, ngram_min, draft_threshold
for the built-in ones) come from the registry `specjax.decode.modes`; a knob the mode does not read is ignored,
a name no mode reads is refused.

Prompts are sorted by length and cut into batches of `batch_size` rows; each batch is right-padded to
the length bucket (16, 24, 32, 48, 64, ...) of its longest prompt, and a last, partial batch to the next power
of two rows (filled with finished dummy rows), so each (mode, settings, bucket, rows) compiles once
and little is computed for padding: `engine.compile_count` counts compilations. Compilation is ahead of time
(`jit(...).lower(...).compile()`), timed apart from the decode, which is timed up to
`block_until_ready`.

Metrics (docs/algorithms.md#metrics; the prefill, which emits the first token, is not a round):
- target_calls / draft_calls: forwards after the prefill (for a batch: the rounds a row took part in);
- drafted_tokens / accepted_tokens: proposals (gamma per speculative round, or the row's own draft
  length when it is dynamic; gamma per lookup round that found a match, 0 otherwise; W per Jacobi step;
  the tree depth per TR-Jacobi step) and how many of them were accepted; acceptance_rate = their ratio;
- block_efficiency = tokens emitted by rounds (new_tokens - 1) / target_calls (1 for autoregressive);
- per_position_acceptance[i] = P(proposal i+1 accepted | proposals 1..i accepted);
- tokens_per_s = new tokens / decode wall time (compile excluded, reported as compile_s).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from specjax.decode import modes
from specjax.decode.common import DecodeSettings
from specjax.decode.sampling import SamplingConfig
from specjax.errors import SpecjaxError
from specjax.models.llama import LlamaConfig, decode_layout

MIN_BUCKET = 16


@dataclasses.dataclass
class RowResult:
  tokens: list[int]
  metrics: dict[str, Any]
  features: np.ndarray | None = None  # `Engine.stream(features=True)`: [prompt + answer, D] float16
  lse: np.ndarray | None = None  # [prompt + answer] float32 (see `specjax.decode.stream`)


@dataclasses.dataclass
class RunResult:
  rows: list[RowResult]
  metrics: dict[str, Any]  # aggregated over all rows
  compile_s: float
  wall_s: float
  batches: list[
    dict[str, Any]
  ]  # per compiled call: bucket, batch_size, cache_size, iterations, draft_calls, wall_s, rows
  settings: DecodeSettings | None = None  # of the last batch (the knobs are the same for every batch)
  traces: list[dict[str, np.ndarray]] | None = None  # per batch, the real rows only (`trace=True`)


def _ratio(a: float, b: float) -> float | None:
  return float(a) / float(b) if b else None


def summarize(c: dict[str, np.ndarray]) -> dict[str, Any]:
  """Metrics from counters summed over the rows of interest (arrays of any leading shape)."""
  new = int(np.sum(c["n"]))
  calls = int(np.sum(c["target_calls"]))
  drafted, accepted = int(np.sum(c["drafted"])), int(np.sum(c["accepted"]))
  reached, hits = (np.asarray(c[k]) for k in ("reached", "hits"))
  reached, hits = (x.sum(axis=tuple(range(x.ndim - 1))) for x in (reached, hits))
  return {
    "new_tokens": new,
    "target_calls": calls,
    "draft_calls": int(np.sum(c["draft_calls"])),
    "drafted_tokens": drafted,
    "accepted_tokens": accepted,
    "acceptance_rate": _ratio(accepted, drafted),
    "block_efficiency": _ratio(new - int(np.sum(np.asarray(c["n"]) > 0)), calls),
    "per_position_acceptance": [_ratio(h, r) for h, r in zip(hits.tolist(), reached.tolist(), strict=True)],
  }


def bucket_length(n: int, limit: int) -> int:
  """The padded prompt length for a prompt of n tokens: the next of 16, 24, 32, 48, 64, 96, ... (powers of
  two and their midpoints: at most 1.5x padding, which a batched prefill pays on every row), at most
  `limit`."""
  b = MIN_BUCKET
  while b < n:
    b = b * 3 // 2 if b & (b - 1) == 0 else b * 4 // 3
  return max(n, min(b, limit))


def check_prompts(
  prompts: Sequence[Sequence[int]],
  max_new_tokens: int,
  batch_size: int,
  max_len: int,
  *,
  holder: str = "the cache",
  fix: str = "shorten the prompt or lower --max-new-tokens",
) -> int:
  """Refuse an empty prompt list, a batch size below 1 and a prompt that is empty or leaves no room for
  `max_new_tokens` in `max_len` positions; return the longest prompt length allowed. The engine checks every
  call with it, and the jobs that sample a target (make-data, make-prompts) before they write anything;
  `holder` and `fix` word the error for the caller."""
  if not prompts:
    raise SpecjaxError("no prompts to decode")
  if batch_size < 1:
    raise SpecjaxError(f"batch size must be >= 1, got {batch_size}")
  limit = max_len - max_new_tokens
  for i, p in enumerate(prompts):
    if len(p) == 0:
      raise SpecjaxError(f"prompt {i} is empty; every prompt needs at least one token")
    if len(p) > limit:
      raise SpecjaxError(
        f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} it needs {len(p) + max_new_tokens} "
        f"positions but {holder} holds {max_len} (the model's max_position_embeddings); {fix}"
      )
  return limit


class Engine:
  """Compiled decoders for one target (and optionally one draft) model; see the module docstring."""

  def __init__(
    self,
    target_cfg: LlamaConfig,
    target_params,
    draft_cfg: LlamaConfig | None = None,
    draft_params=None,
    *,
    eos_ids: Sequence[int] = (),
    vocab_size: int | None = None,
    max_len: int | None = None,
    compiler_options: dict[str, Any] | None = None,
    datastore=None,
  ):
    # The decode-time parameter layout, on the device once (a checkpoint may hold host numpy arrays,
    # which would be copied every call).
    self._saved_cfgs = (target_cfg, draft_cfg)  # the layout `set_params` converts from
    target_cfg = decode_layout(target_cfg, None)[0]
    draft_cfg = decode_layout(draft_cfg, None)[0] if draft_cfg is not None else None
    self.target_cfg, self.draft_cfg = target_cfg, draft_cfg
    self.target_params = self.draft_params = None
    self.set_params(target_params, draft_params)
    self.eos_ids = tuple(sorted({int(e) for e in eos_ids}))
    sizes = [target_cfg.vocab_size] + ([draft_cfg.vocab_size] if draft_cfg else [])
    if vocab_size is None:
      if len(set(sizes)) > 1:
        raise SpecjaxError(
          f"the draft's vocabulary ({sizes[1]}) differs from the target's ({sizes[0]}); the draft must use the "
          "target's tokenizer, whatever its model family (pass the shared tokenizer size as vocab_size if one "
          "embedding table is only padded)"
        )
      vocab_size = sizes[0]
    if vocab_size > min(sizes):
      raise SpecjaxError(
        f"the tokenizer has {vocab_size} tokens but a model has only {min(sizes)} embedding rows; "
        "the draft must use the target's tokenizer"
      )
    self.vocab_size = vocab_size
    self.max_len = max_len or target_cfg.max_position_embeddings
    self.compiler_options = compiler_options  # XLA options, e.g. {"xla_backend_optimization_level": 0}
    self._compiled: dict[tuple, Any] = {}
    self.datastore, self._store = None, None
    if datastore is not None:
      self.set_datastore(datastore)

  def set_datastore(self, datastore) -> None:
    """Use `datastore` (`specjax.data.datastore.Datastore`) for the modes that read one; its arrays go to
    the device once here and reach the compiled decoders as arguments."""
    from specjax.decode.datastore import Store

    if len(datastore.tokens) == 0:
      raise SpecjaxError("the datastore holds no tokens; build one with `specjax datastore`")
    if datastore.vocab_size != self.vocab_size:
      raise SpecjaxError(
        f"the datastore was built with a tokenizer of {datastore.vocab_size} tokens but the target's has "
        f"{self.vocab_size}; rebuild it with `specjax datastore --tokenizer TARGET`"
      )
    self.datastore = datastore
    self._store = jax.device_put(
      Store(tokens=jnp.asarray(datastore.tokens), suffix_array=jnp.asarray(datastore.suffix_array))
    )

  def set_params(self, target=None, draft=None) -> None:
    """New parameter values in the checkpoint (training) layout, e.g. the drafter being trained; they are
    converted to the decode layout like the ones given at construction."""
    if target is not None:
      self.target_params = jax.device_put(decode_layout(self._saved_cfgs[0], target)[1])
    if draft is not None:
      self.draft_params = jax.device_put(decode_layout(self._saved_cfgs[1], draft)[1])

  def _aids(self, m: modes.Mode):
    """What a mode's decoder gets as `draft_params`: the draft's parameters, the datastore's arrays
    (`Mode.needs_datastore`), both as a pair (`Mode.reads_datastore`; the datastore None when the engine
    has none), or None."""
    if m.needs_draft:
      return (self.draft_params, self._store) if m.reads_datastore else self.draft_params
    return self._store if m.needs_datastore else None

  @property
  def compile_count(self) -> int:
    """How many decoder executables this engine has compiled."""
    return len(self._compiled)

  def settings(
    self, mode: str, max_new_tokens: int, bucket: int, sampling: SamplingConfig, trace: bool = False, **options
  ) -> DecodeSettings:
    """The static settings of `mode` for prompts padded to `bucket`; `options` are knob values."""
    m = modes.get(mode)
    unknown = set(options) - set(modes.knob_fields())
    if unknown:
      raise SpecjaxError(
        f"unknown decoding option(s) {sorted(unknown)}; the modes' knobs are {', '.join(modes.knob_fields())}"
      )
    if max_new_tokens < 1:
      raise SpecjaxError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if m.needs_draft and self.draft_cfg is None:
      raise SpecjaxError(f"{mode} decoding needs a draft model (--draft CKPT)")
    if m.needs_draft and self.draft_cfg.kind != m.draft_kind:
      fits = [n for n in modes.names() if modes.get(n).needs_draft and modes.get(n).draft_kind == self.draft_cfg.kind]
      raise SpecjaxError(
        f"{mode} decoding needs a draft of kind {m.draft_kind!r}, but the draft is of kind "
        f"{self.draft_cfg.kind!r}; with this draft use --mode {' or '.join(fits)}"
      )
    if m.needs_datastore and self.datastore is None:
      raise SpecjaxError(f"{mode} decoding needs a datastore (--datastore DS, built with `specjax datastore`)")
    if m.greedy_only and not sampling.greedy:
      raise SpecjaxError(f"{mode} decoding is greedy only; use temperature 0")
    if trace and not m.traced:
      raise SpecjaxError(f"{mode} decoding records no per-round trace")
    knobs = m.make_knobs(options)
    s = DecodeSettings(
      target=self.target_cfg,
      max_new_tokens=max_new_tokens,
      cache_size=0,
      sampling=sampling,
      eos_ids=self.eos_ids,
      vocab_size=self.vocab_size,
      draft=self.draft_cfg if m.needs_draft else None,
      knobs=knobs,
      trace=trace,
    )
    return dataclasses.replace(s, cache_size=bucket + max_new_tokens + m.lookahead(knobs))

  def _executable(self, mode: str, s: DecodeSettings, args: tuple) -> tuple[Any, float]:
    key = (mode, s, args[2].shape, None if self._store is None else self._store.tokens.shape)
    if key in self._compiled:
      return self._compiled[key], 0.0
    t0 = time.perf_counter()
    fn = jax.jit(modes.get(mode).decode, static_argnums=0)
    compiled = fn.lower(s, *args).compile(self.compiler_options)
    self._compiled[key] = compiled
    return compiled, time.perf_counter() - t0

  def check(
    self,
    prompt_lengths: Sequence[int],
    mode: str = "ar",
    *,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    batch_size: int = 1,
    **options,
  ) -> None:
    """Refuse what `run` would refuse for prompts of these lengths, without compiling anything: a caller
    that decodes later (a training hook) can check its settings before it starts."""
    limit = check_prompts([[0] * int(n) for n in prompt_lengths], max_new_tokens, batch_size, self.max_len)
    self.settings(mode, max_new_tokens, bucket_length(max(prompt_lengths), limit), sampling, **options)

  def stream(
    self,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    batch_size: int = 16,
    seed: int = 0,
    per_prompt: Sequence[int] | None = None,
    features: bool = False,
  ) -> RunResult:
    """Target-only sampling of every prompt with `batch_size` rows that are refilled as soon as their
    answer ends (`specjax.decode.stream`): answers distributed as `run(..., "ar")`'s (identical when
    greedy). One compiled call for the whole prompt list, padded to the length bucket of its longest
    prompt; `per_prompt` optionally gives each prompt its own limit (at most `max_new_tokens`).
    Metrics: new_tokens, steps ([B, 1] calls), refills, tokens_per_s, wall_s, compile_s. With `features` each
    row also holds the target's features and log-normalisers at every position of prompt + answer."""
    from specjax.decode.stream import stream

    limit = check_prompts(prompts, max_new_tokens, batch_size, self.max_len)
    longest = max(len(p) for p in prompts)
    limits = [max_new_tokens] * len(prompts) if per_prompt is None else [int(n) for n in per_prompt]
    if len(limits) != len(prompts) or not all(1 <= n <= max_new_tokens for n in limits):
      raise SpecjaxError(f"per_prompt needs one limit in 1..{max_new_tokens} per prompt")
    bucket = bucket_length(longest, limit)
    s = self.settings("ar", max_new_tokens, bucket, sampling)
    Q = -(-len(prompts) // batch_size) * batch_size  # whole batches: one compile per batch count
    queue = np.zeros((Q, bucket), np.int32)
    lens = np.ones((Q,), np.int32)
    max_new = np.zeros((Q,), np.int32)
    for i, p in enumerate(prompts):
      queue[i, : len(p)] = p
      lens[i], max_new[i] = len(p), limits[i]
    args = (self.target_params, jnp.asarray(queue), jnp.asarray(lens), jnp.asarray(max_new))
    args += (jnp.int32(len(prompts)), jax.random.key(seed))
    key = ("stream", s, Q, batch_size, features)
    compile_s = 0.0
    if key not in self._compiled:
      t0 = time.perf_counter()
      fn = jax.jit(stream, static_argnums=(0, 7, 8))
      self._compiled[key] = fn.lower(s, *args, batch_size, features).compile(self.compiler_options)
      compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = jax.device_get(jax.block_until_ready(self._compiled[key](*args)))
    wall_s = time.perf_counter() - t0
    n = np.asarray(result.out.n)
    rows = [RowResult(tokens=[int(t) for t in result.out.tokens[i, : n[i]]], metrics={}) for i in range(len(prompts))]
    if features:
      for i, row in enumerate(rows):
        end = len(prompts[i]) + int(n[i])
        row.features, row.lse = result.features[i, :end], result.lse[i, :end]
    new = int(n[: len(prompts)].sum())
    metrics = dict(
      new_tokens=new,
      steps=int(result.steps),
      refills=int(result.refills),
      wall_s=wall_s,
      compile_s=compile_s,
      tokens_per_s=_ratio(new, wall_s),
    )
    return RunResult(rows=rows, metrics=metrics, compile_s=compile_s, wall_s=wall_s, batches=[], settings=s)

  def run(
    self,
    prompts: Sequence[Sequence[int]],
    mode: str = "ar",
    *,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    batch_size: int = 1,
    seed: int = 0,
    trace: bool = False,
    **options,
  ) -> RunResult:
    """Decode every prompt (lists of token ids); see the module docstring for the metrics.

    `options` are knob values (e.g. gamma=4, window=5, ngram=3, draft_threshold=0.5: `Mode.knobs`; those the
    mode does not read are ignored); `trace` records per-round statistics (`RunResult.traces`).
    """
    limit = check_prompts(prompts, max_new_tokens, batch_size, self.max_len)
    m = modes.get(mode)
    draft_params = self._aids(m)
    # Similar lengths share a batch: little padding, and at most one partial batch.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    chunks = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]

    rows: list[RowResult | None] = [None] * len(prompts)
    all_counters: list[dict[str, np.ndarray]] = []
    traces: list[dict[str, np.ndarray]] = []
    batches: list[dict[str, Any]] = []
    compile_s = wall_s = 0.0
    base_key = jax.random.key(seed)
    for batch_index, chunk in enumerate(chunks):
      bucket = bucket_length(max(len(prompts[i]) for i in chunk), limit)
      s = self.settings(mode, max_new_tokens, bucket, sampling, trace, **options)
      real = len(chunk)
      B = min(batch_size, 1 << (real - 1).bit_length())  # a partial batch: the next power of two rows
      tokens = np.zeros((B, bucket), np.int32)
      lens = np.ones((B,), np.int32)
      max_new = np.zeros((B,), np.int32)
      for r, i in enumerate(chunk):
        tokens[r, : len(prompts[i])] = prompts[i]
        lens[r] = len(prompts[i])
        max_new[r] = max_new_tokens
      args = (
        self.target_params,
        draft_params,
        jnp.asarray(tokens),
        jnp.asarray(lens),
        jnp.asarray(max_new),
        jax.random.fold_in(base_key, batch_index),
      )
      exe, c_s = self._executable(mode, s, args)
      compile_s += c_s
      t0 = time.perf_counter()
      result = jax.block_until_ready(exe(*args))
      host = jax.device_get(result)
      b_s = time.perf_counter() - t0
      wall_s += b_s
      counters = {f.name: np.asarray(getattr(host.counters, f.name))[:real] for f in dataclasses.fields(host.counters)}
      counters["n"] = np.asarray(host.out.n)[:real]
      all_counters.append(counters)
      if host.trace is not None:
        traces.append({k: np.asarray(v)[:real] for k, v in host.trace.items()})
      batches.append(
        dict(
          bucket=bucket,
          batch_size=B,
          cache_size=s.cache_size,
          iterations=int(np.max(counters["target_calls"])),
          draft_calls=int(np.max(counters["draft_calls"])),  # the row active longest took part in all
          wall_s=b_s,
          rows=list(chunk),
        )
      )
      for r, i in enumerate(chunk):
        row = {k: v[r] for k, v in counters.items()}
        m = summarize(row)
        n = int(counters["n"][r])
        m.update(wall_s=b_s, compile_s=c_s, tokens_per_s=_ratio(n, b_s))
        rows[i] = RowResult(tokens=[int(t) for t in host.out.tokens[r, :n]], metrics=m)

    total = {k: np.concatenate([c[k] for c in all_counters]) for k in all_counters[0]}
    metrics = summarize(total)
    metrics.update(wall_s=wall_s, compile_s=compile_s, tokens_per_s=_ratio(metrics["new_tokens"], wall_s))
    return RunResult(
      rows=rows,
      metrics=metrics,
      compile_s=compile_s,
      wall_s=wall_s,
      batches=batches,
      settings=s,
      traces=traces if trace else None,
    )
