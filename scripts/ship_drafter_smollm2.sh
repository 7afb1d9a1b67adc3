#!/usr/bin/env bash
# Train the shipped EAGLE-style drafter for SmolLM2-135M-Instruct on the data campaign's answers, pack it
# and measure it beside `ar` on held-out prompts:
#
#   PY=.venv/bin/python bash scripts/ship_drafter_smollm2.sh CAMPAIGN_OUT WORK
#
# CAMPAIGN_OUT is a `scripts/campaign_smollm2.sh` folder (finished or still running: a snapshot of the
# shards done so far is taken, `make-data --snapshot`); WORK is where this run writes (outside the work
# tree). Stages, each skipped when its output exists (training resumes from its checkpoints):
#   1. WORK/data: the campaign's answers (its finished data-mix1, or a snapshot of the running one)
#   2. WORK/vocab.json: the K most frequent generated tokens (the draft's reduced head)
#   3. WORK/eagle0: a fresh EAGLE-style draft (one layer over the target's features)
#   4. WORK/kd: distillation on the stored features (FKL + feature regression, every position), the token
#      embedding frozen (it is the target's, rebuilt from it when the packed draft loads), TTT unrolled
#      steps; held-out teacher-forced acceptance every EVAL steps in WORK/kd/metrics.jsonl (the learning
#      curve: WORK/curve.tsv, held-out acceptance against positions seen)
#  4b. with FINE_STEPS > 0, WORK/kd_ttt: FINE_STEPS more steps from WORK/kd/final with FINE_TTT unrolled
#      steps (training-time test as a second stage: the cheap one-step draft first, then its later
#      proposals on its own predicted features); its curve rows follow the first stage's in curve.tsv
#   5. WORK/packed: `specjax pack-draft` (only the trained tensors, float16)
#   6. WORK/costs.json and WORK/bench_*.json: the host's call costs (scripts/bench_forward.py), then `ar` against
#      the draft on 24 held-out mt-bench-mix and 8 GSM prompts, greedy, 64 new tokens, batch 1; then
#      WORK/card.md (scripts/drafter_card.py: data, steps, curve, costs, bench), also WORK/packed/README.md
# Knobs (environment): PY, STEPS (3000), BATCH (8), SEQ (256), TTT (eagle.steps, 3), K (8192), LR (1e-3),
# EVAL (250), GAMMAS (1,2,3,4), BENCH_PROMPTS (24), FINE_STEPS (0), FINE_TTT (3), FINE_LR (5e-4).
set -euo pipefail
CAMP=${1:?usage: ship_drafter_smollm2.sh CAMPAIGN_OUT WORK}
WORK=${2:?usage: ship_drafter_smollm2.sh CAMPAIGN_OUT WORK}
PY=${PY:-python}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-8}
SEQ=${SEQ:-256}
TTT=${TTT:-3}
K=${K:-8192}
LR=${LR:-1e-3}
EVAL=${EVAL:-250}
GAMMAS=${GAMMAS:-1,2,3,4}
BENCH_PROMPTS=${BENCH_PROMPTS:-24}
FINE_STEPS=${FINE_STEPS:-0}
FINE_TTT=${FINE_TTT:-3}
FINE_LR=${FINE_LR:-5e-4}
SJ="$PY -m specjax"
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
T="$CAMP/target"
source "$HERE/stages.sh"
stages_log "$WORK/stage_times.tsv"

stage "1/6 the campaign's answers"
if [ ! -d "$WORK/data" ]; then
  if [ -d "$CAMP/data-mix1" ]; then
    ln -s "$(cd "$CAMP/data-mix1" && pwd)" "$WORK/data"
  else
    SNAPSHOT="$WORK/data" PY="$PY" bash "$HERE/campaign_smollm2.sh" "$CAMP"
  fi
fi

stage "2/6 the draft vocabulary: the $K most frequent generated tokens"
[ -f "$WORK/vocab.json" ] || $SJ vocab-map --data "$WORK/data" --size "$K" --out "$WORK/vocab.json"

stage "3/6 a fresh EAGLE-style draft"
[ -d "$WORK/eagle0" ] || $SJ eagle-init "$T" --map "$WORK/vocab.json" --out "$WORK/eagle0"

