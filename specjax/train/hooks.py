"""The training hooks of `specjax distill`: real speculative decoding (`SpecEval`) and on-policy mixing
(`OnPolicy`), with their config sections.

Both check their settings before they run (`SpecEval(...)`, `OnPolicy(...).check(longest_prompt)`), which
`distill` does before anything is written to the run folder: a setting the hook would only refuse when it
first runs (at its period, or at the very end) would otherwise lose the work since the last checkpoint,
and every resume would fail at the same point.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from specjax.errors import SpecjaxError


@dataclasses.dataclass(frozen=True)
class SpecEvalConfig:
  every: int = 0  # measure real speculative decoding every N steps (0: only at the end; -1: never)
  prompts: int = 16  # held-out prompts decoded
  gamma: int = 4
  max_new_tokens: int = 64
  temperatures: tuple[float, ...] = (0.0, 1.0)
  batch_size: int = 8

  @property
  def enabled(self) -> bool:
    return self.every >= 0 and self.prompts > 0


@dataclasses.dataclass(frozen=True)
class OnPolicyConfig:
  fraction: float = 0.0  # lambda: probability that a step's responses come from the current drafter
  temperature: float = 1.0
  max_new_tokens: int = 128


class SpecEval:
  """Real speculative decoding of held-out prompts with the current drafter (compiled once per setting).

  `mode` is the decoding mode of the drafter's kind (`specjax.train.draft_kinds`). Every setting is
  checked here, against the prompts and the target's cache length, so a bad one fails before training.
  """

  def __init__(self, cfg: SpecEvalConfig, target_cfg, target_params, student_cfg, prompts, eos_ids, mode: str):
    from specjax.decode.engine import Engine
    from specjax.decode.sampling import SamplingConfig

    self.cfg, self.prompts, self.mode = cfg, prompts, mode
    self.engine = Engine(target_cfg, target_params, student_cfg, None, eos_ids=eos_ids)
    try:
      self.samplings = [SamplingConfig(temperature=float(t)) for t in cfg.temperatures]
      for sampling in self.samplings:
        self.engine.check(
          [len(p) for p in prompts],
          mode,
          max_new_tokens=cfg.max_new_tokens,
          sampling=sampling,
          batch_size=cfg.batch_size,
          gamma=cfg.gamma,
        )
    except SpecjaxError as e:
      raise SpecjaxError(f"spec_eval: {e}") from None

  def __call__(self, params, step: int = 0) -> dict[str, float]:
    """A trainer hook: spec_t{T}_acceptance_rate / _block_efficiency of the current drafter."""
    del step

    self.engine.set_params(draft=params)
    out: dict[str, float] = {}
    for t, sampling in zip(self.cfg.temperatures, self.samplings, strict=True):
      run = self.engine.run(
        self.prompts,
        self.mode,
        max_new_tokens=self.cfg.max_new_tokens,
        sampling=sampling,
        gamma=self.cfg.gamma,
        batch_size=self.cfg.batch_size,
        seed=0,
      )
      tag = f"spec_t{t:g}"
      for k in ("acceptance_rate", "block_efficiency"):
        if run.metrics.get(k) is not None:
          out[f"{tag}_{k}"] = float(run.metrics[k])
    return out


class OnPolicy:
  """Replaces a batch's responses with the current drafter's samples with probability `fraction`."""

  def __init__(self, cfg: OnPolicyConfig, student_cfg, eos_ids, seed: int, batch_size: int, engine: bool = True):
    if not 0.0 <= cfg.fraction <= 1.0:
      raise SpecjaxError(f"on_policy.fraction must be in [0, 1], got {cfg.fraction}")
    self.cfg, self.seed, self.batch_size = cfg, seed, batch_size
    if engine:  # engine=False: only the (seeded) draws, e.g. to predict which steps were on-policy
      from specjax.decode.engine import Engine
      from specjax.decode.sampling import SamplingConfig

      try:
        self.sampling = SamplingConfig(temperature=cfg.temperature)
      except SpecjaxError as e:
        raise SpecjaxError(f"on_policy: {e}") from None
      self.engine = Engine(student_cfg, None, eos_ids=eos_ids)

  def check(self, longest_prompt: int) -> None:
    """Refuse settings the sampler would refuse for a batch's prompts (at most `longest_prompt` tokens)."""
    try:
      self.engine.check(
        [longest_prompt], max_new_tokens=self.cfg.max_new_tokens, sampling=self.sampling, batch_size=self.batch_size
      )
    except SpecjaxError as e:
      raise SpecjaxError(f"on_policy: {e}") from None

  def draw(self, step: int) -> bool:
    return self.cfg.fraction > 0 and random.Random(f"on-policy:{self.seed}:{step}").random() < self.cfg.fraction

  def hook(self, params, batch: dict[str, np.ndarray], step: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """A trainer batch hook: the batch of step `step` + 1 (drafter samples when drawn) and `on_policy`."""
    on = self.draw(step)
    return (self(params, batch, step) if on else batch), {"on_policy": float(on)}

  def __call__(self, params, batch: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
    from specjax.data.distill_batches import empty_batch, fill_row

    B, T = batch["tokens"].shape
    prompts = batch_prompts(batch)
    self.engine.set_params(target=params)
    run = self.engine.run(
      prompts,
      "ar",
      max_new_tokens=self.cfg.max_new_tokens,
      sampling=self.sampling,
      batch_size=self.batch_size,
      seed=step,
    )
    out = empty_batch(B, T)
    for i, (p, row) in enumerate(zip(prompts, run.rows, strict=True)):
      fill_row(out, i, p + list(row.tokens), [0] * len(p) + [1] * len(row.tokens))
    return out


def batch_prompts(batch: dict[str, np.ndarray]) -> list[list[int]]:
  """The prompt of each batch row: its tokens before the response (at least one token)."""
  from specjax.data.distill_batches import prompt_length

  tokens, resp = batch["tokens"], batch["response_mask"]
  return [tokens[i, : max(prompt_length(resp[i]), 1)].tolist() for i in range(tokens.shape[0])]
