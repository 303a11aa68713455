r"""Attention backends, forward + backward, on packed code rows.

    python benchmarks/attention.py [--seq_lens=8192,16384,32768] [--backends=pallas_gpu,cudnn,cudnn_causal]

Rows come from the real pipeline (stdlib corpus, the given view at rate 0.9,
concat packing), so document lengths — and hence the segment structure — are
realistic for packed code. Backends:
  pallas_gpu     our kernel (skips invisible key blocks)
  pallas_tpu     splash attention
  xla            dense-mask reference
  cudnn          jax.nn.dot_product_attention with the dense document mask
  cudnn_causal   jax.nn.dot_product_attention, causal only, no document mask
                 (a lower bound for dense kernels: it ignores documents)
Reports median ms for fwd+bwd (jax.grad of sum(out * cotangent)) and the
fraction of key blocks our kernel visits. ``--interpret`` runs Pallas in
interpret mode (CPU; slow — use short rows).

The pieces (``packed_segments``, ``backend_fn``, ``inputs``, ``time_fwd_bwd``,
``attention_flops``) are importable: ``benchmarks/gpu_suite.py`` uses them.
"""

from __future__ import annotations

import functools
import json
import time


def packed_segments(seq_len: int, batch: int, view: str, skip: int = 2):
  """``[batch, seq_len]`` segment ids of real packed rows (stdlib, ``view`` at rate 0.9).

  The first ``skip`` batches are dropped (one giant document at the stream start
  is common)."""
  from proxyjax.config import base_config  # pylint: disable=g-import-not-at-top
  from proxyjax.data import mixing, pipeline  # pylint: disable=g-import-not-at-top
  c = base_config()
  c.seq_len, c.batch_size = seq_len, batch
  c.data.view = view
  it = pipeline.make_iterator(c, process_index=0, process_count=1,
                              schedule=mixing.Schedule.constant(0.9, "sentinel"))
  for _ in range(skip + 1):
    b = next(it)
  if hasattr(it, "close"):
    it.close()
  return b["segment_ids"]


