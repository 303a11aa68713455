r"""Offline neural compression: documents -> ArrayRecord shards of neural symbols.

    python -m proxyjax.compress --config=configs/compressor.py --workdir=COMPRESSOR_RUN \
        --input=stdlib --output=SHARDS_DIR [--docs_per_shard=256] [--split=all] \
        [--coder_workers=N] [--device=-1] [--config.compressor.batch_rows=R]

Reads every document of ``--input`` (a sources spec, e.g. ``stdlib`` or
``jsonl:/data/*.jsonl``; weights are ignored) in order, runs the compressor
LM in float64 on fixed-shape batches of rows on this process's accelerator
(``--device``; default ``jax.local_devices()[process_index % count]``), with
the tables quantised on the device and the next call dispatched before the
previous one is read, and codes finished documents meanwhile: in a background
thread (``--coder_workers=0``) or in N worker processes (the coder is pure
Python: one process codes ~0.5 MB/s), in input order either way. It writes
shards of ``docs_per_shard`` documents (``proxyjax.neural.shards``); the symbols
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
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import multiprocessing
import os
import sys
import time
from typing import Any

import ml_collections

from proxyjax.data import sources as sources_lib
from proxyjax.neural import coder
from proxyjax.neural import quantize
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
  max_pending_mb: int = 1024  # ... and at most this many MB of their tables
  coder_workers: int = 0  # 0 = code in a background thread; N = N worker processes
  device: int = -1  # local device index (-1 = process_index % local device count)
  process_index: int = 0
  process_count: int = 1
  progress_bar: bool = True


class _Documents:
  """The input's documents in order, across its sources (weights ignored)."""

  def __init__(self, config: ml_collections.ConfigDict, opts: Options):
    self.sources = [s for s, _ in sources_lib.make_sources(
        opts.input, split=opts.split, options=sources_lib.SourceOptions.from_config(config))]
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
      # How the tables were made (informative: decoders need no margin).
      "tables": {"logits": "float64", "fragile_margin": quantize.FRAGILE_MARGIN,
                 "device": str(getattr(model, "device", ""))},
  }


_MUST_MATCH = ("format", "settings", "model", "input", "split", "docs_per_shard", "num_docs",
               "num_shards")
_FREE_SETTINGS = ("batch_rows",)  # do not change the symbols


def _comparable(k: str, value):
  if k == "settings" and isinstance(value, dict):
    return {f: v for f, v in value.items() if f not in _FREE_SETTINGS}
  return value


def _check_or_write_metadata(output: str, meta: dict) -> None:
  old = shards_lib.read_metadata(output)
  if old is None:
    shards_lib.write_json(os.path.join(output, shards_lib.METADATA), meta)
    return
  for k in _MUST_MATCH:
    if _comparable(k, old.get(k)) != _comparable(k, meta[k]):
      raise ValueError(f"{output} holds shards of a different run ({k}: {old.get(k)!r} != "
                       f"{meta[k]!r}); use a new --output directory")


