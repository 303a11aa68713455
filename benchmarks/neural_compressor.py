r"""The neural view against deflate and the tokenizer on the validation split.

    python benchmarks/neural_compressor.py --config=configs/compressor.py \
        --workdir=COMPRESSOR_RUN [--max_docs=32] [--max_mb=1] [--decode_docs=2] \
        [--coder_workers=0] [--views=deflate,gzip,tokenizer] [--json_out=FILE] \
        [--sweep=6:2:7,5:1.5:7,7:3:7.5]

On the first validation documents of ``data.sources`` (first ``max_mb`` MB of
them) it reports, per view:
  * bytes/symbol: UTF-8 bytes per view symbol (the compression ratio of docs/method.md §2);
  * bits/byte: symbols * log2(alphabet) / bytes (the neural view at the
    alphabet 256 + 2^N, deflate at 8 bits, the tokenizer at log2 of its vocab);
and for the neural view also the model's own cost over the coded bytes (sum
-log2 p under each window's own context: what an ideal coder would spend), the
window fill (model bits / T per window), bytes per window, the literal share,
the entropy segments (count, bytes per segment, literal ones), the segment
cache's hit rate (repeated segments coded once), the fragile share of the
entropy pass, and throughput: the entropy pass alone (float64 forward over
document rows, entropies reduced on the device), end to end as ``python -m
proxyjax.compress`` runs it (entropy pass, then the windows of many segments
in batched short rows, coded in this thread or ``--coder_workers`` processes
while the device runs the next call) in MB/s and GB/hour for one process, and
the decoder's bytes/s on the first ``decode_bytes`` of ``decode_docs``
documents (every window decoded in lockstep, one row per window per call).
``--sweep`` repeats the end-to-end encode for other segmentation settings
(entropy_threshold:entropy_jump:literal_threshold[:window_context]) and reports
the literal fraction, bytes per symbol and bits per byte of each.
The tokenizer is ``data.tokenizer_path`` or a BPE trained on the train split
(``proxyjax.data.pipeline.resolve_tokenizer``, cached).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import zlib


def _documents(config, max_docs: int, max_bytes: int) -> list[bytes]:
  from proxyjax.data import sources  # pylint: disable=g-import-not-at-top
  d = config.data
  docs, total = [], 0
  for src, _ in sources.make_sources(d.sources, split="validation",
                                     validation_fraction=d.validation_fraction,
                                     text_field=d.text_field, record_format=d.record_format,
                                     tfds_data_dir=d.tfds_data_dir):
    for i in range(len(src)):
      doc = src[i]
      if doc["error"] is None and doc["text"]:
        docs.append(doc["text"])
        total += len(doc["text"])
        if len(docs) >= max_docs or total >= max_bytes:
          return docs
  return docs


def _baseline(name: str, config, docs: list[bytes]) -> dict:
  from proxyjax import views  # pylint: disable=g-import-not-at-top
  from proxyjax.data import pipeline  # pylint: disable=g-import-not-at-top
  path = ""
  if name in views.NEEDS_TOKENIZER:
    c = config.copy_and_resolve_references()
    c.data.view = name
    path = pipeline.resolve_tokenizer(c)
  view = views.make_view(name, tokenizer_path=path)
  t = time.perf_counter()
  symbols = sum(len(view.encode(d)) for d in docs)
  seconds = time.perf_counter() - t
  nbytes = sum(len(d) for d in docs)
  out = {"bytes_per_symbol": nbytes / symbols,
         "bits_per_byte": symbols * math.log2(view.alphabet_size) / nbytes,
         "alphabet": view.alphabet_size, "symbols": symbols, "mb_per_s": nbytes / 1e6 / seconds}
  if path:
    out["tokenizer"] = path
  return out


def _encode(comp, docs, workers: int) -> tuple[list, object, float]:
  """Encodes as ``proxyjax.compress`` does (entropy pass, batched window rows, the windows
  of each call coded in ``workers`` processes or this thread); returns the symbols,
  the summed stats and the seconds (worker start-up excluded)."""
  from proxyjax import compress  # pylint: disable=g-import-not-at-top
  from proxyjax.views.neural import coder  # pylint: disable=g-import-not-at-top
  pool = compress._coder_pool(workers)  # pylint: disable=protected-access
  try:
    if pool is not None:  # start the worker processes (and their imports) before timing
      list(pool.map(compress.worker_ready, range(2 * workers)))
    t = time.perf_counter()
    stats, out = coder.EncodeStats(), []
    for _, _, symbols, st, _ in comp.encode_stream(docs, pool=pool, workers=workers):
      stats += st
      out.append(symbols)
    return out, stats, time.perf_counter() - t
  finally:
    if pool is not None:
      pool.shutdown()


def _neural_numbers(stats, nbytes: int, st) -> dict:
  return {
      "bytes_per_symbol": nbytes / stats.symbols,
      "bits_per_byte": stats.symbols * math.log2(st.alphabet_size) / nbytes,
      "literal_fraction": stats.literal_bytes / nbytes,
      "bytes_per_window": stats.coded_bytes / max(stats.windows, 1),
      "window_fill": stats.model_bits / max(stats.windows * st.window_bits, 1),
      "model_bits_per_coded_byte": stats.model_bits / max(stats.coded_bytes, 1),
      "segments": stats.segments, "bytes_per_segment": nbytes / max(stats.segments, 1),
      "literal_segments": stats.literal_segments,
      "cache_hit_rate": stats.cache_hits / max(stats.cache_lookups, 1),
      "cache_hits": stats.cache_hits, "cache_lookups": stats.cache_lookups,
      "symbols": stats.symbols,
  }


def _parse_sweep(items) -> list[tuple]:
  out = []
  for item in items:
    parts = [float(x) for x in item.split(":")]
    if len(parts) not in (3, 4):
      raise ValueError("--sweep items are ENTROPY_THRESHOLD:ENTROPY_JUMP:LITERAL_THRESHOLD"
                       f"[:WINDOW_CONTEXT], got {item!r}")
    out.append(tuple(parts[:3]) + tuple(int(p) for p in parts[3:]))
  return out


def measure(config, model, *, max_docs: int = 32, max_mb: float = 1.0, decode_docs: int = 2,
            decode_bytes: int = 256, views=("deflate", "gzip", "tokenizer"),
            coder_workers: int = 0, docs: list[bytes] | None = None, sweep=()) -> dict:
  """Everything this benchmark reports, for a ``ByteModel`` (``ByteModel.restore`` or
  ``.init``), as one JSON-able dict (``benchmarks/gpu_suite.py`` calls it).
  ``decode_docs=0`` skips the decode; ``views=()`` the baselines; ``sweep``:
  ``(entropy_threshold, entropy_jump, literal_threshold)`` settings to compare."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  from proxyjax.neural import (
    byte_lm,  # pylint: disable=g-import-not-at-top
    codec,  # pylint: disable=g-import-not-at-top
  )

  st = model.settings
  if docs is None:
    docs = _documents(config, max_docs, int(max_mb * 1e6))
  nbytes = sum(len(d) for d in docs)
  t_compile = time.perf_counter()
  codec.NeuralCompressor(model).encode([docs[0][:64]])  # compile both row shapes
  t_compile = time.perf_counter() - t_compile
  t0 = time.perf_counter()
  for _ in codec.NeuralCompressor(model).entropies(docs):
    pass
  t_entropy = time.perf_counter() - t0
  workers = coder_workers
  streams, stats, t_piped = _encode(codec.NeuralCompressor(model), docs, workers)
  positions = sum(len(d) for d in docs)
  heads = [d[:decode_bytes] for d in docs[:decode_docs]]
  t_dec = 0.0
  if heads:
    comp = codec.NeuralCompressor(model)
    head_streams = comp.encode(heads)
    t3 = time.perf_counter()
    decoded = comp.decode(head_streams, crc32s=[zlib.crc32(d) for d in heads])
    t_dec = time.perf_counter() - t3
    assert decoded == heads, "round trip failed"
  dec_bytes = sum(len(d) for d in heads)
  neural = dict(_neural_numbers(stats, nbytes, st), **{
      "alphabet": st.alphabet_size,
      "fragile_fraction": stats.fragile_positions / positions,
      "fragile_positions": stats.fragile_positions, "positions": positions,
      "fragile_literals": stats.fragile_literals,
      "entropy_pass_s": t_entropy, "pipelined_s": t_piped,
      "model_s": t_entropy,  # (the previous benchmark's "model" was its one pass)
      "entropy_pass_mb_per_s": nbytes / 1e6 / t_entropy,
      "model_mb_per_s": nbytes / 1e6 / t_entropy,
      "windows_s": max(t_piped - t_entropy, 0.0),
      "mb_per_s": nbytes / 1e6 / t_piped, "gb_per_hour": nbytes / 1e9 / t_piped * 3600,
      "coder_workers": workers,
      "decode_bytes_per_s": dec_bytes / t_dec if heads else None, "decoded_docs": len(heads),
      "decoded_bytes": dec_bytes,
      "settings": st.to_dict(), "checkpoint_step": model.step, "compile_s": t_compile,
  })
  results = {"documents": len(docs), "bytes": nbytes, "neural": neural,
             "device": str(model.device.device_kind), "cpus": os.cpu_count(),
             "python": platform.python_version(), "jax": jax.__version__}
  sweeps = []
  for threshold, jump, literal, *window in sweep:
    s2 = dataclasses.replace(st, entropy_threshold=threshold, entropy_jump=jump,
                             literal_threshold=literal,
                             window_context=window[0] if window else st.window_context)
    m2 = byte_lm.ByteModel(model.model_cfg, model.host_params, s2, step=model.step,
                           device=model.device)
    _, st2, seconds = _encode(codec.NeuralCompressor(m2), docs, workers)
    sweeps.append(dict(_neural_numbers(st2, nbytes, s2), entropy_threshold=threshold,
                       entropy_jump=jump, literal_threshold=literal,
                       window_context=s2.window_context, seconds=seconds,
                       gb_per_hour=nbytes / 1e9 / seconds * 3600))
  if sweeps:
    results["sweep"] = sweeps
  for name in views:
    results[name] = _baseline(name, config, docs)
  return results


