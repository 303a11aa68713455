"""Llama-style decoder over the shared vocabulary (docs/method.md §5), in Flax NNX.

Pre-RMSNorm blocks (weight applied as 1 + w), RoPE (theta 1e5) at the packed
(reset) positions, SwiGLU MLP, no biases, untied embedding and heads, optional
GQA and local window, ``num_pred_heads`` = H heads (head h predicts t+1+h) and
``num_raw_pred_heads`` = R look-ahead 320-way raw heads (raw head j predicts
t+1+H+j, the authors' ``raw_multibyte_lm_head``; see ``proxyjax.train.loss``).
Parameters are fp32 (``param_dtype``) and cast to the compute dtype (bf16 by
default) where used; norms, RoPE, attention logits and softmax, and the head
logits accumulate in ``accum_dtype`` (fp32 by default; float64 with 64-bit types
enabled, as the neural compressor's tables use). The same block functions serve training (``Transformer``), KV-cache
decoding (``proxyjax.model.decode``) and the compressor's float64 forward
(``proxyjax.neural.byte_lm``). Block parameters are stacked
along a leading ``layers`` axis and applied with ``lax.scan`` (one compiled
block, fast compiles at depth) under ``jax.checkpoint``.

Every parameter carries ``logical_axes`` metadata and every large activation
is constrained by logical name (``proxyjax.parallel.constrain``); the mapping
to devices lives in one rules table in ``proxyjax.parallel``.
Tensor names carry their shapes: B batch, T length, D model, H heads,
K kv heads, E head dim, F ffn, V vocab, P prediction heads, L layers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from proxyjax import parallel
from proxyjax import vocab as vocab_lib
from proxyjax.data import packing
from proxyjax.model import attention as attention_lib

BLOCK_PARAMS = ("attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w_gate", "w_up", "w_down")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  num_ids: int  # ids actually used; logits of padded ids are masked out
  d_model: int = 256
  n_layers: int = 4
  n_heads: int = 4
  n_kv_heads: int = 4
  head_dim: int = 64
  d_ff: int = 1024
  rope_theta: float = 100_000.0
  norm_eps: float = 1e-6
  window: int | None = None
  num_pred_heads: int = 1
  num_raw_pred_heads: int = 0  # R look-ahead raw heads (320-way), raw head j predicts t+1+H+j
  dtype: Any = jnp.bfloat16
  param_dtype: Any = jnp.float32
  accum_dtype: Any = jnp.float32  # norms, RoPE, attention softmax, logits
  attention: str = "auto"
  remat: str = "full"
  scan_layers: bool = True
  logits_chunk: int = 1024
  init_std: float = 0.02
  embed_std: float = 1.0
  attention_interpret: bool = False  # Pallas interpret mode (CPU tests)

  @classmethod
  def from_config(cls, config, vocab: vocab_lib.Vocab) -> "ModelConfig":
    m = config.model
    num_pred, num_raw = packing.head_counts(m)  # resolves the deprecated raw_head
    return cls(
        vocab_size=vocab.size, num_ids=vocab.num_ids, d_model=m.d_model, n_layers=m.n_layers,
        n_heads=m.n_heads, n_kv_heads=m.n_kv_heads or m.n_heads, head_dim=m.head_dim,
        d_ff=m.d_ff, rope_theta=m.rope_theta, norm_eps=m.norm_eps, window=m.window or None,
        num_pred_heads=num_pred, num_raw_pred_heads=num_raw, dtype=jnp.dtype(m.dtype),
        param_dtype=jnp.dtype(m.param_dtype), attention=m.attention, remat=m.remat,
        scan_layers=m.scan_layers, logits_chunk=m.logits_chunk, init_std=m.init_std,
        embed_std=m.embed_std,
        accum_dtype=jnp.dtype(m.get("accum_dtype", "float32")))  # runs recorded before the field


def _param(rngs: nnx.Rngs, shape, axes, std, dtype) -> nnx.Param:
  """Truncated normal at +-3 std (zeros for std 0), tagged with logical axes."""
  if std == 0.0:
    value = jnp.zeros(shape, dtype)
  else:
    value = (std * jax.random.truncated_normal(rngs.params(), -3.0, 3.0, shape)).astype(dtype)
  return nnx.Param(value, logical_axes=tuple(axes))


class Blocks(nnx.Module):
  """All decoder blocks, parameters stacked on a leading ``layers`` axis."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    L, D, H, K, E, F = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads,
                        cfg.head_dim, cfg.d_ff)
    s, dt = cfg.init_std, cfg.param_dtype
    self.attn_norm = _param(rngs, (L, D), ("layers", "embed"), 0.0, dt)
    self.wq = _param(rngs, (L, D, H, E), ("layers", "embed", "heads", "kv"), s, dt)
    self.wk = _param(rngs, (L, D, K, E), ("layers", "embed", "heads", "kv"), s, dt)
    self.wv = _param(rngs, (L, D, K, E), ("layers", "embed", "heads", "kv"), s, dt)
    self.wo = _param(rngs, (L, H, E, D), ("layers", "heads", "kv", "embed"), s, dt)
    self.mlp_norm = _param(rngs, (L, D), ("layers", "embed"), 0.0, dt)
    self.w_gate = _param(rngs, (L, D, F), ("layers", "embed", "mlp"), s, dt)
    self.w_up = _param(rngs, (L, D, F), ("layers", "embed", "mlp"), s, dt)
    self.w_down = _param(rngs, (L, F, D), ("layers", "mlp", "embed"), s, dt)


