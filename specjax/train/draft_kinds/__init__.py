"""Draft kinds for distillation: what differs between an independent drafter and one that reads the target.

A `DraftKind` (keyed by `ModelConfig.kind`) owns everything `specjax.train.distill.distill` needs to know
about a kind of draft: its checks, its objective (the per-batch loss function: how the student runs and
what it is scored on), its held-out metric keys, whether it reads the teacher cache, the config section of
its own settings, whether it can generate alone (on-policy sampling, a reference model run on tokens) and
the decoding mode of its speculative evaluation. `distill` reads the registry and compares no kind names.

Built in: "decoder" (`decoder.py`, an ordinary language model that drafts alone) and "eagle"
(`eagle.py`, a draft that reads the target's features). A new kind (say Medusa heads) is one file here
that calls `register(DraftKind(...))`, named in `BUILTIN`, plus its decoding mode's file in
`specjax.decode` (and its module in `specjax.models.registry.KIND_MODULES`); a kind with settings of its
own adds their section to `DistillConfig`.

The helpers below are the parts every objective shares: the teacher's outputs (from the cache's features
when the batch carries them), the KD term with the per-call arrays its `Loss` record asks for, and the
full-vocabulary acceptance of a reduced-vocabulary draft.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from specjax.errors import SpecjaxError
from specjax.losses.distill import CHUNK, Loss, acceptance
from specjax.losses.distill import REGISTRY as LOSS_REGISTRY
from specjax.registry import Registry

BUILTIN = ("decoder", "eagle")  # modules of specjax.train.draft_kinds that register kinds


@dataclasses.dataclass(frozen=True)
class DraftKind:
  """One kind of draft (see the module docstring).

  Attributes:
    name: the `ModelConfig.kind` it trains.
    objective: `objective(student_cfg, target_cfg, loss, options, settings) -> loss_fn(params, batch, rng,
      frozen)` for `specjax.train.step`; `loss` is a `Loss` record, `options` its checked static options,
      `settings` the kind's config section (None without one). `frozen` holds "target" (and "reference"
      when the loss needs one).
    metric_keys: `metric_keys(student_cfg, settings)`: the loss_fn metrics reported on held-out batches.
    decode_mode: the `specjax.decode.modes` mode that decodes with this draft (speculative evaluation).
    check: `check(cfg, student_cfg, target_cfg, student_path, target_path)` refuses what this kind cannot
      train (a DistillConfig), before anything is written.
    section: the DistillConfig field of the kind's own settings (other kinds must leave it at defaults).
    standalone: the draft generates alone (on-policy sampling, a reference model run on tokens).
    uses_teacher_cache: `uses_teacher_cache(settings)`: the run computes the teacher's features once
      (`specjax.train.teacher_cache`) and the batches carry them.
  """

  name: str
  objective: Callable[..., Callable]
  metric_keys: Callable[[Any, Any], tuple[str, ...]]
  decode_mode: str
  check: Callable[..., None] = lambda cfg, student_cfg, target_cfg, student_path, target_path: None
  section: str | None = None
  standalone: bool = True
  uses_teacher_cache: Callable[[Any], bool] = lambda settings: False

  def settings(self, cfg) -> Any:
    """This kind's section of a DistillConfig (None when it has none)."""
    return getattr(cfg, self.section) if self.section else None


_KINDS: Registry[DraftKind] = Registry(
  "draft kind",
  "specjax.train.draft_kinds",
  BUILTIN,
  lambda name, known: f"a draft of kind {name!r} cannot be distilled; distillable kinds: {known}",
)


def register(kind: DraftKind) -> DraftKind:
  """Add a kind (a second kind of the same name is refused)."""
  return _KINDS.add(kind)


def names() -> tuple[str, ...]:
  return _KINDS.names()


def get(name: str) -> DraftKind:
  """The kind called `name`; an unknown one is a SpecjaxError listing those that can be distilled."""
  return _KINDS.get(name)


def check_settings(kind: DraftKind, cfg, loss: Loss, student_path: str) -> None:
  """The checks every kind shares: the sections of other kinds stay at their defaults, and a draft that
  cannot generate alone gets neither on-policy sampling nor a loss with a reference model."""
  for other in map(get, names()):
    if other.section and other is not kind:
      value = getattr(cfg, other.section)
      if value != type(value)():
        raise SpecjaxError(
          f"the {other.section} section only applies to an {other.name} draft; {student_path} is a {kind.name}"
        )
  if not kind.standalone and (loss.needs_reference or cfg.on_policy.fraction):
    refs = sorted(n for n, r in LOSS_REGISTRY.items() if r.needs_reference)
    raise SpecjaxError(
      f"an {kind.name} draft cannot generate alone: {', '.join(refs)} (a reference model) and on_policy are not "
      "available for it"
    )


# --- the parts every objective shares -------------------------------------------------------------


def teacher_outputs(student_cfg, target_cfg, features: bool) -> Callable:
  """`outputs(batch, frozen) -> (teacher logits over the draft's columns, full-vocabulary log-sum-exp (only
  for a reduced-vocabulary draft, else None), features or None)`; from the teacher cache's features by the target's head alone when the batch
  carries them, else by the whole teacher (its features too when `features`)."""
  import jax
  import jax.numpy as jnp

  from specjax.data.vocab_map import restrict_teacher
  from specjax.models.llama import head_logits
  from specjax.models.registry import model_for

  teacher, head_ids = model_for(target_cfg), student_cfg.head_ids

  def outputs(batch, frozen):
    tokens, positions = batch["tokens"], batch["positions"]
    if "features" in batch:
      feats, lse = batch["features"], None if head_ids is None else batch["teacher_lse"]
      return head_logits(target_cfg, frozen["target"], feats, head_ids), lse, feats
    if features:
      t_logits, _, feats = teacher.apply({"params": frozen["target"]}, tokens, positions, return_features=True)
    else:
      (t_logits, _), feats = teacher.apply({"params": frozen["target"]}, tokens, positions), None
    lse = None if head_ids is None else jax.nn.logsumexp(t_logits.astype(jnp.float32), axis=-1)
    return restrict_teacher(t_logits, head_ids), lse, feats

  return outputs


def kd_term(loss: Loss, fn: Callable, s_logits, t_logits, t_lse, mask, rng, reference_logits=None, chunk=CHUNK):
  """(value, metrics) of the bound loss `fn` with the per-call arrays its record asks for, plus
  `expected_acceptance_full` when `t_lse` (the teacher's full-vocabulary normaliser) is given: the true
  acceptance of a reduced-vocabulary draft, sum over its K tokens of min(p, q) with p over all tokens,
  computed `chunk` positions at a time like the loss (`specjax.losses.distill.acceptance`)."""
  import jax.numpy as jnp

  full = None
  if t_lse is not None:
    m = mask.astype(jnp.float32)
    both = acceptance(s_logits, t_logits, t_lse, chunk)
    full = jnp.sum(both * m) / jnp.maximum(jnp.sum(m), 1.0)
  extra = {}
  if loss.needs_reference:
    extra["reference_logits"] = reference_logits
  if loss.needs_rng:
    extra["rng"] = rng
  value, metrics = fn(s_logits, t_logits, mask, **extra)
  if full is not None:
    metrics = dict(metrics, expected_acceptance_full=full)
  return value, metrics


def base_metric_keys(student_cfg) -> tuple[str, ...]:
  """The held-out keys of every kind (the full-vocabulary acceptance for a reduced-vocabulary draft)."""
  return ("loss", "expected_acceptance") + (("expected_acceptance_full",) if student_cfg.head_ids else ())
