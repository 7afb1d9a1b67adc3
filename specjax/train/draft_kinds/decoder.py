"""The "decoder" draft kind: an independent drafter (a small language model) that reads tokens alone.

It is scored on the teacher's distribution at each position of the batch's own tokens; a loss that needs
a reference model (AdaSPEC) runs the frozen reference, a model of the same kind, on the same tokens.
Speculative evaluation decodes with the "spec" mode.
"""

from __future__ import annotations

from specjax.losses.distill import Loss, chunk_of
from specjax.train.draft_kinds import DraftKind, base_metric_keys, kd_term, register, teacher_outputs


def objective(student_cfg, target_cfg, loss: Loss, options: dict, settings=None):
  """`loss_fn(params, batch, rng, frozen)`: the KD loss of the student's logits against the teacher's."""
  from specjax.models.registry import model_for

  del settings
  fn, chunk = loss.bind(**options), chunk_of(options)
  student = model_for(student_cfg)
  teacher = teacher_outputs(student_cfg, target_cfg, features=False)

  def loss_fn(params, batch, rng, frozen):
    tokens, positions, mask = batch["tokens"], batch["positions"], batch["loss_mask"]
    t_logits, t_lse, _ = teacher(batch, frozen)
    s_logits, _ = student.apply({"params": params}, tokens, positions)
    ref = student.apply({"params": frozen["reference"]}, tokens, positions)[0] if loss.needs_reference else None
    value, metrics = kd_term(loss, fn, s_logits, t_logits, t_lse, mask, rng, ref, chunk)
    return value, dict(metrics, tokens=metrics["num_tokens"])

  return loss_fn


DECODER = register(
  DraftKind(
    name="decoder",
    objective=objective,
    metric_keys=lambda student_cfg, settings: base_metric_keys(student_cfg),
    decode_mode="spec",
  )
)
