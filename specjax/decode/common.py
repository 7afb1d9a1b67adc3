"""Pieces every compiled decoder shares: the model call, prefill, the output buffer and the counters.

The decoders keep one invariant: each row's KV cache holds the committed sequence *except* its last
token `cur`, which has been emitted (it is in the output) but not yet fed to the model. A round feeds
`cur` plus some guesses, decides how many guesses were right, emits them and one more token, and sets
the cache length back to the new committed length (rollback is setting lengths).

Shapes: B batch, P padded prompt length, N max new tokens, M tokens a round may emit at most,
V vocabulary, S cache slots, G positions tracked by the per-position acceptance counters.

Every decoder has the signature

    decode(settings, target_params, draft_params, prompt[B,P], prompt_lens[B], max_new[B], key)
      -> DecodeResult

with `settings` a static, hashable `DecodeSettings` (`draft_params` is None for target-only decoders).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Bool, Float, Int

from specjax.decode import sampling
from specjax.decode.sampling import SamplingConfig
from specjax.models.kv_cache import KVCache
from specjax.models.llama import LlamaConfig, expand_logits
from specjax.models.registry import model_for


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """Everything a decoder is compiled for except array shapes.

  Attributes:
    target: the target model's config.
    max_new_tokens: N, the most tokens any row may generate (rows may ask for fewer via `max_new`).
    cache_size: S, KV cache slots per row (prompt + N + the decoder's look-ahead must fit).
    sampling: temperature / top-k / top-p.
    eos_ids: tokens that end a row (the EOS token is kept in the output).
    vocab_size: logits are cut to this many entries (the shared tokenizer's size), None = all.
    draft: the draft model's config (speculative decoding only).
    knobs: the mode's own settings, an instance of its `Mode.knobs` dataclass (gamma, window, ngram, ...:
      `specjax.decode.modes`), checked and completed by the mode.
    trace: also record per-round statistics (`DecodeResult.trace`), for `specjax plan`.
  """

  target: LlamaConfig
  max_new_tokens: int
  cache_size: int
  sampling: SamplingConfig = SamplingConfig()
  eos_ids: tuple[int, ...] = ()
  vocab_size: int | None = None
  draft: LlamaConfig | None = None
  knobs: Any = None
  trace: bool = False


def forward(
  cfg: LlamaConfig,
  params,
  tokens: Int[Array, "B T"],
  positions: Int[Array, "B T"],
  cache: KVCache,
  attn_mask: Bool[Array, "B T T"] | None = None,
  vocab_size: int | None = None,
  logits_at: Int[Array, "B N"] | None = None,
  features: Float[Array, "B T D"] | None = None,
  return_features: bool = False,
):
  """One model call; logits cut to the shared vocabulary (padded embedding rows are never chosen),
  computed only at the token indices `logits_at` when given. Returns `(logits, cache)`, or with
  `return_features` `(logits, cache, features [B, T, D])` (a target's final-normed hidden states, an
  EAGLE draft's predicted ones); `features` is an EAGLE draft's input (`specjax.models.eagle`).

  A draft with a reduced vocabulary (`cfg.head_ids`) has its K logits spread over the full vocabulary
  with NEG_INF elsewhere, so every decoder and acceptance rule sees q = 0 outside the draft's vocabulary
  (greedy never proposes such a token; rejection sampling stays exact with q = 0 there).
  """
  extra = {"features": features} if cfg.kind == "eagle" else {}
  out = model_for(cfg).apply(
    {"params": params}, tokens, positions, cache, attn_mask, logits_at, return_features=return_features, **extra
  )
  logits = expand_logits(cfg, out[0], vocab_size or cfg.vocab_size)
  if vocab_size is not None and vocab_size < logits.shape[-1]:
    logits = logits[..., :vocab_size]
  return (logits, *out[1:])


def verify_call(s: DecodeSettings, params, verify, L, cache: KVCache, k, active, features: bool = False):
  """The target's verification of [cur, y_1..y_G] (`verify` [B, G+1] at positions L..L+G): logits
  [B, G+1, V], the cache, and with `features` the target's features [B, G+1, D] too. With a dynamic
  draft length (`s.knobs.draft_threshold`) the call is only max_b k_b + 1 positions wide (`lax.switch`, one
  compiled branch per width); the outputs past that width are zero padding, which the acceptance rule
  never reads (a row reads positions 0..k_b)."""
  G = verify.shape[1] - 1

  def call(width):
    def run(cache):
      pos = L[:, None] + jnp.arange(width, dtype=jnp.int32)[None, :]
      out = forward(s.target, params, verify[:, :width], pos, cache, vocab_size=s.vocab_size, return_features=features)
      pad = lambda x: jnp.pad(x, ((0, 0), (0, G + 1 - width), (0, 0)))  # noqa: E731
      return (pad(out[0]), out[1]) + ((pad(out[2]),) if features else ())

    return run

  if s.knobs.draft_threshold is None:
    return call(G + 1)(cache)
  width = jnp.max(jnp.where(active, k, 0)) + 1
  return jax.lax.switch(width - 1, [call(w) for w in range(1, G + 2)], cache)


def prefill(
  cfg: LlamaConfig,
  params,
  prompt: Int[Array, "B P"],
  prompt_lens: Int[Array, " B"],
  cache_size: int,
  vocab_size: int | None = None,
  return_features: bool = False,
):
  """Run the right-padded prompts; return the logits after each row's last real token (they give the
  first new token, which becomes `cur`) and a cache holding the `prompt_lens` prompt tokens (and with
  `return_features` the target's features [B, P, D] of every prompt position).

  Pad slots are written too but lie past each row's length, so the next write overwrites them.
  """
  B, P = prompt.shape
  cache = cfg.init_cache(B, cache_size)
  positions = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
  logits, cache, *features = forward(
    cfg,
    params,
    prompt,
    positions,
    cache,
    vocab_size=vocab_size,
    logits_at=(prompt_lens - 1)[:, None],
    return_features=return_features,
  )
  return (logits[:, 0], cache.rollback(prompt_lens), *features)


@struct.dataclass
class Output:
  """Generated tokens so far. `tokens[b, :n[b]]` is row b's answer; the rest is scratch."""

  tokens: Int[Array, "B N+M"]
  n: Int[Array, " B"]
  done: Bool[Array, " B"]

  @classmethod
  def init(cls, batch_size: int, max_new_tokens: int, slack: int, max_new: Int[Array, " B"]) -> Output:
    return cls(
      tokens=jnp.zeros((batch_size, max_new_tokens + slack), jnp.int32),
      n=jnp.zeros((batch_size,), jnp.int32),
      done=max_new <= 0,
    )


def round_tokens(proposals: Int[Array, "B M"], n: Int[Array, " B"], nxt: Int[Array, " B"]) -> Int[Array, "B M+1"]:
  """A round's emitted tokens: the first n proposals, then `nxt` (the correction or bonus) at index n;
  what follows is scratch (`commit` takes n + 1)."""
  emitted = jnp.concatenate([proposals, nxt[:, None]], axis=1)
  return jnp.where(jnp.arange(emitted.shape[1])[None, :] == n[:, None], nxt[:, None], emitted)


def commit(
  out: Output,
  emitted: Int[Array, "B M"],
  count: Int[Array, " B"],
  max_new: Int[Array, " B"],
  eos_ids: tuple[int, ...],
) -> tuple[Output, Int[Array, " B"]]:
  """Append the first `count[b]` tokens of `emitted[b]` to each unfinished row, stopping after an EOS
  token or at `max_new[b]`. Returns the new output and how many tokens each row really took."""
  M = emitted.shape[1]
  active = ~out.done
  idx = jnp.arange(M)[None, :]
  is_eos = jnp.zeros_like(emitted, dtype=bool)
  for e in eos_ids:
    is_eos |= emitted == e
  is_eos &= idx < count[:, None]
  first_eos = jnp.where(is_eos.any(axis=1), jnp.argmax(is_eos, axis=1), M)
  take = jnp.minimum(jnp.minimum(count, first_eos + 1), max_new - out.n)
  take = jnp.where(active, jnp.maximum(take, 0), 0).astype(jnp.int32)
  # Write all M at the row's offset (the buffer has M slots of slack); only the first `take` count.
  tokens = jax.vmap(lambda row, e, s: jax.lax.dynamic_update_slice(row, e, (s,)))(out.tokens, emitted, out.n)
  tokens = jnp.where(active[:, None], tokens, out.tokens)
  n = out.n + take
  hit_eos = active & (first_eos < take)
  done = out.done | hit_eos | (n >= max_new)
  return Output(tokens=tokens, n=n, done=done), take


def start(s: DecodeSettings, params, prompt, prompt_lens, max_new, key, slack: int, return_features: bool = False):
  """Prefill the target and emit each row's first token: (cache, cur, output buffer with M = slack), and
  with `return_features` the target's features of the prompt positions too."""
  logits, cache, *features = prefill(
    s.target, params, prompt, prompt_lens, s.cache_size, s.vocab_size, return_features=return_features
  )
  cur = sampling.sample(key, logits, s.sampling)
  B = prompt.shape[0]
  out = Output.init(B, s.max_new_tokens, slack, max_new)
  out, _ = commit(out, cur[:, None], jnp.ones((B,), jnp.int32), max_new, s.eos_ids)
  return (cache, cur, out, *features)


@struct.dataclass
class Counters:
  """Per-row decode counters (the metrics are derived from these on the host)."""

  target_calls: Int[Array, " B"]  # target forwards this row took part in, prefill excluded
  draft_calls: Int[Array, " B"]  # draft forwards, prefill excluded
  drafted: Int[Array, " B"]  # tokens proposed for verification
  accepted: Int[Array, " B"]  # proposed tokens the target accepted
  reached: Int[Array, "B G"]  # rounds in which draft position i was reached (all before it accepted)
  hits: Int[Array, "B G"]  # ... and position i was accepted too

  @classmethod
  def init(cls, batch_size: int, positions: int) -> Counters:
    z = jnp.zeros((batch_size,), jnp.int32)
    zg = jnp.zeros((batch_size, positions), jnp.int32)
    return cls(target_calls=z, draft_calls=z, drafted=z, accepted=z, reached=zg, hits=zg)

  def round(
    self,
    active: Bool[Array, " B"],
    drafted: int | Int[Array, " B"],
    accepted: Int[Array, " B"],
    taken: Int[Array, " B"] | None = None,
    target_calls: int = 1,
    draft_calls: int | Int[Array, ""] = 0,
  ) -> Counters:
    """Count one round of `drafted` proposals (per row, or one number for all) of which the first
    `accepted` were accepted, when `commit` took `taken` of the round's `accepted + 1` tokens (fewer
    after an EOS or at max_new_tokens): only emitted tokens count as accepted, and a proposal cut off
    unemitted counts as not reached."""
    a = active.astype(jnp.int32)
    drafted = jnp.broadcast_to(jnp.asarray(drafted, jnp.int32), active.shape)
    if taken is not None:
      cut = taken <= accepted  # the round's last token was not taken
      accepted = jnp.minimum(accepted, taken)
    else:
      cut = jnp.zeros_like(active)
    G = self.reached.shape[1]
    i = jnp.arange(G)[None, :]
    reached = (i < accepted[:, None] + jnp.where(cut, 0, 1)[:, None]) & (i < drafted[:, None])
    hits = i < accepted[:, None]
    return Counters(
      target_calls=self.target_calls + a * target_calls,
      draft_calls=self.draft_calls + a * draft_calls,
      drafted=self.drafted + a * drafted,
      accepted=self.accepted + a * accepted,
      reached=self.reached + a[:, None] * reached,
      hits=self.hits + a[:, None] * hits,
    )


@struct.dataclass
class DecodeResult:
  """What a compiled decoder returns; `trace` only when `DecodeSettings.trace` (see `Trace`)."""

  out: Output
  counters: Counters
  trace: dict[str, Array] | None = None


class Trace:
  """Per-round records for the planner: arrays [B, R, ...] written at each row's round index.

  R = max_new_tokens bounds the rounds of a row (every round emits at least one token). `active` [B, R]
  says which entries were written. Round r of every row is loop iteration r (rows are active from the
  first iteration until they finish), so the entries of one r across rows are one batched iteration.
  """

  @staticmethod
  def init(batch_size: int, rounds: int, **shapes: tuple[tuple[int, ...], jnp.dtype]) -> dict[str, Array]:
    out = {"active": jnp.zeros((batch_size, rounds), bool)}
    for name, (shape, dtype) in shapes.items():
      out[name] = jnp.zeros((batch_size, rounds, *shape), dtype)
    return out

  @staticmethod
  def write(trace: dict[str, Array], index: Int[Array, " B"], active: Bool[Array, " B"], **values) -> dict[str, Array]:
    """Record `values[name][b]` at round `index[b]` for the active rows."""
    B, R = trace["active"].shape
    rows = jnp.arange(B)
    r = jnp.minimum(index, R - 1)
    out = dict(trace)
    out["active"] = trace["active"].at[rows, r].set(trace["active"][rows, r] | active)
    for name, v in values.items():
      old = trace[name][rows, r]
      mask = active.reshape((B,) + (1,) * (old.ndim - 1))
      out[name] = trace[name].at[rows, r].set(jnp.where(mask, v.astype(old.dtype), old))
    return out


def init_sequence(prompt: Int[Array, "B P"], prompt_lens: Int[Array, " B"], cur: Int[Array, " B"], size: int):
  """The committed-sequence buffer [B, S]: `seq[b, :length[b] + 1]` is the prompt, the answer so far and
  `cur` (at index `length[b]`); the rest is scratch. Decoders that look back at the context keep it."""
  B, P = prompt.shape
  seq = jnp.zeros((B, size), jnp.int32).at[:, :P].set(prompt)
  return jax.vmap(lambda row, t, i: row.at[i].set(t))(seq, cur, prompt_lens)


def extend_sequence(
  seq: Int[Array, "B S"], emitted: Int[Array, "B M"], length: Int[Array, " B"], active: Bool[Array, " B"]
) -> Int[Array, "B S"]:
  """Write a round's emitted tokens behind `cur` (at `length + 1 ..`) for the active rows; only the first
  `n + 1` of them are committed, the rest lies past the new length and is overwritten later."""
  new = jax.vmap(lambda row, e, i: jax.lax.dynamic_update_slice(row, e, (i,)))(seq, emitted, length + 1)
  return jnp.where(active[:, None], new, seq)


def random_context_tokens(
  key: jax.Array, context: Int[Array, "B S"], lengths: Int[Array, " B"], shape: tuple[int, ...]
) -> Int[Array, "B ..."]:
  """Tokens drawn uniformly from each row's context `context[b, :lengths[b]]` (Jacobi cold start)."""
  B = context.shape[0]
  u = jax.random.uniform(key, (B, *shape))
  pos = jnp.floor(u * jnp.maximum(lengths, 1).reshape((B,) + (1,) * len(shape))).astype(jnp.int32)
  flat = jnp.take_along_axis(context, pos.reshape(B, -1), axis=1)
  return flat.reshape((B, *shape))
