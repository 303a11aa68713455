r"""Data pipeline throughput per view vs the bare compressor on the same documents.

    python benchmarks/data_pipeline.py [--max_mb=8] [--views=raw,deflate,...] [--rate=1.0]
        [--num_workers=0] [--json_out=FILE]

For each view it measures, on the same documents (the stdlib train split,
first ``max_mb`` MB, held in memory so disk speed is not measured):
  * bare: the view's ``encode`` alone (zlib / gzip / tokenizer encode / numpy),
    one call per document, single thread;
  * pipeline: the whole Grain pipeline (read -> view + mixing -> concat packing
    -> batches) in one process (``num_workers=0``; with N workers the figure is
    divided by N to give per-worker throughput) with every document compressed
    (``rate=1.0``, sentinel mode) unless ``--rate`` says otherwise.
It reports UTF-8 MB/s in, and overhead = bare MB/s / pipeline MB/s per worker - 1.
With workers, throughput is measured after the first batch (worker start-up,
reported as ``startup_s``, is excluded).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

from absl import app, flags

_MAX_MB = flags.DEFINE_float("max_mb", 8.0, "MB of documents to push through.")
_VIEWS = flags.DEFINE_list("views", ["raw", "deflate", "gzip", "tokenizer", "token_bytes",
                                     "halfbyte", "doublebyte"], "Views to measure.")
_RATE = flags.DEFINE_float("rate", 1.0, "Compressed-view rate (sentinel mode).")
_WORKERS = flags.DEFINE_integer("num_workers", 0, "Grain worker processes.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats; the best is reported.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Append results as JSON lines here.")


def _documents(max_bytes: int) -> list[bytes]:
  from proxyjax.data import sources  # pylint: disable=g-import-not-at-top
  src = sources.stdlib_source(split="train")
  docs, total = [], 0
  for i in range(len(src)):
    d = src[i]
    if d["error"] is None and d["text"]:
      docs.append(d["text"])
      total += len(d["text"])
      if total >= max_bytes:
        break
  return docs


def _bare(view, docs) -> float:
  t = time.perf_counter()
  for d in docs:
    try:
      view.encode(d)
    except Exception:  # pylint: disable=broad-except
      pass  # the pipeline falls back to raw for these; tiny share
  return time.perf_counter() - t


def _pipeline(config, view, docs, rate, num_workers) -> tuple[float, float, int, dict]:
  """Returns (startup seconds, steady seconds, bytes in after the first batch, stats)."""
  from proxyjax.data import mixing, pipeline, sources  # pylint: disable=g-import-not-at-top
  config.data.num_workers = num_workers
  ds = pipeline.build_dataset(config, process_index=0, process_count=1,
                              schedule=mixing.Schedule.constant(rate, "sentinel"),
                              sources=[(sources.ListSource(docs), 1.0)], view=view)
  t0 = time.perf_counter()
  it = iter(ds)
  next(it)
  t1 = time.perf_counter()
  first = _bytes_in(pipeline.pipeline_stats(it)) if num_workers else 0
  for _ in it:
    pass
  t2 = time.perf_counter()
  stats = pipeline.pipeline_stats(it)
  if hasattr(it, "close"):
    it.close()
  if not num_workers:  # in-process: count the first batch too
    return 0.0, t2 - t0, _bytes_in(stats), stats
  return t1 - t0, t2 - t1, _bytes_in(stats) - first, stats


def _bytes_in(stats) -> int:
  return stats.get("bytes:raw", 0) + stats.get("bytes:compressed", 0)


def main(argv):
  del argv
  from proxyjax.config import base_config  # pylint: disable=g-import-not-at-top
  from proxyjax.data import pipeline  # pylint: disable=g-import-not-at-top
  docs = _documents(int(_MAX_MB.value * 1e6))
  nbytes = sum(len(d) for d in docs)
  print(f"{len(docs)} documents, {nbytes / 1e6:.2f} MB (stdlib train split); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}", file=sys.stderr)
  rows = []
  for name in _VIEWS.value:
    config = base_config()
    config.seq_len, config.batch_size = 2048, 8
    config.data.shuffle, config.data.num_epochs = False, 1
    config.data.view = name
    view = pipeline.build_view(config)
    bare = min(_bare(view, docs) for _ in range(_REPEATS.value)) if view else 0.0
    runs = [_pipeline(config, view, docs, _RATE.value, _WORKERS.value)
            for _ in range(_REPEATS.value)]
    startup, piped, steady_bytes, stats = min(runs, key=lambda r: r[1] / max(r[2], 1))
    workers = max(1, _WORKERS.value)
    mb_s = steady_bytes / 1e6 / piped
    bare_mb_s = nbytes / 1e6 / bare if bare else None
    row = {
        "view": name, "rate": _RATE.value, "num_workers": _WORKERS.value,
        "docs": len(docs), "mb_in": nbytes / 1e6,
        "bare_mb_s": bare_mb_s,
        "pipeline_mb_s": mb_s,
        "pipeline_mb_s_per_worker": mb_s / workers,
        "startup_s": startup,
        "overhead": bare_mb_s / (mb_s / workers) - 1.0 if bare else None,
        "symbols_per_byte": stats.get("ids", 0) / max(_bytes_in(stats), 1),
        "compression_ratio": stats.get("compression_ratio:compressed",
                                       stats.get("compression_ratio:raw")),
        "view_fallback_raw": stats.get("view_fallback_raw", 0),
    }
    rows.append(row)
    print(json.dumps(row), flush=True)
    if _JSON_OUT.value:
      with open(_JSON_OUT.value, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
  print("\n| view | bare MB/s | pipeline MB/s (per worker) | overhead | ratio (bytes/symbol) |")
  print("|---|---|---|---|---|")
  for r in rows:
    bare = f"{r['bare_mb_s']:.2f}" if r["bare_mb_s"] else "-"
    over = f"{100 * r['overhead']:+.0f}%" if r["overhead"] is not None else "-"
    print(f"| {r['view']} | {bare} | {r['pipeline_mb_s_per_worker']:.2f} | {over} | "
          f"{r['compression_ratio']:.3f} |")


if __name__ == "__main__":
  app.run(main)
