"""KV-cache decoding (proxyjax.model.decode) equals the full forward, token by token."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from proxyjax.model import decode, transformer
from proxyjax.neural import byte_lm


def _cfg(window=None, n_kv_heads=2):
  return transformer.ModelConfig(vocab_size=384, num_ids=320, d_model=64, n_layers=2, n_heads=4,
                                 n_kv_heads=n_kv_heads, head_dim=16, d_ff=128, attention="xla",
                                 dtype=jnp.float32, window=window, remat="none", init_std=0.1)


def _compare(cfg, params, atol):
  model = nnx.merge(transformer.abstract_model(cfg)[0], params)
  r = np.random.default_rng(0)
  lengths, steps, width = (3, 9, 12), 6, 12
  prompts = [r.integers(1, 320, n).astype(np.int32) for n in lengths]
  cont = r.integers(64, 320, (len(prompts), steps)).astype(np.int32)
  tokens = np.zeros((len(prompts), width), np.int32)
  valid = np.zeros((len(prompts), width), bool)
  for j, p in enumerate(prompts):
    tokens[j, width - len(p):], valid[j, width - len(p):] = p, True
  h, cache = decode.prefill(model, jnp.asarray(tokens), jnp.asarray(valid), width + steps)
  cached = [model.logits(h[:, None])[:, 0]]
  for s in range(steps):
    h, cache = decode.decode_step(model, cache, jnp.asarray(cont[:, s]))
    cached.append(model.logits(h[:, None])[:, 0])
  for j, p in enumerate(prompts):
    ids = np.concatenate([p, cont[j]])[None]
    n = ids.shape[1]
    hidden = model(jnp.asarray(ids), jnp.ones((1, n), jnp.int32),
                   jnp.arange(n, dtype=jnp.int32)[None])
    full = np.asarray(model.logits(hidden)[0])
    for s in range(steps + 1):  # the token after the prompt, then after each appended one
      got, want = np.asarray(cached[s][j]), full[len(p) - 1 + s]
      finite = np.isfinite(want)
      np.testing.assert_array_equal(np.isfinite(got), finite)
      np.testing.assert_allclose(got[finite], want[finite], atol=atol, rtol=0)


@pytest.mark.parametrize("window,n_kv_heads", [
    pytest.param(None, 2, marks=pytest.mark.slow), (5, 2),
    pytest.param(None, 4, marks=pytest.mark.slow), pytest.param(4, 1, marks=pytest.mark.slow)])
def test_decode_equals_full_forward_float32(window, n_kv_heads):
  cfg = _cfg(window, n_kv_heads)
  _compare(cfg, transformer.init_params(cfg, 3), atol=2e-5)


@pytest.mark.parametrize("window", [pytest.param(None, marks=pytest.mark.slow), 5])
def test_decode_equals_full_forward_float64(window):
  # accum_dtype and the compute dtype set to float64 (the compressor's setting): the
  # cached and full paths agree to float64 rounding.
  cfg = _cfg(window)
  params = transformer.init_params(cfg, 3)
  cfg64 = dataclasses.replace(cfg, dtype=jnp.float64, accum_dtype=jnp.float64,
                              param_dtype=jnp.float64)
  with byte_lm.x64():
    params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float64)), params)
    _compare(cfg64, params64, atol=1e-12)
  assert not jax.config.jax_enable_x64
