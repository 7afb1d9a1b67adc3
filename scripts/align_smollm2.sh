#!/usr/bin/env bash
# Draft alignment on the real target, SmolLM2-135M-Instruct, at a scale a 2-core CPU finishes in about
# an hour: pretrain drafter-s on the default corpus, let the target answer built-in training prompts,
# then one short distillation run per loss, each from the same pretrained drafter, each measured at the
# end by the compiled speculative decoder on held-out prompts (greedy and T=1, gamma 4).
#
#   bash scripts/align_smollm2.sh WORK_DIR
#
# Knobs (environment): PY (python), PRE_STEPS (250), STEPS (distillation steps, 40), SAMPLES (prompts per
# source). Every stage is skipped when its output exists, so a rerun resumes.
set -euo pipefail
WORK=${1:?usage: align_smollm2.sh WORK_DIR}
PY=${PY:-python}
PRE_STEPS=${PRE_STEPS:-250}
STEPS=${STEPS:-40}
SJ="$PY -m specjax"
mkdir -p "$WORK"

[ -d "$WORK/target" ] || $SJ import smollm2-135m-instruct --out "$WORK/target"
[ -d "$WORK/pre/final" ] || $SJ pretrain --config configs/pretrain/drafter-s.yaml --out "$WORK/pre" \
  --steps "$PRE_STEPS" tokenizer="$WORK/target" data.batch_size=8 data.seq_len=128 optim.warmup_steps=20 \
  checkpoint.every=50 logging.eval_every=50
[ -d "$WORK/data" ] || $SJ make-data --target "$WORK/target" --prompts gsm:96,chat:64,code:48,summarize:48 \
  --out "$WORK/data" --temperature 0.7 --top-p 0.95 --max-new-tokens 96 --batch-size 16 \
  --max-prompt-tokens 160 --shard-size 64

COMMON=(target="$WORK/target" student="$WORK/pre/final" data.path="$WORK/data" data.seq_len=256
  data.batch_size=4 data.eval_examples=24 data.eval_batches=2 optim.lr=1e-3 optim.warmup_steps=4
  checkpoint.every=0 logging.eval_every=0 spec_eval.every=0 spec_eval.prompts=16 spec_eval.gamma=4
  spec_eval.max_new_tokens=48 "spec_eval.temperatures=[0.0, 1.0]" spec_eval.batch_size=8)
run() { # name steps config [overrides...]
  local name=$1 steps=$2 config=$3
  shift 3
  [ -d "$WORK/kd-$name/final" ] || $SJ distill --config "configs/distill/$config.yaml" --out "$WORK/kd-$name" \
    --steps "$steps" "${COMMON[@]}" "$@"
}
run pretrained 1 fkl optim.lr=0.0 # the pretrained drafter itself: a 1-step run with learning rate 0
run fkl "$STEPS" fkl
run rkl "$STEPS" rkl
run tvd "$STEPS" tvd
run tvdpp "$STEPS" tvdpp loss_options.norm=position
run adaspec "$STEPS" adaspec loss_options.k=0.4 reference="$WORK/kd-fkl/final"

$PY scripts/alignment_table.py "$WORK"/kd-*