def backend_fn(name: str, *, interpret: bool = False, **kernel_kwargs):
  """``fn(q, k, v, segment_ids) -> out`` for a backend name of this benchmark.

  ``cudnn_causal`` ignores the documents (causal only, no mask); ``kernel_kwargs``
  (``block_q``, ``block_k``, ...) go to the Pallas kernel for ``pallas_gpu``.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from proxyjax.model import attention  # pylint: disable=g-import-not-at-top

  if name == "cudnn_causal":
    impl = "cudnn" if jax.devices()[0].platform == "gpu" else None

    def fn(q, k, v, seg):
      del seg
      rep = q.shape[2] // k.shape[2]
      return jax.nn.dot_product_attention(q, jnp.repeat(k, rep, 2), jnp.repeat(v, rep, 2),
                                          is_causal=True, implementation=impl)
    return fn
  if name == "pallas_gpu" and kernel_kwargs:
    from proxyjax.model.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top
    return functools.partial(pallas_gpu.flash_attention, interpret=interpret, **kernel_kwargs)
  return functools.partial(attention.attention, backend=name, interpret=interpret)


def inputs(b: int, t: int, h: int, kvh: int, d: int, dtype, seed: int = 0):
  """Random ``q, k, v`` and an output cotangent ``ct`` (normal, ``dtype``)."""
  import jax  # pylint: disable=g-import-not-at-top
  kq, kk, kv, kc = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(kq, (b, t, h, d), dtype)
  k = jax.random.normal(kk, (b, t, kvh, d), dtype)
  v = jax.random.normal(kv, (b, t, kvh, d), dtype)
  ct = jax.random.normal(kc, (b, t, h, d), dtype)
  return q, k, v, ct


def grad_step(fn, ct):
  """jit of the gradients of ``sum(fn(q, k, v, seg) * ct)`` w.r.t. q, k, v."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def loss(q, k, v, seg):
    return jnp.sum(fn(q, k, v, seg).astype(jnp.float32) * ct.astype(jnp.float32))
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def time_fwd_bwd(fn, q, k, v, seg, ct, repeats: int, deadline: float | None = None) -> dict:
  """Compiles and times fwd+bwd: ``{"compile_s", "fwd_bwd_ms" (median), "repeats"}``.

  Stops repeating at ``deadline`` (``time.time()``) once at least one timed run is in.
  Raises whatever the backend raises (the caller records it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  step = grad_step(fn, ct)
  t0 = time.perf_counter()
  jax.block_until_ready(step(q, k, v, seg))
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(max(repeats, 1)):
    t0 = time.perf_counter()
    jax.block_until_ready(step(q, k, v, seg))
    times.append(time.perf_counter() - t0)
    if deadline is not None and time.time() > deadline:
      break
  return {"compile_s": compile_s, "fwd_bwd_ms": 1e3 * float(np.median(times)),
          "repeats": len(times)}


def attention_flops(pairs: float, heads: int, head_dim: int) -> float:
  """FLOPs of attention forward + backward over ``pairs`` (query, key) pairs.

  Forward: two matmuls (QK^T, PV) = 4 H E per pair; backward: five (QK^T
  recomputed, dP, dV, dQ, dK) = 10 H E per pair; 14 H E per pair in all."""
  return 14.0 * heads * head_dim * pairs


def block_pairs(segment_ids, block_q: int, block_k: int, causal: bool = True,
                window: int | None = None) -> int:
  """(query, key) element pairs inside the blocks our kernel's forward visits."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from proxyjax.model.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top
  lo, hi = pallas_gpu.block_visibility(segment_ids, block_q, block_k, causal, window)
  return int(np.sum(np.asarray(hi) - np.asarray(lo))) * block_q * block_k


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_list("seq_lens", ["8192", "16384", "32768"], "Row lengths.")
  flags.DEFINE_list("backends", ["pallas_gpu", "cudnn", "cudnn_causal"], "Backends.")
  flags.DEFINE_string("view", "deflate", "Compressed view of the rows.")
  flags.DEFINE_integer("heads", 16, "Query heads.")
  flags.DEFINE_integer("kv_heads", 16, "KV heads.")
  flags.DEFINE_integer("head_dim", 128, "Head dim.")
  flags.DEFINE_integer("batch", 1, "Rows.")
  flags.DEFINE_string("dtype", "bfloat16", "Dtype.")
  flags.DEFINE_integer("repeats", 10, "Timed repeats.")
  flags.DEFINE_bool("interpret", False, "Pallas interpret mode (CPU).")
  flags.DEFINE_string("json_out", None, "Append JSON lines here.")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  from proxyjax.model.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  dtype = jnp.dtype(f.dtype)
  for t in [int(s) for s in f.seq_lens]:
    seg = jnp.asarray(packed_segments(t, f.batch, f.view))
    docs = [int(np.unique(r).size) for r in np.asarray(seg)]
    frac = float(pallas_gpu.visible_fraction(seg, 64, 64)) if t % 64 == 0 else None
    b, h, kvh, d = f.batch, f.heads, f.kv_heads, f.head_dim
    q, k, v, ct = inputs(b, t, h, kvh, d, dtype)
    for name in f.backends:
      fn = backend_fn(name, interpret=f.interpret)
      try:
        ms, err = time_fwd_bwd(fn, q, k, v, seg, ct, f.repeats)["fwd_bwd_ms"], None
      except Exception as e:  # pylint: disable=broad-except
        ms, err = None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
      row = {"seq_len": t, "backend": name, "fwd_bwd_ms": ms, "docs_per_row": docs,
             "visible_block_fraction": frac, "device": jax.devices()[0].device_kind,
             "heads": h, "kv_heads": kvh, "head_dim": d, "dtype": f.dtype, "error": err}
      print(json.dumps(row), flush=True)
      if f.json_out:
        with open(f.json_out, "a") as f:
          f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  import os  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
