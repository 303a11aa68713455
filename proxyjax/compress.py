r"""Offline neural compression: documents -> ArrayRecord shards of neural symbols.

    python -m proxyjax.compress --config=configs/compressor.py --workdir=COMPRESSOR_RUN \
        --input=stdlib --output=SHARDS_DIR [--docs_per_shard=256] [--split=all]

Reads every document of ``--input`` (a sources spec, e.g. ``stdlib`` or
``jsonl:/data/*.jsonl``; weights are ignored) in order, runs the compressor
LM on fixed-shape batches of rows (the next call is dispatched before the
previous one is read, and a coder thread codes finished documents meanwhile),
and writes shards of ``docs_per_shard`` documents (``proxyjax.neural.shards``).
Train on them with ``data.sources='arrayrecord:SHARDS_DIR/*.array_record'`` and
``data.view='neural'``.

Resuming: a shard file appears only once complete (after its counts,
``SHARD.stats.json``), so rerunning the same command skips finished shards and
redoes the rest (``progress.json`` tracks the current run); the output directory's
``neural.json`` must match the new run (settings, model, input). Unreadable,
empty and over-long (``--max_doc_bytes``) documents are skipped and counted. ``--max_shards`` stops
after writing that many shards (a clean interruption). With
``--process_count=P``, process ``i`` writes the shards ``s`` with
``s % P == i``. ``summary.json`` records totals and this run's throughput
(GB of UTF-8 input per hour of wall time, per process).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
import sys
import time
from typing import Any

import ml_collections

from proxyjax.data import sources as sources_lib
from proxyjax.neural import coder
from proxyjax.neural import compressor as compressor_lib
from proxyjax.neural import model as model_lib
from proxyjax.neural import shards as shards_lib
from proxyjax.neural.settings import Settings


@dataclasses.dataclass
class Options:
  input: str
  output: str
  split: str = "all"
  docs_per_shard: int = 256
  max_shards: int = -1  # stop after writing this many shards (-1 = all)
  max_docs: int = -1  # compress only the first N documents of the input (-1 = all)
  max_doc_bytes: int = 1 << 22  # longer documents are skipped (tables: 512 bytes per byte)
  max_pending_docs: int = 64  # documents with tables waiting for the coder (memory bound)
  process_index: int = 0
  process_count: int = 1
  progress_bar: bool = True


class _Documents:
  """The input's documents in order, across its sources (weights ignored)."""

  def __init__(self, config: ml_collections.ConfigDict, opts: Options):
    d = config.data
    self.sources = [s for s, _ in sources_lib.make_sources(
        opts.input, split=opts.split, validation_fraction=d.validation_fraction,
        text_field=d.text_field, record_format=d.record_format, tfds_data_dir=d.tfds_data_dir)]
    self.starts = [0]
    for s in self.sources:
      self.starts.append(self.starts[-1] + len(s))
    self.total = self.starts[-1] if opts.max_docs < 0 else min(self.starts[-1], opts.max_docs)

  def __getitem__(self, i: int) -> dict:
    for k, source in enumerate(self.sources):
      if i < self.starts[k + 1]:
        return source[i - self.starts[k]]
    raise IndexError(i)


def _metadata(config, workdir, model, opts, num_docs, num_shards) -> dict:
  return {
      "format": shards_lib.FORMAT,
      "settings": model.settings.to_dict(),
      "model": {"workdir": os.path.abspath(workdir), "step": model.step,
                "fingerprint": model.fingerprint},
      "config": config.to_dict(),
      "input": opts.input, "split": opts.split, "docs_per_shard": opts.docs_per_shard,
      "num_docs": num_docs, "num_shards": num_shards,
      "alphabet_size": model.settings.alphabet_size,
  }


_MUST_MATCH = ("format", "settings", "model", "input", "split", "docs_per_shard", "num_docs",
               "num_shards")


def _check_or_write_metadata(output: str, meta: dict) -> None:
  old = shards_lib.read_metadata(output)
  if old is None:
    shards_lib.write_json(os.path.join(output, shards_lib.METADATA), meta)
    return
  for k in _MUST_MATCH:
    if old.get(k) != meta[k]:
      raise ValueError(f"{output} holds shards of a different run ({k}: {old.get(k)!r} != "
                       f"{meta[k]!r}); use a new --output directory")


