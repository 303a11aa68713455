"""The one attention API: causal AND same-document attention over packed rows (docs/method.md §4).

    attention(q, k, v, segment_ids, positions, *, causal=True, window=None, backend="auto")

Shapes: ``q [B, T, H, D]``, ``k, v [B, T, KV, D]`` with ``H % KV == 0`` (GQA),
``segment_ids [B, T]`` int32 (0 = padding), ``positions [B, T]``. Output
``[B, T, H, D]`` in ``q.dtype``.

Mask semantics, identical in every backend: query i sees key j iff
``segment_ids[i] == segment_ids[j] != 0`` and, if causal, ``j <= i`` and, with a
local window ``W``, ``i - j < W``. A query that sees nothing (padding) gets a
zero output and zero gradients ("safe softmax"), as the authors' Triton
kernels do. Within a document ``i - j`` equals the difference of positions, so
the window counts tokens of the same document.

Backends:
  xla         plain JAX with a dense [B, 1, T, T] mask: the oracle.
  pallas_gpu  our Pallas (Triton) flash attention; skips key blocks no query in
              the block can see (earlier documents, future blocks, beyond the
              window), so cost scales with the sum of document-length squared.
  pallas_tpu  splash attention with ``SegmentIds``.
  cudnn       ``jax.nn.dot_product_attention`` with the dense mask (comparison point).
  auto        per device generation (:func:`auto_backend`, logged once per choice):
              pallas_tpu on TPU; on NVIDIA GPUs pallas_gpu from compute capability 8.0
              (Ampere, Hopper, Blackwell: the Triton kernel) while the running jax
              still lowers Pallas to Triton, else cudnn (cuDNN's fused attention
              needs sm80+ too), and xla before sm80 or on other GPUs; xla on CPU.
"""

from __future__ import annotations

import logging
from typing import Literal

import jax
import jax.numpy as jnp
import ml_collections

from proxyjax.errors import ConfigError

log = logging.getLogger(__name__)

Backend = Literal["auto", "xla", "pallas_gpu", "pallas_tpu", "cudnn"]

BACKENDS = ("auto", "xla", "pallas_gpu", "pallas_tpu", "cudnn")


def validate_backend(c: ml_collections.ConfigDict) -> None:
  """``model.attention`` names a backend; the Pallas kernels' block divides ``seq_len``."""
  backend = c.model.attention
  if backend not in BACKENDS:
    raise ConfigError("model.attention", f"unknown backend {backend!r}; "
                      f"known: {', '.join(BACKENDS)}")
  if backend in ("pallas_gpu", "pallas_tpu") and c.seq_len % 128:
    raise ConfigError("seq_len", f"{c.seq_len} is not a multiple of the attention kernel "
                      f"block (128) required by model.attention={backend}")


def index_mask(q_idx, k_idx, *, causal: bool = True, window: int | None = None):
  """Whether query index ``q_idx`` may see key index ``k_idx`` (causal, local window);
  broadcasts. Shared by the training mask and the KV-cache decoder."""
  ok = jnp.ones(jnp.broadcast_shapes(jnp.shape(q_idx), jnp.shape(k_idx)), bool)
  if causal:
    ok &= k_idx <= q_idx
  if window is not None:
    ok &= q_idx - k_idx < window
  return ok


def make_mask(segment_ids: jax.Array, *, causal: bool = True,
              window: int | None = None) -> jax.Array:
  """Dense boolean mask ``[B, 1, T, T]`` (query, key) of the semantics above."""
  seg_q = segment_ids[:, :, None]
  seg_k = segment_ids[:, None, :]
  mask = (seg_q == seg_k) & (seg_q != 0)
  t = segment_ids.shape[1]
  mask &= index_mask(jnp.arange(t)[:, None], jnp.arange(t)[None, :], causal=causal,
                     window=window)[None]
  return mask[:, None]


def _repeat_kv(x: jax.Array, num_heads: int) -> jax.Array:
  reps = num_heads // x.shape[2]
  return x if reps == 1 else jnp.repeat(x, reps, axis=2)


def xla_attention(q, k, v, segment_ids, *, causal=True, window=None, sm_scale=None,
                  accum_dtype=jnp.float32):
  """The reference: logits and softmax in ``accum_dtype`` (fp32), safe for fully-masked rows."""
  mask = make_mask(segment_ids, causal=causal, window=window)
  return dense_attention(q, k, v, mask, sm_scale=sm_scale, accum_dtype=accum_dtype)


