"""The frozen reference model of a loss that needs one (AdaSPEC): loaded only once it is what the loss means.

AdaSPEC's reference is the student's own pretrained start distilled with `Loss.reference_loss` (fkl)
against the same target. A shape check alone accepts the student itself, a copy of it, or any checkpoint
of the student's size, and the run then trains on a meaningless gap. `specjax distill` records in its
final checkpoint's meta what this check reads: `source`, `loss`, `student` (the path it started from),
`student_fingerprint` (a hash of that start's parameters, `specjax.data.distill_data.target_fingerprint`)
and `target_fingerprint`. A reference made before the fingerprints were recorded is matched by its
recorded student path.
"""

from __future__ import annotations

from pathlib import Path

from specjax.errors import SpecjaxError
from specjax.losses.distill import REGISTRY, Loss

SOURCE = "specjax distill"  # the `source` a distill run records in its final checkpoint


def check_setting(loss: Loss, reference: str | None) -> None:
  """A reference is given exactly when the loss needs one."""
  if loss.needs_reference and not reference:
    raise SpecjaxError(
      f"loss={loss.name} needs reference=PATH: first distil a reference model with loss={loss.reference_loss}"
    )
  if not loss.needs_reference and reference:
    users = "/".join(name for name, r in REGISTRY.items() if r.needs_reference)
    raise SpecjaxError(f"reference is only used by loss={users}, not {loss.name}; remove it")


def fingerprint(path: str | Path, config=None, params=None) -> str:
  """The parameter fingerprint of a checkpoint (read from `path` when params are not given)."""
  from specjax.checkpoint.orbax_io import load_checkpoint
  from specjax.data.distill_data import target_fingerprint

  if params is None:
    ckpt = load_checkpoint(path)
    config, params = ckpt.config, ckpt.params
  return target_fingerprint(config, params)


def check_meta(loss: Loss, reference: str, meta: dict, student: str) -> None:
  """Refuse, from its checkpoint record alone, a reference that is the student's folder or that is not a
  model distilled with `loss.reference_loss`."""
  if Path(reference).resolve() == Path(student).resolve():
    raise SpecjaxError(
      f"reference {reference} is the student itself; distil the student with loss={loss.reference_loss} first "
      "and pass that run's final/ as reference"
    )
  if meta.get("source") != SOURCE or meta.get("loss") != loss.reference_loss:
    raise SpecjaxError(
      f"reference {reference} is not a model distilled with loss={loss.reference_loss} (its checkpoint records "
      f"source {meta.get('source')!r}, loss {meta.get('loss')!r}); distil the student {student} with "
      f"loss={loss.reference_loss} and pass that run's final/"
    )


def check_origin(
  loss: Loss, reference: str, meta: dict, reference_fp: str, student: str, student_fp: str, target_fp: str
) -> None:
  """Refuse a reference with the student's own parameters, one distilled from another start than the
  student, or against another target."""
  if reference_fp == student_fp:
    raise SpecjaxError(
      f"reference {reference} has the student's own parameters (a copy of {student}); distil the student with "
      f"loss={loss.reference_loss} and pass that run's final/"
    )
  if "student_fingerprint" in meta:
    same_start = meta["student_fingerprint"] == student_fp
  else:  # made before the fingerprint was recorded: the path it started from
    same_start = Path(str(meta.get("student"))).resolve() == Path(student).resolve()
  if not same_start:
    raise SpecjaxError(
      f"reference {reference} was distilled from another start ({meta.get('student')}) than the student {student}; "
      f"distil the reference from this student with loss={loss.reference_loss}"
    )
  if meta.get("target_fingerprint", target_fp) != target_fp:
    raise SpecjaxError(
      f"reference {reference} was distilled against another target ({meta.get('target')}) than this run's; "
      f"distil the reference against this target with loss={loss.reference_loss}"
    )