class Transformer(nnx.Module):
  """inputs [B, T] -> final hidden states [B, T, D] (heads applied by the loss)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    V, D = cfg.vocab_size, cfg.d_model
    self.embed = _param(rngs, (V, D), ("vocab", "embed"), cfg.embed_std, cfg.param_dtype)
    self.blocks = Blocks(cfg, rngs=rngs)
    self.final_norm = _param(rngs, (D,), ("embed",), 0.0, cfg.param_dtype)
    self.lm_head = _param(rngs, (D, cfg.num_pred_heads * V), ("embed", "vocab"), cfg.init_std,
                          cfg.param_dtype)
    if cfg.num_raw_pred_heads:  # one (D, 320) head when R = 1: as checkpoints of raw_head
      self.raw_head = _param(rngs, (D, cfg.num_raw_pred_heads * vocab_lib.RAW_VOCAB_SIZE),
                             ("embed", None), cfg.init_std, cfg.param_dtype)

  def __call__(self, inputs_BxT, segment_ids_BxT, positions_BxT) -> jax.Array:
    cfg = self.cfg
    x_BxTxD = self.embed_tokens(inputs_BxT)
    x_BxTxD = parallel.constrain(x_BxTxD, ("batch", "length", "embed"))
    cos, sin = rope_tables(positions_BxT, cfg.head_dim, cfg.rope_theta, cfg.accum_dtype)
    stacked = self.stacked_blocks()

    def body(x, p):
      return block(cfg, p, x, segment_ids_BxT, positions_BxT, cos, sin), None

    if cfg.remat != "none":
      policy = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable if cfg.remat == "dots"
                else jax.checkpoint_policies.nothing_saveable)
      body = jax.checkpoint(body, policy=policy, prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      x_BxTxD, _ = jax.lax.scan(body, x_BxTxD, stacked)
    else:
      for i in range(cfg.n_layers):
        x_BxTxD, _ = body(x_BxTxD, {k: v[i] for k, v in stacked.items()})
    return self.final_hidden(x_BxTxD)

  def stacked_blocks(self) -> dict[str, jax.Array]:
    return {name: getattr(self.blocks, name)[...] for name in BLOCK_PARAMS}

  def embed_tokens(self, inputs_BxT: jax.Array) -> jax.Array:
    return jnp.take(self.embed[...], inputs_BxT, axis=0).astype(self.cfg.dtype)

  def final_hidden(self, x_BxTxD: jax.Array) -> jax.Array:
    return rms_norm(x_BxTxD, self.final_norm[...], self.cfg.norm_eps, self.cfg.accum_dtype)

  def logits(self, h_BxTxD: jax.Array) -> jax.Array:
    """Main-head logits ``[B, T, P, V]`` in ``accum_dtype``, padded ids masked to -inf."""
    cfg = self.cfg
    w = self.lm_head[...].astype(cfg.dtype)
    logits = jnp.einsum("btd,dv->btv", h_BxTxD, w, preferred_element_type=cfg.accum_dtype)
    logits = logits.reshape(*logits.shape[:2], cfg.num_pred_heads, cfg.vocab_size)
    if cfg.num_ids < cfg.vocab_size:
      logits = jnp.where(jnp.arange(cfg.vocab_size) < cfg.num_ids, logits, -jnp.inf)
    return logits

  def head_logits(self, h_BxTxD: jax.Array, start: int, stop: int) -> jax.Array:
    """Logits ``[B, T, stop - start]`` of ids ``[start, stop)`` of head 0 only (the
    compressor's byte logits), in ``accum_dtype``."""
    w = self.lm_head[...][:, start:stop].astype(self.cfg.dtype)
    return jnp.einsum("btd,dv->btv", h_BxTxD, w, preferred_element_type=self.cfg.accum_dtype)

  def raw_logits(self, h_BxTxD: jax.Array) -> jax.Array:
    """Raw-head logits ``[B, T, R, 320]`` in ``accum_dtype`` (raw head j: ids at t+1+H+j)."""
    cfg = self.cfg
    w = self.raw_head[...].astype(cfg.dtype)
    logits = jnp.einsum("btd,dv->btv", h_BxTxD, w, preferred_element_type=cfg.accum_dtype)
    return logits.reshape(*logits.shape[:2], cfg.num_raw_pred_heads, vocab_lib.RAW_VOCAB_SIZE)


def rms_norm(x, w, eps, accum_dtype=jnp.float32):
  xf = x.astype(accum_dtype)
  xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
  return (xf * (1.0 + w.astype(accum_dtype))).astype(x.dtype)


def rope_tables(positions_BxT, head_dim, theta, accum_dtype=jnp.float32):
  """cos/sin ``[B, T, E/2]`` gathered at the packed positions.

  Host positions (a numpy array, e.g. the compressor's fixed rows) give host
  tables (numpy cos/sin, constants of the compiled program); traced positions
  give traced tables.
  """
  dtype = np.dtype(accum_dtype)
  inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=dtype) / head_dim))
  if isinstance(positions_BxT, np.ndarray):
    angles = positions_BxT.astype(dtype)[..., None] * inv
    return np.cos(angles), np.sin(angles)
  angles = positions_BxT.astype(dtype)[..., None] * inv
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_BxTxNxE, cos, sin):
  """Rotate-half RoPE (non-interleaved), computed in the tables' dtype (``accum_dtype``)."""
  x = x_BxTxNxE.astype(cos.dtype)
  x1, x2 = jnp.split(x, 2, axis=-1)
  c, s = cos[:, :, None, :], sin[:, :, None, :]
  return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x_BxTxNxE.dtype)


