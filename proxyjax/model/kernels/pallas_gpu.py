"""The ``pallas_gpu`` attention backend: block-sparse flash attention in Pallas.

Implements the mask semantics of :mod:`proxyjax.model.attention` (query ``i``
sees key ``j`` iff ``seg[i] == seg[j] != 0``, and ``j <= i`` if causal, and
``i - j < W`` with a local window ``W``) as a Pallas kernel lowered through
Triton (``jax.experimental.pallas.triton``):

* forward: grid ``(query block, batch, query head)`` (query blocks fastest, so
  programs running together share their K/V rows in L2); each program keeps its
  query block resident, loops (``lax.fori_loop``) over key blocks with an
  online softmax (running max and sum, fp32 accumulator), and writes the output
  and the log-sum-exp (fp32 ``[B, H, T]``, natural log) for the backward pass;
* backward (``jax.custom_vjp``): ``delta = sum(dO * O)`` in plain JAX, then a
  dK/dV kernel (grid ``(key block, batch, kv head)``, looping over the query
  heads of the GQA group and the query blocks that can see the key block, so
  dK/dV are summed over the group in-kernel) and a dQ kernel (same grid and key
  loop as the forward).

Block skipping: rows are packed documents, so most (query block, key block)
pairs are fully masked. Per (batch, query block) the key loop runs only over
``range(kv_lo, kv_hi)``, and per (batch, key block) the dK/dV query loop over
``range(q_lo, q_hi)``. These bounds are computed in plain JAX from
``segment_ids`` (see :func:`block_visibility`) and passed to the kernels as
small int32 inputs, so the cost scales with the sum of squared document lengths
rather than ``T**2``. Segment ids are also read in-kernel and the exact
element mask is applied inside every visited block.

Rows that see nothing (padding, segment 0) output 0 and get zero gradients.

fp32 inputs use Triton's default dot precision (TF32 tensor cores on GPU, so
expect ~1e-3 relative error there, not the ~1e-6 of interpret mode); bf16/fp16
inputs use bf16/fp16 matmuls with fp32 accumulation.

Triton-lowering constraints respected: every array loaded, stored or computed
in-kernel has power-of-two dimensions (block sizes and the head dimension are
powers of two, ``>= 16`` for ``tl.dot``; the head dimension is zero-padded to
one in JAX if needed); dynamic indexing is only ``pl.ds(start, static_size)``
slices and scalar indices into refs (lowered to pointer arithmetic); loop
bounds are dynamic scalars in ``lax.fori_loop`` (lowered to ``scf.for``); no
scratch memory or scalar prefetch (unsupported by the Triton backend).

jax versions: the Triton compiler parameters are looked up by name
(``jax.experimental.pallas.triton.CompilerParams`` on jax >= 0.5, including
0.10 and 0.11; ``pallas.gpu.TritonCompilerParams`` or the ``{"triton": ...}``
dict on older releases), so the same code lowers on each. jax 0.11 deprecates
the Pallas Triton backend (in favour of Mosaic GPU, now the default for
``pallas_call`` without compiler params) and warns once per lowering; that
DeprecationWarning is silenced here (this module opts into Triton explicitly).
:func:`triton_available` says whether the running jax still lowers Pallas to
Triton (the backend is importable and its deprecation not escalated to an
error); ``attention(backend="auto")`` uses it to fall back to cuDNN/XLA.
The backend is kept isolated in this module so it can be replaced without
touching the attention API.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

# jax >= 0.11 warns at every lowering that the Pallas Triton backend is
# deprecated; this module chooses Triton on purpose (see the module docstring).
TRITON_DEPRECATION = r"The Pallas Triton backend is deprecated"


def silence_triton_deprecation() -> None:
  """Ignores jax's "Pallas Triton backend is deprecated" DeprecationWarning (only it).

  Called at import; call again inside a ``warnings.catch_warnings()`` block (pytest
  resets the filters per test)."""
  warnings.filterwarnings("ignore", message=TRITON_DEPRECATION, category=DeprecationWarning)


silence_triton_deprecation()

_LOG2E = math.log2(math.e)
_LN2 = math.log(2.0)
# Finite "minus infinity": masked scores and the initial running max. Keeping
# it finite avoids ``-inf - -inf = nan`` in the online-softmax rescaling.
_NEG = -1e30
_MIN_BLOCK = 16  # tl.dot needs every matmul dimension >= 16.


@dataclasses.dataclass(frozen=True)
class _Config:
  """Static kernel parameters (hashable: a ``custom_vjp`` non-diff argument)."""
  causal: bool
  window: int | None
  sm_scale: float
  block_q: int
  block_k: int
  num_warps: int
  num_stages: int
  interpret: bool


# ----------------------------------------------------------------------------
# Block bounds (plain JAX).
# ----------------------------------------------------------------------------


def _document_extents(segment_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """First and last index of each token's segment id in its row.

  Works for any layout (not only contiguous documents): tokens are stably
  sorted by id, so within an id's run of the sorted order the first and last
  entries are the smallest and largest original indices.

  Args:
    segment_ids: ``[B, T]`` int.

  Returns:
    ``(first, last)``, both ``[B, T]`` int32.
  """
  _, t = segment_ids.shape
  idx = jnp.arange(t, dtype=jnp.int32)[None, :]
  order = jnp.argsort(segment_ids, axis=1, stable=True).astype(jnp.int32)
  sorted_ids = jnp.take_along_axis(segment_ids, order, axis=1)
  change = sorted_ids[:, 1:] != sorted_ids[:, :-1]
  edge = jnp.ones_like(change[:, :1])
  is_first = jnp.concatenate([edge, change], axis=1)
  is_last = jnp.concatenate([change, edge], axis=1)
  first_pos = lax.cummax(jnp.where(is_first, idx, 0), axis=1)
  last_pos = lax.cummin(jnp.where(is_last, idx, t - 1), axis=1, reverse=True)
  first_sorted = jnp.take_along_axis(order, first_pos, axis=1)
  last_sorted = jnp.take_along_axis(order, last_pos, axis=1)
  inverse = jnp.argsort(order, axis=1)
  first = jnp.take_along_axis(first_sorted, inverse, axis=1)
  last = jnp.take_along_axis(last_sorted, inverse, axis=1)
  return first, last


def _reduce_to_blocks(lo: jax.Array, hi: jax.Array, valid: jax.Array,
                      block: int, other_block: int) -> tuple[jax.Array, jax.Array]:
  """Per-token inclusive ``[lo, hi]`` token ranges -> per-block half-open block ranges.

  Args:
    lo, hi: ``[B, T]`` inclusive range (in tokens of the other axis) per token.
    valid: ``[B, T]`` tokens that take part (non-padding, non-empty range).
    block: block size along the token axis being reduced.
    other_block: block size of the axis the ranges index.

  Returns:
    ``(start, stop)`` ``[B, T // block]`` int32 in units of ``other_block``;
    ``start == stop == 0`` for blocks with nothing visible.
  """
  b, t = lo.shape
  valid = valid & (lo <= hi)
  lo = jnp.where(valid, lo, t).reshape(b, t // block, block).min(axis=-1)
  hi = jnp.where(valid, hi, -1).reshape(b, t // block, block).max(axis=-1)
  empty = hi < lo
  start = jnp.where(empty, 0, lo // other_block)
  stop = jnp.where(empty, 0, hi // other_block + 1)
  return start.astype(jnp.int32), stop.astype(jnp.int32)


def _token_ranges(segment_ids: jax.Array, causal: bool, window: int | None):
  """Inclusive visible ranges per query (keys) and per key (queries), in tokens."""
  _, t = segment_ids.shape
  pos = jnp.arange(t, dtype=jnp.int32)[None, :]
  first, last = _document_extents(segment_ids)
  # Keys visible to query i: same document, j <= i (causal), j > i - W (window).
  k_lo, k_hi = first, last
  # Queries that see key j: same document, i >= j (causal), i < j + W (window).
  q_lo, q_hi = first, last
  if causal:
    k_hi = jnp.minimum(k_hi, pos)
    q_lo = jnp.maximum(q_lo, pos)
  if window is not None:
    k_lo = jnp.maximum(k_lo, pos - window + 1)
    q_hi = jnp.minimum(q_hi, pos + window - 1)
  return (k_lo, k_hi), (q_lo, q_hi)


def block_visibility(segment_ids: jax.Array, block_q: int, block_k: int,
                     causal: bool = True,
                     window: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Key-block range each query block must visit (forward and dQ passes).

  For every (batch, query block) the key blocks ``range(kv_lo, kv_hi)``
  (half-open) contain every key visible to any query of the block: ``kv_lo`` is
  the block holding the earliest document start (raised to ``q - W + 1`` with a
  window) over the block's non-padding queries, ``kv_hi - 1`` the block holding
  the latest visible key (``<= q`` when causal). A block of only padding gets
  the empty range ``(0, 0)``. Correct for any segment layout; tight for packed
  rows (non-decreasing ids, trailing 0 padding).

  Args:
    segment_ids: ``[B, T]`` int, 0 = padding.
    block_q: query block size (divides ``T``).
    block_k: key block size (divides ``T``).
    causal: causal masking.
    window: local window ``W`` (``i - j < W``) or None.

  Returns:
    ``(kv_lo, kv_hi)``, int32 ``[B, T // block_q]``, in key blocks.
  """
  (k_lo, k_hi), _ = _token_ranges(segment_ids, causal, window)
  return _reduce_to_blocks(k_lo, k_hi, segment_ids != 0, block_q, block_k)


def query_block_visibility(segment_ids: jax.Array, block_q: int, block_k: int,
                           causal: bool = True,
                           window: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Query-block range ``range(q_lo, q_hi)`` each key block must visit (dK/dV pass).

  ``q_lo`` is the key block start (causal) or the document start of its
  earliest key; ``q_hi - 1`` the block holding the end of the last document
  touching the key block (no later than ``key + W - 1`` with a window).

  Returns:
    ``(q_lo, q_hi)``, int32 ``[B, T // block_k]``, in query blocks.
  """
  _, (q_lo, q_hi) = _token_ranges(segment_ids, causal, window)
  return _reduce_to_blocks(q_lo, q_hi, segment_ids != 0, block_k, block_q)


def visible_fraction(segment_ids: jax.Array, block_q: int, block_k: int,
                     causal: bool = True, window: int | None = None) -> jax.Array:
  """Fraction of (query block, key block) pairs the forward pass computes.

  Dense attention computes all ``(T / block_q) * (T / block_k)`` pairs per row;
  plain causal flash attention about half of them.

  Returns:
    A float32 scalar in ``[0, 1]``.
  """
  kv_lo, kv_hi = block_visibility(segment_ids, block_q, block_k, causal, window)
  b, num_q = kv_lo.shape
  num_k = segment_ids.shape[1] // block_k
  return jnp.sum(kv_hi - kv_lo).astype(jnp.float32) / (b * num_q * num_k)


# ----------------------------------------------------------------------------
# Kernels.
# ----------------------------------------------------------------------------


def _dot(a: jax.Array, b: jax.Array, contract_a: int, contract_b: int) -> jax.Array:
  """2-D matmul contracting ``a``'s dim ``contract_a`` with ``b``'s, fp32 result."""
  return lax.dot_general(a, b, (((contract_a,), (contract_b,)), ((), ())),
                         preferred_element_type=jnp.float32)


def _element_mask(q_seg, k_seg, q_pos, k_pos, cfg: _Config) -> jax.Array:
  """``[block_q, block_k]`` bool: the exact mask of the attention API."""
  q_seg = q_seg[:, None]
  mask = (q_seg == k_seg[None, :]) & (q_seg != 0)
  if cfg.causal:
    mask &= k_pos[None, :] <= q_pos[:, None]
  if cfg.window is not None:
    mask &= q_pos[:, None] - k_pos[None, :] < cfg.window
  return mask


def _fwd_kernel(kv_lo_ref, kv_hi_ref, seg_ref, q_ref, k_ref, v_ref,  # inputs
                o_ref, lse_ref,  # outputs
                *, cfg: _Config):
  """One (batch, head, query block): online softmax over visible key blocks."""
  bq = cfg.block_q
  q_start = pl.multiple_of(pl.program_id(0) * bq, bq)
  q = q_ref[...]  # [bq, D]
  q_seg = seg_ref[pl.ds(q_start, bq)]
  q_pos = q_start + jnp.arange(bq, dtype=jnp.int32)
  scale = cfg.sm_scale * _LOG2E  # work in base 2: exp(x) = exp2(x * log2(e))

  def body(j, carry):
    acc, m, l = carry
    k, v, mask = _key_block(j, k_ref, v_ref, seg_ref, q_seg, q_pos, cfg)
    s = jnp.where(mask, _dot(q, k, 1, 1) * scale, _NEG)  # [bq, bk]
    m_new = jnp.maximum(m, jnp.max(s, axis=1))
    p = jnp.where(mask, jnp.exp2(s - m_new[:, None]), 0.0)
    alpha = jnp.exp2(m - m_new)
    l = alpha * l + jnp.sum(p, axis=1)
    acc = acc * alpha[:, None] + _dot(p.astype(v.dtype), v, 1, 0)
    return acc, m_new, l

  acc = jnp.zeros((bq, q.shape[-1]), jnp.float32)
  m = jnp.full((bq,), _NEG, jnp.float32)
  l = jnp.zeros((bq,), jnp.float32)
  acc, m, l = lax.fori_loop(kv_lo_ref[()], kv_hi_ref[()], body, (acc, m, l))
  seen = l > 0.0
  o_ref[...] = (acc / jnp.where(seen, l, 1.0)[:, None]).astype(o_ref.dtype)
  # Natural-log LSE; 0 for rows that see nothing (their p is masked to 0).
  lse_ref[...] = jnp.where(seen, (m + jnp.log2(jnp.where(seen, l, 1.0))) * _LN2, 0.0)


def _key_block(j, k_ref, v_ref, seg_ref, q_seg, q_pos, cfg: "_Config"):
  """Key block ``j``: its keys, values and the element mask against a query block."""
  bk = cfg.block_k
  k_start = pl.multiple_of(j * bk, bk)
  k = k_ref[pl.ds(k_start, bk), :]
  v = v_ref[pl.ds(k_start, bk), :]
  k_seg = seg_ref[pl.ds(k_start, bk)]
  k_pos = k_start + jnp.arange(bk, dtype=jnp.int32)
  return k, v, _element_mask(q_seg, k_seg, q_pos, k_pos, cfg)


def _dq_kernel(kv_lo_ref, kv_hi_ref, seg_ref, q_ref, k_ref, v_ref, do_ref,
               lse_ref, delta_ref,  # inputs
               dq_ref,  # output
               *, cfg: _Config):
  """One (batch, head, query block): dQ over the same key blocks as forward."""
  bq = cfg.block_q
  q_start = pl.multiple_of(pl.program_id(0) * bq, bq)
  q = q_ref[...]
  do = do_ref[...]
  lse2 = lse_ref[...] * _LOG2E
  delta = delta_ref[...]
  q_seg = seg_ref[pl.ds(q_start, bq)]
  q_pos = q_start + jnp.arange(bq, dtype=jnp.int32)
  scale = cfg.sm_scale * _LOG2E

  def body(j, dq):
    k, v, mask = _key_block(j, k_ref, v_ref, seg_ref, q_seg, q_pos, cfg)
    s = _dot(q, k, 1, 1) * scale
    p = jnp.where(mask, jnp.exp2(s - lse2[:, None]), 0.0)
    dp = _dot(do, v, 1, 1)
    ds = p * (dp - delta[:, None])
    return dq + _dot(ds.astype(k.dtype), k, 1, 0)

  dq = jnp.zeros((bq, q.shape[-1]), jnp.float32)
  dq = lax.fori_loop(kv_lo_ref[()], kv_hi_ref[()], body, dq)
  dq_ref[...] = (dq * cfg.sm_scale).astype(dq_ref.dtype)


def _dkv_kernel(q_lo_ref, q_hi_ref, seg_ref, q_ref, k_ref, v_ref, do_ref,
                lse_ref, delta_ref,  # inputs
                dk_ref, dv_ref,  # outputs
                *, cfg: _Config, group: int):
  """One (batch, kv head, key block): dK, dV summed over the GQA group.

  ``q_ref``/``do_ref`` hold the ``group`` query heads of this kv head
  (``[T, group, D]``), ``lse_ref``/``delta_ref`` their ``[group, T]`` rows.
  """
  bq, bk = cfg.block_q, cfg.block_k
  k_start = pl.multiple_of(pl.program_id(0) * bk, bk)
  k = k_ref[...]  # [bk, D]
  v = v_ref[...]
  k_seg = seg_ref[pl.ds(k_start, bk)]
  k_pos = k_start + jnp.arange(bk, dtype=jnp.int32)
  q_lo = q_lo_ref[()]
  q_hi = q_hi_ref[()]
  scale = cfg.sm_scale * _LOG2E

  def head_body(g, carry):
    def q_body(i, carry):
      dk, dv = carry
      q_start = pl.multiple_of(i * bq, bq)
      rows = pl.ds(q_start, bq)
      q = q_ref[rows, g, :]
      do = do_ref[rows, g, :]
      lse2 = lse_ref[g, rows] * _LOG2E
      delta = delta_ref[g, rows]
      q_seg = seg_ref[rows]
      q_pos = q_start + jnp.arange(bq, dtype=jnp.int32)
      mask = _element_mask(q_seg, k_seg, q_pos, k_pos, cfg)
      s = _dot(q, k, 1, 1) * scale  # [bq, bk]
      p = jnp.where(mask, jnp.exp2(s - lse2[:, None]), 0.0)
      dv = dv + _dot(p.astype(do.dtype), do, 0, 0)
      dp = _dot(do, v, 1, 1)
      ds = p * (dp - delta[:, None])
      dk = dk + _dot(ds.astype(q.dtype), q, 0, 0)
      return dk, dv

    return lax.fori_loop(q_lo, q_hi, q_body, carry)

  zeros = jnp.zeros((bk, k.shape[-1]), jnp.float32)
  dk, dv = lax.fori_loop(0, group, head_body, (zeros, zeros))
  dk_ref[...] = (dk * cfg.sm_scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


# ----------------------------------------------------------------------------
# pallas_call wrappers and the custom VJP.
# ----------------------------------------------------------------------------


def _triton_params_class():
  """The Triton ``CompilerParams`` class of the running jax, or None.

  ``jax.experimental.pallas.triton.CompilerParams`` (jax 0.5 .. 0.11+), else
  ``jax.experimental.pallas.gpu.TritonCompilerParams`` or
  ``pl.TritonCompilerParams`` (older releases).
  """
  try:
    from jax.experimental.pallas import triton as pltriton  # pylint: disable=g-import-not-at-top
    cls = getattr(pltriton, "CompilerParams", None)
    if cls is not None:
      return cls
  except ImportError:
    pass
  try:
    from jax.experimental.pallas import gpu as plgpu_old  # pylint: disable=g-import-not-at-top
    cls = getattr(plgpu_old, "TritonCompilerParams", None)
    if cls is not None:
      return cls
  except ImportError:
    pass
  return getattr(pl, "TritonCompilerParams", None)


def triton_available() -> tuple[bool, str]:
  """``(ok, why)``: can this jax lower Pallas kernels to Triton?

  False when the Triton backend module is gone or its deprecation
  (``jax-pallas-triton``) has been escalated to an error.
  """
  if _triton_params_class() is None:
    return False, f"jax {jax.__version__} has no Pallas Triton compiler params"
  try:
    from jax._src import deprecations  # pylint: disable=g-import-not-at-top
    if deprecations.is_accelerated("jax-pallas-triton"):
      return False, f"jax {jax.__version__} turned the Pallas Triton deprecation into an error"
  except (ImportError, AttributeError, ValueError):  # not registered: not deprecated yet
    pass
  return True, f"Pallas Triton backend of jax {jax.__version__}"


def _compiler_params(cfg: _Config):
  cls = _triton_params_class()
  if cls is None:  # very old jax: per-backend dicts
    return {"triton": {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}}
  return cls(num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def _forward(q, k, v, segment_ids, kv_lo, kv_hi, cfg: _Config):
  """Runs the forward kernel; returns ``(out [B,T,H,D], lse [B,H,T] fp32)``."""
  b, t, h, d = q.shape
  group = h // k.shape[2]
  bq = cfg.block_q
  scalar = pl.BlockSpec((None, None), lambda qi, bi, hi: (bi, qi))
  q_block = pl.BlockSpec((None, bq, None, d), lambda qi, bi, hi: (bi, qi, hi, 0))
  kv_row = pl.BlockSpec((None, t, None, d),
                        lambda qi, bi, hi: (bi, 0, lax.div(hi, group), 0))
  seg_row = pl.BlockSpec((None, t), lambda qi, bi, hi: (bi, 0))
  return pl.pallas_call(
      functools.partial(_fwd_kernel, cfg=cfg),
      grid=(t // bq, b, h),
      in_specs=[scalar, scalar, seg_row, q_block, kv_row, kv_row],
      out_specs=[q_block,
                 pl.BlockSpec((None, None, bq), lambda qi, bi, hi: (bi, hi, qi))],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((b, h, t), jnp.float32)],
      compiler_params=_compiler_params(cfg),
      interpret=cfg.interpret,
      name="proxyjax_flash_fwd",
  )(kv_lo, kv_hi, segment_ids, q, k, v)


def _backward_dq(q, k, v, segment_ids, kv_lo, kv_hi, do, lse, delta, cfg: _Config):
  b, t, h, d = q.shape
  group = h // k.shape[2]
  bq = cfg.block_q
  scalar = pl.BlockSpec((None, None), lambda qi, bi, hi: (bi, qi))
  q_block = pl.BlockSpec((None, bq, None, d), lambda qi, bi, hi: (bi, qi, hi, 0))
  row_block = pl.BlockSpec((None, None, bq), lambda qi, bi, hi: (bi, hi, qi))
  kv_row = pl.BlockSpec((None, t, None, d),
                        lambda qi, bi, hi: (bi, 0, lax.div(hi, group), 0))
  seg_row = pl.BlockSpec((None, t), lambda qi, bi, hi: (bi, 0))
  return pl.pallas_call(
      functools.partial(_dq_kernel, cfg=cfg),
      grid=(t // bq, b, h),
      in_specs=[scalar, scalar, seg_row, q_block, kv_row, kv_row, q_block,
                row_block, row_block],
      out_specs=q_block,
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=_compiler_params(cfg),
      interpret=cfg.interpret,
      name="proxyjax_flash_dq",
  )(kv_lo, kv_hi, segment_ids, q, k, v, do, lse, delta)


def _backward_dkv(q, k, v, segment_ids, q_lo, q_hi, do, lse, delta, cfg: _Config):
  b, t, h, d = q.shape
  num_kv = k.shape[2]
  group = h // num_kv
  bk = cfg.block_k
  scalar = pl.BlockSpec((None, None), lambda ki, bi, gi: (bi, ki))
  kv_block = pl.BlockSpec((None, bk, None, d), lambda ki, bi, gi: (bi, ki, gi, 0))
  q_rows = pl.BlockSpec((None, t, group, d), lambda ki, bi, gi: (bi, 0, gi, 0))
  stat_rows = pl.BlockSpec((None, group, t), lambda ki, bi, gi: (bi, gi, 0))
  seg_row = pl.BlockSpec((None, t), lambda ki, bi, gi: (bi, 0))
  return pl.pallas_call(
      functools.partial(_dkv_kernel, cfg=cfg, group=group),
      grid=(t // bk, b, num_kv),
      in_specs=[scalar, scalar, seg_row, q_rows, kv_block, kv_block, q_rows,
                stat_rows, stat_rows],
      out_specs=[kv_block, kv_block],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype),
                 jax.ShapeDtypeStruct(v.shape, v.dtype)],
      compiler_params=_compiler_params(cfg),
      interpret=cfg.interpret,
      name="proxyjax_flash_dkv",
  )(q_lo, q_hi, segment_ids, q, k, v, do, lse, delta)


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def _flash(q, k, v, segment_ids, kv_lo, kv_hi, q_lo, q_hi, cfg: _Config):
  out, _ = _forward(q, k, v, segment_ids, kv_lo, kv_hi, cfg)
  return out


def _flash_fwd(q, k, v, segment_ids, kv_lo, kv_hi, q_lo, q_hi, cfg: _Config):
  out, lse = _forward(q, k, v, segment_ids, kv_lo, kv_hi, cfg)
  return out, (q, k, v, segment_ids, kv_lo, kv_hi, q_lo, q_hi, out, lse)


def _flash_bwd(cfg: _Config, res, do):
  q, k, v, segment_ids, kv_lo, kv_hi, q_lo, q_hi, out, lse = res
  # [B, H, T] fp32: rowwise dO . O (the softmax-Jacobian correction term).
  delta = jnp.einsum("bthd,bthd->bht", out.astype(jnp.float32),
                     do.astype(jnp.float32))
  do = do.astype(q.dtype)
  dq = _backward_dq(q, k, v, segment_ids, kv_lo, kv_hi, do, lse, delta, cfg)
  dk, dv = _backward_dkv(q, k, v, segment_ids, q_lo, q_hi, do, lse, delta, cfg)
  return dq, dk, dv, None, None, None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _is_power_of_two(n: int) -> bool:
  return n > 0 and (n & (n - 1)) == 0


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                    segment_ids: jax.Array, *, causal: bool = True,
                    window: int | None = None, sm_scale: float | None = None,
                    block_q: int = 64, block_k: int = 64, interpret: bool = False,
                    num_warps: int | None = None, num_stages: int = 2) -> jax.Array:
  """Segment-masked (causal / local) flash attention with block skipping.

  Args:
    q: ``[B, T, H, D]`` queries.
    k: ``[B, T, KV, D]`` keys, ``H % KV == 0``; query head ``h`` uses kv head
      ``h // (H // KV)``.
    v: ``[B, T, KV, D]`` values.
    segment_ids: ``[B, T]`` int, 0 = padding. Packed rows (non-decreasing ids,
      trailing padding) get the tightest block skipping; any layout is correct.
    causal: query ``i`` sees only keys ``j <= i``.
    window: local window ``W``: query ``i`` sees only keys with ``i - j < W``.
    sm_scale: softmax scale, default ``D ** -0.5``.
    block_q: query block size; a power of two ``>= 16`` dividing ``T``
      (clipped to ``T`` when ``T`` is smaller).
    block_k: key block size, same constraints.
    interpret: run the kernels in Pallas interpret mode (CPU tests).
    num_warps: Triton warps per program (default 4 for ``D <= 64``, else 8).
    num_stages: Triton software-pipelining stages.

  Returns:
    ``[B, T, H, D]`` in ``q.dtype``; rows that see nothing are 0.

  Raises:
    ValueError: on inconsistent shapes or unsupported block sizes.
  """
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"expected 4-D q, k, v; got {q.shape}, {k.shape}, {v.shape}")
  b, t, h, d = q.shape
  if k.shape != v.shape or k.shape[:2] != (b, t) or k.shape[3] != d:
    raise ValueError(f"k {k.shape} and v {v.shape} must be [B, T, KV, D] matching "
                     f"q {q.shape}")
  num_kv = k.shape[2]
  if h % num_kv:
    raise ValueError(f"query heads {h} not a multiple of kv heads {num_kv}")
  if segment_ids.shape != (b, t):
    raise ValueError(f"segment_ids {segment_ids.shape} must be [B, T] = {(b, t)}")
  block_q, block_k = min(block_q, t), min(block_k, t)
  for name, blk in (("block_q", block_q), ("block_k", block_k)):
    if not _is_power_of_two(blk) or blk < _MIN_BLOCK:
      raise ValueError(f"{name}={blk} must be a power of two >= {_MIN_BLOCK} "
                       f"(Triton block shapes; T={t})")
    if t % blk:
      raise ValueError(f"sequence length T={t} must be a multiple of {name}={blk}")
  sm_scale = d ** -0.5 if sm_scale is None else float(sm_scale)
  if window is not None:
    window = int(window)

  # Triton needs a power-of-two head dim >= 16: zero-pad (q.k and the padded
  # output columns are unchanged / zero) and slice back afterwards.
  d_pad = max(_MIN_BLOCK, pl.next_power_of_2(d))
  if d_pad != d:
    pad = ((0, 0), (0, 0), (0, 0), (0, d_pad - d))
    q, k, v = jnp.pad(q, pad), jnp.pad(k, pad), jnp.pad(v, pad)

  segment_ids = segment_ids.astype(jnp.int32)
  kv_lo, kv_hi = block_visibility(segment_ids, block_q, block_k, causal, window)
  q_lo, q_hi = query_block_visibility(segment_ids, block_q, block_k, causal, window)
  cfg = _Config(causal=bool(causal), window=window, sm_scale=sm_scale,
                block_q=block_q, block_k=block_k,
                num_warps=(4 if d_pad <= 64 else 8) if num_warps is None else num_warps,
                num_stages=num_stages, interpret=bool(interpret))
  out = _flash(q, k, v, segment_ids, kv_lo, kv_hi, q_lo, q_hi, cfg)
  return out[..., :d] if d_pad != d else out
