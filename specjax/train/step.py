"""Pure train / eval steps, jitted once with shardings and donation, and sharded state init.

REUSE CONTRACT (distillation and any other training objective plug in here):

    loss_fn(params, batch, rng, frozen) -> (loss, metrics)

- `params`: the trained parameters (differentiated);
- `batch`: dict of [B, ...] arrays (a microbatch when gradients are accumulated);
- `rng`: this step's PRNG key (the same after a resume);
- `frozen`: any extra pytree (a teacher's or reference model's params, or None). It is an argument of the
  jitted step, never donated and never differentiated; shard it with `param_shardings` of its own
  config so it follows the same rules table.
- `metrics`: dict of scalars, averaged over microbatches.

`make_train_step(loss_fn, tx, schedule, mesh, state_shardings, frozen_shardings)` returns
`step(state, batch, frozen) -> (state, metrics)`; the state is donated. Metrics always include
`loss`, `grad_norm` and `lr` (the learning rate used by this update). `step.lower(state, batch, frozen)`
lowers it without running it (abstract arguments are enough), for XLA's memory analysis.

State init follows eval_shape -> logical specs -> shardings -> jit(init, out_shardings):
`state_shardings(model_cfg, tx, mesh)` then `create_state(...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from specjax.data.packing import segment_attention_mask
from specjax.losses.lm import cross_entropy
from specjax.models.llama import LlamaConfig
from specjax.models.registry import model_for
from specjax.parallel.sharding import LOGICAL_RULES, batch_sharding, logical_shardings, replicated
from specjax.train.state import TrainState

LossFn = Callable[[Any, dict, jax.Array, Any], tuple[jax.Array, dict]]


def make_lm_loss(model_cfg: LlamaConfig, z_loss: float = 0.0) -> LossFn:
  """Next-token cross-entropy on packed batches (segment-masked attention).

  With a reduced head (`model_cfg.head_ids`) targets are mapped to head indices and targets outside the
  draft vocabulary do not count (the draft can never propose them)."""
  model = model_for(model_cfg)
  inverse = None
  if model_cfg.head_ids is not None:
    inv = np.full((model_cfg.vocab_size,), -1, np.int32)
    inv[np.asarray(model_cfg.head_ids)] = np.arange(model_cfg.head_size, dtype=np.int32)
    inverse = jnp.asarray(inv)

  def loss_fn(params, batch, rng, frozen):
    del rng, frozen
    mask = segment_attention_mask(batch["segment_ids"])
    logits, _ = model.apply({"params": params}, batch["tokens"], batch["positions"], attn_mask=mask)
    targets, loss_mask = batch["targets"], batch["loss_mask"]
    if inverse is not None:
      targets = inverse[targets]
      loss_mask = loss_mask * (targets >= 0)
      targets = jnp.maximum(targets, 0)
    return cross_entropy(logits, targets, loss_mask, z_loss)

  return loss_fn


def _boxed_params(model_cfg: LlamaConfig, key: jax.Array):
  tokens = jnp.zeros((1, 1), jnp.int32)
  return model_for(model_cfg).init(key, tokens, tokens)["params"]


def param_specs(model_cfg: LlamaConfig) -> Any:
  """Logical PartitionSpecs of the model's parameters."""
  return nn.get_partition_spec(jax.eval_shape(lambda k: _boxed_params(model_cfg, k), jax.random.key(0)))


def param_shardings(model_cfg: LlamaConfig, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
  """NamedShardings for a model's params (use for frozen teacher params too)."""
  return logical_shardings(param_specs(model_cfg), mesh, rules)


def state_shardings(model_cfg: LlamaConfig, tx: optax.GradientTransformation, mesh: Mesh, rules=LOGICAL_RULES):
  """NamedShardings of the whole TrainState (optimizer moments follow their parameters)."""

  def boxed_state(key):
    params = _boxed_params(model_cfg, key)
    return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=jnp.zeros((2,), jnp.uint32)
    )

  specs = nn.get_partition_spec(jax.eval_shape(boxed_state, jax.random.key(0)))
  return logical_shardings(specs, mesh, rules)


