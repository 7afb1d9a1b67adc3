#!/usr/bin/env bash
# Draft alignment end to end at toy scale on a CPU: a small teacher and a smaller drafter with the SmolLM2
# tokenizer, distillation data from the teacher, then one distillation run per loss, each from the same
# pretrained drafter. The last metrics.jsonl record of every run holds the teacher-forced (held-out) and
# the real speculative acceptance and block efficiency (greedy and T=1, gamma 4); the script prints them.
#
#   bash scripts/align_tiny.sh WORK_DIR [TOKENIZER_CKPT]
#
# TOKENIZER_CKPT defaults to WORK_DIR/smollm2 (made with `specjax import smollm2-135m-instruct`).
# STEPS (default 60) sets the distillation length.
set -euo pipefail
WORK=${1:?usage: align_tiny.sh WORK_DIR [TOKENIZER_CKPT]}
TOK=${2:-$WORK/smollm2}
PY=${PY:-python}
STEPS=${STEPS:-60}
SJ="$PY -m specjax"
mkdir -p "$WORK"
[ -d "$TOK" ] || $SJ import smollm2-135m-instruct --out "$TOK"

V=model.fields.vocab_size=49152
[ -d "$WORK/teacher/final" ] || $SJ pretrain --config configs/pretrain/tiny.yaml --out "$WORK/teacher" --steps 150 \
  tokenizer="$TOK" $V model.fields.hidden_size=128 model.fields.intermediate_size=384 model.fields.num_layers=4 \
  data.seq_len=128 data.batch_size=8 optim.warmup_steps=20 checkpoint.every=100 logging.eval_every=100
[ -d "$WORK/drafter/final" ] || $SJ pretrain --config configs/pretrain/tiny.yaml --out "$WORK/drafter" --steps 60 \
  tokenizer="$TOK" $V model.fields.num_layers=1 data.seq_len=128 data.batch_size=8 optim.warmup_steps=10 \
  checkpoint.every=0 logging.eval_every=0
[ -d "$WORK/data" ] || $SJ make-data --target "$WORK/teacher/final" --prompts gsm:96,chat:96,code:64 \
  --out "$WORK/data" --temperature 0.7 --top-p 0.95 --max-new-tokens 48 --batch-size 32 --max-prompt-tokens 160

COMMON=(target="$WORK/teacher/final" student="$WORK/drafter/final" data.path="$WORK/data" data.seq_len=208
  data.batch_size=8 data.eval_examples=32 optim.lr=3e-3 optim.min_lr_ratio=1.0 spec_eval.every=0
  spec_eval.prompts=24 spec_eval.gamma=4 spec_eval.max_new_tokens=32 "spec_eval.temperatures=[0.0, 1.0]")
run() { # name steps loss [overrides...]
  local name=$1 steps=$2 loss=$3
  shift 3
  [ -d "$WORK/kd-$name/final" ] || $SJ distill --config configs/distill/tiny.yaml --out "$WORK/kd-$name" \
    --steps "$steps" loss="$loss" "${COMMON[@]}" "$@"
}
run baseline 1 fkl optim.lr=0.0 # the pretrained drafter, measured by a 1-step run with learning rate 0
run fkl "$STEPS" fkl
run tvd "$STEPS" tvd
run tvdpp-position "$STEPS" tvdpp loss_options.norm=position
run tvdpp-batch "$STEPS" tvdpp loss_options.norm=batch
run rkl "$STEPS" rkl
run adaspec "$STEPS" adaspec loss_options.k=0.4 reference="$WORK/kd-fkl/final"
run tvdpp-sampled "$STEPS" tvdpp loss_options.norm=sampled
run jsd "$STEPS" jsd loss_options.beta=0.5

for d in "$WORK"/kd-*; do
  $PY - "$d" <<'PYEOF'
import json, sys
last = [json.loads(line) for line in open(sys.argv[1] + "/metrics.jsonl")][-1]
keys = ["eval_expected_acceptance", "spec_t0_acceptance_rate", "spec_t0_block_efficiency",
        "spec_t1_acceptance_rate", "spec_t1_block_efficiency"]
print(sys.argv[1].rsplit("/", 1)[-1].ljust(16), " ".join(f"{k}={last.get(k, float('nan')):.3f}" for k in keys))
PYEOF
done
