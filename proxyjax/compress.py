r"""Offline neural compression: documents -> ArrayRecord shards of neural symbols.

    python -m proxyjax.compress --config=configs/compressor.py --workdir=COMPRESSOR_RUN \
        --input=stdlib --output=SHARDS_DIR [--docs_per_shard=256] [--split=all] \
        [--coder_workers=N] [--device=-1] [--config.compressor.batch_rows=R]

Reads every document of ``--input`` (a sources spec, e.g. ``stdlib`` or
``jsonl:/data/*.jsonl``; weights are ignored) in order, runs the compressor
LM in float64 on fixed-shape batches of rows on this process's accelerator
(``--device``; default ``jax.local_devices()[process_index % count]``): an
entropy pass over each document (document context) cuts it into segments,
then the equal-information windows of many segments share each model call
(short rows: the model's context restarts at every window), with the tables
quantised on the device and the next call dispatched before the previous one
is coded: in this thread (``--coder_workers=0``) or split over N worker
processes. Repeated segments are coded once (a cache of coded segments; the
summary reports its hit rate). Documents come out in input order. It writes
shards of ``docs_per_shard`` documents (``proxyjax.views.neural.shards``); the symbols
do not depend on ``batch_rows``, the number of workers or the device. Train on
them with ``data.view='neural'``, ``data.neural_dir=SHARDS_DIR`` and
``data.sources='arrayrecord:SHARDS_DIR/*.array_record'``.

``--split=all`` (default) compresses every document; the records keep the
original document keys, so the training pipeline splits the shards into
train/validation exactly as it splits the input corpus.

Resuming: a shard file appears only once complete (after its counts,
``SHARD.stats.json``), so rerunning the same command skips finished shards and
redoes the rest (``progress.json`` tracks the current run); the output directory's
``neural.json`` must match the new run (settings except ``batch_rows``, model,
input). Unreadable, empty and over-long (``--max_doc_bytes``) documents are
skipped and counted. ``--max_shards`` stops after writing that many shards (a
clean interruption). With ``--process_count=P``, process ``i`` writes the shards
``s`` with ``s % P == i`` (one process per GPU: give each its own
``CUDA_VISIBLE_DEVICES``, or set ``XLA_PYTHON_CLIENT_PREALLOCATE=false``).
``summary.json`` records totals over all finished shards and the throughput of
every run that wrote shards (GB of input per hour of wall time, per process); a
rerun with nothing left to do keeps those numbers.

This module is the command line (flags -> ``Options``); the driver is
``proxyjax.neural.shard_writer`` (``Options``, ``run``), importable from here too.
"""

from __future__ import annotations

import sys

from absl import flags, logging
from ml_collections import config_flags

from proxyjax import cli

# The driver lives in proxyjax.neural.shard_writer; these names stay importable here.
from proxyjax.data import sources as sources_lib
from proxyjax.neural.shard_writer import (
  Options,
  _coder_pool,  # noqa: F401  (benchmarks)
  run,
  worker_ready,
)

__all__ = ["Options", "run", "worker_ready", "main"]


def main(argv) -> None:
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  summary = run(f.config, f.workdir, Options(
      input=f.input, output=f.output, split=f.split, docs_per_shard=f.docs_per_shard,
      max_shards=f.max_shards, max_docs=f.max_docs, max_doc_bytes=f.max_doc_bytes,
      coder_workers=f.coder_workers, device=f.device, process_index=f.process_index,
      process_count=f.process_count, progress_bar=f.progress_bar))
  t = summary["this_run"]
  print(f"proxyjax.compress: {summary['shards_done']}/{summary['num_shards']} shards, "
        f"{summary['bytes_per_symbol']:.3f} bytes/symbol, literal "
        f"{summary['literal_fraction']:.1%}, segment cache hits {summary['cache_hit_rate']:.1%}, "
        f"this run {t['bytes'] / 1e6:.2f} MB in "
        f"{t['wall_seconds']:.1f} s ({t['gb_per_hour_per_process']:.4f} GB/h per process)",
        file=sys.stderr)


def _define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Compressor config (configs/compressor.py).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "The compressor's training run directory.")
  flags.DEFINE_string("input", None, "Sources spec of the documents to compress.")
  flags.DEFINE_string("output", None, "Directory of the shards.")
  flags.DEFINE_enum("split", "all", list(sources_lib.SPLITS), "Split of the input to compress.")
  flags.DEFINE_integer("docs_per_shard", 256, "Documents per shard.")
  flags.DEFINE_integer("max_shards", -1, "Stop after writing this many shards (-1 = all).")
  flags.DEFINE_integer("max_docs", -1, "Only the first N documents of the input (-1 = all).")
  flags.DEFINE_integer("max_doc_bytes", 1 << 22, "Longer documents are skipped.")
  flags.DEFINE_integer("coder_workers", 0, "Coder processes that code the windows of each "
                       "model call (0 = the main thread, while the device runs the next call).")
  flags.DEFINE_integer("device", -1, "Local accelerator index (-1 = process_index modulo the "
                       "local device count).")
  flags.DEFINE_integer("process_index", 0, "This process (writes shards s % count == index).")
  flags.DEFINE_integer("process_count", 1, "Processes sharing the job.")
  flags.DEFINE_bool("progress_bar", True, "tqdm progress bar.")
  for name in ("config", "workdir", "input", "output"):
    flags.mark_flag_as_required(name)


if __name__ == "__main__":
  _define_flags()
  cli.run(main, prog="proxyjax.compress")  # bad flags, ConfigError: one line (--verbose)
