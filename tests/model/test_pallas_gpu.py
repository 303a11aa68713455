"""Tests of the ``pallas_gpu`` flash-attention backend, in Pallas interpret mode.

The kernels run on CPU with ``interpret=True`` and are compared with the dense
``xla_attention`` oracle in float32 (forward atol 2e-5; dq/dk/dv atol and rtol
1e-4). The block-skipping bounds are checked against the dense mask, and the
kernels are lowered (not run) for CUDA to check that the Triton lowering
accepts them (on jax 0.10 and 0.11, whose Triton path warns as deprecated).
"""

import contextlib
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from proxyjax.model import attention as attn
from proxyjax.model.kernels import pallas_gpu

FWD_ATOL = 2e-5
GRAD_TOL = 1e-4


def _row(lengths, t):
  """Packed row: documents of the given lengths (ids 1, 2, ...), then 0 padding."""
  ids = np.concatenate([np.full(n, i + 1, np.int32) for i, n in enumerate(lengths)])
  assert len(ids) <= t
  return np.pad(ids, (0, t - len(ids)))


def _tiny_docs(rng, t):
  lengths, total = [], 0
  while total < t:
    lengths.append(min(int(rng.integers(1, 10)), t - total))
    total += lengths[-1]
  return _row(lengths, t)


