"""Optimizer, sharded train state and the jitted train/eval steps (docs/method.md §5).

The state is a plain pytree ``{"step", "params", "opt_state"}`` (params as a
pure dict of the NNX model's state), sharded by the logical-axis rules; the
train step is ``jax.jit`` with explicit in/out shardings and donates the state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from proxyjax import parallel
from proxyjax.model import transformer
from proxyjax.train import loss as loss_lib


def make_optimizer(config: ml_collections.ConfigDict):
  """AdamW + global-norm clipping + linear warm-up then cosine to ``min_lr_ratio``."""
  o = config.opt
  warmup = min(o.warmup_steps, max(config.num_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=o.peak_lr, warmup_steps=warmup,
      decay_steps=max(config.num_steps, warmup + 1), end_value=o.peak_lr * o.min_lr_ratio)
  tx = optax.chain(
      optax.clip_by_global_norm(o.clip),
      optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay))
  return tx, schedule


@dataclasses.dataclass
class Setup:
  """Everything compiled for one (config, mesh)."""
  model_cfg: transformer.ModelConfig
  graphdef: Any
  mesh: Mesh
  rules: dict
  tx: optax.GradientTransformation
  schedule: Callable
  state_shardings: Any
  abstract_state: Any
  init_fn: Callable
  train_step: Callable
  eval_step: Callable


def state_shardings_for(abstract_state, logical, tx, mesh: Mesh, rules: dict):
  """NamedShardings of the train state: params by their logical axes, the optimizer's
  per-parameter statistics like their parameters, everything else replicated."""
  params_abs = abstract_state["params"]
  param_sh = jax.tree.map(
      lambda spec, x: NamedSharding(mesh, parallel.logical_to_spec(tuple(spec), rules, x.shape,
                                                                   mesh)),
      logical, params_abs, is_leaf=lambda x: isinstance(x, P))
  replicated = NamedSharding(mesh, P())
  opt_sh = optax.tree_utils.tree_map_params(
      tx, lambda _, sh: sh, abstract_state["opt_state"], param_sh,
      transform_non_params=lambda _: replicated)
  return {"step": replicated, "params": param_sh, "opt_state": opt_sh}


def build(config: ml_collections.ConfigDict, model_cfg: transformer.ModelConfig,
          mesh: Mesh) -> Setup:
  rules = parallel.rules_for(config.mesh.rules)
  graphdef, abs_model_state = transformer.abstract_model(model_cfg)
  logical = transformer.logical_axes(abs_model_state)
  tx, schedule = make_optimizer(config)
  seed = int(config.seed)

  def init():
    params = transformer.init_params(model_cfg, seed)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

  abstract_state = jax.eval_shape(init)
  shardings = state_shardings_for(abstract_state, logical, tx, mesh, rules)
  mask_special = bool(config.model.mask_special_targets)

  def loss_fn(params, batch):
    model = nnx.merge(graphdef, params)
    return loss_lib.compute_loss(model, batch, mask_special_targets=mask_special)

  def train_step(state, batch):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads), lr=schedule(state["step"]),
                   param_norm=optax.tree.norm(params))
    del loss
    return {"step": state["step"] + 1, "params": params, "opt_state": opt_state}, metrics

  def eval_step(params, batch):
    return loss_fn(params, batch)[1]

  replicated = NamedSharding(mesh, P())
  batch_sh = parallel.batch_sharding(mesh)
  jit_init = jax.jit(init, out_shardings=shardings)
  jit_train = jax.jit(train_step, in_shardings=(shardings, batch_sh),
                      out_shardings=(shardings, replicated), donate_argnums=0)
  jit_eval = jax.jit(eval_step, in_shardings=(shardings["params"], batch_sh),
                     out_shardings=replicated)

  def in_context(fn):
    def wrapped(*args):
      with parallel.sharding_context(mesh, rules):
        return fn(*args)
    return wrapped

  return Setup(model_cfg=model_cfg, graphdef=graphdef, mesh=mesh, rules=rules, tx=tx,
               schedule=schedule, state_shardings=shardings, abstract_state=abstract_state,
               init_fn=in_context(jit_init), train_step=in_context(jit_train),
               eval_step=in_context(jit_eval))
