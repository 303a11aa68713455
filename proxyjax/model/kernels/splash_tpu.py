"""The ``pallas_tpu`` attention backend: splash attention with segment ids.

Implements the mask semantics of :mod:`proxyjax.model.attention` on top of
``jax.experimental.pallas.ops.tpu.splash_attention``:

* same document: ``SegmentIds(q=segment_ids[b], kv=segment_ids[b])``;
* causal: ``CausalMask``; local window ``W`` (``i - j < W``): ``LocalMask`` with
  ``window_size=(W - 1, 0)`` (or ``(W - 1, None)`` when not causal); neither:
  ``FullMask``;
* padding (segment 0): splash treats 0 as an ordinary id, so padding queries
  attend to padding keys. Real queries never see padding keys (different id),
  and the padding rows of the output are zeroed with ``jnp.where``, which also
  zeroes their upstream cotangent, so they get zero output and zero gradients.

The kernel works per example in ``[H, T, D]`` layout, so inputs are transposed
and the kernel is ``jax.vmap``-ed over the batch. GQA is native: the splash
MHA kernel maps query head ``h`` to kv head ``h // (H // KV)``, the same
grouping as ``jnp.repeat(k, H // KV, axis=2)`` in the reference. Splash has no
softmax-scale argument, so ``q`` is pre-scaled. Sequences whose length is not a
multiple of the block size are padded at the end with segment 0 (padding) and
sliced back.

With a ``mesh``, the per-device call runs inside ``jax.shard_map`` with the
batch split over ``batch_axes`` and heads over ``head_axis``; every device runs
the kernel on its local ``[B / dp, T, H / tp, D]`` shard.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec as P

BlockSizes = splash.BlockSizes

# Splash needs kv blocks (and the q blocks of the segment-id layout) to be a
# multiple of the TPU lane width.
_LANES = 128
_PREFERRED_BLOCKS = (512, 256, 128)


def default_block_sizes(seq_len: int) -> BlockSizes:
  """Forward and backward block sizes for a (lane-padded) sequence length.

  The largest of 512, 256, 128 that divides ``seq_len`` for every block, the
  separate (non-fused) dq and dkv backward kernels, as ``BlockSizes.get_default``.
  """
  if seq_len % _LANES:
    raise ValueError(f"seq_len {seq_len} is not a multiple of {_LANES}")
  blk = next(b for b in _PREFERRED_BLOCKS if seq_len % b == 0)
  return BlockSizes(
      block_q=blk, block_kv=blk, block_kv_compute=blk,
      block_q_dkv=blk, block_kv_dkv=blk, block_kv_dkv_compute=blk,
      block_q_dq=blk, block_kv_dq=blk,
      use_fused_bwd_kernel=False)


def _padded_length(seq_len: int, block_sizes: BlockSizes | None) -> int:
  """Smallest length >= seq_len that every block size divides."""
  if block_sizes is None:
    multiple = _LANES
  else:
    sizes = [block_sizes.block_q, block_sizes.block_kv, block_sizes.block_kv_compute,
             block_sizes.block_q_dkv, block_sizes.block_kv_dkv,
             block_sizes.block_kv_dkv_compute, block_sizes.block_q_dq,
             block_sizes.block_kv_dq]
    multiple = math.lcm(*[s for s in sizes if s is not None])
  return -(-seq_len // multiple) * multiple


def _head_mask(seq_len: int, causal: bool, window: int | None) -> splash.Mask:
  shape = (seq_len, seq_len)
  if window is not None and window >= seq_len and causal:
    window = None  # The window never bites: plain causal, same mask.
  if window is None:
    return splash.CausalMask(shape) if causal else splash.FullMask(shape)
  # Key j visible from query i iff i - (W - 1) <= j (and j <= i if causal).
  return splash.LocalMask(shape, window_size=(window - 1, 0 if causal else None), offset=0)


@functools.lru_cache(maxsize=64)
def _make_kernel(seq_len: int, num_heads: int, causal: bool, window: int | None,
                 block_sizes: BlockSizes, interpret: bool):
  """A splash kernel for one example ``[H, T, D]``; masks are static numpy.

  Built eagerly even when first called under a trace (jit, shard_map, grad):
  the kernel holds its block-sparsity tables as concrete arrays, and a cached
  kernel holding tracers would leak them into later calls.
  """
  head_mask = _head_mask(seq_len, causal, window)
  mask = splash.MultiHeadMask(tuple(head_mask for _ in range(num_heads)))
  with jax.ensure_compile_time_eval():
    return splash.make_splash_mha_single_device(
        mask, block_sizes=block_sizes, interpret=interpret)


def _local_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *,
                     causal: bool, window: int | None, block_sizes: BlockSizes,
                     interpret: bool) -> jax.Array:
  """Splash on local arrays: ``q [B, T, H, D]``, ``k, v [B, T, KV, D]``."""
  _, t, h, _ = q.shape
  kernel = _make_kernel(t, h, causal, window, block_sizes, interpret)
  q_, k_, v_ = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))  # [B, heads, T, D]
  seg = splash.SegmentIds(q=segment_ids, kv=segment_ids)
  out = jax.vmap(kernel)(q_, k_, v_, seg)
  return jnp.swapaxes(out, 1, 2)


def _axis_size(mesh: jax.sharding.Mesh, axes: str | Sequence[str] | None) -> int:
  if axes is None:
    return 1
  if isinstance(axes, str):
    axes = (axes,)
  return math.prod(mesh.shape[a] for a in axes)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array, *,
                     causal: bool = True, window: int | None = None,
                     sm_scale: float | None = None,
                     block_sizes: BlockSizes | None = None, interpret: bool = False,
                     mesh: jax.sharding.Mesh | None = None,
                     batch_axes: str | Sequence[str] | None = None,
                     head_axis: str | None = None) -> jax.Array:
  """Segment-masked (causal / local) attention with splash attention kernels.

  Args:
    q: ``[B, T, H, D]`` queries.
    k: ``[B, T, KV, D]`` keys, ``H % KV == 0``.
    v: ``[B, T, KV, D]`` values.
    segment_ids: ``[B, T]`` int document ids, 0 = padding.
    causal: only keys ``j <= i``.
    window: local window ``W``: only keys with ``i - j < W`` (``W >= 1``).
    sm_scale: softmax scale, default ``D ** -0.5``.
    block_sizes: splash ``BlockSizes`` (with backward blocks for gradients);
      default from :func:`default_block_sizes`. ``T`` is padded (with padding
      tokens) to a multiple of every block size.
    interpret: run the Pallas kernels in interpret mode (CPU tests).
    mesh: if given, run per device under ``jax.shard_map`` on local shards.
    batch_axes: mesh axis name(s) the batch is split over.
    head_axis: mesh axis name the heads are split over.

  Returns:
    ``[B, T, H, D]`` in ``q.dtype``; zero rows where ``segment_ids == 0``.
  """
  b, t, h, d = q.shape
  if k.ndim != 4 or k.shape[:2] != (b, t) or k.shape[3] != d or v.shape != k.shape:
    raise ValueError(f"bad shapes q {q.shape}, k {k.shape}, v {v.shape}")
  if segment_ids.shape != (b, t):
    raise ValueError(f"segment_ids {segment_ids.shape} != {(b, t)}")
  kv_heads = k.shape[2]
  if h % kv_heads:
    raise ValueError(f"query heads {h} not a multiple of kv heads {kv_heads}")
  if window is not None and window < 1:
    raise ValueError(f"window must be >= 1, got {window}")
  sm_scale = d ** -0.5 if sm_scale is None else sm_scale
  segment_ids = segment_ids.astype(jnp.int32)

  t_pad = _padded_length(t, block_sizes)
  if block_sizes is None:
    block_sizes = default_block_sizes(t_pad)
  q_scaled = (q.astype(jnp.float32) * sm_scale).astype(q.dtype)
  if t_pad != t:
    def pad(x):
      return jnp.pad(x, [(0, 0), (0, t_pad - t)] + [(0, 0)] * (x.ndim - 2))
    q_scaled, k, v, seg_pad = pad(q_scaled), pad(k), pad(v), pad(segment_ids)
  else:
    seg_pad = segment_ids

  local = functools.partial(_local_attention, causal=causal, window=window,
                            block_sizes=block_sizes, interpret=interpret)
  if mesh is None:
    out = local(q_scaled, k, v, seg_pad)
  else:
    dp = _axis_size(mesh, batch_axes)
    tp = _axis_size(mesh, head_axis)
    if b % dp:
      raise ValueError(f"batch {b} not divisible by {batch_axes} of size {dp}")
    if h % tp:
      raise ValueError(f"heads {h} not divisible by {head_axis} of size {tp}")
    if kv_heads % tp:
      # KV heads cannot be split over tp: give every query head its own copy.
      # Contiguous head shards keep the GQA grouping (h -> h // (H // KV)).
      k = jnp.repeat(k, h // kv_heads, axis=2)
      v = jnp.repeat(v, h // kv_heads, axis=2)
    batch_spec = tuple(batch_axes) if isinstance(batch_axes, (list, tuple)) else batch_axes
    x_spec = P(batch_spec, None, head_axis, None)
    seg_spec = P(batch_spec, None)
    out = jax.shard_map(local, mesh=mesh, in_specs=(x_spec, x_spec, x_spec, seg_spec),
                        out_specs=x_spec, check_vma=False)(q_scaled, k, v, seg_pad)
  out = out[:, :t]
  visible = (segment_ids != 0)[:, :, None, None]
  return jnp.where(visible, out, jnp.zeros_like(out)).astype(q.dtype)
