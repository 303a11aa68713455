r"""Every accelerator measurement of the project in one time-boxed script (issue 11).

On the GPU machine (one H100/H200, jax with CUDA, no package index), from the
repository root, with the wheels of ``benchmarks/fetch_wheels.sh`` in ``.whl/``:

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py --out=$OUT

Here, on CPU, every section at toy sizes (Pallas in interpret mode), < 3 minutes:

    python benchmarks/gpu_suite.py --dry_run --out=/tmp/gpu_suite

Writes ``OUT/gpu_suite.json`` (everything), ``OUT/gpu_suite.md`` (tables) and
``OUT/gpu_suite.log`` (the sections' output). Steps:

0. setup: if ``grain`` is not importable and ``--wheels`` (default ``.whl``) holds
   wheels, ``pip install --no-index --no-deps --no-compile --target SITE`` them;
   sections run with ``PYTHONPATH=SITE:<repo>`` (proxyjax from the working tree).
1. env: GPU name, driver/CUDA, compute capability, memory, jax/jaxlib and
   package versions, what ``attention(backend="auto")`` picks and why.
2. correctness: our Pallas kernel vs the XLA reference in bf16, forward and
   dq/dk/dv, packed rows with segment ids and padding, GQA, with and without a
   local window, T = 2048; max abs and relative errors (the reference runs in
   fp32 on the same bf16 inputs; the bf16 XLA error is given as the noise floor).
3. attention: fwd+bwd at T = 16k, 8k, 32k (16k first: the target) on real
   packed rows (stdlib corpus, deflate proxy at rate 0.9, concat packing;
   ``B * T = 32k`` tokens per call): ``pallas_gpu`` vs ``cudnn`` (dense mask) vs
   ``cudnn_causal`` vs ``xla`` (where its T x T logits fit); ms, TFLOP/s on the
   visible pairs (same count for every backend) and, for our kernel, on the
   visited blocks; the speed-up over cuDNN with the dense mask (target >= 2x at 16k).
4. train: ``configs/0.5b.py`` (then ``1.5b.py`` if time allows) at seq 8192 in
   bf16 on one GPU, tokenizer view (a 32k BPE trained on 8 MB of the stdlib),
   rate 0.9: step time, symbols/s, MFU (target >= 40%), peak memory; remat and
   batch picked by ``proxyjax.plan``'s analytic estimate (least recompute, then
   the largest batch up to 16 that fits 85% of the device), checked against
   XLA's compiled memory analysis, falling back to the next candidate.
5. neural: the compressor (``configs/compressor.py:gpu``) trained for a few
   hundred steps (time-boxed), then ``benchmarks/neural_compressor.measure``:
   model forward (float64 + quantisation) GB/h, coder, host-only and end to end
   with coder worker processes on the machine's cores.

Each section runs in its own process with a time box (its budget plus what
earlier sections left unused, never past ``--total_s``); a section that runs
out of time is killed, marked ``timeout`` with what it had written, and the
suite goes on. Sections also check the deadline between measurements and skip
what no longer fits. The JSON and Markdown are rewritten whenever a section
records a result, so a killed suite still leaves them.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

SECTIONS = ("env", "correctness", "attention", "train", "neural")
# Seconds per section on the GPU machine (unused time rolls over to later sections).
BUDGETS = {"env": 25, "correctness": 50, "attention": 130, "train": 145, "neural": 100}
DRY_BUDGETS = {"env": 10, "correctness": 30, "attention": 35, "train": 45, "neural": 35}
SITE = "/tmp/proxyjax_site"

# What each section measures: "gpu" on the GPU machine, "dry" on CPU (toy sizes).
PROFILES = {
    "gpu": {
        "correctness": {"T": 2048, "B": 2, "H": 8, "KV": 2, "D": 128, "window": 256,
                        "blocks": {}, "no_window_case": True},
        "attention": {"seq_lens": [16384, 8192, 32768], "tokens": 32768, "heads": 16,
                      "kv_heads": 16, "head_dim": 128, "repeats": 10,
                      "variants": [(64, 64), (128, 64)]},
        "train": {"sizes": ["0.5b", "1.5b"], "seq_len": 8192, "vocab": 32768,
                  "tokenizer_mb": 8, "steps": 8, "model": {}, "batch": None},
        "neural": {"size": "gpu", "train_steps": 300, "max_mb": 2.0, "model": {},
                   "seq_len": None, "context": None, "batch_rows": None},
    },
    "dry": {
        "correctness": {"T": 128, "B": 2, "H": 4, "KV": 2, "D": 32, "window": 40,
                        "blocks": {"block_q": 32, "block_k": 32}, "no_window_case": False},
        "attention": {"seq_lens": [256], "tokens": 256, "heads": 2, "kv_heads": 1,
                      "head_dim": 32, "repeats": 1, "variants": [(64, 64)]},
        "train": {"sizes": ["0.5b"], "seq_len": 128, "vocab": 512, "tokenizer_mb": 1,
                  "steps": 2, "batch": 2,
                  "model": {"d_model": 64, "n_layers": 2, "n_heads": 2, "head_dim": 32,
                            "d_ff": 128, "logits_chunk": 64, "remat": "none"}},
        # A smaller compressor still, untrained (compile time dominates on CPU).
        "neural": {"size": "tiny", "train_steps": 0, "max_mb": 0.01, "seq_len": 128,
                   "context": 128, "batch_rows": 4,
                   "model": {"d_model": 64, "n_layers": 1, "n_heads": 2, "head_dim": 32,
                             "d_ff": 128}},
    },
}


def _profile(args, section: str) -> dict:
  return PROFILES["dry" if args.dry_run else "gpu"][section]


# ----------------------------------------------------------------------------
# Small helpers shared by the orchestrator and the sections.
# ----------------------------------------------------------------------------


def _write_json(path: str, obj) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=_jsonable)
  os.replace(tmp, path)


def _jsonable(x):
  try:
    import numpy as np  # pylint: disable=g-import-not-at-top
    if isinstance(x, np.generic):
      return x.item()
    if isinstance(x, np.ndarray):
      return x.tolist()
  except ImportError:
    pass
  return str(x)


def _short(e: BaseException) -> str:
  lines = [l for l in str(e).splitlines() if l.strip()]
  return f"{type(e).__name__}: {(lines[0] if lines else '')[:300]}"


def _load_bench(name: str):
  """Imports ``benchmarks/<name>.py`` (benchmarks/ is no package)."""
  path = os.path.join(REPO, "benchmarks", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"proxyjax_bench_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class Recorder:
  """A section's results, rewritten atomically after every ``set``."""

  def __init__(self, path: str, deadline: float):
    self.path = path
    self.deadline = deadline
    self.t0 = time.time()
    self.data: dict = {"results": {}, "notes": [], "timeline": {}}

  def mark(self, what: str) -> None:
    """Seconds since the section started, under ``timeline`` (where the time goes)."""
    self.data["timeline"][what] = round(time.time() - self.t0, 2)
    print(f"[{time.time() - self.t0:6.1f}s] {what}", flush=True)

  def left(self) -> float:
    return self.deadline - time.time()

  def set(self, key: str, value) -> None:
    self.data["results"][key] = value
    self.flush()

  def note(self, text: str) -> None:
    print(f"[note] {text}", flush=True)
    self.data["notes"].append(text)
    self.flush()

  def flush(self) -> None:
    _write_json(self.path, self.data)


