"""Per-device memory of a distill training step at real scale, from XLA's analysis of the compiled step.

    python scripts/plan_memory.py                       # chunk 0 (one chunk: the unchunked losses) and 256
    python scripts/plan_memory.py --chunk 256 --loss tvdpp --teacher-param-dtype bfloat16 --remat

The step is the one `specjax distill` runs (`specjax.train.trainer.Trainer` with the decoder draft kind's
objective, `specjax.train.distill.make_distill_loss`): a `llama-3.1-8b` teacher and a
`llama2-chat-drafter-115m`-shaped drafter given the Llama-3 vocabulary (128,256 tokens), batch 16 x 2048,
bfloat16 compute, float32 drafter parameters and AdamW state, on an 8-device fsdp mesh of host devices
(set below before jax is imported). Every argument is a ShapeDtypeStruct: the step is compiled, never run,
and nothing of its size is allocated. XLA's `memory_analysis()` of the SPMD-partitioned program is per
device: arguments (state, batch, teacher), outputs, temporaries (activations, logits, gradients) and the
total = arguments + outputs - aliased (the donated state) + temporaries, against 16 GiB (a TPU v5e chip).
The numbers come from the shapes alone, so any host reproduces them; they are the host (CPU) compiler's
buffer plan, which an accelerator's compiler (other fusions and layouts) will not match byte for byte.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from specjax.data.distill_batches import empty_batch  # noqa: E402
from specjax.losses.distill import CHUNK, REGISTRY  # noqa: E402
from specjax.models.presets import get_preset  # noqa: E402
from specjax.models.registry import param_shapes  # noqa: E402
from specjax.parallel.sharding import MeshConfig, batch_sharding  # noqa: E402
from specjax.train import step as step_lib  # noqa: E402
from specjax.train.distill import DistillConfig, DistillDataConfig, make_distill_loss  # noqa: E402
from specjax.train.trainer import Trainer  # noqa: E402

GIB = 2**30
V5E_HBM = 16 * GIB


def _abstract(tree, shardings):
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), tree, shardings)


def plan(args, chunk: int) -> dict[str, int]:
  """XLA's per-device memory analysis (bytes) of the distill step with the losses' `chunk`."""
  options = {"chunk": chunk}
  cfg = DistillConfig(
    loss=args.loss,
    loss_options=options,
    dtype=args.dtype,
    mesh=MeshConfig(data=1, fsdp=args.devices, tensor=1),
    data=DistillDataConfig(batch_size=args.batch, seq_len=args.seq_len),
  )
  vocab = get_preset(args.teacher).vocab_size
  s_cfg = get_preset(args.drafter).replace(vocab_size=vocab, dtype=args.dtype, remat=args.remat)
  t_cfg = get_preset(args.teacher).replace(dtype=args.dtype, param_dtype=args.teacher_param_dtype, remat=False)
  with tempfile.TemporaryDirectory() as out:  # the trainer writes nothing before run(); never called here
    trainer = Trainer(cfg, out, batch_size=args.batch)
  t_sh = trainer.param_shardings(t_cfg)
  frozen_sh = {"target": t_sh}
  frozen = {"target": _abstract(param_shapes(t_cfg), t_sh)}
  if REGISTRY[args.loss].needs_reference:
    frozen_sh["reference"] = trainer.param_shardings(s_cfg)
    frozen["reference"] = _abstract(param_shapes(s_cfg), frozen_sh["reference"])
  loss_fn = make_distill_loss(s_cfg, t_cfg, args.loss, options)
  trainer.set_objective(s_cfg, loss_fn, frozen=frozen, frozen_shardings=frozen_sh)
  state = step_lib.abstract_state(s_cfg, trainer.tx, trainer.shardings)
  b_sh = batch_sharding(trainer.mesh)
  batch = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=b_sh) for k, v in empty_batch(args.batch, args.seq_len).items()
  }
  start = time.perf_counter()
  mem = trainer.train_step.lower(state, batch, frozen).compile().memory_analysis()
  seconds = time.perf_counter() - start
  out = {
    "arguments": mem.argument_size_in_bytes,
    "outputs": mem.output_size_in_bytes,
    "aliased": mem.alias_size_in_bytes,
    "temporaries": mem.temp_size_in_bytes,
  }
  out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
  print(f"  compiled chunk={chunk} in {seconds:.0f} s", flush=True)
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--chunk", type=int, nargs="+", default=[0, CHUNK], help="losses' chunk (0 = one chunk, unchunked)")
  ap.add_argument("--loss", default="fkl", choices=sorted(REGISTRY))
  ap.add_argument("--teacher", default="llama-3.1-8b")
  ap.add_argument("--drafter", default="llama2-chat-drafter-115m", help="its shape, given the teacher's vocabulary")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--seq-len", type=int, default=2048)
  ap.add_argument("--devices", type=int, default=8, help="the fsdp mesh: devices of this host (at most 8)")
  ap.add_argument("--dtype", default="bfloat16", help="compute dtype of drafter and teacher")
  ap.add_argument("--teacher-param-dtype", default="float32", help="the frozen teacher's parameter dtype")
  ap.add_argument("--remat", action="store_true", help="rematerialise the drafter's blocks in the backward pass")
  args = ap.parse_args()

  print(
    f"distill step: {args.teacher} teacher ({args.teacher_param_dtype} params), {args.drafter} drafter at vocab "
    f"{get_preset(args.teacher).vocab_size} (float32 params + AdamW), loss {args.loss}, batch {args.batch} x "
    f"{args.seq_len}, {args.dtype} compute, fsdp over {args.devices} devices, drafter remat {args.remat}",
    flush=True,
  )
  rows = [(chunk, plan(args, chunk)) for chunk in args.chunk]
  keys = ("arguments", "outputs", "aliased", "temporaries", "total")
  print("\nper device, GiB (XLA memory_analysis of the compiled step)")
  print(f"| chunk | {' | '.join(keys)} | fits 16 GiB (v5e) |")
  print("| ---: |" + " ---: |" * len(keys) + " --- |")
  for chunk, mem in rows:
    fits = "yes" if mem["total"] <= V5E_HBM else "no"
    label = f"{chunk} (unchunked)" if chunk == 0 else str(chunk)
    print(f"| {label} | " + " | ".join(f"{mem[k] / GIB:.2f}" for k in keys) + f" | {fits} |")


if __name__ == "__main__":
  main()
