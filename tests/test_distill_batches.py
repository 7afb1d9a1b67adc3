"""Distillation batches: shifted masks, prompt-level held-out split, exact resume."""

import datasets
import numpy as np
import pytest

from specjax.data.distill_batches import ExampleBatches, empty_batch, fill_row, prompt_length
from specjax.errors import SpecjaxError


def _ds(n_prompts=6, per_prompt=3):
  rows = {"tokens": [], "response_mask": [], "prompt_len": []}
  for p in range(n_prompts):
    for s in range(per_prompt):
      prompt = [10 + p, 11 + p, 12]
      resp = [20 + s, 21 + p, 3]
      rows["tokens"].append(prompt + resp)
      rows["response_mask"].append([0] * 3 + [1] * 3)
      rows["prompt_len"].append(3)
  return datasets.Dataset.from_dict(rows)


def test_fill_row_shifts_the_mask_to_the_predicting_position():
  b = empty_batch(2, 5)
  fill_row(b, 0, [1, 2, 3, 4, 5, 6], [0, 0, 1, 1, 1, 1])  # truncated to 5
  np.testing.assert_array_equal(b["tokens"][0], [1, 2, 3, 4, 5])
  np.testing.assert_array_equal(b["targets"][0], [2, 3, 4, 5, 0])
  np.testing.assert_array_equal(b["loss_mask"][0], [0, 1, 1, 1, 0])  # position 1 predicts the first response token
  assert prompt_length(b["response_mask"][0]) == 2 and prompt_length(b["response_mask"][1]) == 5


def test_loss_on_all_counts_prompt_positions_too():
  b = empty_batch(1, 8)
  fill_row(b, 0, [1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 1, 1], loss_on="all")
  np.testing.assert_array_equal(b["loss_mask"][0], [1, 1, 1, 1, 1, 0, 0, 0])  # every next token in the row
  np.testing.assert_array_equal(b["response_mask"][0], [0, 0, 0, 1, 1, 1, 0, 0])
  data = ExampleBatches(_ds(), batch_size=4, seq_len=8, eval_examples=3, loss_on="all")
  assert data.next()["loss_mask"].sum() == 4 * 5
  assert data.eval_batches()[0]["loss_mask"].sum() == 3 * 3  # held-out rows: response positions only
  with pytest.raises(SpecjaxError, match="loss_on must be response or all"):
    ExampleBatches(_ds(), batch_size=4, seq_len=8, loss_on="prompt")


def test_held_out_prompts_are_never_trained_on():
  data = ExampleBatches(_ds(), batch_size=4, seq_len=8, eval_examples=5)
  prompt = lambda r: tuple(data.tokens[r][:3])  # noqa: E731
  held = {prompt(r) for r in data.eval_rows}
  assert len(data.eval_rows) >= 5 and len(data.eval_rows) % 3 == 0
  assert not held & {prompt(r) for r in data.train_rows}
  assert sorted([*data.eval_rows, *data.train_rows]) == list(range(18))
  assert all(tuple(p) in held for p in data.eval_prompts(10))


def test_resume_continues_the_same_sequence():
  a = ExampleBatches(_ds(), batch_size=4, seq_len=8, seed=1, eval_examples=3)
  seq = [a.next()["tokens"] for _ in range(7)]  # crosses epochs
  b = ExampleBatches(_ds(), batch_size=4, seq_len=8, seed=1, eval_examples=3)
  for _ in range(3):
    b.next()
  c = ExampleBatches(_ds(), batch_size=4, seq_len=8, seed=1, eval_examples=3)
  c.restore(b.state())
  for k in range(3, 7):
    np.testing.assert_array_equal(c.next()["tokens"], seq[k])


def test_one_prompt_only_keeps_training_rows():
  data = ExampleBatches(_ds(n_prompts=1, per_prompt=4), batch_size=2, seq_len=8, eval_examples=2)
  assert len(data.train_rows) == 4 and len(data.eval_rows) == 0
  assert data.eval_batches() == []
  with pytest.raises(SpecjaxError, match="no prompts are held out.*raise data.eval_examples"):
    data.eval_prompts(2)  # never the training prompts instead


def test_no_held_out_prompts_are_refused_not_replaced_by_training_prompts():
  data = ExampleBatches(_ds(), batch_size=4, seq_len=8, eval_examples=0)
  assert len(data.eval_rows) == 0
  with pytest.raises(SpecjaxError, match="no prompts are held out for the speculative evaluation"):
    data.eval_prompts(4)