# ----------------------------------------------------------------------------
# Section: env.
# ----------------------------------------------------------------------------


def _version(name: str):
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version(name)
  except Exception:  # pylint: disable=broad-except
    return None


def _nvidia_smi() -> dict:
  exe = shutil.which("nvidia-smi")
  if not exe:
    return {"available": False}
  out = {"available": True}
  try:
    q = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                        "power.limit,compute_cap", "--format=csv,noheader"],
                       capture_output=True, text=True, timeout=20)
    out["query"] = [l.strip() for l in q.stdout.splitlines() if l.strip()]
    h = subprocess.run([exe], capture_output=True, text=True, timeout=20)
    m = re.search(r"CUDA Version:\s*([0-9.]+)", h.stdout)
    out["cuda_driver_version"] = m.group(1) if m else None
    m = re.search(r"Driver Version:\s*([0-9.]+)", h.stdout)
    out["driver_version"] = m.group(1) if m else None
  except Exception as e:  # pylint: disable=broad-except
    out["error"] = _short(e)
  return out


def section_env(rec: Recorder, args) -> None:
  del args
  rec.set("host", {"python": platform.python_version(), "executable": sys.executable,
                   "machine": platform.machine(), "cpus": os.cpu_count(),
                   "platform": platform.platform()})
  rec.set("nvidia_smi", _nvidia_smi())
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  d = devices[0]
  try:
    stats = d.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  try:
    import jax.extend.backend  # pylint: disable=g-import-not-at-top
    backend_version = " ".join(jax.extend.backend.get_backend().platform_version.split())
  except Exception:  # pylint: disable=broad-except
    backend_version = None
  rec.set("jax", {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                  "backend": jax.default_backend(), "backend_version": backend_version,
                  "device_count": len(devices), "device_kind": d.device_kind,
                  "platform": d.platform,
                  "compute_capability": getattr(d, "compute_capability", None),
                  "bytes_limit": stats.get("bytes_limit")})
  rec.set("packages", {n: _version(n) for n in (
      "flax", "optax", "orbax-checkpoint", "grain", "array-record", "ml-collections",
      "numpy", "tokenizers", "tensorboardX", "jax-cuda12-plugin", "jax-cuda13-plugin",
      "nvidia-cudnn-cu12", "nvidia-cudnn-cu13", "triton")})
  from proxyjax.model import attention  # pylint: disable=g-import-not-at-top
  from proxyjax.model.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top
  backend, why = attention.auto_backend()
  ok, twhy = pallas_gpu.triton_available()
  rec.set("attention_auto", {"backend": backend, "why": why, "triton_available": ok,
                             "triton_why": twhy})
  from proxyjax.train import metrics  # pylint: disable=g-import-not-at-top
  rec.set("peak_bf16_tflops", (metrics.peak_flops(d) or 0) / 1e12 or None)


# ----------------------------------------------------------------------------
# Section: correctness.
# ----------------------------------------------------------------------------


