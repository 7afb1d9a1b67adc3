"""`specjax pretrain`, `distill`, `msn-train`: the training runs (resumable; config YAML plus key=value overrides)."""

from __future__ import annotations

import argparse

from specjax.cli.common import command, run_training, train_args


@command(
  "pretrain",
  "pretrain a drafter as a causal LM (resumable, sharded, logged)",
  train_args("PretrainConfig", "configs/pretrain/drafter-s.yaml"),
)
def _cmd_pretrain(args: argparse.Namespace) -> int:
  from specjax.train.pretrain import PretrainConfig, pretrain

  return run_training(args, PretrainConfig, pretrain)


@command(
  "distill",
  "align a drafter to the target by KD (fkl, rkl, jsd, tvd, tvdpp, adaspec) on make-data output",
  train_args("DistillConfig", "configs/distill/tvdpp.yaml"),
)
def _cmd_distill(args: argparse.Namespace) -> int:
  from specjax.train.distill import DistillConfig, distill

  return run_training(args, DistillConfig, distill)


@command(
  "msn-train",
  "Make Some Noise fine-tuning (span-noised inputs, clean labels) for Jacobi / TR-Jacobi decoding",
  train_args("MsnConfig", "configs/msn/smollm2.yaml"),
)
def _cmd_msn(args: argparse.Namespace) -> int:
  from specjax.train.msn import MsnConfig, msn_train

  return run_training(args, MsnConfig, msn_train)
