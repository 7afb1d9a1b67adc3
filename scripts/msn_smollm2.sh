#!/usr/bin/env bash
# Make Some Noise on SmolLM2-135M-Instruct, measured against a control: fine-tune the target on its own
# answers (a `specjax make-data` folder, e.g. the campaign's, scripts/campaign_smollm2.sh) with MSN (span
# SPAN, 5 as in the paper) and, as the control, the same fine-tune (same data, order, steps, optimiser and
# seed) without noise (span=0: plain supervised fine-tuning); then measure the original target, the control
# and the MSN model alike: `specjax bench` per prompt suite (mt-bench-mix, gsm, grounded, humaneval;
# greedy Jacobi at each of WINDOWS and TR-Jacobi beside `ar` of the same model, batch 1), GSM exact-match
# accuracy on GSM_N held-out gsm_symbolic problems, the clean held-out loss, and greedy answers to 10
# fixed prompts side by side; and report (a markdown table with bootstrap intervals over prompts, a plot).
#
#   DATA=/abs/campaign/data PY=.venv/bin/python bash scripts/msn_smollm2.sh OUT      # BUDGET=full: ~3 hours
#   PY=.venv/bin/python bash scripts/msn_smollm2.sh OUT DATA
#   BUDGET=tiny TARGET=TINY_CKPT bash scripts/msn_smollm2.sh OUT DATA                 # the tests' toy run
#
# Stages (each skipped when its output exists; the fine-tunes resume from their checkpoints):
#   1/5 the target: TARGET, else `specjax import smollm2-135m-instruct` into OUT/target
#   2/5 MSN fine-tune (span SPAN)                                 -> OUT/msn (final: OUT/msn/final)
#   3/5 the control: the same fine-tune with span=0 (no noise)    -> OUT/control
#   4/5 measure (scripts/msn_measure.py)                          -> OUT/measure
#   5/5 report (scripts/msn_report.py)                            -> OUT/report.md, OUT/report.json, OUT/speed.png
# Both fine-tunes log the clean held-out loss every EVAL steps and at the end (OUT/*/metrics.jsonl,
# eval_loss); the measure stage adds the original target's on the same held-out rows. Every stage start
# and every invocation's start and exit go to OUT/stage_times.tsv (unix time, event).
#
# BUDGET=full is sized for about 3 hours on a 2-core CPU shared with a make-data campaign (this script
# niced beside it), from costs measured on SmolLM2-135M-Instruct there on 2026-12-03 (cost measurements,
# not training or benchmark runs):
# - one MSN fine-tuning step (float32, batch 8 x 256 tokens, span 5; 6 steps): 81, 107, 155, 85, 57 and
#   96 s (2048 tokens / the tokens_per_s of metrics.jsonl), median 96 s; the process took 12 minutes;
# - `specjax bench` on 2 mt-bench-mix prompts x 48 new tokens: ar 6.4 tokens/s, jacobi W=2 3.7, tr-jacobi
#   1.2, each mode's compile 27-44 s;
# - `specjax eval-gsm` on 4 problems x 160 new tokens at batch 4: 85 s of decoding, compile included.
# Hence STEPS=24 per fine-tune (about 40 minutes each), and for the measure stage LIMIT=4 prompts x NEW=32
# tokens per suite (about 4.5 minutes per model and suite, 12 of them, plus compiles shared by the three
# models), GSM_N=100 problems at GSM_NEW=128 tokens in batches of 16, 10 answers of 96 tokens per model.
# On a quiet host everything runs several times faster: raise STEPS (the fine-tune's length), LIMIT and
# NEW there.
#
# Knobs (environment): PY, BUDGET (full | tiny), DATA, TARGET, SPAN, STEPS, SEQ, BATCH, LR, WARMUP, EVAL,
# EVAL_EXAMPLES, LIMIT, NEW, WINDOWS, GSM_N, GSM_NEW, GSM_BATCH, ANSWERS, ANSWERS_NEW.
set -euo pipefail
OUT=${1:?usage: msn_smollm2.sh OUT [DATA]}
DATA=${2:-${DATA:-}}
[ -n "$DATA" ] || { echo "give the make-data folder: DATA=DIR or a second argument" >&2; exit 2; }
[ -f "$DATA/specjax_data.json" ] || { echo "$DATA is not a make-data folder (no specjax_data.json)" >&2; exit 2; }
PY=${PY:-python}
SJ="$PY -m specjax"
BUDGET=${BUDGET:-full}
SPAN=${SPAN:-5}
ANSWERS=${ANSWERS:-mt-bench-mix:4,gsm:2,grounded:2,humaneval:2}  # 10 fixed prompts, answered side by side
if [ "$BUDGET" = full ]; then
  CONFIG=configs/msn/smollm2.yaml
  STEPS=${STEPS:-24}; SEQ=${SEQ:-256}; BATCH=${BATCH:-8}; LR=${LR:-5e-5}; WARMUP=${WARMUP:-3}; EVAL=${EVAL:-8}
  EVAL_EXAMPLES=${EVAL_EXAMPLES:-32}; CKPT_EVERY=8
  LIMIT=${LIMIT:-4}; NEW=${NEW:-32}; WINDOWS=${WINDOWS:-1,2,3,4}; GSM_N=${GSM_N:-100}; GSM_NEW=${GSM_NEW:-128}
  GSM_BATCH=${GSM_BATCH:-16}; ANSWERS_NEW=${ANSWERS_NEW:-96}
