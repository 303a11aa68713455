"""Writes the neural shards: documents -> compressor LM -> coder -> ArrayRecord shards.

The driver of ``python -m proxyjax.compress`` (the command line, its flags and
the resume/ordering rules are documented there). Its parts, one job each:

    _Documents       the input's documents in order, across its sources
    _ShardPlan       which shards this process writes, and where (shards, progress, summary)
    _ProgressBar     tqdm per document, with throughput
    _PendingShards   documents read into their shards (input order); writes a shard once
                     every one of its documents is coded
    _compress        documents -> NeuralCompressor.encode_stream (entropy pass, segments,
                     batched window rows, coder processes) -> shards, in input order
    run              plan -> read/model/code/write -> summary.json
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
from typing import Any, Iterator

import jax
import ml_collections
from tqdm import tqdm

from proxyjax.data import sources as sources_lib
from proxyjax.neural import byte_lm as model_lib
from proxyjax.neural import codec
from proxyjax.views.neural import coder, quantize
from proxyjax.views.neural import settings as settings_lib
from proxyjax.views.neural import shards as shards_lib
from proxyjax.views.neural.settings import Settings


@dataclasses.dataclass
class Options:
  input: str
  output: str
  split: str = "all"
  docs_per_shard: int = 256
  max_shards: int = -1  # stop after writing this many shards (-1 = all)
  max_docs: int = -1  # compress only the first N documents of the input (-1 = all)
  max_doc_bytes: int = 1 << 22  # longer documents are skipped (tables: 512 bytes per byte)
  max_pending_docs: int = 64  # documents read but not yet coded (memory bound)
  coder_workers: int = 0  # 0 = code windows in this thread; N = N worker processes
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


def _comparable(k: str, value):
  if k == "settings" and isinstance(value, dict):
    return {f: v for f, v in value.items() if f not in settings_lib.FREE_FIELDS}
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


def _coder_pool(workers: int) -> concurrent.futures.Executor | None:
  """Coder processes for the windows of each model call (None: code in this thread)."""
  if workers <= 0:
    return None
  # spawn: never fork a process that runs JAX (its threads); the workers import
  # only numpy and the coder.
  return concurrent.futures.ProcessPoolExecutor(
      max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def worker_ready(_=None) -> bool:
  """A no-op task: running it in a coder process imports this module (benchmarks)."""
  return True


def _run_record(run_stats: dict, wall: float, opts: Options, shards: int) -> dict:
  return dict(run_stats, shards=shards, wall_seconds=wall,
              gb_per_hour_per_process=run_stats["bytes"] / 1e9 / max(wall, 1e-9) * 3600,
              process_index=opts.process_index, process_count=opts.process_count,
              coder_workers=opts.coder_workers)


class _ShardPlan:
  """The shards of the job, those this process writes in this run, and the files it keeps."""

  def __init__(self, opts: Options, num_docs: int):
    self.docs_per_shard, self.num_docs = opts.docs_per_shard, num_docs
    self.output = opts.output
    self.num_shards = math.ceil(num_docs / opts.docs_per_shard)
    suffix = "" if opts.process_count == 1 else f"-{opts.process_index}-of-{opts.process_count}"
    self.progress_path = os.path.join(opts.output,
                                      shards_lib.PROGRESS.replace(".json", suffix + ".json"))
    self.summary_path = os.path.join(opts.output,
                                     shards_lib.SUMMARY.replace(".json", suffix + ".json"))
    self.mine = [s for s in range(self.num_shards)
                 if s % opts.process_count == opts.process_index]
    todo = [s for s in self.mine if not os.path.exists(self.shard_path(s))]
    self.todo = todo[:opts.max_shards] if opts.max_shards >= 0 else todo

  def shard_path(self, s: int) -> str:
    return os.path.join(self.output, shards_lib.shard_name(s, self.num_shards))

  def doc_range(self, s: int) -> range:
    return range(s * self.docs_per_shard, min((s + 1) * self.docs_per_shard, self.num_docs))

  def done(self) -> list[int]:
    """Every finished shard, whichever run or process wrote it."""
    return [s for s in range(self.num_shards) if os.path.exists(self.shard_path(s))]


class _ProgressBar:
  """One tick per document done (coded or skipped), with MB/s and bytes per symbol."""

  def __init__(self, plan: _ShardPlan, enabled: bool, t_start: float):
    self.t_start = t_start
    self.bytes = self.symbols = 0
    self.bar = None
    if enabled and plan.todo:
      total = sum(len(plan.doc_range(s)) for s in plan.todo)
      self.bar = tqdm(total=total, unit="doc", dynamic_ncols=True, file=sys.stderr,
                      desc=f"compress {len(plan.todo)} shards")

  def document_done(self, nbytes: int = 0, nsymbols: int = 0) -> None:
    self.bytes += nbytes
    self.symbols += nsymbols
    if self.bar is not None:
      self.bar.update(1)
      elapsed = time.perf_counter() - self.t_start
      self.bar.set_postfix(MB_s=f"{self.bytes / 1e6 / max(elapsed, 1e-9):.3f}",
                           bytes_per_symbol=f"{self.bytes / max(self.symbols, 1):.2f}",
                           refresh=False)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


class _PendingShards:
  """Shards whose documents are being read or coded, in input order.

  ``documents()`` reads the planned shards' documents (skipping unusable ones)
  and yields their texts; ``coding(future)`` attaches the coder's future to the
  oldest document not yet submitted; ``write_ready`` writes the leading shards
  whose documents are all coded (counts first, then the shard), updates
  ``progress.json`` and this run's totals.
  """

  def __init__(self, plan: _ShardPlan, docs: _Documents, opts: Options, settings: Settings,
               progress: _ProgressBar, t_start: float):
    self.plan, self.docs, self.opts, self.settings = plan, docs, opts, settings
    self.progress, self.t_start = progress, t_start
    self.order: collections.deque = collections.deque()  # (shard, [[doc, future], ..., None])
    self.waiting: collections.deque = collections.deque()  # entries read but not yet coded
    self.skipped: dict[int, int] = collections.defaultdict(int)
    self.record = {"process_index": opts.process_index, "process_count": opts.process_count,
                   "shards_total": len(plan.mine),
                   "shards_done_before": len(plan.mine) - len(plan.todo),
                   "shards_written": [], "bytes": 0, "seconds": 0.0}  # progress.json
    self.run_stats = {"docs": 0, "bytes": 0, "symbols": 0, "skipped": 0, "cache_lookups": 0,
                      "cache_hits": 0}

  def _usable(self, doc: dict) -> bool:
    return (doc["error"] is None and bool(doc["text"])
            and len(doc["text"]) <= self.opts.max_doc_bytes)

  def documents(self) -> Iterator[bytes]:
    for s in self.plan.todo:
      entries: list = []
      self.order.append((s, entries))
      for i in self.plan.doc_range(s):
        doc = self.docs[i]
        if not self._usable(doc):
          self.skipped[s] += 1
          self.progress.document_done()
          continue
        entries.append([doc, None])
        self.waiting.append(entries[-1])
        yield doc["text"]
      entries.append(None)  # end of this shard's documents

  def coding(self, future: concurrent.futures.Future) -> None:
    self.waiting.popleft()[1] = future

  def write_ready(self, wait: bool) -> None:
    while self.order:
      s, entries = self.order[0]
      if not entries or entries[-1] is not None:
        return  # this shard's documents are still being read
      futures = [e[1] for e in entries[:-1]]
      if not wait and not all(f is not None and f.done() for f in futures):
        return
      self._write(s, [e[0] for e in entries[:-1]], futures)
      self.order.popleft()

  def _write(self, s: int, docs: list[dict], futures: list) -> None:
    records, stats = [], coder.EncodeStats()
    for doc, fut in zip(docs, futures):
      symbols, st = fut.result()
      stats += st
      records.append(shards_lib.make_record(doc["text"], symbols, key=doc["key"],
                                            source=doc["source"],
                                            alphabet_size=self.settings.alphabet_size))
    entry = stats.as_dict()
    # The cache's counts depend on what this run saw before (not on the symbols): they
    # go to the run's record, not to the shard's counts.
    self.run_stats["cache_lookups"] += entry.pop("cache_lookups")
    self.run_stats["cache_hits"] += entry.pop("cache_hits")
    entry.update(docs=len(records), skipped=self.skipped.pop(s, 0))
    # The counts first, then the shard: a shard file always has its counts.
    path = self.plan.shard_path(s)
    shards_lib.write_json(shards_lib.stats_path(path), entry)
    shards_lib.write_shard(path, records)
    self.record["shards_written"].append(s)
    self.record["bytes"] += stats.bytes
    self.record["seconds"] = time.perf_counter() - self.t_start
    shards_lib.write_json(self.plan.progress_path, self.record)
    self.run_stats["docs"] += len(records)
    self.run_stats["bytes"] += stats.bytes
    self.run_stats["symbols"] += stats.symbols
    self.run_stats["skipped"] += entry["skipped"]


def _compress(comp, shards: _PendingShards, opts: Options, progress: _ProgressBar) -> None:
  """Entropy pass -> segments -> batched window rows (coder processes) -> shards."""
  pool = _coder_pool(opts.coder_workers)
  try:
    if pool is not None:  # start the workers (and their imports) before the first call
      list(pool.map(worker_ready, range(opts.coder_workers)))
    for _, text, symbols, stats, _ in comp.encode_stream(
        shards.documents(), pool=pool, workers=opts.coder_workers,
        max_pending_docs=opts.max_pending_docs):
      done = concurrent.futures.Future()
      done.set_result((symbols, stats))
      shards.coding(done)
      progress.document_done(len(text), len(symbols))
      shards.write_ready(wait=False)
    shards.write_ready(wait=True)
  finally:
    if pool is not None:
      pool.shutdown()


def _summary(plan: _ShardPlan, settings: Settings, this_run: dict, wrote: bool) -> dict:
  """summary.json: totals over every finished shard and the throughput of the runs."""
  done = plan.done()
  totals = collections.Counter()
  for s in done:
    totals.update(shards_lib.read_json(shards_lib.stats_path(plan.shard_path(s))))
  previous = (shards_lib.read_json(plan.summary_path) if os.path.exists(plan.summary_path)
              else {})
  runs = list(previous.get("runs", []))
  if wrote:  # a run with nothing left to do keeps the recorded throughput
    runs.append(this_run)
  run_bytes = sum(r["bytes"] for r in runs)
  run_seconds = sum(r["wall_seconds"] for r in runs)
  return {
      "complete": len(done) == plan.num_shards,
      "shards_done": len(done), "num_shards": plan.num_shards,
      "totals": dict(totals),
      "bytes_per_symbol": totals["bytes"] / max(totals["symbols"], 1),
      "bits_per_byte": (totals["symbols"] * math.log2(settings.alphabet_size)
                        / max(totals["bytes"], 1)),
      "literal_fraction": totals["literal_bytes"] / max(totals["bytes"], 1),
      "fragile_fraction": totals["fragile_positions"] / max(totals["bytes"] + totals["docs"], 1),
      "window_fill": totals["model_bits"] / max(totals["windows"] * settings.window_bits, 1),
      "bytes_per_window": totals["coded_bytes"] / max(totals["windows"], 1),
      "literal_segment_fraction": totals["literal_segments"] / max(totals["segments"], 1),
      # Segments found in the encoder's cache, over the runs that wrote shards.
      "cache_hit_rate": (sum(r.get("cache_hits", 0) for r in runs)
                         / max(sum(r.get("cache_lookups", 0) for r in runs), 1)),
      "runs": runs,
      "gb_per_hour_per_process": run_bytes / 1e9 / max(run_seconds, 1e-9) * 3600,
  }


def _restore_model(config: ml_collections.ConfigDict, workdir: str, opts: Options):
  device = (model_lib.default_device(opts.process_index) if opts.device < 0
            else jax.local_devices()[opts.device])
  return model_lib.ByteModel.restore(config, workdir, Settings.from_config(config),
                                     device=device)


def run(config: ml_collections.ConfigDict, workdir: str, opts: Options, *,
        model=None) -> dict[str, Any]:
  """Writes (or completes) the shards; returns the summary (``this_run``: this call)."""
  t_start = time.perf_counter()
  if opts.docs_per_shard < 1:
    raise ValueError("--docs_per_shard must be >= 1")
  if not 0 <= opts.process_index < opts.process_count:
    raise ValueError("need 0 <= --process_index < --process_count")
  if model is None:
    model = _restore_model(config, workdir, opts)
  settings = model.settings
  docs = _Documents(config, opts)
  if docs.total == 0:
    raise ValueError(f"--input={opts.input!r} has no documents in split {opts.split!r}")
  plan = _ShardPlan(opts, docs.total)
  os.makedirs(opts.output, exist_ok=True)
  _check_or_write_metadata(opts.output, _metadata(config, workdir, model, opts, docs.total,
                                                  plan.num_shards))
  progress = _ProgressBar(plan, opts.progress_bar, t_start)
  shards = _PendingShards(plan, docs, opts, settings, progress, t_start)
  comp = codec.NeuralCompressor(model)
  if plan.todo:
    _compress(comp, shards, opts, progress)
  progress.close()
  this_run = _run_record(shards.run_stats, time.perf_counter() - t_start, opts, len(plan.todo))
  summary = _summary(plan, settings, this_run, wrote=bool(plan.todo))
  shards_lib.write_json(plan.summary_path, summary)
  return dict(summary, this_run=this_run)