def main(argv):
  del argv
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  from proxyjax.neural import byte_lm  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  model = byte_lm.ByteModel.restore(config, _WORKDIR.value)
  results = measure(config, model, max_docs=_MAX_DOCS.value, max_mb=_MAX_MB.value,
                    decode_docs=_DECODE_DOCS.value, decode_bytes=_DECODE_BYTES.value,
                    views=_VIEWS.value, coder_workers=_CODER_WORKERS.value,
                    sweep=_parse_sweep(_SWEEP.value))
  docs, nbytes, neural = results["documents"], results["bytes"], results["neural"]
  workers = neural["coder_workers"]
  print(f"{docs} validation documents, {nbytes / 1e6:.3f} MB, compressor step {model.step} "
        f"({results['device']}, {results['cpus']} CPUs)")
  print(f"{'view':<12}{'bytes/symbol':>14}{'bits/byte':>11}{'alphabet':>10}")
  for name in ["neural"] + list(_VIEWS.value):
    r = results[name]
    print(f"{name:<12}{r['bytes_per_symbol']:>14.3f}{r['bits_per_byte']:>11.3f}{r['alphabet']:>10}")
  print(f"neural: model {neural['model_bits_per_coded_byte']:.3f} bits/coded byte, window fill "
        f"{neural['window_fill']:.3f}, {neural['bytes_per_window']:.2f} bytes/window, literal "
        f"{neural['literal_fraction']:.3%}, {neural['segments']} segments "
        f"({neural['bytes_per_segment']:.2f} bytes each, {neural['literal_segments']} literal), "
        f"segment cache hits {neural['cache_hit_rate']:.2%} "
        f"({neural['cache_hits']}/{neural['cache_lookups']})")
  print(f"neural fragile entropy-pass tables: {neural['fragile_positions']}/{neural['positions']} "
        f"positions ({neural['fragile_fraction']:.2e}); {neural['fragile_literals']} bytes "
        "literal for a fragile window table")
  print(f"neural throughput: entropy pass {neural['entropy_pass_mb_per_s'] * 1e3:.1f} KB/s, "
        f"end to end {neural['mb_per_s'] * 1e3:.1f} KB/s = {neural['gb_per_hour']:.4f} GB/h per "
        f"process (coder_workers={workers}); decode {neural['decode_bytes_per_s'] or 0:.0f} B/s")
  for r in results.get("sweep", []):
    print(f"sweep entropy_threshold={r['entropy_threshold']} entropy_jump={r['entropy_jump']} "
          f"literal_threshold={r['literal_threshold']} window_context={r['window_context']}: literal {r['literal_fraction']:.2%}, "
          f"{r['bytes_per_symbol']:.3f} bytes/symbol, {r['bits_per_byte']:.3f} bits/byte, "
          f"{r['bytes_per_window']:.2f} bytes/window, {r['bytes_per_segment']:.2f} bytes/segment, "
          f"cache hits {r['cache_hit_rate']:.2%}, {r['gb_per_hour']:.4f} GB/h")
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from absl import (
    app,  # pylint: disable=g-import-not-at-top
    flags,  # pylint: disable=g-import-not-at-top
  )
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  _CONFIG = config_flags.DEFINE_config_file("config", "configs/compressor.py",
                                            "Compressor config.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Compressor run directory.", required=True)
  _MAX_DOCS = flags.DEFINE_integer("max_docs", 32, "Validation documents.")
  _MAX_MB = flags.DEFINE_float("max_mb", 1.0, "Stop adding documents after this many MB.")
  _DECODE_DOCS = flags.DEFINE_integer("decode_docs", 2, "Documents decoded (round-trip check).")
  _DECODE_BYTES = flags.DEFINE_integer("decode_bytes", 256,
                                       "Each decoded document is its first N bytes (decoding costs "
                                       "one model call per coded byte).")
  _VIEWS = flags.DEFINE_list("views", ["deflate", "gzip", "tokenizer"], "Baseline views.")
  _CODER_WORKERS = flags.DEFINE_integer("coder_workers", 0, "Coder processes in the pipelined "
                                        "runs (0 = the main thread, as compress).")
  _JSON_OUT = flags.DEFINE_string("json_out", None, "Write the results here as JSON.")
  _SWEEP = flags.DEFINE_list("sweep", [], "Segmentation settings to compare, each "
                             "ENTROPY_THRESHOLD:ENTROPY_JUMP:LITERAL_THRESHOLD (bits).")
  app.run(main)
