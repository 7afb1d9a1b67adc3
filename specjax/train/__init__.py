"""Training engine: TrainState (state), AdamW + schedule (optim), pure sharded steps with a pluggable
loss (step), the resumable host loop (loop), drafter pretraining (pretrain) and embedding init from a
target (embed_init). See `step` and `loop` for the reuse contract that distillation builds on."""