def qkv(cfg: ModelConfig, p: dict[str, jax.Array], x_BxTxD, cos, sin):
  """Pre-norm and the rotated query/key/value projections of one block."""
  dt = cfg.dtype
  h = rms_norm(x_BxTxD, p["attn_norm"], cfg.norm_eps, cfg.accum_dtype)
  q = jnp.einsum("btd,dhe->bthe", h, p["wq"].astype(dt))
  k = jnp.einsum("btd,dke->btke", h, p["wk"].astype(dt))
  v = jnp.einsum("btd,dke->btke", h, p["wv"].astype(dt))
  q = parallel.constrain(apply_rope(q, cos, sin), ("batch", "length", "heads", "kv"))
  k = parallel.constrain(apply_rope(k, cos, sin), ("batch", "length", "heads", "kv"))
  v = parallel.constrain(v, ("batch", "length", "heads", "kv"))
  return q, k, v


def finish(cfg: ModelConfig, p: dict[str, jax.Array], x_BxTxD, o_BxTxHxE):
  """Output projection, residual and the SwiGLU MLP of one block."""
  dt = cfg.dtype
  x_BxTxD = x_BxTxD + jnp.einsum("bthe,hed->btd", o_BxTxHxE, p["wo"].astype(dt))
  x_BxTxD = parallel.constrain(x_BxTxD, ("batch", "length", "embed"))
  h = rms_norm(x_BxTxD, p["mlp_norm"], cfg.norm_eps, cfg.accum_dtype)
  g = jnp.einsum("btd,df->btf", h, p["w_gate"].astype(dt))
  u = jnp.einsum("btd,df->btf", h, p["w_up"].astype(dt))
  a = parallel.constrain(jax.nn.silu(g) * u, ("batch", "length", "mlp"))
  x_BxTxD = x_BxTxD + jnp.einsum("btf,fd->btd", a, p["w_down"].astype(dt))
  return parallel.constrain(x_BxTxD, ("batch", "length", "embed"))


def block(cfg: ModelConfig, p: dict[str, jax.Array], x_BxTxD, segment_ids, positions, cos, sin):
  q, k, v = qkv(cfg, p, x_BxTxD, cos, sin)
  o = attention_lib.attention(q, k, v, segment_ids, positions, causal=True, window=cfg.window,
                              backend=cfg.attention, interpret=cfg.attention_interpret,
                              accum_dtype=cfg.accum_dtype)
  return finish(cfg, p, x_BxTxD, o)


# --- functional helpers ----------------------------------------------------------------


def abstract_model(cfg: ModelConfig):
  """(graphdef, abstract state) without allocating parameters."""
  return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))


def init_params(cfg: ModelConfig, seed: int) -> dict:
  """Fresh parameters as a pure dict (call under jit with out_shardings to shard)."""
  return nnx.to_pure_dict(nnx.state(Transformer(cfg, rngs=nnx.Rngs(seed))))


def logical_axes(abstract_state) -> dict:
  """Pure dict of logical PartitionSpecs, same structure as the parameters."""
  out: dict = {}
  for path, var in nnx.to_flat_state(abstract_state):
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = P(*var.get_metadata()["logical_axes"])
  return out


def count_params(params: dict, exclude_embeddings: bool = False) -> int:
  total = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = jax.tree_util.keystr(path)
    if exclude_embeddings and ("'embed'" in name and "blocks" not in name):
      continue
    total += int(np.prod(leaf.shape))
  return total
