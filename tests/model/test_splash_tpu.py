"""Splash attention (pallas_tpu backend) in interpret mode vs the XLA oracle.

All float32 on CPU. Tolerances: forward ``atol=rtol=2e-5``, gradients
``atol=rtol=5e-5`` (observed errors are ~1e-6: both sides compute in fp32,
differing only in summation order and the online softmax). Padding rows must
be exactly zero, in the output and in every gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from proxyjax.model.attention import attention, xla_attention
from proxyjax.model.kernels import splash_tpu

FWD_TOL = 2e-5
GRAD_TOL = 5e-5


def _segments(kind: str, t: int, rng: np.random.Generator) -> np.ndarray:
  """One row of segment ids: 'long', 'tiny' (docs of 1-9 tokens), 'mixed'."""
  if kind == "long":
    return np.ones(t, np.int32)
  if kind == "tiny":
    lengths = rng.integers(1, 10, size=t)
  elif kind == "mixed":  # Varied documents, then trailing padding.
    lengths = np.array([t // 2 - 7, 1, 3, t // 5, 11])
  else:
    raise ValueError(kind)
  row = np.repeat(np.arange(1, len(lengths) + 1), lengths)[:t].astype(np.int32)
  return np.pad(row, (0, t - len(row)))


def _inputs(b, t, h, kv, d, kinds, seed=0):
  rng = np.random.default_rng(seed)
  seg = np.stack([_segments(kinds[i % len(kinds)], t, rng) for i in range(b)])
  ks = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(ks[0], (b, t, h, d), jnp.float32)
  k = jax.random.normal(ks[1], (b, t, kv, d), jnp.float32)
  v = jax.random.normal(ks[2], (b, t, kv, d), jnp.float32)
  cot = jax.random.normal(ks[3], (b, t, h, d), jnp.float32)  # Nonzero on padding too.
  return q, k, v, jnp.asarray(seg), cot


def _value_and_grads(fn, q, k, v, cot):
  out, vjp = jax.vjp(fn, q, k, v)
  return out, vjp(cot)


CASES = [
    # (T, H, KV, D, causal, window)
    pytest.param(128, 4, 4, 64, True, None, id="mha-causal-d64"),
    pytest.param(256, 4, 2, 128, True, None, id="gqa-causal-t256-d128", marks=pytest.mark.slow),
    pytest.param(128, 4, 2, 64, True, 16, id="gqa-window16"),
    pytest.param(100, 4, 2, 64, False, 8, id="gqa-noncausal-window8-t100",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("t,h,kv,d,causal,window", CASES)
def test_matches_xla_forward_and_grads(t, h, kv, d, causal, window):
  q, k, v, seg, cot = _inputs(3, t, h, kv, d, ("long", "tiny", "mixed"))
  kw = dict(causal=causal, window=window)
  out, (dq, dk, dv) = _value_and_grads(
      lambda q, k, v: splash_tpu.splash_attention(q, k, v, seg, interpret=True, **kw),
      q, k, v, cot)
  ref, (rq, rk, rv) = _value_and_grads(
      lambda q, k, v: xla_attention(q, k, v, seg, **kw), q, k, v, cot)

  assert out.shape == q.shape and out.dtype == q.dtype
  np.testing.assert_allclose(out, ref, atol=FWD_TOL, rtol=FWD_TOL)
  for got, want in ((dq, rq), (dk, rk), (dv, rv)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=GRAD_TOL, rtol=GRAD_TOL)

  pad = np.asarray(seg == 0)
  assert pad.any()  # The 'mixed' row ends with padding.
  for x in (out, dq, dk, dv):
    assert np.all(np.asarray(x)[pad] == 0.0)


@pytest.mark.parametrize("kv", [4, 2])
def test_mesh_matches_unsharded(kv):
  """shard_map over a (data=2, fsdp=1, tensor=4) mesh of 8 fake CPU devices."""
  mesh = jax.make_mesh((2, 1, 4), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  q, k, v, seg, cot = _inputs(2, 128, 4, kv, 64, ("mixed", "tiny"), seed=1)

  def sharded(q, k, v):
    return splash_tpu.splash_attention(q, k, v, seg, interpret=True, mesh=mesh,
                                       batch_axes=("data", "fsdp"), head_axis="tensor")

  def unsharded(q, k, v):
    return splash_tpu.splash_attention(q, k, v, seg, interpret=True)

  out, grads = jax.jit(lambda *a: _value_and_grads(sharded, *a))(q, k, v, cot)
  ref, ref_grads = _value_and_grads(unsharded, q, k, v, cot)
  assert out.sharding.spec[0] in ("data", ("data", "fsdp"))
  np.testing.assert_allclose(out, ref, atol=1e-6, rtol=1e-6)
  for got, want in zip(grads, ref_grads):
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
  np.testing.assert_allclose(out, xla_attention(q, k, v, seg), atol=FWD_TOL, rtol=FWD_TOL)


def test_attention_dispatch_and_kernel_cache_across_jit():
  """backend='pallas_tpu' routes here; a kernel first built under jit is reusable."""
  q, k, v, seg, _ = _inputs(2, 128, 4, 2, 64, ("mixed", "long"), seed=2)
  ref = xla_attention(q, k, v, seg, window=32, sm_scale=0.3)
  fn = jax.jit(lambda q, k, v, s: attention(q, k, v, s, window=32, sm_scale=0.3,
                                            backend="pallas_tpu", interpret=True))
  np.testing.assert_allclose(fn(q, k, v, seg), ref, atol=FWD_TOL, rtol=FWD_TOL)
  eager = splash_tpu.splash_attention(q, k, v, seg, window=32, sm_scale=0.3, interpret=True)
  np.testing.assert_allclose(eager, ref, atol=FWD_TOL, rtol=FWD_TOL)


def test_default_block_sizes_and_padding():
  bs = splash_tpu.default_block_sizes(128)
  assert bs.block_q == bs.block_kv == bs.block_q_dq == bs.block_kv_dkv == 128
  assert bs.has_backward_blocks
  assert splash_tpu.default_block_sizes(1536).block_q == 512
  assert splash_tpu.default_block_sizes(768).block_q == 256
  assert splash_tpu._padded_length(100, None) == 128  # pylint: disable=protected-access
  with pytest.raises(ValueError):
    splash_tpu.default_block_sizes(100)


def test_rejects_bad_arguments():
  q = jnp.zeros((1, 128, 4, 64))
  kv3 = jnp.zeros((1, 128, 3, 64))
  kv2 = jnp.zeros((1, 128, 2, 64))
  seg = jnp.ones((1, 128), jnp.int32)
  with pytest.raises(ValueError, match="multiple of kv heads"):
    splash_tpu.splash_attention(q, kv3, kv3, seg, interpret=True)
  with pytest.raises(ValueError, match="window"):
    splash_tpu.splash_attention(q, kv2, kv2, seg, window=0, interpret=True)
  with pytest.raises(ValueError, match="segment_ids"):
    splash_tpu.splash_attention(q, kv2, kv2, seg[:, :64], interpret=True)