def _segments(layout: str, t: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  if layout == "one_doc":
    return np.ones((2, t), np.int32)
  if layout == "tiny_docs":
    return np.stack([_tiny_docs(rng, t), _tiny_docs(rng, t)])
  if layout == "mixed_padded":  # mixed lengths, trailing padding in both rows
    return np.stack([_row([50, 3, 20, 7, 1, 30], t), _row([t // 2, 40], t)])
  if layout == "interleaved":  # not packed: ids revisit; bounds must stay correct
    return rng.integers(0, 4, size=(2, t)).astype(np.int32)
  raise ValueError(layout)


def _inputs(b, t, h, kv, d, seed=0, dtype=jnp.float32):
  keys = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(keys[0], (b, t, h, d), dtype)
  k = jax.random.normal(keys[1], (b, t, kv, d), dtype)
  v = jax.random.normal(keys[2], (b, t, kv, d), dtype)
  ct = jax.random.normal(keys[3], (b, t, h, d), dtype)
  return q, k, v, ct


@functools.partial(jax.jit, static_argnames=("fn",))
def _out_and_grads(fn, q, k, v, ct):
  out, vjp = jax.vjp(fn, q, k, v)
  return out, vjp(ct)


# layout, T, KV, D, causal, window, block_q, block_k (H = 4 throughout).
CASES = [
    ("one_doc", 128, 4, 64, True, None, 64, 64),
    ("tiny_docs", 128, 2, 32, True, None, 32, 32),
    ("mixed_padded", 128, 2, 32, True, None, 32, 64),
    ("mixed_padded", 128, 4, 32, False, None, 64, 32),
    ("one_doc", 128, 2, 32, True, 40, 32, 32),
    ("mixed_padded", 128, 1, 24, False, 40, 32, 32),  # MQA, head dim padded to 32
]


@pytest.mark.parametrize("layout,t,kv,d,causal,window,block_q,block_k", CASES)
def test_matches_xla_forward_and_grads(layout, t, kv, d, causal, window, block_q,
                                       block_k):
  seg = jnp.asarray(_segments(layout, t))
  q, k, v, ct = _inputs(2, t, 4, kv, d)
  kernel = functools.partial(pallas_gpu.flash_attention, segment_ids=seg,
                             causal=causal, window=window, block_q=block_q,
                             block_k=block_k, interpret=True)
  oracle = functools.partial(attn.xla_attention, segment_ids=seg, causal=causal,
                             window=window)
  out, (dq, dk, dv) = _out_and_grads(kernel, q, k, v, ct)
  ref, (rdq, rdk, rdv) = _out_and_grads(oracle, q, k, v, ct)

  np.testing.assert_allclose(out, ref, atol=FWD_ATOL, rtol=0)
  for name, got, want in (("dq", dq, rdq), ("dk", dk, rdk), ("dv", dv, rdv)):
    np.testing.assert_allclose(got, want, atol=GRAD_TOL, rtol=GRAD_TOL, err_msg=name)

  # Padding queries give exactly zero output and dq; padding keys get exactly
  # zero dk/dv (nobody sees them).
  pad = np.asarray(seg) == 0
  if pad.any():
    for name, x in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
      assert np.all(np.asarray(x)[pad] == 0.0), name


def test_interleaved_segments_forward():
  """Documents need not be contiguous: the bounds stay conservative."""
  seg = jnp.asarray(_segments("interleaved", 128, seed=3))
  q, k, v, _ = _inputs(2, 128, 4, 2, 32, seed=3)
  out = jax.jit(functools.partial(pallas_gpu.flash_attention, block_q=32,
                                  block_k=32, interpret=True))(q, k, v, seg)
  np.testing.assert_allclose(out, attn.xla_attention(q, k, v, seg), atol=FWD_ATOL, rtol=0)


def test_attention_dispatch_and_bf16():
  """``attention(backend="pallas_gpu")`` routes here; bf16 inputs stay close."""
  seg = jnp.asarray(_segments("mixed_padded", 128))
  q, k, v, _ = _inputs(2, 128, 4, 2, 32, seed=1, dtype=jnp.bfloat16)
  run = jax.jit(functools.partial(attn.attention, backend="pallas_gpu", window=40,
                                  interpret=True))
  out = run(q, k, v, seg)
  assert out.dtype == jnp.bfloat16 and out.shape == q.shape
  ref = attn.attention(q.astype(jnp.float32), k.astype(jnp.float32),
                       v.astype(jnp.float32), seg, window=40, backend="xla")
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=3e-2, rtol=0)


def _dense_block_visibility(seg, block_q, block_k, causal, window):
  """``[B, nq, nk]`` bool: does the block pair hold any visible element?"""
  mask = np.asarray(attn.make_mask(jnp.asarray(seg), causal=causal, window=window))[:, 0]
  b, t, _ = mask.shape
  return mask.reshape(b, t // block_q, block_q, t // block_k, block_k).any(axis=(2, 4))


@pytest.mark.parametrize("layout", ["one_doc", "tiny_docs", "mixed_padded", "interleaved"])
@pytest.mark.parametrize("causal,window", [(True, None), (False, None), (True, 40),
                                           (False, 40)])
def test_bounds_cover_dense_mask(layout, causal, window):
  t, block_q, block_k = 256, 32, 64
  seg = _segments(layout, t, seed=7)
  vis = _dense_block_visibility(seg, block_q, block_k, causal, window)
  kv_lo, kv_hi = map(np.asarray, pallas_gpu.block_visibility(
      jnp.asarray(seg), block_q, block_k, causal, window))
  q_lo, q_hi = map(np.asarray, pallas_gpu.query_block_visibility(
      jnp.asarray(seg), block_q, block_k, causal, window))
  kb = np.arange(t // block_k)[None, None, :]
  qb = np.arange(t // block_q)[None, None, :]
  in_kv = (kb >= kv_lo[..., None]) & (kb < kv_hi[..., None])  # [B, nq, nk]
  in_q = (qb >= q_lo[..., None]) & (qb < q_hi[..., None])  # [B, nk, nq]
  assert np.all(in_kv[vis]), "forward bounds exclude a visible block"
  assert np.all(in_q[vis.transpose(0, 2, 1)]), "dK/dV bounds exclude a visible block"
  if layout != "interleaved":
    # Packed rows: the ranges are tight (first and last visible block).
    any_kv, any_q = vis.any(axis=2), vis.any(axis=1)
    np.testing.assert_array_equal(kv_lo[any_kv], vis.argmax(axis=2)[any_kv])
    np.testing.assert_array_equal(
        kv_hi[any_kv], vis.shape[2] - vis[..., ::-1].argmax(axis=2)[any_kv])
    np.testing.assert_array_equal(q_lo[any_q], vis.argmax(axis=1)[any_q])
    assert np.all((kv_lo == kv_hi)[~any_kv]) and np.all((q_lo == q_hi)[~any_q])


def test_visible_fraction_scales_with_document_lengths():
  t, blk = 2048, 64
  n = t // blk
  ones = jnp.ones((2, t), jnp.int32)
  causal_only = float(pallas_gpu.visible_fraction(ones, blk, blk))
  assert causal_only == pytest.approx((n + 1) / (2 * n))
  assert float(pallas_gpu.visible_fraction(ones, blk, blk, causal=False)) == 1.0
  tiny = jnp.asarray(_segments("tiny_docs", t, seed=1))
  sparse = float(pallas_gpu.visible_fraction(tiny, blk, blk))
  # Each query block sees its own key block and at most the previous one.
  assert sparse <= 2.0 / n
  assert sparse < 0.25 * causal_only
  windowed = float(pallas_gpu.visible_fraction(ones, blk, blk, window=100))
  assert windowed <= 3.0 / n


@pytest.mark.parametrize("t,h,kv,d,block_q,block_k,seg_shape,match", [
    (96, 4, 2, 32, 64, 64, None, "multiple of block_q"),
    (128, 4, 2, 32, 64, 48, None, "power of two"),
    (128, 4, 2, 32, 8, 64, None, "power of two >= 16"),
    (128, 4, 3, 32, 64, 64, None, "not a multiple of kv heads"),
    (128, 4, 2, 32, 64, 64, (2, 64), "segment_ids"),
])
def test_bad_shapes_raise(t, h, kv, d, block_q, block_k, seg_shape, match):
  q = jnp.zeros((2, t, h, d))
  k = jnp.zeros((2, t, kv, d))
  seg = jnp.ones(seg_shape or (2, t), jnp.int32)
  with pytest.raises(ValueError, match=match):
    pallas_gpu.flash_attention(q, k, k, seg, block_q=block_q, block_k=block_k,
                               interpret=True)


def _cuda_target(device_kind="NVIDIA H100 80GB HBM3"):
  """Context naming the GPU the Triton lowering targets when no GPU is present.

  jax >= 0.11 reads the target's compute capability from an abstract device of
  the current abstract mesh (it raises "No supported GPU devices found"
  without one); older jax reads it from the default device, if any.
  """
  if not hasattr(jax.sharding, "AbstractDevice"):
    return contextlib.nullcontext()
  dev = jax.sharding.AbstractDevice(device_kind=device_kind, num_cores=None, platform="cuda")
  return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",),
                                                                  abstract_device=dev))


def test_lowers_to_triton_for_cuda():
  """Cross-lowering on CPU runs the Pallas->Triton lowering of all three kernels
  (jax 0.10 and 0.11: the Triton compiler params are found by name)."""
  q = jax.ShapeDtypeStruct((2, 128, 4, 64), jnp.bfloat16)
  k = jax.ShapeDtypeStruct((2, 128, 2, 64), jnp.bfloat16)
  seg = jax.ShapeDtypeStruct((2, 128), jnp.int32)

  def loss(q, k, v, seg):
    out = pallas_gpu.flash_attention(q, k, v, seg, window=40, block_q=32, block_k=64)
    return jnp.sum(out.astype(jnp.float32))

  with warnings.catch_warnings(record=True) as caught, _cuda_target():
    warnings.simplefilter("always")
    pallas_gpu.silence_triton_deprecation()
    traced = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, k, k, seg)
    try:
      hlo = traced.lower(lowering_platforms=("cuda",)).as_text()
    except Exception as e:  # pylint: disable=broad-except
      if "compilation handler" in str(e).lower():  # some jaxlibs compile eagerly
        pytest.skip(f"no Triton compiler without a CUDA plugin: {e}")
      raise
  calls = hlo.count("__gpu$xla.gpu.triton") + hlo.count("triton_kernel_call")
  assert calls == 3  # forward, dq, dk/dv
  # jax 0.11's "Pallas Triton backend is deprecated" warning is silenced.
  assert not [w for w in caught if "Triton backend is deprecated" in str(w.message)]


def test_triton_params_and_availability():
  cls = pallas_gpu._triton_params_class()  # pylint: disable=protected-access
  assert cls is not None and cls.__name__ in ("CompilerParams", "TritonCompilerParams")
  cfg = pallas_gpu._Config(causal=True, window=None, sm_scale=1.0, block_q=64,  # pylint: disable=protected-access
                           block_k=64, num_warps=8, num_stages=2, interpret=False)
  params = pallas_gpu._compiler_params(cfg)  # pylint: disable=protected-access
  assert (params.num_warps, params.num_stages) == (8, 2)
  ok, why = pallas_gpu.triton_available()
  assert ok and jax.__version__ in why


def test_triton_deprecation_silenced():
  message = ("The Pallas Triton backend is deprecated and will be removed in a future JAX "
             "version.")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pallas_gpu.silence_triton_deprecation()
    warnings.warn(message, DeprecationWarning, stacklevel=1)
    warnings.warn("some other deprecation", DeprecationWarning, stacklevel=1)
  assert [str(w.message) for w in caught] == ["some other deprecation"]