def run(config: ml_collections.ConfigDict, workdir: str, opts: Options, *,
        model: model_lib.ByteModel | None = None) -> dict[str, Any]:
  """Writes (or completes) the shards; returns the summary."""
  t_start = time.perf_counter()
  if opts.docs_per_shard < 1:
    raise ValueError("--docs_per_shard must be >= 1")
  if not 0 <= opts.process_index < opts.process_count:
    raise ValueError("need 0 <= --process_index < --process_count")
  if model is None:
    model = model_lib.ByteModel.restore(config, workdir, Settings.from_config(config))
  settings = model.settings
  docs = _Documents(config, opts)
  if docs.total == 0:
    raise ValueError(f"--input={opts.input!r} has no documents in split {opts.split!r}")
  num_shards = math.ceil(docs.total / opts.docs_per_shard)
  os.makedirs(opts.output, exist_ok=True)
  _check_or_write_metadata(opts.output, _metadata(config, workdir, model, opts, docs.total,
                                                  num_shards))
  shard_path = lambda s: os.path.join(opts.output, shards_lib.shard_name(s, num_shards))
  suffix = "" if opts.process_count == 1 else f"-{opts.process_index}-of-{opts.process_count}"
  progress_path = os.path.join(opts.output, shards_lib.PROGRESS.replace(".json", suffix + ".json"))
  mine = [s for s in range(num_shards) if s % opts.process_count == opts.process_index]
  todo = [s for s in mine if not os.path.exists(shard_path(s))]
  if opts.max_shards >= 0:
    todo = todo[:opts.max_shards]
  progress = {"process_index": opts.process_index, "process_count": opts.process_count,
              "shards_total": len(mine), "shards_done_before": len(mine) - len(todo),
              "shards_written": [], "bytes": 0, "seconds": 0.0}

  run_stats = {"docs": 0, "bytes": 0, "symbols": 0, "skipped": 0}
  order: collections.deque = collections.deque()  # (shard, [[doc, future], ..., None])
  waiting: collections.deque = collections.deque()  # entries read but not yet coded
  skipped: dict[int, int] = collections.defaultdict(int)

  def doc_stream():
    """Documents of the pending shards, in order; fills ``order``."""
    for s in todo:
      entries = []
      order.append((s, entries))
      for i in range(s * opts.docs_per_shard, min((s + 1) * opts.docs_per_shard, docs.total)):
        doc = docs[i]
        if (doc["error"] is not None or not doc["text"]
            or len(doc["text"]) > opts.max_doc_bytes):
          skipped[s] += 1
          continue
        entries.append([doc, None])
        waiting.append(entries[-1])
        yield doc["text"]
      entries.append(None)  # end of this shard's documents

  bar = None
  if opts.progress_bar:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    total = sum(min((s + 1) * opts.docs_per_shard, docs.total) - s * opts.docs_per_shard
                for s in todo)
    bar = tqdm(total=total, unit="doc", dynamic_ncols=True, file=sys.stderr,
               desc=f"compress {len(todo)} shards")

  def write_ready(wait: bool) -> None:
    while order:
      s, entries = order[0]
      if not entries or entries[-1] is not None:
        return  # this shard's documents are still being read
      futures = [e[1] for e in entries[:-1]]
      if not wait and not all(f is not None and f.done() for f in futures):
        return
      records, stats = [], coder.EncodeStats()
      for (doc, _), fut in zip(entries[:-1], futures):
        symbols, st = fut.result()
        stats += st
        records.append(shards_lib.make_record(doc["text"], symbols, key=doc["key"],
                                              source=doc["source"],
                                              alphabet_size=settings.alphabet_size))
      entry = stats.as_dict()
      entry.update(docs=len(records), skipped=skipped.pop(s, 0))
      # The counts first, then the shard: a shard file always has its counts.
      shards_lib.write_json(shards_lib.stats_path(shard_path(s)), entry)
      shards_lib.write_shard(shard_path(s), records)
      progress["shards_written"].append(s)
      progress["bytes"] += stats.bytes
      progress["seconds"] = time.perf_counter() - t_start
      shards_lib.write_json(progress_path, progress)
      run_stats["docs"] += len(records)
      run_stats["bytes"] += stats.bytes
      run_stats["symbols"] += stats.symbols
      run_stats["skipped"] += entry["skipped"]
      order.popleft()
      if bar is not None:
        bar.update(len(records) + entry["skipped"])
        elapsed = time.perf_counter() - t_start
        bar.set_postfix(MB_s=f"{run_stats['bytes'] / 1e6 / max(elapsed, 1e-9):.3f}",
                        bytes_per_symbol=f"{run_stats['bytes'] / max(run_stats['symbols'], 1):.2f}")

  comp = compressor_lib.NeuralCompressor(model)
  # The coder thread codes document d while the model runs on later rows.
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    in_coder: collections.deque = collections.deque()
    for _, text, tables in comp.tables(doc_stream()):
      fut = pool.submit(coder.encode_document, text, tables, settings)
      waiting.popleft()[1] = fut
      in_coder.append(fut)
      while in_coder and in_coder[0].done():
        in_coder.popleft()
      if len(in_coder) > opts.max_pending_docs:  # the coder is the bottleneck: wait for it
        in_coder.popleft().result()
      write_ready(wait=False)
    write_ready(wait=True)
  if bar is not None:
    bar.close()

  wall = time.perf_counter() - t_start
  done = [s for s in range(num_shards) if os.path.exists(shard_path(s))]
  totals = collections.Counter()
  for s in done:  # every finished shard, whichever run or process wrote it
    totals.update(shards_lib.read_json(shards_lib.stats_path(shard_path(s))))
  summary = {
      "complete": len(done) == num_shards,
      "shards_done": len(done), "num_shards": num_shards,
      "totals": dict(totals),
      "bytes_per_symbol": totals["bytes"] / max(totals["symbols"], 1),
      "bits_per_byte": (totals["symbols"] * math.log2(settings.alphabet_size)
                        / max(totals["bytes"], 1)),
      "literal_fraction": totals["literal_bytes"] / max(totals["bytes"], 1),
      "window_fill": totals["model_bits"] / max(totals["windows"] * settings.window_bits, 1),
      "this_run": dict(run_stats, shards=len(todo), wall_seconds=wall,
                       gb_per_hour_per_process=run_stats["bytes"] / 1e9 / max(wall, 1e-9) * 3600,
                       process_index=opts.process_index, process_count=opts.process_count),
  }
  shards_lib.write_json(os.path.join(opts.output, shards_lib.SUMMARY.replace(
      ".json", suffix + ".json")), summary)
  return summary


