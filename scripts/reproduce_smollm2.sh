#!/usr/bin/env bash
# A drafter that pays off on this machine for SmolLM2-135M-Instruct, from nothing but the installed packages:
# import the target, let it write user requests (make-prompts, Magpie-style: what users ask it) and answer
# them plus offline GSM / code / summarisation prompts (make-data, batched), rank the tokens it generates
# into a reduced draft vocabulary (FR-Spec style), train the draft, then measure: call costs (c = drafter
# call / target call) and `specjax bench` ar vs the draft on held-out MT-Bench prompts (disjoint from the
# training prompts by make-data's hash check; `mt-bench-mix`, so short's 8 are one per category and full's 24
# three), greedy and T=1, gamma 1..6.
#
#   BUDGET=short bash scripts/reproduce_smollm2.sh OUT     # at most ~45 minutes on a 2-core CPU
#   BUDGET=full  bash scripts/reproduce_smollm2.sh OUT     # at most ~3 hours
#
# Writes OUT/drafter (the final drafter, a specjax checkpoint), OUT/report.json, OUT/*.png and OUT/stage_times.tsv.
# Every stage is skipped when its output exists, so a rerun resumes (training runs resume from checkpoints).
# Knobs (environment): PY (python), BUDGET, K (draft vocabulary size), TEMP, OPENINGS, and the per-stage numbers
# below.
# DRAFTER=eagle (the default) trains an EAGLE-style draft (`specjax eagle-init`: one layer over the target's
# features, the reduced head), distilled for EAGLE_STEPS steps from the teacher cache (the target runs once
# per training row, not once per step) with the loss on every position, and benches `--mode eagle`.
# DRAFTER=independent pretrains drafter-s (reduced head) on the target's answers, distils it with FKL and
# benches `--mode spec`. Use a fresh OUT per drafter kind (or keep target, prompts and data, remove the rest).
set -euo pipefail
OUT=${1:?usage: reproduce_smollm2.sh OUT}
PY=${PY:-python}
BUDGET=${BUDGET:-short}
SJ="$PY -m specjax"
if [ "$BUDGET" = short ]; then
  SELF=${SELF:-384}; PROMPTS=${PROMPTS:-$OUT/self.jsonl,gsm:128,code:64,summarize:64}; SAMPLES=${SAMPLES:-640}
  NEW=${NEW:-128}; PRE_STEPS=${PRE_STEPS:-200}; PRE_B=${PRE_B:-8}; KD_STEPS=${KD_STEPS:-20}; KD_B=${KD_B:-4}
  BENCH_PROMPTS=${BENCH_PROMPTS:-8}
elif [ "$BUDGET" = full ]; then
  SELF=${SELF:-1536}; PROMPTS=${PROMPTS:-$OUT/self.jsonl,gsm:768,code:384,summarize:384}; SAMPLES=${SAMPLES:-3072}
  NEW=${NEW:-160}; PRE_STEPS=${PRE_STEPS:-1200}; PRE_B=${PRE_B:-16}; KD_STEPS=${KD_STEPS:-150}; KD_B=${KD_B:-8}
  BENCH_PROMPTS=${BENCH_PROMPTS:-24}
else
  echo "BUDGET must be short or full, got $BUDGET" >&2
  exit 2
fi
DRAFTER=${DRAFTER:-eagle}
case "$DRAFTER" in
  independent) MODE=spec ;;
  eagle) MODE=eagle; EAGLE_STEPS=${EAGLE_STEPS:-$([ "$BUDGET" = short ] && echo 300 || echo 1500)} ;;
  *) echo "DRAFTER must be independent or eagle, got $DRAFTER" >&2; exit 2 ;;
esac
K=${K:-8192}
TEMP=${TEMP:-0.7}  # the target's answers: sampling temperature (top-p 0.95); 0 = its greedy answers
OPENINGS=${OPENINGS:-}  # e.g. instructions: make-prompts --openings (requests steered to start with instruction verbs)
BENCH_NEW=${BENCH_NEW:-64}
mkdir -p "$OUT"
# Every stage header and every exit (a finished, failed or interrupted invocation) is appended to
# OUT/stage_times.tsv (unix time, event), so report.json sums each stage's wall time over resumed runs.
source "$(dirname "$0")/stages.sh"
stages_log "$OUT/stage_times.tsv"

