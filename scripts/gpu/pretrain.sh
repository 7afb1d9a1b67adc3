#!/usr/bin/env bash
# Pretrain a drafter on one multi-GPU host (one process drives all local GPUs), or on several hosts.
#
#   bash scripts/gpu/pretrain.sh runs/drafter-s ckpt/smollm2                 # all GPUs of this host
#   FSDP=2 bash scripts/gpu/pretrain.sh runs/drafter-s ckpt/smollm2 data.batch_size=64
#
# Several hosts (e.g. SLURM): run it once per host with MULTIHOST=1; jax.distributed.initialize() reads
# the coordinator and process ids from the SLURM environment (or set JAX_COORDINATOR_ADDRESS,
# JAX_NUM_PROCESSES and JAX_PROCESS_ID). OUT must be on a file system every host sees.
# Needs jax with CUDA (pip install -U "jax[cuda12]"). Rerunning the same command resumes.
set -euo pipefail
OUT=${1:?usage: pretrain.sh OUT TOKENIZER [key=value ...]}
TOKENIZER=${2:?usage: pretrain.sh OUT TOKENIZER [key=value ...]}
shift 2
CONFIG=${CONFIG:-configs/pretrain/drafter-s.yaml}
DIST=false
if [[ "${MULTIHOST:-0}" == "1" ]]; then DIST=true; fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec specjax pretrain --config "$CONFIG" --out "$OUT" \
  tokenizer="$TOKENIZER" mesh.distributed="$DIST" mesh.data=-1 mesh.fsdp="${FSDP:-1}" \
  model.dtype=bfloat16 model.param_dtype=float32 "$@"
