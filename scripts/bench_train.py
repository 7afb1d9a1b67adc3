"""Train-step throughput: specjax (JAX) vs transformers LlamaForCausalLM + torch AdamW, same model and batch.

    python scripts/bench_train.py                      # drafter-s, B=4, T=128, 5 timed steps each
    python scripts/bench_train.py --batch 8 --seq 256 --steps 10 --preset drafter-s

Both sides train the same architecture (the preset, float32) on the same random [B, T] token batch with
AdamW and a full next-token cross-entropy; one warm-up step each is not timed. Prints a table of tokens/s
and ms/step, the specjax/torch ratio, and the specjax compile time (first step minus a timed step).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np


def bench_specjax(preset: str, B: int, T: int, steps: int) -> dict:
  from specjax.models.presets import get_preset
  from specjax.parallel.sharding import MeshConfig, make_mesh, put_batch
  from specjax.train import step as S
  from specjax.train.optim import OptimConfig, make_optimizer

  cfg = get_preset(preset)
  tx, sched = make_optimizer(OptimConfig(lr=1e-4, warmup_steps=0, clip_norm=1.0), 1000)
  mesh = make_mesh(MeshConfig(data=1), jax.devices()[:1])
  sh = S.state_shardings(cfg, tx, mesh)
  state = S.create_state(cfg, tx, sh, seed=0)
  fn = S.make_train_step(S.make_lm_loss(cfg), tx, sched, mesh, sh)
  toks = np.random.default_rng(0).integers(0, cfg.vocab_size, (B, T + 1)).astype(np.int32)
  batch = put_batch(
    {
      "tokens": toks[:, :-1],
      "targets": toks[:, 1:],
      "positions": np.tile(np.arange(T, dtype=np.int32), (B, 1)),
      "segment_ids": np.ones((B, T), np.int32),
      "loss_mask": np.ones((B, T), np.float32),
    },
    mesh,
  )
  t0 = time.perf_counter()
  state, m = fn(state, batch)
  jax.block_until_ready(m)
  first = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = fn(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  return {"step_s": med, "compile_s": first - med, "loss": float(m["loss"])}


def bench_torch(preset: str, B: int, T: int, steps: int) -> dict:
  import torch
  from transformers import LlamaConfig as HFConfig
  from transformers import LlamaForCausalLM

  from specjax.models.presets import get_preset

  cfg = get_preset(preset)
  torch.manual_seed(0)
  hf = HFConfig(
    vocab_size=cfg.vocab_size,
    hidden_size=cfg.hidden_size,
    intermediate_size=cfg.intermediate_size,
    num_hidden_layers=cfg.num_layers,
    num_attention_heads=cfg.num_heads,
    num_key_value_heads=cfg.num_kv_heads,
    head_dim=cfg.dh,
    rope_theta=cfg.rope_theta,
    rms_norm_eps=cfg.rms_norm_eps,
    tie_word_embeddings=cfg.tie_embeddings,
    max_position_embeddings=cfg.max_position_embeddings,
    attention_bias=False,
    mlp_bias=False,
  )
  model = LlamaForCausalLM(hf).float().train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
  toks = torch.from_numpy(np.random.default_rng(0).integers(0, cfg.vocab_size, (B, T)).astype(np.int64))

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=toks, labels=toks).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())

  step()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t0)
  return {"step_s": statistics.median(times), "loss": loss, "threads": torch.get_num_threads()}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", default="drafter-s")
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--steps", type=int, default=5, help="timed steps per framework (median reported)")
  args = p.parse_args()
  B, T = args.batch, args.seq
  jx = bench_specjax(args.preset, B, T, args.steps)
  pt = bench_torch(args.preset, B, T, args.steps)
  tok = B * T
  print(f"\n{args.preset}, B={B}, T={T}, float32, AdamW, {jax.devices()[0].platform} ({os.cpu_count()} cores)")
  print(f"| {'framework':<32} | {'tokens/s':>10} | {'ms/step':>9} |")
  print(f"|{'-' * 34}|{'-' * 12}|{'-' * 11}|")
  print(f"| {'specjax (JAX jit)':<32} | {tok / jx['step_s']:>10.0f} | {jx['step_s'] * 1e3:>9.1f} |")
  name = f"transformers + torch AdamW ({pt['threads']}t)"
  print(f"| {name:<32} | {tok / pt['step_s']:>10.0f} | {pt['step_s'] * 1e3:>9.1f} |")
  print(f"ratio specjax / torch: {pt['step_s'] / jx['step_s']:.2f}x   specjax compile time: {jx['compile_s']:.1f} s")


if __name__ == "__main__":
  main()