stage "1/8 import the target"
[ -d "$OUT/target" ] || $SJ import smollm2-135m-instruct --out "$OUT/target"

stage "2/8 the target writes $SELF user requests (Magpie-style, temperature 1)"
[ -f "$OUT/self.jsonl" ] || $SJ make-prompts --target "$OUT/target" --out "$OUT/self.jsonl" --num-prompts "$SELF" \
  --batch-size 32 --max-new-tokens 128 ${OPENINGS:+--openings "$OPENINGS"}

stage "3/8 the target answers $SAMPLES training prompts (from $PROMPTS)"
[ -d "$OUT/data" ] || $SJ make-data --target "$OUT/target" --prompts "$PROMPTS" --out "$OUT/data" --num-samples "$SAMPLES" \
  --temperature "$TEMP" --top-p 0.95 --max-new-tokens "$NEW" --batch-size 32 --max-prompt-tokens 192 --shard-size 128

stage "4/8 the draft vocabulary: the target's $K most frequent generated tokens"
[ -f "$OUT/vocab.json" ] || $SJ vocab-map --data "$OUT/data" --size "$K" --out "$OUT/vocab.json"

if [ "$DRAFTER" = eagle ]; then
  stage "5/8 an EAGLE-style draft for the target (one layer over its features, reduced head)"
  [ -d "$OUT/eagle0" ] || $SJ eagle-init "$OUT/target" --map "$OUT/vocab.json" --out "$OUT/eagle0"

  stage "6/8 distil it on the target's cached features (FKL + feature regression, every position, $EAGLE_STEPS steps)"
  [ -d "$OUT/kd/final" ] || $SJ distill --config configs/distill/eagle.yaml --out "$OUT/kd" --steps "$EAGLE_STEPS" \
    target="$OUT/target" student="$OUT/eagle0" data.path="$OUT/data"
else
  stage "5/8 pretrain the drafter on the target's answers (reduced head, $PRE_STEPS steps)"
  [ -d "$OUT/pre/final" ] || $SJ pretrain --config configs/pretrain/drafter-s.yaml --out "$OUT/pre" --steps "$PRE_STEPS" \
    tokenizer="$OUT/target" model.head_ids_from="$OUT/vocab.json" data.source="$OUT/data" data.prompt_field=prompt \
    data.response_field=response data.batch_size="$PRE_B" data.seq_len=192 data.eval_fraction=0.03 data.eval_batches=2 \
    optim.lr=2e-3 optim.warmup_steps=30 optim.z_loss=0 checkpoint.every=50 logging.eval_every=100

  stage "6/8 distil against the target (FKL on the draft vocabulary, $KD_STEPS steps)"
  [ -d "$OUT/kd/final" ] || $SJ distill --config configs/distill/fkl.yaml --out "$OUT/kd" --steps "$KD_STEPS" \
    target="$OUT/target" student="$OUT/pre/final" data.path="$OUT/data" data.seq_len=192 data.batch_size="$KD_B" \
    data.eval_examples=16 data.eval_batches=1 optim.lr=5e-4 optim.warmup_steps=5 checkpoint.every=10 \
    logging.eval_every=0 spec_eval.every=-1
fi
[ -d "$OUT/drafter" ] || cp -r "$OUT/kd/final" "$OUT/drafter"

stage "7/8 call costs: drafter vs target"
[ -f "$OUT/costs.json" ] || $PY scripts/recipe_report.py costs "$OUT"

stage "8/8 bench on $BENCH_PROMPTS held-out MT-Bench prompts (every category alike): ar vs $MODE, gamma 1..6, greedy and T=1"
[ -f "$OUT/bench.json" ] || $SJ bench --target "$OUT/target" --draft "$OUT/drafter" --prompts mt-bench-mix \
  --limit "$BENCH_PROMPTS" --chat --modes "ar,$MODE" --gamma 1,2,3,4,5,6 --temperature 0,1 \
  --max-new-tokens "$BENCH_NEW" --out "$OUT/bench.json" --plot "$OUT/bench.png"

stage "report: OUT/report.json (with the stages' times so far), OUT/acceptance.png, OUT/speed.png"
$PY scripts/recipe_report.py report "$OUT"