elif [ "$BUDGET" = tiny ]; then
  CONFIG=configs/msn/tiny.yaml
  STEPS=${STEPS:-2}; SEQ=${SEQ:-48}; BATCH=${BATCH:-8}; LR=${LR:-3e-3}; WARMUP=${WARMUP:-1}; EVAL=${EVAL:-2}
  EVAL_EXAMPLES=${EVAL_EXAMPLES:-8}; CKPT_EVERY=2
  LIMIT=${LIMIT:-2}; NEW=${NEW:-4}; WINDOWS=${WINDOWS:-1,2}; GSM_N=${GSM_N:-2}; GSM_NEW=${GSM_NEW:-4}
  GSM_BATCH=${GSM_BATCH:-2}; ANSWERS_NEW=${ANSWERS_NEW:-4}
else
  echo "BUDGET must be full or tiny, got $BUDGET" >&2
  exit 2
fi
mkdir -p "$OUT"
source "$(dirname "$0")/stages.sh"
stages_log "$OUT/stage_times.tsv"

stage "1/5 the target"
if [ -z "${TARGET:-}" ]; then
  TARGET=$OUT/target
  [ -d "$TARGET" ] || $SJ import smollm2-135m-instruct --out "$TARGET"
fi

# The two fine-tunes differ in span alone (run_config.json refuses a resumed run with other settings).
train() {  # train OUT_DIR SPAN
  [ -d "$1/final" ] || $SJ msn-train --config "$CONFIG" --out "$1" --steps "$STEPS" model="$TARGET" span="$2" \
    data.path="$DATA" data.seq_len="$SEQ" data.batch_size="$BATCH" data.eval_examples="$EVAL_EXAMPLES" \
    data.eval_batches=2 optim.lr="$LR" optim.warmup_steps="$WARMUP" checkpoint.every="$CKPT_EVERY" \
    logging.eval_every="$EVAL" logging.progress=false logging.tensorboard=false
}
stage "2/5 MSN fine-tune: span $SPAN, $STEPS steps of $BATCH x $SEQ tokens"
train "$OUT/msn" "$SPAN"

stage "3/5 the control: the same fine-tune without noise (span=0)"
train "$OUT/control" 0

stage "4/5 measure target, control and MSN: bench on 4 suites (Jacobi W=$WINDOWS, TR-Jacobi), GSM, held-out loss"
$PY scripts/msn_measure.py "$OUT/measure" --models "target=$TARGET,control=$OUT/control/final,msn=$OUT/msn/final" \
  --suites mt-bench-mix,gsm,grounded,humaneval --limit "$LIMIT" --max-new-tokens "$NEW" --windows "$WINDOWS" \
  --gsm-limit "$GSM_N" --gsm-new "$GSM_NEW" --gsm-batch "$GSM_BATCH" --exclude "$DATA" --heldout "$OUT/msn" \
  --answers "$ANSWERS" --answers-new "$ANSWERS_NEW"

stage "5/5 report: OUT/report.md, OUT/report.json, OUT/speed.png"
$PY scripts/msn_report.py "$OUT"