def main(argv) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  summary = run(f.config, f.workdir, Options(
      input=f.input, output=f.output, split=f.split, docs_per_shard=f.docs_per_shard,
      max_shards=f.max_shards, max_docs=f.max_docs, max_doc_bytes=f.max_doc_bytes,
      process_index=f.process_index,
      process_count=f.process_count, progress_bar=f.progress_bar))
  t = summary["this_run"]
  print(f"proxyjax.compress: {summary['shards_done']}/{summary['num_shards']} shards, "
        f"{summary['bytes_per_symbol']:.3f} bytes/symbol, this run {t['bytes'] / 1e6:.2f} MB in "
        f"{t['wall_seconds']:.1f} s ({t['gb_per_hour_per_process']:.4f} GB/h per process)",
        file=sys.stderr)


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Compressor config (configs/compressor.py).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "The compressor's training run directory.")
  flags.DEFINE_string("input", None, "Sources spec of the documents to compress.")
  flags.DEFINE_string("output", None, "Directory of the shards.")
  flags.DEFINE_enum("split", "all", list(sources_lib.SPLITS), "Split of the input to compress.")
  flags.DEFINE_integer("docs_per_shard", 256, "Documents per shard.")
  flags.DEFINE_integer("max_shards", -1, "Stop after writing this many shards (-1 = all).")
  flags.DEFINE_integer("max_docs", -1, "Only the first N documents of the input (-1 = all).")
  flags.DEFINE_integer("max_doc_bytes", 1 << 22, "Longer documents are skipped (the coder "
                       "holds 512 bytes of tables per document byte).")
  flags.DEFINE_integer("process_index", 0, "This process (writes shards s % count == index).")
  flags.DEFINE_integer("process_count", 1, "Processes sharing the job.")
  flags.DEFINE_bool("progress_bar", True, "tqdm progress bar.")
  for name in ("config", "workdir", "input", "output"):
    flags.mark_flag_as_required(name)


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
