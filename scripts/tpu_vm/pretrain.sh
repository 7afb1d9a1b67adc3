#!/usr/bin/env bash
# Pretrain a drafter on a Cloud TPU VM pod slice (every host runs this same command).
#
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command \
#     "cd specjax && bash scripts/tpu_vm/pretrain.sh gs://BUCKET/runs/drafter-s ckpt/smollm2"
#
# Arguments: OUT (shared by all hosts: a GCS path or a shared file system), TOKENIZER (the target's
# specjax checkpoint folder, present on every host), then any key=value overrides.
# mesh.distributed=true calls jax.distributed.initialize(), which reads the pod topology from the TPU
# metadata; the (data, fsdp, tensor) mesh then spans every chip of the slice. Orbax writes one
# checkpoint cooperatively; rerunning the same command resumes it (e.g. after a preemption).
# The global batch (data.batch_size) must be a multiple of data x fsdp.
set -euo pipefail
OUT=${1:?usage: pretrain.sh OUT TOKENIZER [key=value ...]}
TOKENIZER=${2:?usage: pretrain.sh OUT TOKENIZER [key=value ...]}
shift 2
CONFIG=${CONFIG:-configs/pretrain/drafter-s.yaml}
exec specjax pretrain --config "$CONFIG" --out "$OUT" \
  tokenizer="$TOKENIZER" mesh.distributed=true mesh.data=-1 mesh.fsdp="${FSDP:-1}" \
  model.dtype=bfloat16 model.param_dtype=float32 "$@"
