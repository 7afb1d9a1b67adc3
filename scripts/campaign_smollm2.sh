#!/usr/bin/env bash
# The drafter-at-scale data campaign for SmolLM2-135M-Instruct: about 3 million tokens of the target's own
# answers, resumable across interruptions and sessions. Keep OUT outside the work tree.
#
#   PY=.venv/bin/python bash scripts/campaign_smollm2.sh OUT
#
# Stages (each skipped when its output exists; make-data resumes after its last complete shard of 256):
#   1. import the target (OUT/target)
#   2. 1024 target-written requests (OUT/self.jsonl), and 768 steered to open with instruction verbs
#      (OUT/self_instr.jsonl, make-prompts --openings instructions)
#   3. 24000 answers (OUT/data-mix1) to those requests plus GSM-style problems, code explanation,
#      summarisation and dialogue openings, at T=0.7 / top-p 0.95, at most 160 new tokens each, with the
#      target's features and log-normalisers (make-data --features: EAGLE distillation runs no teacher pass),
#      in a seeded random order (--shuffle), so that any prefix of the run mixes the sources alike
# Train on a campaign that is still running: `specjax make-data <the stage-3 command> --snapshot DIR` writes
# the shards done so far as a dataset (the same arguments; `SNAPSHOT=DIR bash scripts/campaign_smollm2.sh OUT`
# does it) and the run stays resumable.
# Every evaluation suite stays disjoint from these prompts (make-data's hash check).
# Knobs (environment): PY, SAMPLES, BATCH (make-data rows), NEW (max new tokens), SELF_N and INSTR_N (the
# two make-prompts runs' sizes).
set -euo pipefail
OUT=${1:?usage: campaign_smollm2.sh OUT}
PY=${PY:-python}
SAMPLES=${SAMPLES:-24000}
BATCH=${BATCH:-128}  # new tokens/s against rows on a 2-core AVX-512 CPU: 16 75, 32 92, 64 90, 128 100
NEW=${NEW:-160}
SELF_N=${SELF_N:-1024}
INSTR_N=${INSTR_N:-768}
SNAPSHOT=${SNAPSHOT:-}
mkdir -p "$OUT"
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute, not resolved: a venv python is a symlink
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "$OUT" && pwd)
cd "$OUT"  # the stages name their files relative to OUT (make-data records its prompt spec as given)
SJ="$PY -m specjax"
source "$HERE/stages.sh"
stages_log "$OUT/stage_times.tsv"

stage "1/3 import the target"
[ -d target ] || $SJ import smollm2-135m-instruct --out target

stage "2/3 target-written requests (plain and instruction-steered)"
[ -f self.jsonl ] || $SJ make-prompts --target target --out self.jsonl --num-prompts "$SELF_N" \
  --batch-size 32 --max-new-tokens 128
[ -f self_instr.jsonl ] || $SJ make-prompts --target target --out self_instr.jsonl \
  --num-prompts "$INSTR_N" --batch-size 32 --max-new-tokens 128 --openings instructions

MAKE_DATA=(make-data --target target
  --prompts "self.jsonl,self_instr.jsonl,gsm:1200,code:500,summarize:400,chat:600"
  --out data-mix1 --num-samples "$SAMPLES" --temperature 0.7 --top-p 0.95 --max-new-tokens "$NEW"
  --batch-size "$BATCH" --max-prompt-tokens 192 --shard-size 256 --features --shuffle)
if [ -n "$SNAPSHOT" ]; then
  stage "snapshot of the answers so far -> $SNAPSHOT"
  $SJ "${MAKE_DATA[@]}" --snapshot "$SNAPSHOT"
  exit 0
fi

stage "3/3 the target answers $SAMPLES prompts"
[ -d data-mix1 ] || $SJ "${MAKE_DATA[@]}"