def dense_attention(q, k, v, mask, *, sm_scale=None, accum_dtype=jnp.float32):
  """Attention of queries ``q [B, Q, H, D]`` over keys ``k, v [B, S, KV, D]`` with an
  explicit boolean ``mask`` broadcastable to ``[B, H, Q, S]`` (training: the dense
  segment mask; decoding: the filled cache slots). Rows that see nothing give zeros."""
  h, d = q.shape[2], q.shape[3]
  sm_scale = d ** -0.5 if sm_scale is None else sm_scale
  k = _repeat_kv(k, h)
  v = _repeat_kv(v, h)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=accum_dtype) * sm_scale
  logits = jnp.where(mask, logits, -jnp.inf)
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  p = jnp.where(mask, jnp.exp(logits - row_max), 0.0)
  denom = jnp.sum(p, axis=-1, keepdims=True)
  p = p / jnp.where(denom == 0.0, 1.0, denom)
  out = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v,
                   preferred_element_type=accum_dtype)
  return out.astype(q.dtype)


def cudnn_attention(q, k, v, segment_ids, *, causal=True, window=None, sm_scale=None,
                    implementation=None):
  """``jax.nn.dot_product_attention`` with the dense mask; padding rows zeroed."""
  h = q.shape[2]
  mask = make_mask(segment_ids, causal=causal, window=window)
  out = jax.nn.dot_product_attention(q, _repeat_kv(k, h), _repeat_kv(v, h), mask=mask,
                                     scale=sm_scale, implementation=implementation)
  # Fully-masked rows come back as a uniform average; the API says zeros.
  visible = (segment_ids != 0)[:, :, None, None]
  return jnp.where(visible, out, jnp.zeros_like(out))


def compute_capability(device) -> tuple[int, int] | None:
  """``(major, minor)`` of an NVIDIA GPU device, None elsewhere (or when unknown)."""
  cc = getattr(device, "compute_capability", None)
  if not cc:
    return None
  try:
    major, _, minor = str(cc).partition(".")
    return int(major), int(minor or 0)
  except ValueError:
    return None


def auto_backend(device=None) -> tuple[str, str]:
  """``(backend, reason)`` that ``backend="auto"`` resolves to on ``device``
  (default: the first device)."""
  device = jax.devices()[0] if device is None else device
  platform = device.platform
  kind = getattr(device, "device_kind", platform)
  if platform == "tpu":
    return "pallas_tpu", f"{kind}: splash attention"
  if platform != "gpu":
    return "xla", f"{platform}: dense XLA attention"
  cc = compute_capability(device)
  if cc is None:  # ROCm or unknown: no Triton/cuDNN path we have checked
    return "xla", f"{kind}: no CUDA compute capability reported"
  where = f"{kind} (sm{cc[0]}{cc[1]})"
  if cc < (8, 0):
    return "xla", f"{where}: the Triton kernel and cuDNN flash attention need sm80+"
  from proxyjax.model.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top
  ok, why = pallas_gpu.triton_available()
  if ok:
    return "pallas_gpu", f"{where}: {why}"
  return "cudnn", f"{where}: {why}; cuDNN with the dense mask instead"


_LOGGED: set = set()


def default_backend() -> str:
  """The backend ``auto`` resolves to here; logs the choice and why, once per choice."""
  backend, why = auto_backend()
  if (backend, why) not in _LOGGED:
    _LOGGED.add((backend, why))
    log.info("attention backend auto -> %s (%s)", backend, why)
  return backend


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array,
              positions: jax.Array | None = None, *, causal: bool = True,
              window: int | None = None, backend: Backend = "auto",
              sm_scale: float | None = None, interpret: bool = False,
              accum_dtype=jnp.float32) -> jax.Array:
  """Segment-masked (and optionally causal / local) multi-head attention.

  ``positions`` is accepted for API uniformity (RoPE is applied by the caller);
  the mask depends only on ``segment_ids`` and token indices.
  ``interpret=True`` runs Pallas backends in interpret mode (CPU tests).
  ``accum_dtype`` is the logits/softmax dtype of the ``xla`` backend (the fused
  kernels accumulate in fp32).
  """
  del positions
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"query heads {q.shape[2]} not a multiple of kv heads {k.shape[2]}")
  if backend == "auto":
    backend = default_backend()
  if backend == "xla":
    return xla_attention(q, k, v, segment_ids, causal=causal, window=window, sm_scale=sm_scale,
                         accum_dtype=accum_dtype)
  if backend == "cudnn":
    impl = "cudnn" if jax.devices()[0].platform == "gpu" else None
    return cudnn_attention(q, k, v, segment_ids, causal=causal, window=window,
                           sm_scale=sm_scale, implementation=impl)
  if backend == "pallas_gpu":
    from proxyjax.model.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top
    return pallas_gpu.flash_attention(q, k, v, segment_ids, causal=causal, window=window,
                                      sm_scale=sm_scale, interpret=interpret)
  if backend == "pallas_tpu":
    from proxyjax.model.kernels import splash_tpu  # pylint: disable=g-import-not-at-top
    return splash_tpu.splash_attention(q, k, v, segment_ids, causal=causal, window=window,
                                       sm_scale=sm_scale, interpret=interpret)
  raise ValueError(f"unknown attention backend {backend!r}; known: {', '.join(BACKENDS)}")