stage "4/6 distil it ($STEPS steps of $BATCH x $SEQ tokens, $TTT unrolled steps, embedding frozen)"
[ -d "$WORK/kd/final" ] || $SJ distill --config configs/distill/eagle.yaml --out "$WORK/kd" --steps "$STEPS" \
  target="$T" student="$WORK/eagle0" data.path="$WORK/data" data.seq_len="$SEQ" data.batch_size="$BATCH" \
  optim.lr="$LR" optim.freeze=embed_tokens eagle.steps="$TTT" checkpoint.every="$EVAL" logging.eval_every="$EVAL"

FINAL="$WORK/kd/final"
if [ "$FINE_STEPS" -gt 0 ]; then
  stage "4b/6 training-time test: $FINE_STEPS more steps with $FINE_TTT unrolled steps"
  [ -d "$WORK/kd_ttt/final" ] || $SJ distill --config configs/distill/eagle.yaml --out "$WORK/kd_ttt" \
    --steps "$FINE_STEPS" target="$T" student="$WORK/kd/final" data.path="$WORK/data" data.seq_len="$SEQ" \
    data.batch_size="$BATCH" optim.lr="$FINE_LR" optim.freeze=embed_tokens eagle.steps="$FINE_TTT" \
    checkpoint.every="$EVAL" logging.eval_every="$EVAL"
  FINAL="$WORK/kd_ttt/final"
fi

# The learning curve: held-out teacher-forced acceptance (against the full target) against the
# positions seen (step x BATCH x SEQ, padding included), both stages.
$PY - "$BATCH" "$SEQ" "$WORK/kd" "$WORK/kd_ttt" > "$WORK/curve.tsv" <<'PYEOF'
import json, os, sys
per_step = int(sys.argv[1]) * int(sys.argv[2])
print("step\tpositions_seen\tunrolled_steps\theld_out_acceptance\theld_out_first_step")
offset = 0
for run in sys.argv[3:]:
  if not os.path.isfile(f"{run}/metrics.jsonl"):
    continue
  cfg = json.load(open(f"{run}/run_config.json"))
  for line in open(f"{run}/metrics.jsonl"):
    r = json.loads(line)
    if "eval_expected_acceptance_full" in r:
      first = r.get("eval_expected_acceptance_step1", r["eval_expected_acceptance_full"])
      step = offset + r["step"]
      print(f"{step}\t{step * per_step}\t{cfg['eagle']['steps']}\t{r['eval_expected_acceptance_full']:.4f}\t{first:.4f}")
  offset += cfg["steps"]
PYEOF
cat "$WORK/curve.tsv"

stage "5/6 pack it (only what it trained)"
[ -d "$WORK/packed" ] || $SJ pack-draft "$FINAL" --target "$T" --out "$WORK/packed"

stage "6/6 call costs, then ar against the packed draft on held-out prompts (greedy, batch 1)"
[ -f "$WORK/costs.json" ] || $PY "$HERE/bench_forward.py" --target "$T" --draft "$FINAL" --batch 1 \
  --json "$WORK/costs.json"
[ -f "$WORK/bench_mt.json" ] || $SJ bench --target "$T" --draft "$WORK/packed" --prompts mt-bench-mix \
  --limit "$BENCH_PROMPTS" --chat --modes ar,eagle --gamma "$GAMMAS" --temperature 0 --max-new-tokens 64 \
  --out "$WORK/bench_mt.json" --plot "$WORK/bench_mt.png"
[ -f "$WORK/bench_gsm.json" ] || $SJ bench --target "$T" --draft "$WORK/packed" --prompts gsm --limit 8 --chat \
  --modes ar,eagle --gamma "$GAMMAS" --temperature 0 --max-new-tokens 64 --out "$WORK/bench_gsm.json"
# The card: every figure from the files above; it becomes the packed folder's README.md.
$PY "$HERE/drafter_card.py" "$WORK" > "$WORK/card.md"
cp "$WORK/card.md" "$WORK/packed/README.md"
printf '\ndone: %s/packed (the drafter, with its card README.md), bench_mt.json, bench_gsm.json, curve.tsv\n' "$WORK"
