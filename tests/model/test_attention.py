"""The attention API: mask semantics by hand, backends against the xla oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from proxyjax.model import attention as A


def test_make_mask_by_hand():
  seg = jnp.asarray([[1, 1, 2, 2, 2, 0]])
  m = np.asarray(A.make_mask(seg))[0, 0].astype(int)
  expected = np.array([
      [1, 0, 0, 0, 0, 0],
      [1, 1, 0, 0, 0, 0],
      [0, 0, 1, 0, 0, 0],
      [0, 0, 1, 1, 0, 0],
      [0, 0, 1, 1, 1, 0],
      [0, 0, 0, 0, 0, 0]])  # padding sees nothing and is seen by nothing
  np.testing.assert_array_equal(m, expected)
  w = np.asarray(A.make_mask(seg, window=2))[0, 0].astype(int)
  assert w[4].tolist() == [0, 0, 0, 1, 1, 0]
  nc = np.asarray(A.make_mask(seg, causal=False))[0, 0].astype(int)
  assert nc[2].tolist() == [0, 0, 1, 1, 1, 0]


def _inputs(seg, h=4, kv=2, d=16, seed=0):
  r = np.random.default_rng(seed)
  b, t = seg.shape
  q = jnp.asarray(r.normal(size=(b, t, h, d)), jnp.float32)
  k = jnp.asarray(r.normal(size=(b, t, kv, d)), jnp.float32)
  v = jnp.asarray(r.normal(size=(b, t, kv, d)), jnp.float32)
  return q, k, v


def test_oracle_against_a_loop():
  seg = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0]])
  q, k, v = _inputs(seg)
  out = np.asarray(A.attention(q, k, v, seg, backend="xla"))
  qn, kn, vn = map(np.asarray, (q, k, v))
  for i in range(8):
    for h in range(4):
      keys = [j for j in range(i + 1) if seg[0, j] == seg[0, i] != 0]
      if not keys:
        assert np.all(out[0, i, h] == 0)
        continue
      s = np.array([qn[0, i, h] @ kn[0, j, h // 2] for j in keys]) / 4.0
      p = np.exp(s - s.max())
      p /= p.sum()
      np.testing.assert_allclose(out[0, i, h], sum(pj * vn[0, j, h // 2] for pj, j in
                                                   zip(p, keys)), atol=1e-5)


@pytest.mark.parametrize("window", [None, 3])
def test_cudnn_path_matches_oracle_with_grads(window):
  seg = jnp.asarray([[1] * 5 + [2] * 9 + [0] * 2, [1] * 16])
  q, k, v = _inputs(seg)

  def loss(backend):
    return lambda q, k, v: jnp.sum(A.attention(q, k, v, seg, backend=backend, window=window) ** 2)

  np.testing.assert_allclose(A.attention(q, k, v, seg, backend="cudnn", window=window),
                             A.attention(q, k, v, seg, backend="xla", window=window), atol=1e-5)
  ga = jax.grad(loss("cudnn"), argnums=(0, 1, 2))(q, k, v)
  gb = jax.grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(ga, gb):
    np.testing.assert_allclose(a, b, atol=1e-4)
  assert np.all(np.asarray(A.attention(q, k, v, seg, backend="cudnn"))[0, 14:] == 0)


def test_auto_and_errors():
  assert A.default_backend() == "xla"  # CPU
  seg = jnp.ones((1, 8), jnp.int32)
  q, k, v = _inputs(seg, h=4, kv=3)
  with pytest.raises(ValueError, match="multiple"):
    A.attention(q, k, v, seg)
  q, k, v = _inputs(seg)
  with pytest.raises(ValueError, match="unknown attention backend"):
    A.attention(q, k, v, seg, backend="flash")


class _FakeDevice:
  def __init__(self, platform, kind, cc=None):
    self.platform, self.device_kind = platform, kind
    if cc is not None:
      self.compute_capability = cc


@pytest.mark.parametrize("device,expected", [
    (_FakeDevice("gpu", "NVIDIA H200", "9.0"), "pallas_gpu"),
    (_FakeDevice("gpu", "NVIDIA A100-SXM4-80GB", "8.0"), "pallas_gpu"),
    (_FakeDevice("gpu", "NVIDIA B200", "10.0"), "pallas_gpu"),
    (_FakeDevice("gpu", "Tesla V100-SXM2-16GB", "7.0"), "xla"),
    (_FakeDevice("gpu", "Tesla T4", "7.5"), "xla"),
    (_FakeDevice("gpu", "AMD Instinct MI300X"), "xla"),  # no CUDA compute capability
    (_FakeDevice("tpu", "TPU v5p"), "pallas_tpu"),
    (_FakeDevice("cpu", "cpu"), "xla"),
])
def test_auto_backend_per_device_generation(device, expected):
  backend, why = A.auto_backend(device)
  assert backend == expected and why


def test_auto_falls_back_to_cudnn_without_triton(monkeypatch, caplog):
  from proxyjax.model.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(pallas_gpu, "triton_available", lambda: (False, "no Triton here"))
  h100 = _FakeDevice("gpu", "NVIDIA H100 80GB HBM3", "9.0")
  backend, why = A.auto_backend(h100)
  assert backend == "cudnn" and "no Triton here" in why
  monkeypatch.setattr(A.jax, "devices", lambda: [h100])
  monkeypatch.setattr(A, "_LOGGED", set())
  with caplog.at_level("INFO", logger=A.__name__):
    assert A.default_backend() == "cudnn"
    assert A.default_backend() == "cudnn"
  logged = [r.getMessage() for r in caplog.records if "attention backend auto" in r.getMessage()]
  assert len(logged) == 1 and "cudnn" in logged[0] and "sm90" in logged[0]


def test_compute_capability_parsing():
  assert A.compute_capability(_FakeDevice("gpu", "x", "9.0")) == (9, 0)
  assert A.compute_capability(_FakeDevice("gpu", "x", "12.1")) == (12, 1)
  assert A.compute_capability(_FakeDevice("gpu", "x", "gfx942")) is None
  assert A.compute_capability(_FakeDevice("cpu", "cpu")) is None