def _packed_row(rng, t: int, pad: int):
  """One packed row: documents of varied lengths (1 .. t/3), then ``pad`` padding."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  ids, total, doc = [], 0, 1
  while total < t - pad:
    n = int(min(max(1, rng.geometric(6.0 / t)), t - pad - total))
    if rng.random() < 0.1:
      n = min(int(rng.integers(1, 4)), t - pad - total)  # tiny documents too
    ids += [doc] * n
    total += n
    doc += 1
  return np.asarray(ids + [0] * pad, np.int32)


def _errors(got, want) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  got = np.asarray(got, np.float32)
  want = np.asarray(want, np.float32)
  diff = got - want
  return {"max_abs": float(np.max(np.abs(diff))),
          "rel": float(np.linalg.norm(diff) / max(float(np.linalg.norm(want)), 1e-30)),
          "finite": bool(np.all(np.isfinite(got)))}


def section_correctness(rec: Recorder, args) -> None:
  import functools  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from proxyjax.model import attention  # pylint: disable=g-import-not-at-top
  from proxyjax.model.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top

  rec.mark("imports")
  prof = _profile(args, "correctness")
  interpret = jax.devices()[0].platform == "cpu"
  t, b, h, kv, d = (prof[k] for k in ("T", "B", "H", "KV", "D"))
  window, blocks = prof["window"], prof["blocks"]
  rng = np.random.default_rng(0)
  seg = jnp.asarray(np.stack([_packed_row(rng, t, 0), _packed_row(rng, t, t // 8)]))
  rec.set("shape", {"T": t, "B": b, "H": h, "KV": kv, "D": d, "dtype": "bfloat16",
                    "interpret": interpret, "docs_per_row": [int(np.unique(r[r > 0]).size)
                                                             for r in np.asarray(seg)],
                    "padding_per_row": [int((r == 0).sum()) for r in np.asarray(seg)]})
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  q = jax.random.normal(keys[0], (b, t, h, d), jnp.bfloat16)
  k = jax.random.normal(keys[1], (b, t, kv, d), jnp.bfloat16)
  v = jax.random.normal(keys[2], (b, t, kv, d), jnp.bfloat16)
  ct = jax.random.normal(keys[3], (b, t, h, d), jnp.bfloat16)
  f32 = lambda x: x.astype(jnp.float32)

  def out_and_grads(fn, q, k, v, ct):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out,) + tuple(vjp(ct))

  cases = ([("causal", None)] if prof["no_window_case"] else []) + [
      (f"causal+window{window}", window)]
  impls = ["pallas_gpu", "xla_bf16"] + ([] if interpret else ["cudnn"])
  ok_all = True
  for name, w in cases:
    if rec.left() < 5:
      rec.note(f"correctness {name}: skipped (out of time)")
      continue
    with jax.default_matmul_precision("highest"):  # no TF32 in the reference on GPUs
      ref = jax.jit(functools.partial(
          out_and_grads, functools.partial(attention.xla_attention, segment_ids=seg,
                                           window=w)))(f32(q), f32(k), f32(v), f32(ct))
    row = {}
    for impl in impls:
      t0 = time.perf_counter()
      try:
        if impl == "pallas_gpu":
          fn = functools.partial(pallas_gpu.flash_attention, segment_ids=seg, window=w,
                                 interpret=interpret, **blocks)
        elif impl == "xla_bf16":
          fn = functools.partial(attention.xla_attention, segment_ids=seg, window=w)
        else:
          fn = functools.partial(attention.attention, segment_ids=seg, window=w, backend=impl)
        got = jax.jit(functools.partial(out_and_grads, fn))(q, k, v, ct)
        jax.block_until_ready(got)
        errs = {n: _errors(g, r) for n, g, r in zip(("out", "dq", "dk", "dv"), got, ref)}
        pad = np.asarray(seg) == 0
        zero_pad = all(bool(np.all(np.asarray(x, np.float32)[pad] == 0.0))
                       for x in (got[0], got[1]))
        row[impl] = {"errors": errs, "padding_zero": zero_pad,
                     "seconds": time.perf_counter() - t0}
      except Exception as e:  # pylint: disable=broad-except
        row[impl] = {"error": _short(e)}
        traceback.print_exc()
    # Pass: finite, padding exactly zero, and relative error within 4x the bf16 XLA
    # error (or 2e-2, whichever is larger).
    pk, xb = row.get("pallas_gpu", {}), row.get("xla_bf16", {})
    ok = "errors" in pk and pk["padding_zero"]
    if ok:
      for n, e in pk["errors"].items():
        floor = xb.get("errors", {}).get(n, {}).get("rel", 0.0)
        ok &= e["finite"] and e["rel"] <= max(4 * floor, 2e-2)
    row["pass"] = bool(ok)
    ok_all &= bool(ok)
    rec.set(name, row)
    rec.mark(f"case {name}")
    print(f"correctness {name}: pass={ok} " + json.dumps(
        {i: {n: round(e["max_abs"], 5) for n, e in r.get("errors", {}).items()}
         for i, r in row.items() if isinstance(r, dict)}), flush=True)
  rec.set("pass", ok_all)


# ----------------------------------------------------------------------------
# Section: attention.
# ----------------------------------------------------------------------------


def section_attention(rec: Recorder, args) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from proxyjax.model.kernels import pallas_gpu  # pylint: disable=g-import-not-at-top
  from proxyjax.train import metrics  # pylint: disable=g-import-not-at-top
  bench = _load_bench("attention")
  rec.mark("imports")

  prof = _profile(args, "attention")
  interpret = jax.devices()[0].platform == "cpu"
  seq_lens, tokens, repeats, variants = (prof[k] for k in ("seq_lens", "tokens", "repeats",
                                                            "variants"))
  h, kv, d = prof["heads"], prof["kv_heads"], prof["head_dim"]
  dtype = jnp.bfloat16
  try:
    limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
  except Exception:  # pylint: disable=broad-except
    limit = None
  rec.set("setup", {"heads": h, "kv_heads": kv, "head_dim": d, "dtype": "bfloat16",
                    "view": "deflate", "rate": 0.9, "tokens_per_call": tokens,
                    "interpret": interpret, "repeats": repeats,
                    "flops": "14 H E per visible (query, key) pair (fwd 4, bwd 10)"})
  rows = []
  for t in seq_lens:
    if rec.left() < 10:
      rec.note(f"T={t}: skipped (out of time)")
      continue
    b = max(1, tokens // t)
    try:
      seg = jnp.asarray(bench.packed_segments(t, b, "deflate"))
    except Exception as e:  # pylint: disable=broad-except
      rec.note(f"T={t}: no packed rows ({_short(e)})")
      traceback.print_exc()
      continue
    rec.mark(f"T={t}: packed rows")
    pairs = metrics.visible_pairs(np.asarray(seg))
    docs = [int(np.unique(r[r > 0]).size) for r in np.asarray(seg)]
    q, k, v, ct = bench.inputs(b, t, h, kv, d, dtype)
    # The comparison point and our kernel first (the 16k target), extra kernel
    # block shapes last.
    runs = [("cudnn", {}), ("pallas_gpu", {"block_q": variants[0][0], "block_k": variants[0][1]}),
            ("cudnn_causal", {}), ("xla", {})]
    runs += [("pallas_gpu", {"block_q": bq, "block_k": bk}) for bq, bk in variants[1:]]
    per_t = {}
    for name, kw in runs:
      label = name if not kw or (kw["block_q"], kw["block_k"]) == variants[0] else (
          f"{name}[{kw['block_q']}x{kw['block_k']}]")
      row = {"seq_len": t, "batch": b, "backend": label, "docs_per_row": docs,
             "visible_pairs": pairs}
      if label != name and t != seq_lens[0]:
        continue  # extra kernel variants only at the first (target) length
      args_x = (q, k, v, seg, ct)
      if name == "xla" and limit is not None:
        # fp32 logits, probabilities and their gradients, the mask: ~20 bytes per entry.
        need = h * t * t * 20
        if need > 0.45 * limit:
          row["skipped"] = f"dense T x T logits need ~{need / 2**30:.0f} GiB per row"
          rows.append(row)
          rec.set("rows", rows)
          continue
        if b * need > 0.45 * limit:  # one row only: its own pair count, no speed-up
          args_x = (q[:1], k[:1], v[:1], seg[:1], ct[:1])
          row["batch"] = 1
          row["visible_pairs"] = metrics.visible_pairs(np.asarray(seg[:1]))
      if rec.left() < 8:
        row["skipped"] = "out of time"
        rows.append(row)
        rec.set("rows", rows)
        continue
      if name == "pallas_gpu":
        row["block_q"], row["block_k"] = kw["block_q"], kw["block_k"]
        row["visible_block_fraction"] = float(pallas_gpu.visible_fraction(
            seg, kw["block_q"], kw["block_k"]))
        row["block_pairs"] = bench.block_pairs(seg, kw["block_q"], kw["block_k"])
      try:
        fn = bench.backend_fn(name, interpret=interpret, **kw)
        xq, xk, xv, xseg, xct = args_x
        timing = bench.time_fwd_bwd(fn, xq, xk, xv, xseg, xct, repeats,
                                    deadline=rec.deadline - 5)
        row.update(timing)
        sec = timing["fwd_bwd_ms"] / 1e3
        row["tflops"] = bench.attention_flops(row["visible_pairs"], h, d) / sec / 1e12
        if name == "pallas_gpu":
          row["tflops_blocks"] = bench.attention_flops(row["block_pairs"], h, d) / sec / 1e12
        if name == "cudnn_causal":
          causal_pairs = b * t * (t + 1) // 2
          row["tflops_causal_pairs"] = bench.attention_flops(causal_pairs, h, d) / sec / 1e12
        if row["batch"] == b:
          per_t[label] = timing["fwd_bwd_ms"]
      except Exception as e:  # pylint: disable=broad-except
        row["error"] = _short(e)
        traceback.print_exc()
      rows.append(row)
      dense = per_t.get("cudnn")
      for r in rows:
        if r["seq_len"] == t and r["batch"] == b and dense and r.get("fwd_bwd_ms"):
          r["speedup_vs_cudnn_dense"] = dense / r["fwd_bwd_ms"]
      rec.set("rows", rows)
      print(f"attention T={t} {label}: {json.dumps({k: row.get(k) for k in ('fwd_bwd_ms', 'tflops', 'error', 'skipped')})}",
            flush=True)
  target = [r for r in rows if r["seq_len"] == seq_lens[0] and r["backend"] == "pallas_gpu"]
  if target and target[0].get("speedup_vs_cudnn_dense"):
    x = target[0]["speedup_vs_cudnn_dense"]
    rec.set("target", {"seq_len": seq_lens[0], "speedup_vs_cudnn_dense": x, "target": 2.0,
                       "met": x >= 2.0})


# ----------------------------------------------------------------------------
# Section: train.
# ----------------------------------------------------------------------------


def _train_candidates(config, limit):
  """(remat, batch) to try, best first, from the plan module's analytic estimate.

  Least recompute first (none, dots, full), each with the largest batch (16 .. 1)
  whose estimate fits 85% of the device; after each, the same remat at half the
  batch (the estimate can be low)."""
  if not limit:
    return [(config.model.remat, config.batch_size)], "unknown device memory: as configured"
  fallback = [("none", 4), ("dots", 8), ("full", 16), ("full", 8), ("full", 4)]
  try:
    from proxyjax import parallel, plan  # pylint: disable=g-import-not-at-top
    from proxyjax.data import pipeline  # pylint: disable=g-import-not-at-top
    from proxyjax.model import attention, transformer  # pylint: disable=g-import-not-at-top
    c = config.copy_and_resolve_references()
    c.model.remat, c.batch_size = "full", 1
    base = plan.make_plan(c, plan.Options(devices=1, device_memory_gb=limit / 2**30,
                                          compile="never"))
    fixed = 2 * base["params_bytes"] + base["opt_bytes"]
    model_cfg = transformer.ModelConfig.from_config(c, pipeline.build_vocab(c))
    rules = parallel.rules_for(c.mesh.rules)
    backend = attention.auto_backend()[0] if c.model.attention == "auto" else c.model.attention
    mesh = {"data": 1, "fsdp": 1, "tensor": 1}
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    return fallback, f"plan failed ({_short(e)}); a fixed list"
  cands, why = [], [f"params+grads+Adam {fixed / 2**30:.1f} GiB"]
  for remat in ("none", "dots", "full"):
    for batch in (16, 8, 4, 2, 1):
      acts = plan.activation_bytes(model_cfg, batch, c.seq_len, 1, rules, backend)[remat]
      need = fixed + acts + plan.transient_bytes(model_cfg, batch, c.seq_len, mesh, rules,
                                                 backend)
      if need <= 0.85 * limit:
        why.append(f"{remat}/{batch}: {need / 2**30:.0f} GiB")
        if batch >= 2 or remat == "full":
          cands.append((remat, batch))
          if batch >= 4:
            cands.append((remat, batch // 2))
        break
  return cands or [("full", 1)], "analytic (proxyjax.plan), 85% of the device: " + ", ".join(why)


def section_train(rec: Recorder, args) -> None:
  import jax  # pylint: disable=g-import-not-at-top

  from proxyjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from proxyjax.tools import train_tokenizer  # pylint: disable=g-import-not-at-top
  bench = _load_bench("train_step")
  rec.mark("imports")

  prof = _profile(args, "train")
  vocab = prof["vocab"]
  tok_path = os.path.join(args.work_dir, f"bpe{vocab}.json")
  t0 = time.perf_counter()
  if not os.path.exists(tok_path):
    train_tokenizer.train_tokenizer("stdlib", vocab, tok_path,
                                    max_bytes=prof["tokenizer_mb"] << 20)
  rec.set("tokenizer", {"vocab_size": vocab, "trained_on_mb": prof["tokenizer_mb"],
                        "seconds": time.perf_counter() - t0})
  rec.mark("tokenizer")
  try:
    limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
  except Exception:  # pylint: disable=broad-except
    limit = None
  sizes = prof["sizes"]
  for size in sizes:
    if size != sizes[0] and rec.left() < 70:
      rec.note(f"{size}: skipped ({rec.left():.0f} s left)")
      continue
    c = config_lib.ladder_config(size)
    c.data.sources = "stdlib"  # speed on the embedded corpus (the ladder configs name none)
    c.seq_len = prof["seq_len"]
    c.data.tokenizer_path = tok_path
    c.data.tokenizer_vocab_size = vocab
    c.data.num_workers = 0
    c.data.schedule.enabled = False  # the steady state: 90% compressed, sentinel
    c.data.rate, c.data.mode = 0.9, "sentinel"
    c.mesh.shape = (1, 1, 1)
    c.progress_bar = False
    for k, v in prof["model"].items():
      c.model[k] = v
    if prof["batch"]:
      c.batch_size = prof["batch"]
    cands, why = _train_candidates(c, limit)
    entry = {"config": f"configs/{size}.py", "seq_len": c.seq_len, "candidates": cands,
             "choice_reason": why, "attempts": []}
    rec.set(size, entry)
    max_batch = max(bt for _, bt in cands)
    c.batch_size = max_batch
    rec.mark(f"{size}: candidates")
    try:
      batch = bench.host_batch(c)
    except Exception as e:  # pylint: disable=broad-except
      entry["error"] = f"no batch: {_short(e)}"
      rec.set(size, entry)
      traceback.print_exc()
      continue
    rec.mark(f"{size}: batch")
    for remat, bt in cands:
      if rec.left() < 25:
        entry["attempts"].append({"remat": remat, "batch": bt, "skipped": "out of time"})
        break
      c.model.remat, c.batch_size = remat, bt
      sub = {k: v[:bt] for k, v in batch.items()}  # all [rows, ...] arrays
      try:
        row = bench.measure(c, steps=prof["steps"], batch=sub, check_memory=bool(limit),
                            deadline=rec.deadline - 10)
        entry["attempts"].append({"remat": remat, "batch": bt, "ok": True})
        rec.mark(f"{size}: measured {remat}/{bt}")
        entry["result"] = row
        rec.set(size, entry)
        print(f"train {size}: remat {remat} batch {bt}: {row['step_s']:.3f} s/step, "
              f"{row['symbols_per_s']:.0f} symbols/s, MFU {row['mfu']}", flush=True)
        break
      except Exception as e:  # pylint: disable=broad-except
        entry["attempts"].append({"remat": remat, "batch": bt, "error": _short(e)})
        rec.set(size, entry)
        traceback.print_exc()
        import gc  # pylint: disable=g-import-not-at-top
        gc.collect()
    if "result" in entry:
      mfu = entry["result"].get("mfu")
      entry["mfu_target"] = {"target": 0.40, "met": (mfu >= 0.40) if mfu is not None else None}
      rec.set(size, entry)


# ----------------------------------------------------------------------------
# Section: neural.
# ----------------------------------------------------------------------------


def _train_docs(config, max_bytes: int) -> list[bytes]:
  """Documents of the train split (the validation split is only ~0.2 MB of stdlib)."""
  from proxyjax.data import sources  # pylint: disable=g-import-not-at-top
  d = config.data
  docs, total = [], 0
  for src, _ in sources.make_sources(d.sources, split="train",
                                     validation_fraction=d.validation_fraction,
                                     text_field=d.text_field, record_format=d.record_format,
                                     tfds_data_dir=d.tfds_data_dir):
    for i in range(len(src)):
      doc = src[i]
      if doc["error"] is None and doc["text"]:
        docs.append(doc["text"])
        total += len(doc["text"])
        if total >= max_bytes:
          return docs
  return docs


def section_neural(rec: Recorder, args) -> None:
  import jax  # pylint: disable=g-import-not-at-top

  from proxyjax.neural import (
    byte_lm,  # pylint: disable=g-import-not-at-top
    codec,  # pylint: disable=g-import-not-at-top
  )
  from proxyjax.views.neural.settings import compressor_config  # pylint: disable=g-import-not-at-top
  bench = _load_bench("neural_compressor")
  rec.mark("imports")

  prof = _profile(args, "neural")
  size = prof["size"]
  config = compressor_config(size)
  steps = (args.neural_train_steps if args.neural_train_steps is not None
           else prof["train_steps"])
  config.num_steps = steps
  config.log_every = steps
  config.eval_every = 0
  config.checkpoint_every = 0
  config.progress_bar = False
  config.async_checkpointing = False
  config.opt.warmup_steps = max(1, min(config.opt.warmup_steps, steps // 5))
  config.data.num_workers = 0
  for k, v in prof["model"].items():
    config.model[k] = v
  if prof["seq_len"]:
    config.seq_len = prof["seq_len"]
  if prof["context"]:
    config.compressor.context = prof["context"]
  if prof["batch_rows"]:
    config.compressor.batch_rows = prof["batch_rows"]
  workdir = os.path.join(args.work_dir, "compressor")
  train_deadline = time.time() + min(60.0, max(rec.left() - 60.0, 5.0))
  info = {"config": f"configs/compressor.py:{size}", "steps_asked": steps}
  rec.set("compressor", info)
  t0 = time.perf_counter()
  model = None
  try:
    if steps <= 0:
      raise RuntimeError("no training asked for (--neural_train_steps=0)")
    from proxyjax import trainer  # pylint: disable=g-import-not-at-top
    last = trainer.train(config, workdir,
                      stop=lambda step, requested: requested or time.time() > train_deadline)
    info["train_s"] = time.perf_counter() - t0
    if isinstance(last, dict):
      info["last_metrics"] = {k: last.get(k) for k in ("loss", "raw_bpb", "step_time", "mfu")}
    rec.mark("compressor trained")
    model = byte_lm.ByteModel.restore(config, workdir)
    info["trained_steps"] = model.step
    rec.mark("compressor restored")
  except Exception as e:  # pylint: disable=broad-except
    if steps > 0:
      traceback.print_exc()
    info["train_error"] = _short(e)
    rec.note(f"compressor not trained ({_short(e)}); measuring a randomly initialised "
             "model (coder figures then reflect near-uniform tables)")
    model = byte_lm.ByteModel.init(config)
    info["trained_steps"] = 0
  rec.set("compressor", info)

  st = model.settings
  max_bytes = int(prof["max_mb"] * 1e6)
  docs = _train_docs(config, max_bytes)
  nbytes = sum(len(x) for x in docs)
  workers = max(1, min((os.cpu_count() or 2) - 2, 12))
  rec.set("setup", {"documents": len(docs), "bytes": nbytes, "settings": st.to_dict(),
                    "device": str(model.device.device_kind), "cpus": os.cpu_count(),
                    "coder_workers": workers})
  # The model forward alone first (the number that matters most on a GPU).
  comp = codec.NeuralCompressor(model)
  t = time.perf_counter()
  comp.encode([docs[0][:64]])
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  for _ in comp.tables(docs):
    pass
  model_s = time.perf_counter() - t
  rows_per_call = st.batch_rows
  rec.set("model_forward", {"seconds": model_s, "compile_s": compile_s,
                            "mb_per_s": nbytes / 1e6 / model_s,
                            "gb_per_hour": nbytes / 1e9 / model_s * 3600,
                            "batch_rows": rows_per_call, "context": st.context,
                            "dtype": "float64"})
  rec.mark("model forward")
  print(f"neural model forward: {nbytes / 1e6 / model_s:.3f} MB/s = "
        f"{nbytes / 1e9 / model_s * 3600:.3f} GB/h", flush=True)
  if rec.left() < 15:
    rec.note("end-to-end measurement skipped (out of time)")
    return
  res = bench.measure(config, model, decode_docs=0, views=(), coder_workers=workers, docs=docs)
  n = res["neural"]
  rec.mark("end to end")
  rec.set("end_to_end", {k: n.get(k) for k in (
      "gb_per_hour", "mb_per_s", "model_mb_per_s", "coder_mb_per_s", "host_only_mb_per_s",
      "coder_workers", "bytes_per_symbol", "bits_per_byte", "model_bits_per_coded_byte",
      "window_fill", "literal_fraction", "fragile_fraction", "fragility_cost",
      "pipelined_s", "model_s", "coder_s", "host_only_s")})
  print(f"neural end to end: {n['mb_per_s']:.3f} MB/s = {n['gb_per_hour']:.3f} GB/h "
        f"({workers} coder workers)", flush=True)
  del jax


SECTION_FNS = {"env": section_env, "correctness": section_correctness,
               "attention": section_attention, "train": section_train,
               "neural": section_neural}


def run_section(args) -> int:
  """Subprocess entry: one section, results into ``args.section_json``."""
  rec = Recorder(args.section_json, args.deadline)
  rec.flush()
  logging_setup()
  if args.dry_run:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  t0 = time.perf_counter()
  if os.environ.get("PROXYJAX_GPU_SUITE_STALL") == args.section:  # tests: a hung section
    rec.set("stalled", True)
    time.sleep(3600)
  try:
    SECTION_FNS[args.section](rec, args)
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    rec.data["error"] = _short(e)
    rec.data["seconds"] = time.perf_counter() - t0
    rec.flush()
    return 1
  rec.data["seconds"] = time.perf_counter() - t0
  rec.flush()
  return 0


def logging_setup() -> None:
  import logging  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "jax", "jax._src", "orbax", "grain", "etils", "h5py"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


# ----------------------------------------------------------------------------
# Orchestrator.
# ----------------------------------------------------------------------------


def _fmt(x, spec=".3g"):
  if x is None:
    return "–"
  if isinstance(x, bool):
    return "yes" if x else "no"
  if isinstance(x, (int, float)):
    return format(x, spec)
  return str(x)


def _gib(x):
  return "–" if not x else f"{x / 2**30:.1f} GiB"


def render_markdown(suite: dict) -> str:
  s = suite["sections"]
  lines = [f"# GPU suite ({suite['started']}, {'dry run (CPU, toy sizes)' if suite['dry_run'] else 'full'})",
           "", f"Command: `{suite['command']}`; wall {suite.get('wall_s', 0):.0f} s "
           f"of {suite['total_s']:.0f} s.", "",
           "| section | status | seconds | budget s | summary |", "|---|---|---|---|---|"]
  for name in SECTIONS:
    sec = s.get(name, {})
    lines.append(f"| {name} | {sec.get('status', 'pending')} | {_fmt(sec.get('seconds'), '.0f')} "
                 f"| {_fmt(sec.get('timeout_s'), '.0f')} | {_summary(name, sec)} |")
  env = s.get("env", {}).get("results", {})
  if env:
    j, smi = env.get("jax", {}), env.get("nvidia_smi", {})
    lines += ["", "## env", "", "| field | value |", "|---|---|",
              f"| device | {j.get('device_kind')} x{j.get('device_count')} "
              f"(sm {j.get('compute_capability')}, {_gib(j.get('bytes_limit'))} usable) |",
              f"| driver / CUDA | {smi.get('driver_version')} / {smi.get('cuda_driver_version')} |",
              f"| jax / jaxlib | {j.get('jax')} / {j.get('jaxlib')} ({j.get('backend_version')}) |",
              f"| python | {env.get('host', {}).get('python')} ({env.get('host', {}).get('cpus')} CPUs) |",
              f"| attention auto | {env.get('attention_auto', {}).get('backend')}: "
              f"{env.get('attention_auto', {}).get('why')} |"]
  cor = s.get("correctness", {}).get("results", {})
  if cor:
    sh = cor.get("shape", {})
    lines += ["", "## correctness (bf16 vs fp32 XLA reference on the same inputs)", "",
              f"T={sh.get('T')}, B={sh.get('B')}, H={sh.get('H')}, KV={sh.get('KV')}, "
              f"D={sh.get('D')}, documents per row {sh.get('docs_per_row')}, padding "
              f"{sh.get('padding_per_row')}, interpret={sh.get('interpret')}", "",
              "| case | impl | out max abs | dq max abs | dk max abs | dv max abs | max rel | pass |",
              "|---|---|---|---|---|---|---|---|"]
    for case, row in cor.items():
      if not isinstance(row, dict) or "pass" not in row:
        continue
      for impl, r in row.items():
        if not isinstance(r, dict):
          continue
        if "errors" in r:
          e = r["errors"]
          rel = max(x["rel"] for x in e.values())
          lines.append(f"| {case} | {impl} | " + " | ".join(
              _fmt(e[n]["max_abs"], ".2e") for n in ("out", "dq", "dk", "dv")) +
                       f" | {rel:.2e} | {_fmt(row['pass']) if impl == 'pallas_gpu' else ''} |")
        else:
          lines.append(f"| {case} | {impl} | {r.get('error')} | | | | | |")
  att = s.get("attention", {}).get("results", {})
  if att.get("rows"):
    lines += ["", "## attention fwd+bwd on packed rows (deflate proxy, rate 0.9)", "",
              "| T | rows | backend | ms | TFLOP/s (visible pairs) | TFLOP/s (visited blocks) "
              "| visited blocks | vs cuDNN dense | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in att["rows"]:
      lines.append(f"| {r['seq_len']} | {r['batch']} | {r['backend']} | {_fmt(r.get('fwd_bwd_ms'), '.2f')} "
                   f"| {_fmt(r.get('tflops'), '.1f')} | {_fmt(r.get('tflops_blocks'), '.1f')} "
                   f"| {_fmt(r.get('visible_block_fraction'), '.3f')} "
                   f"| {_fmt(r.get('speedup_vs_cudnn_dense'), '.2f')} "
                   f"| {r.get('error') or r.get('skipped') or ''} |")
  tr = s.get("train", {}).get("results", {})
  sizes = [k for k in ("0.5b", "1.5b") if k in tr]
  if sizes:
    lines += ["", "## train step (seq 8192 on the GPU; one real batch, bf16, fp32 master weights)", "",
              "| config | remat | batch | attention | step s | symbols/s | TFLOP/s | MFU | peak mem "
              "| compile s | attempts |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in sizes:
      e = tr[size]
      r = e.get("result", {})
      attempts = "; ".join(f"{a['remat']}/{a['batch']}: " + (
          "ok" if a.get("ok") else (a.get("error") or a.get("skipped") or "?"))[:80]
                           for a in e.get("attempts", []))
      lines.append(f"| {size} | {r.get('remat', '–')} | {r.get('batch', '–')} | {r.get('attention', '–')} "
                   f"| {_fmt(r.get('step_s'), '.3f')} | {_fmt(r.get('symbols_per_s'), ',.0f')} "
                   f"| {_fmt(r.get('tflops_per_device'), '.1f')} | {_fmt(r.get('mfu'), '.1%')} "
                   f"| {_gib(r.get('peak_bytes_in_use') or r.get('compiled_peak_bytes'))} "
                   f"| {_fmt(r.get('compile_s'), '.0f')} | {attempts or e.get('error', '')} |")
  ne = s.get("neural", {}).get("results", {})
  if ne:
    mf, ee, comp = ne.get("model_forward", {}), ne.get("end_to_end", {}), ne.get("compressor", {})
    setup = ne.get("setup", {})
    lines += ["", "## neural compressor", "",
              f"{comp.get('config')}, trained {comp.get('trained_steps')} steps "
              f"({_fmt(comp.get('train_s'), '.0f')} s); {setup.get('documents')} stdlib documents, "
              f"{_fmt((setup.get('bytes') or 0) / 1e6, '.2f')} MB; {setup.get('coder_workers')} coder workers",
              "", "| stage | MB/s | GB/h |", "|---|---|---|",
              f"| model forward (float64 + quantisation) | {_fmt(mf.get('mb_per_s'))} | {_fmt(mf.get('gb_per_hour'))} |",
              f"| coder, one process | {_fmt(ee.get('coder_mb_per_s'))} | {_fmt((ee.get('coder_mb_per_s') or 0) * 3.6)} |",
              f"| host only ({setup.get('coder_workers')} workers) | {_fmt(ee.get('host_only_mb_per_s'))} | {_fmt((ee.get('host_only_mb_per_s') or 0) * 3.6)} |",
              f"| end to end ({ee.get('coder_workers')} workers) | {_fmt(ee.get('mb_per_s'))} | {_fmt(ee.get('gb_per_hour'))} |"]
    if ee:
      lines.append(f"\nbytes/symbol {_fmt(ee.get('bytes_per_symbol'))}, model bits per coded byte "
                   f"{_fmt(ee.get('model_bits_per_coded_byte'))}, literal fraction "
                   f"{_fmt(ee.get('literal_fraction'))}")
  notes = [f"{n}: {t}" for n in SECTIONS for t in s.get(n, {}).get("notes", [])]
  if notes:
    lines += ["", "## notes", ""] + [f"* {t}" for t in notes]
  return "\n".join(lines) + "\n"


def _summary(name: str, sec: dict) -> str:
  r = sec.get("results", {})
  err = sec.get("error")
  try:
    if name == "env" and r.get("jax"):
      j = r["jax"]
      out = f"{j['device_kind']}, jax {j['jax']}, auto={r.get('attention_auto', {}).get('backend')}"
    elif name == "correctness" and "pass" in r:
      out = "pass" if r["pass"] else "FAIL"
    elif name == "attention" and r.get("rows"):
      tgt = r.get("target")
      out = (f"pallas_gpu vs cuDNN dense mask at T={tgt['seq_len']}: "
             f"{tgt['speedup_vs_cudnn_dense']:.2f}x (target 2x)" if tgt
             else f"{len(r['rows'])} rows")
    elif name == "train":
      out = ", ".join(f"{k}: MFU {_fmt(r[k].get('result', {}).get('mfu'), '.1%')}"
                      for k in ("0.5b", "1.5b") if k in r)
    elif name == "neural" and r.get("model_forward"):
      out = (f"model {r['model_forward']['gb_per_hour']:.3g} GB/h, end to end "
             f"{_fmt(r.get('end_to_end', {}).get('gb_per_hour'))} GB/h")
    else:
      out = ""
  except Exception:  # pylint: disable=broad-except
    out = ""
  if err:
    out = (out + "; " if out else "") + err[:120]
  return out.replace("|", "/")


class Suite:
  """Runs the sections one after the other, each in a process with a time box."""

  def __init__(self, args):
    self.args = args
    self.t0 = time.time()
    self.deadline = self.t0 + args.total_s
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work_dir, exist_ok=True)
    self.json_path = os.path.join(args.out, "gpu_suite.json")
    self.md_path = os.path.join(args.out, "gpu_suite.md")
    self.log_path = os.path.join(args.out, "gpu_suite.log")
    self.data = {
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "dry_run": args.dry_run, "total_s": args.total_s, "setup": {},
        "sections": {n: {"status": "pending"} for n in args.sections}}
    self.log = open(self.log_path, "a", buffering=1)

  def save(self) -> None:
    self.data["wall_s"] = time.time() - self.t0
    _write_json(self.json_path, self.data)
    with open(self.md_path, "w") as f:
      f.write(render_markdown(self.data))

  def say(self, text: str) -> None:
    line = f"[gpu_suite {time.time() - self.t0:6.1f}s] {text}"
    print(line, flush=True)
    self.log.write(line + "\n")

  def install_wheels(self) -> str:
    """``SITE`` with the carried wheels installed, or '' (nothing to do)."""
    args = self.args
    wheels_dir = os.path.join(REPO, args.wheels) if not os.path.isabs(args.wheels) else args.wheels
    wheels = sorted(f for f in (os.listdir(wheels_dir) if os.path.isdir(wheels_dir) else [])
                    if f.endswith(".whl"))
    setup = self.data["setup"]
    setup["wheels"] = wheels
    missing = [m for m in ("grain", "array_record", "ml_collections")
               if importlib.util.find_spec(m) is None]
    setup["missing_before"] = missing
    if not wheels or (not missing and not args.force_install):
      setup["installed"] = False
      return ""
    t = time.time()
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
           "--no-compile", "--no-cache-dir", "--upgrade", "--target", args.site]
    cmd += [os.path.join(wheels_dir, w) for w in wheels]
    self.say("installing carried wheels: " + " ".join(wheels))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    self.log.write(p.stdout + p.stderr)
    setup.update(installed=p.returncode == 0, install_s=time.time() - t, site=args.site)
    if p.returncode:
      setup["install_error"] = (p.stderr.strip().splitlines() or ["?"])[-1]
      self.say(f"wheel install failed: {setup['install_error']}")
      return ""
    return args.site

  def run(self) -> int:
    args = self.args
    self.say(f"out={args.out} work={args.work_dir} dry_run={args.dry_run} "
             f"total={args.total_s:.0f}s sections={','.join(args.sections)}")
    self.save()
    site = self.install_wheels()
    env = dict(os.environ)
    paths = [p for p in (site, REPO, env.get("PYTHONPATH", "")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if args.dry_run:
      env["JAX_PLATFORMS"] = "cpu"
      # Toy programs: XLA:CPU's optimisation passes cost more than they save.
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                          " --xla_llvm_disable_expensive_passes=true").strip()
    else:
      env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    self.save()
    budgets = DRY_BUDGETS if args.dry_run else BUDGETS
    for i, name in enumerate(args.sections):
      # This section's share of the time left, in proportion to the budgets of the
      # sections still to run (what earlier sections left unused rolls over).
      left = self.deadline - time.time()
      timeout = left * budgets[name] / sum(budgets[n] for n in args.sections[i:])
      if timeout < 5:
        self.data["sections"][name] = {"status": "skipped", "error": "no time left"}
        self.say(f"{name}: skipped (no time left)")
        self.save()
        continue
      self._run_section(name, timeout, env)
    self.data["finished"] = True
    self.save()
    md = render_markdown(self.data)
    print("\n" + md, flush=True)
    self.log.close()
    bad = [n for n, s in self.data["sections"].items() if s.get("status") != "ok"]
    return 1 if (bad and args.strict) else 0

  def _run_section(self, name: str, timeout: float, env: dict) -> None:
    args = self.args
    section_json = os.path.join(args.work_dir, f"{name}.json")
    if os.path.exists(section_json):
      os.remove(section_json)
    cmd = [sys.executable, os.path.abspath(__file__), f"--section={name}",
           f"--section_json={section_json}", f"--deadline={time.time() + timeout - 3:.3f}",
           f"--work_dir={args.work_dir}", f"--out={args.out}"]
    if args.dry_run:
      cmd.append("--dry_run")
    if args.neural_train_steps is not None:
      cmd.append(f"--neural_train_steps={args.neural_train_steps}")
    sec = {"status": "running", "timeout_s": timeout}
    self.data["sections"][name] = sec
    self.say(f"{name}: start (time box {timeout:.0f} s)")
    self.save()
    t = time.time()
    proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                            cwd=REPO, start_new_session=True)
    mtime = None
    status = None
    while True:
      try:
        rc = proc.wait(timeout=1.0)
        status = "ok" if rc == 0 else "error"
        break
      except subprocess.TimeoutExpired:
        pass
      if time.time() - t > timeout:
        self.say(f"{name}: out of time after {time.time() - t:.0f} s, stopping it")
        self._kill(proc)
        status = "timeout"
        break
      m = os.path.getmtime(section_json) if os.path.exists(section_json) else None
      if m != mtime:
        mtime = m
        self._merge(name, section_json, sec)
        self.save()
    self._merge(name, section_json, sec)
    sec["status"] = status
    sec["seconds"] = time.time() - t
    if status == "timeout":
      sec["error"] = f"out of time ({timeout:.0f} s); results so far kept"
    elif status == "error" and "error" not in sec:
      sec["error"] = f"exit code {proc.returncode} (see gpu_suite.log)"
    self.say(f"{name}: {status} in {sec['seconds']:.0f} s")
    self.save()

  @staticmethod
  def _kill(proc) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
      try:
        os.killpg(proc.pid, sig)
      except ProcessLookupError:
        return
      try:
        proc.wait(timeout=wait)
        return
      except subprocess.TimeoutExpired:
        continue

  @staticmethod
  def _merge(name: str, path: str, sec: dict) -> None:
    del name
    try:
      with open(path) as f:
        part = json.load(f)
    except (OSError, ValueError):
      return
    sec["results"] = part.get("results", {})
    sec["notes"] = part.get("notes", [])
    sec["timeline"] = part.get("timeline", {})
    if part.get("error"):
      sec["error"] = part["error"]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="Folder for gpu_suite.{json,md,log}.")
  p.add_argument("--dry_run", action="store_true",
                 help="Every section at toy sizes on CPU (Pallas in interpret mode).")
  p.add_argument("--total_s", type=float, default=None,
                 help="Wall-time limit of the whole suite (default 460 s; dry run 175 s).")
  p.add_argument("--sections", default=",".join(SECTIONS),
                 help=f"Comma-separated subset of {','.join(SECTIONS)}.")
  p.add_argument("--wheels", default=".whl", help="Folder of carried wheels (repo-relative).")
  p.add_argument("--site", default=SITE, help="pip --target folder for the carried wheels.")
  p.add_argument("--force_install", action="store_true",
                 help="Install the carried wheels even if grain is importable.")
  p.add_argument("--work_dir", default=None, help="Scratch folder (default: a new temp dir).")
  p.add_argument("--strict", action="store_true", help="Exit 1 if a section is not ok.")
  p.add_argument("--neural_train_steps", type=int, default=None,
                 help="Compressor training steps before the neural measurement (default 300; "
                      "dry run 0 = a randomly initialised compressor).")
  # Internal: one section in this process.
  p.add_argument("--section", default=None, help=argparse.SUPPRESS)
  p.add_argument("--section_json", default=None, help=argparse.SUPPRESS)
  p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.sections = [s for s in args.sections.split(",") if s]
  unknown = [s for s in args.sections if s not in SECTIONS]
  if unknown:
    p.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
  if args.total_s is None:
    args.total_s = 175.0 if args.dry_run else 460.0
  if args.work_dir is None and args.section is None:
    args.work_dir = tempfile.mkdtemp(prefix="gpu_suite_")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.section:
    return run_section(args)
  return Suite(args).run()


if __name__ == "__main__":
  sys.exit(main())
