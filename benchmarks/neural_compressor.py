r"""The neural view against deflate and the tokenizer on the validation split.

    python benchmarks/neural_compressor.py --config=configs/compressor.py \
        --workdir=COMPRESSOR_RUN [--max_docs=32] [--max_mb=1] [--decode_docs=2] \
        [--coder_workers=0] [--views=deflate,gzip,tokenizer] [--json_out=FILE]

On the first validation documents of ``data.sources`` (first ``max_mb`` MB of
them) it reports, per view:
  * bytes/symbol: UTF-8 bytes per view symbol (the compression ratio of SPEC §2);
  * bits/byte: symbols * log2(alphabet) / bytes (the neural view at the
    alphabet 256 + 2^N, deflate at 8 bits, the tokenizer at log2 of its vocab);
and for the neural view also the model's own cost (sum -log2 p over the coded
bytes: what an ideal coder would spend), the window fill (model bits / T per
window), the literal share, the fragile share (positions whose table is within
``quantize.FRAGILE_MARGIN`` of a rounding boundary) and what leaving them
literal costs (symbols against coding as if no table were fragile), and
throughput: model (float64 forward + on-device quantisation, tables copied
to the host) and coder (one process) separately, the host alone (a model
that returns precomputed tables instantly: the ceiling the host side allows
with ``--coder_workers``), end to end as ``python -m proxyjax.compress`` runs it
(model calls overlapping the coder) in MB/s and GB/hour for one process, and
the decoder's bytes/s on the first ``decode_bytes`` of ``decode_docs``
documents, decoded in lockstep (one model call per coded byte and window).
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

import numpy as np


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


def _pipelined(comp, docs, workers: int) -> tuple[list, float]:
  """Encodes as ``proxyjax.compress`` does: model calls overlap the coder (a thread,
  or worker processes reading the tables from shared memory), results in order."""
  from proxyjax import compress  # pylint: disable=g-import-not-at-top
  from proxyjax.views.neural import coder  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access
  mapped = compress._MappedTables() if workers > 0 else None
  try:
    with compress._coder_pool(workers) as pool:
      if workers > 0:  # start the worker processes (and their imports) before timing
        list(pool.map(compress.worker_ready, range(2 * workers)))
      t = time.perf_counter()
      futures = []
      for _, doc, tab, frag in comp.tables(docs, allocate=mapped and mapped.allocate):
        if mapped is not None:
          tab.flush()
          futures.append(pool.submit(compress._encode_mapped, doc, tab.filename, frag,
                                     comp.settings))
        else:
          futures.append(pool.submit(coder.encode_document, doc, tab, comp.settings, frag))
        del tab
      out = [f.result()[0] for f in futures]
      return out, time.perf_counter() - t
  finally:
    if mapped is not None:
      mapped.close()


class _InstantModel:
  """Stands in for a ByteModel: returns one precomputed batch of tables at once."""

  def __init__(self, model, rows):
    self.settings = model.settings
    tables, fragile = model.tables_async(rows)
    self._out = (np.asarray(tables), np.asarray(fragile))

  def tables_async(self, rows):
    del rows
    return self._out


def measure(config, model, *, max_docs: int = 32, max_mb: float = 1.0, decode_docs: int = 2,
            decode_bytes: int = 256, views=("deflate", "gzip", "tokenizer"),
            coder_workers: int = 0, docs: list[bytes] | None = None) -> dict:
  """Everything this benchmark reports, for a ``ByteModel`` (``ByteModel.restore`` or
  ``.init``), as one JSON-able dict (``benchmarks/gpu_suite.py`` calls it).
  ``decode_docs=0`` skips the decode; ``views=()`` the baselines."""
  import jax  # pylint: disable=g-import-not-at-top

  from proxyjax.neural import (
    byte_lm,  # pylint: disable=g-import-not-at-top
    codec,  # pylint: disable=g-import-not-at-top
  )
  from proxyjax.views.neural import coder  # pylint: disable=g-import-not-at-top

  st = model.settings
  comp = codec.NeuralCompressor(model)
  if docs is None:
    docs = _documents(config, max_docs, int(max_mb * 1e6))
  nbytes = sum(len(d) for d in docs)
  t_compile = time.perf_counter()
  comp.encode([docs[0][:64]])  # compile
  t_compile = time.perf_counter() - t_compile
  t0 = time.perf_counter()
  tables = list(comp.tables(docs))
  t_model = time.perf_counter() - t0
  stats, streams, plain_symbols = coder.EncodeStats(), [], 0
  t1 = time.perf_counter()
  for _, doc, tab, frag in tables:
    symbols, s = coder.encode_document(doc, tab, st, frag)
    stats += s
    streams.append(symbols)
  t_coder = time.perf_counter() - t1
  for _, doc, tab, _ in tables:  # as if no table were fragile (not safely decodable)
    plain_symbols += coder.encode_document(doc, tab, st)[1].symbols
  positions = sum(len(d) + 1 for d in docs)
  del tables
  workers = coder_workers
  piped, t_piped = _pipelined(comp, docs, workers)
  assert all(np.array_equal(a, b) for a, b in zip(piped, streams))
  ids = np.stack([byte_lm.row_ids(docs[0], j % max(byte_lm.num_rows(len(docs[0]), st), 1),
                                    st) for j in range(st.batch_rows)])
  host_only = codec.NeuralCompressor(_InstantModel(model, ids))
  _, t_host = _pipelined(host_only, docs, workers)

  heads = [d[:decode_bytes] for d in docs[:decode_docs]]
  t_dec = 0.0
  if heads:
    head_streams = comp.encode(heads)
    t3 = time.perf_counter()
    decoded = comp.decode(head_streams, crc32s=[zlib.crc32(d) for d in heads])
    t_dec = time.perf_counter() - t3
    assert decoded == heads, "round trip failed"
  dec_bytes = sum(len(d) for d in heads)

  neural = {
      "bytes_per_symbol": nbytes / stats.symbols,
      "bits_per_byte": stats.symbols * math.log2(st.alphabet_size) / nbytes,
      "alphabet": st.alphabet_size, "symbols": stats.symbols,
      "model_bits_per_coded_byte": stats.model_bits / max(stats.coded_bytes, 1),
      "window_fill": stats.model_bits / max(stats.windows * st.window_bits, 1),
      "bytes_per_window": stats.coded_bytes / max(stats.windows, 1),
      "literal_fraction": stats.literal_bytes / nbytes,
      "fragile_fraction": stats.fragile_positions / positions,
      "fragile_positions": stats.fragile_positions, "positions": positions,
      "fragile_literals": stats.fragile_literals,
      "symbols_if_nothing_fragile": plain_symbols,
      "fragility_cost": stats.symbols / plain_symbols - 1.0,
      "model_s": t_model, "coder_s": t_coder, "pipelined_s": t_piped, "host_only_s": t_host,
      "model_mb_per_s": nbytes / 1e6 / t_model, "coder_mb_per_s": nbytes / 1e6 / t_coder,
      "host_only_mb_per_s": nbytes / 1e6 / t_host,
      "mb_per_s": nbytes / 1e6 / t_piped, "gb_per_hour": nbytes / 1e9 / t_piped * 3600,
      "coder_workers": workers,
      "decode_bytes_per_s": dec_bytes / t_dec if heads else None, "decoded_docs": len(heads),
      "decoded_bytes": dec_bytes,
      "settings": st.to_dict(), "checkpoint_step": model.step, "compile_s": t_compile,
      "model_gb_per_hour": nbytes / 1e9 / t_model * 3600,
  }
  results = {"documents": len(docs), "bytes": nbytes, "neural": neural,
             "device": str(model.device.device_kind), "cpus": os.cpu_count(),
             "python": platform.python_version(), "jax": jax.__version__}
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
                    views=_VIEWS.value, coder_workers=_CODER_WORKERS.value)
  docs, nbytes, neural = results["documents"], results["bytes"], results["neural"]
  workers = neural["coder_workers"]
  stats_fragile, positions = neural["fragile_positions"], neural["positions"]
  print(f"{docs} validation documents, {nbytes / 1e6:.3f} MB, compressor step {model.step} "
        f"({results['device']}, {results['cpus']} CPUs)")
  print(f"{'view':<12}{'bytes/symbol':>14}{'bits/byte':>11}{'alphabet':>10}")
  for name in ["neural"] + list(_VIEWS.value):
    r = results[name]
    print(f"{name:<12}{r['bytes_per_symbol']:>14.3f}{r['bits_per_byte']:>11.3f}{r['alphabet']:>10}")
  print(f"neural: model {neural['model_bits_per_coded_byte']:.3f} bits/coded byte, window fill "
        f"{neural['window_fill']:.3f}, {neural['bytes_per_window']:.2f} bytes/window, literal "
        f"{neural['literal_fraction']:.3%}")
  print(f"neural fragile tables: {stats_fragile}/{positions} positions "
        f"({neural['fragile_fraction']:.2e}); leaving them literal costs "
        f"{neural['fragility_cost']:+.3%} symbols")
  print(f"neural throughput: model {neural['model_mb_per_s'] * 1e3:.1f} KB/s, coder "
        f"{neural['coder_mb_per_s'] * 1e3:.1f} KB/s (1 process), host only "
        f"{neural['host_only_mb_per_s'] * 1e3:.1f} KB/s, pipelined "
        f"{neural['mb_per_s'] * 1e3:.1f} KB/s = {neural['gb_per_hour']:.4f} GB/h per process "
        f"(coder_workers={workers}); decode {neural['decode_bytes_per_s'] or 0:.0f} B/s")
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
                                        "runs (0 = one background thread, as compress).")
  _JSON_OUT = flags.DEFINE_string("json_out", None, "Write the results here as JSON.")
  app.run(main)