def create_state(
  model_cfg: LlamaConfig,
  tx: optax.GradientTransformation,
  shardings: Any,
  seed: int,
  params: Any = None,
) -> TrainState:
  """A fresh TrainState, created directly in its shardings (random params unless `params` given)."""
  key = jax.random.key(seed)
  rng = jax.random.key_data(jax.random.fold_in(key, 1))

  if params is None:

    def init(key):
      p = nn.unbox(_boxed_params(model_cfg, jax.random.fold_in(key, 0)))
      return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p), rng=rng)

    return jax.jit(init, out_shardings=shardings)(key)

  def init_from(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p), rng=rng)

  params = jax.device_put(params, shardings.params)
  return jax.jit(init_from, in_shardings=(shardings.params,), out_shardings=shardings)(params)


def abstract_state(model_cfg: LlamaConfig, tx: optax.GradientTransformation, shardings: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a TrainState: the restore target of a checkpoint."""
  shapes = jax.eval_shape(lambda: create_state(model_cfg, tx, shardings, 0))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def _split_micro(batch: dict, n: int) -> dict:
  """[B, ...] -> [n, B/n, ...]; microbatch a takes rows a, a+n, ... so each stays spread over devices."""

  def split(x):
    x = x.reshape(x.shape[0] // n, n, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)

  return jax.tree.map(split, batch)


def make_train_step(
  loss_fn: LossFn,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  mesh: Mesh,
  shardings: Any,
  frozen_shardings: Any = None,
  grad_accum: int = 1,
  freeze: tuple[str, ...] = (),
  rules=LOGICAL_RULES,
) -> Callable[[TrainState, dict, Any], tuple[TrainState, dict]]:
  """The jitted `(state, batch, frozen) -> (state, metrics)`; see the module docstring. The top-level
  parameters named in `freeze` are read through `stop_gradient`: their gradient is zero and never computed
  (the optimizer, `make_optimizer` with the same `freeze`, leaves them as they are)."""

  def held(params, *args):
    params = {k: jax.lax.stop_gradient(v) if k in freeze else v for k, v in params.items()}
    return loss_fn(params, *args)

  grad_fn = jax.value_and_grad(held if freeze else loss_fn, has_aux=True)

  def step(state: TrainState, batch: dict, frozen: Any):
    rng = state.step_key()
    if grad_accum == 1:
      (loss, metrics), grads = grad_fn(state.params, batch, rng, frozen)
    else:
      micro = _split_micro(batch, grad_accum)

      def body(acc, xs):
        i, mb = xs
        (loss, metrics), g = grad_fn(state.params, mb, jax.random.fold_in(rng, i), frozen)
        acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), acc, g)
        return acc, (loss, metrics)

      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
      acc, (losses, metrics) = jax.lax.scan(body, zeros, (jnp.arange(grad_accum), micro))
      grads = jax.tree.map(lambda g, p: (g / grad_accum).astype(p.dtype), acc, state.params)
      loss = jnp.mean(losses)
      metrics = jax.tree.map(jnp.mean, metrics)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads), lr=schedule(state.step))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  jitted = jax.jit(
    step,
    in_shardings=(shardings, batch_sharding(mesh, rules), frozen_shardings),
    out_shardings=(shardings, replicated(mesh)),
    donate_argnums=(0,),
  )

  def run(state, batch, frozen=None):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(state, batch, frozen)

  def lower(state, batch, frozen=None):
    """The step lowered for these arguments (ShapeDtypeStructs will do): `.compile().memory_analysis()`
    is XLA's per-device memory plan of the step, with nothing allocated (`scripts/plan_memory.py`)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted.lower(state, batch, frozen)

  run.lower = lower
  return run


def make_eval_step(loss_fn: LossFn, mesh: Mesh, param_sh: Any, frozen_shardings: Any = None, rules=LOGICAL_RULES):
  """Jitted `(params, batch, frozen) -> metrics` (loss_fn's metrics plus `loss`); nothing donated."""

  def evaluate(params, batch, frozen):
    loss, metrics = loss_fn(params, batch, jax.random.key(0), frozen)
    return dict(metrics, loss=loss)

  jitted = jax.jit(
    evaluate, in_shardings=(param_sh, batch_sharding(mesh, rules), frozen_shardings), out_shardings=replicated(mesh)
  )

  def run(params, batch, frozen=None):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted(params, batch, frozen)

  return run