def _coder_pool(workers: int) -> concurrent.futures.Executor:
  if workers <= 0:
    return concurrent.futures.ThreadPoolExecutor(max_workers=1)
  # spawn: never fork a process that runs JAX (its threads); the workers import
  # only numpy and the coder.
  return concurrent.futures.ProcessPoolExecutor(
      max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


class _MappedTables:
  """Document tables in memory-mapped files (tmpfs) that coder processes read in
  place: ~512 bytes per document byte would otherwise be pickled through one
  pipe (~0.4 GB/s measured on CPU-2, i.e. ~0.7 MB/s of documents)."""

  PREFIX = "proxyjax-compress-"

  def __init__(self):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    self._np = np
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    _remove_stale_table_dirs(base or tempfile.gettempdir(), self.PREFIX)
    self.dir = tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-", dir=base)
    self._count = 0

  def allocate(self, n: int):
    path = os.path.join(self.dir, f"{self._count}.u16")
    self._count += 1
    return self._np.memmap(path, self._np.uint16, mode="w+", shape=(n + 1, 256))

  def close(self) -> None:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(self.dir, ignore_errors=True)


def _remove_stale_table_dirs(base: str, prefix: str) -> None:
  """Table directories left by killed runs (their pid is gone)."""
  import shutil  # pylint: disable=g-import-not-at-top
  try:
    names = os.listdir(base)
  except OSError:
    return
  for name in names:
    if not name.startswith(prefix):
      continue
    try:
      pid = int(name[len(prefix):].split("-", 1)[0])
      os.kill(pid, 0)
    except ProcessLookupError:
      shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    except (ValueError, PermissionError):
      pass


def worker_ready(_=None) -> bool:
  """A no-op task: running it in a coder process imports this module (benchmarks)."""
  return True


def _encode_mapped(text: bytes, path: str, fragile, settings: Settings):
  """Coder-process side of ``_MappedTables``: maps the tables, unlinks the file."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  tables = np.memmap(path, np.uint16, mode="r", shape=(len(text) + 1, 256))
  try:
    os.unlink(path)  # the mapping stays valid; nothing is left behind after a crash
  except FileNotFoundError:
    pass
  return coder.encode_document(text, np.asarray(tables), settings, fragile)


def _run_record(run_stats: dict, wall: float, opts: Options, shards: int) -> dict:
  return dict(run_stats, shards=shards, wall_seconds=wall,
              gb_per_hour_per_process=run_stats["bytes"] / 1e9 / max(wall, 1e-9) * 3600,
              process_index=opts.process_index, process_count=opts.process_count,
              coder_workers=opts.coder_workers)


def _compress(comp, stream, opts: Options, settings: Settings, mapped, waiting, advance,
              write_ready) -> None:
  """Model calls -> coder pool (input order) -> shards, with bounded pending memory."""
  max_pending_bytes = opts.max_pending_mb << 20
  with _coder_pool(opts.coder_workers) as pool:
    in_coder: collections.deque = collections.deque()  # (future, doc bytes), input order
    pending_bytes = 0

    def collect(block: bool) -> None:
      nonlocal pending_bytes
      while in_coder and (block or in_coder[0][0].done()):
        fut, nbytes = in_coder.popleft()
        symbols, _ = fut.result()
        pending_bytes -= 512 * (nbytes + 1)
        advance(nbytes, len(symbols))
        block = False

    allocate = mapped.allocate if mapped is not None else None
    for _, text, tables, fragile in comp.tables(stream, allocate=allocate):
      if mapped is not None:
        tables.flush()
        fut = pool.submit(_encode_mapped, text, tables.filename, fragile, settings)
      else:
        fut = pool.submit(coder.encode_document, text, tables, settings, fragile)
      waiting.popleft()[1] = fut
      in_coder.append((fut, len(text)))
      pending_bytes += tables.nbytes
      del tables, fragile
      collect(block=False)
      while in_coder and (len(in_coder) > opts.max_pending_docs
                          or pending_bytes > max_pending_bytes):
        collect(block=True)  # the coder is the bottleneck: wait for it
      write_ready(wait=False)
    while in_coder:
      collect(block=True)
    write_ready(wait=True)


def run(config: ml_collections.ConfigDict, workdir: str, opts: Options, *,
        model=None) -> dict[str, Any]:
  """Writes (or completes) the shards; returns the summary (``this_run``: this call)."""
  # pylint: disable=g-import-not-at-top
  from proxyjax.neural import compressor as compressor_lib
  from proxyjax.neural import model as model_lib
  # pylint: enable=g-import-not-at-top
  t_start = time.perf_counter()
  if opts.docs_per_shard < 1:
    raise ValueError("--docs_per_shard must be >= 1")
  if not 0 <= opts.process_index < opts.process_count:
    raise ValueError("need 0 <= --process_index < --process_count")
  if model is None:
    import jax  # pylint: disable=g-import-not-at-top
    device = (model_lib.default_device(opts.process_index) if opts.device < 0
              else jax.local_devices()[opts.device])
    model = model_lib.ByteModel.restore(config, workdir, Settings.from_config(config),
                                        device=device)
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
  summary_path = os.path.join(opts.output, shards_lib.SUMMARY.replace(".json", suffix + ".json"))
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
  bar = None
  if opts.progress_bar and todo:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    total = sum(min((s + 1) * opts.docs_per_shard, docs.total) - s * opts.docs_per_shard
                for s in todo)
    bar = tqdm(total=total, unit="doc", dynamic_ncols=True, file=sys.stderr,
               desc=f"compress {len(todo)} shards")
  coded = {"bytes": 0, "symbols": 0}

  def advance(nbytes: int = 0, nsymbols: int = 0) -> None:
    """One document done (coded or skipped): the bar moves per document."""
    coded["bytes"] += nbytes
    coded["symbols"] += nsymbols
    if bar is not None:
      bar.update(1)
      elapsed = time.perf_counter() - t_start
      bar.set_postfix(MB_s=f"{coded['bytes'] / 1e6 / max(elapsed, 1e-9):.3f}",
                      bytes_per_symbol=f"{coded['bytes'] / max(coded['symbols'], 1):.2f}",
                      refresh=False)

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
          advance()
          continue
        entries.append([doc, None])
        waiting.append(entries[-1])
        yield doc["text"]
      entries.append(None)  # end of this shard's documents

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

  mapped = _MappedTables() if todo and opts.coder_workers > 0 else None
  try:
    if todo:
      _compress(compressor_lib.NeuralCompressor(model), doc_stream(), opts, settings, mapped,
                waiting, advance, write_ready)
  finally:
    if mapped is not None:
      mapped.close()
  if bar is not None:
    bar.close()

  wall = time.perf_counter() - t_start
  done = [s for s in range(num_shards) if os.path.exists(shard_path(s))]
  totals = collections.Counter()
  for s in done:  # every finished shard, whichever run or process wrote it
    totals.update(shards_lib.read_json(shards_lib.stats_path(shard_path(s))))
  this_run = _run_record(run_stats, wall, opts, len(todo))
  previous = shards_lib.read_json(summary_path) if os.path.exists(summary_path) else {}
  runs = list(previous.get("runs", []))
  if todo:  # a run with nothing left to do keeps the recorded throughput
    runs.append(this_run)
  run_bytes = sum(r["bytes"] for r in runs)
  run_seconds = sum(r["wall_seconds"] for r in runs)
  summary = {
      "complete": len(done) == num_shards,
      "shards_done": len(done), "num_shards": num_shards,
      "totals": dict(totals),
      "bytes_per_symbol": totals["bytes"] / max(totals["symbols"], 1),
      "bits_per_byte": (totals["symbols"] * math.log2(settings.alphabet_size)
                        / max(totals["bytes"], 1)),
      "literal_fraction": totals["literal_bytes"] / max(totals["bytes"], 1),
      "fragile_fraction": totals["fragile_positions"] / max(totals["bytes"] + totals["docs"], 1),
      "window_fill": totals["model_bits"] / max(totals["windows"] * settings.window_bits, 1),
      "runs": runs,
      "gb_per_hour_per_process": run_bytes / 1e9 / max(run_seconds, 1e-9) * 3600,
  }
  shards_lib.write_json(summary_path, summary)
  return dict(summary, this_run=this_run)


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
      coder_workers=f.coder_workers, device=f.device, process_index=f.process_index,
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
  flags.DEFINE_integer("coder_workers", 0, "Coder processes (0 = one background thread). The "
                       "coder is pure Python (~0.5 MB/s per process): use about one per "
                       "0.5 MB/s the model delivers.")
  flags.DEFINE_integer("device", -1, "Local accelerator index (-1 = process_index modulo the "
                       "local device count).")
  flags.DEFINE_integer("process_index", 0, "This process (writes shards s % count == index).")
  flags.DEFINE_integer("process_count", 1, "Processes sharing the job.")
  flags.DEFINE_bool("progress_bar", True, "tqdm progress bar.")
  for name in ("config", "workdir", "input", "output"):
    flags.mark_flag_as_required(name)


if __name__ == "__main__":
  from proxyjax import cli  # pylint: disable=g-import-not-at-top
  _define_flags()
  cli.run(main, prog="proxyjax.compress")  # bad flags, ConfigError: one line (--verbose)
