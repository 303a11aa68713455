"""Batched encoding and decoding of documents with a ``ByteModel`` (docs/method.md §6).

Encoding (``encode_stream``) has two model passes (``proxyjax.views.neural.coder``
has the rules):

1. **Entropy pass** (``entropies``): the model rows of many documents (document
   context, ``context`` ids per row) in fixed-shape calls, dispatching call b+1
   before reading call b; the device returns each position's integer predictive
   entropy and fragility flag only. The host cuts each document into segments.
2. **Windows**: every segment to be coded becomes a ``coder.SegmentCoder``; each
   step of each segment needs one short model row (``[BOS, <raw>]`` + the rest
   of the segment, at most ``window_context - 2`` bytes: the context restarts at
   every window). The steps of up to ``window_batch_rows`` segments, of any
   documents, share one device call; while the device runs call b+1 the host
   codes the windows of call b (in the calling thread, or split over coder
   processes: ``pool``). A segment's windows depend on its bytes alone, so a
   **cache** of coded segments (``SegmentCache``, ``settings.cache_entries``)
   codes repeated segments once (a segment already being coded for an earlier
   document counts as a hit too).

Documents come out in input order as soon as all their segments are coded.
Symbols do not depend on ``batch_rows``, on which segments share a call, on
the number of coder processes or on the cache (``proxyjax.neural.byte_lm``:
float64 forward; ``quantize``: fragility).

Decoding (``decode``): every window of every stream is independent, so all of
them advance in lockstep, one row per window per call (a window of k bytes takes
k + 1 calls whatever the document's length).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from proxyjax.neural import byte_lm
from proxyjax.views import neural as neural_view
from proxyjax.views.neural import coder, quantize


class SegmentCache:
  """Coded segments by their bytes (least recently used out first)."""

  def __init__(self, max_entries: int):
    self.max_entries = max_entries
    self._items: collections.OrderedDict[bytes, coder.CodedSegment] = collections.OrderedDict()
    self.lookups = self.hits = 0

  def get(self, key: bytes) -> coder.CodedSegment | None:
    item = self._items.get(key)
    if item is not None:
      self._items.move_to_end(key)
    return item

  def put(self, key: bytes, value: coder.CodedSegment) -> None:
    if self.max_entries <= 0:
      return
    self._items[key] = value
    self._items.move_to_end(key)
    while len(self._items) > self.max_entries:
      self._items.popitem(last=False)

  def __len__(self) -> int:
    return len(self._items)


@dataclasses.dataclass
class _Doc:
  index: int
  data: bytes
  segments: list
  coded: list  # CodedSegment or None per segment
  missing: int
  stats: coder.EncodeStats


@dataclasses.dataclass
class _Job:
  """One distinct segment being coded, and the documents waiting for it."""
  seg: coder.SegmentCoder
  waiters: list  # (_Doc, segment index)


class NeuralCompressor:
  """bytes <-> neural symbols with one model and one set of settings."""

  def __init__(self, model: byte_lm.ByteModel):
    self.model = model
    self.settings = model.settings
    self.cache = SegmentCache(self.settings.cache_entries)

  # --- the entropy pass -------------------------------------------------------------

  def entropies(self, docs: Iterable[bytes]) -> Iterator[
      tuple[int, bytes, np.ndarray, np.ndarray]]:
    """Yields ``(index, doc, entropy float64 [n] bits, fragile bool [n])`` in document
    order: ``h_t`` of the model's table for byte t given the document before it."""
    st = self.settings
    r = st.batch_rows
    pending_docs: dict[int, list] = {}  # index -> [doc, units, fragile, rows left]
    next_out = 0
    batch: list[tuple[int, int]] = []  # (doc index, row)
    in_flight = None

    def finish(flight):
      dev_units, dev_fragile, rows = flight
      units, fragile = np.asarray(dev_units), np.asarray(dev_fragile)
      for slot, (d, j) in enumerate(rows):
        entry = pending_docs[d]
        a, e = byte_lm.row_span(j, st)
        e = min(e, len(entry[0]))
        start = byte_lm.row_start(j, st)
        entry[1][a:e] = units[slot, a - start:e - start]  # only the served positions
        entry[2][a:e] = fragile[slot, a - start:e - start]
        entry[3] -= 1

    def ready():
      nonlocal next_out
      while next_out in pending_docs and pending_docs[next_out][3] == 0:
        doc, units, f, _ = pending_docs.pop(next_out)
        yield next_out, doc, quantize.units_to_bits(units, st.prob_bits), f
        next_out += 1

    def dispatch(rows):
      ids = np.zeros((r, st.context), np.int32)
      for slot, (d, j) in enumerate(rows):
        ids[slot] = byte_lm.row_ids(pending_docs[d][0], j, st)
      return (*self.model.entropy_async(ids), rows)

    def submit(rows):  # dispatch call b + 1, then read call b
      nonlocal in_flight
      flight = dispatch(rows)
      if in_flight is not None:
        finish(in_flight)
      in_flight = flight

    for index, doc in enumerate(docs):
      doc = bytes(doc)
      rows = byte_lm.num_rows(len(doc), st)
      pending_docs[index] = [doc, np.zeros(len(doc), np.int64), np.zeros(len(doc), bool), rows]
      for j in range(rows):
        batch.append((index, j))
        if len(batch) == r:
          submit(batch)
          batch = []
          yield from ready()
      if rows == 0:
        yield from ready()
    if batch:
      submit(batch)
    if in_flight is not None:
      finish(in_flight)
    yield from ready()

  tables = entropies  # the model pass over whole documents (benchmarks time it)

  # --- encoding ---------------------------------------------------------------------

  def encode_stream(self, docs: Iterable[bytes], pool: concurrent.futures.Executor | None = None,
                    workers: int = 0, max_pending_docs: int = 64
                    ) -> Iterator[tuple[int, bytes, np.ndarray, coder.EncodeStats,
                                        list[tuple[int, int]]]]:
    """Yields ``(index, doc, symbols, stats, spans)`` in document order (``spans``:
    ``(first byte, coded bytes)`` per literal (0) or window).

    ``pool`` with ``workers`` > 0: the windows of each model call are coded in that
    many coder processes (``coder.code_windows``); else in this thread, while the
    device runs the next call.
    """
    st = self.settings
    rows_per_call = st.window_batch_rows
    entropy_iter = self.entropies(docs)
    exhausted = False
    order: collections.deque[_Doc] = collections.deque()
    jobs: dict[bytes, _Job] = {}
    ready: collections.deque[_Job] = collections.deque()
    in_flight = None

    def resolve(doc: _Doc, i: int, coded: coder.CodedSegment) -> None:
      doc.coded[i] = coded
      doc.missing -= 1

    def read_document() -> None:
      nonlocal exhausted
      try:
        index, data, h, fragile = next(entropy_iter)
      except StopIteration:
        exhausted = True
        return
      segments = coder.plan_segments(h, st, fragile)
      doc = _Doc(index, data, segments, [None] * len(segments), 0,
                 coder.EncodeStats(fragile_positions=int(fragile.sum())))
      order.append(doc)
      for i, seg in enumerate(segments):
        if seg.literal:
          continue
        key = data[seg.start:seg.end]
        doc.stats.cache_lookups += 1
        doc.missing += 1
        cached = self.cache.get(key)
        if cached is not None:
          doc.stats.cache_hits += 1
          resolve(doc, i, cached)
        elif key in jobs:
          doc.stats.cache_hits += 1
          jobs[key].waiters.append((doc, i))
        else:
          job = _Job(coder.SegmentCoder(key, st), [(doc, i)])
          jobs[key] = job
          ready.append(job)

    def dispatch(batch: list[_Job]):
      chunks = [job.seg.chunk() for job in batch]
      ids = np.zeros((rows_per_call, st.window_context), np.int32)
      for slot, chunk in enumerate(chunks):
        ids[slot] = byte_lm.window_row_ids(chunk, st)
      return (*self.model.tables_async(ids), batch, chunks)

    def finish(flight) -> None:
      dev_tables, dev_fragile, batch, chunks = flight
      tables, fragile = np.asarray(dev_tables), np.asarray(dev_fragile)
      if pool is not None and workers > 0 and len(batch) > 1:
        parts = np.array_split(np.arange(len(batch)), min(workers, len(batch)))
        futures = [pool.submit(coder.code_windows, [chunks[i] for i in part],
                               tables[part[0]:part[-1] + 1], fragile[part[0]:part[-1] + 1], st)
                   for part in parts if len(part)]
        steps = [step for f in futures for step in f.result()]
      else:
        steps = coder.code_windows(chunks, tables, fragile, st)
      for job, step in zip(batch, steps):
        job.seg.advance(step)
        if not job.seg.done:
          ready.append(job)
          continue
        coded = job.seg.result()
        key = job.seg.data
        del jobs[key]
        self.cache.put(key, coded)
        for doc, i in job.waiters:
          resolve(doc, i, coded)

    def completed():
      while order and order[0].missing == 0:
        doc = order.popleft()
        symbols, stats, spans = coder.assemble(doc.data, doc.segments, doc.coded, st)
        stats.fragile_positions = doc.stats.fragile_positions
        stats.cache_lookups, stats.cache_hits = doc.stats.cache_lookups, doc.stats.cache_hits
        self.cache.lookups += stats.cache_lookups
        self.cache.hits += stats.cache_hits
        yield doc.index, doc.data, symbols, stats, spans

    while True:
      while not exhausted and len(ready) < rows_per_call and len(order) < max_pending_docs:
        read_document()
      yield from completed()
      batch = [ready.popleft() for _ in range(min(rows_per_call, len(ready)))]
      flight = dispatch(batch) if batch else None
      if in_flight is not None:
        finish(in_flight)
      in_flight = flight
      if in_flight is None and not ready:
        yield from completed()
        if exhausted and not order:
          return
        if exhausted or len(order) >= max_pending_docs:
          if not ready and in_flight is None and order and order[0].missing:
            raise RuntimeError("neural encoder: a document waits for no segment")  # a bug

  def encode_with_stats(self, docs: Iterable[bytes]) -> Iterator[
      tuple[np.ndarray, coder.EncodeStats]]:
    for _, _, symbols, stats, _ in self.encode_stream(docs):
      yield symbols, stats

  def encode(self, docs: Sequence[bytes]) -> list[np.ndarray]:
    return [symbols for symbols, _ in self.encode_with_stats(docs)]

  def symbol_spans(self, docs: Iterable[bytes]) -> Iterator[
      tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(symbols, starts, ends)`` per document (``coder.symbol_spans``)."""
    for _, _, symbols, _, spans in self.encode_stream(docs):
      yield (symbols, *coder.spans_to_symbol_spans(spans, len(symbols), self.settings))

  # --- decoding -----------------------------------------------------------------

  def decode_windows(self, values: Sequence[int]) -> list[bytes]:
    """Each window alone (its T-bit value): the bytes it codes."""
    st = self.settings
    out: list[bytes | None] = [None] * len(values)
    active: dict[int, tuple] = {}
    for w, v in enumerate(values):
      steps = coder.decode_window_steps(v, st)
      active[w] = (steps, next(steps))
    rows_per_call = st.window_batch_rows
    while active:
      items = list(active.items())
      for k in range(0, len(items), rows_per_call):
        chunk = items[k:k + rows_per_call]
        ids = np.zeros((rows_per_call, st.window_context), np.int32)
        reads = []
        for slot, (_, (_, prefix)) in enumerate(chunk):
          ids[slot] = byte_lm.window_row_ids(bytes(prefix), st)
          reads.append(len(prefix))
        dev_tables, _ = self.model.tables_async(ids)
        tables = np.asarray(dev_tables)[np.arange(len(chunk)), np.asarray(reads)]
        for slot, (w, (steps, _)) in enumerate(chunk):
          try:
            active[w] = (steps, steps.send(tables[slot]))
          except StopIteration as stop:
            del active[w]
            out[w] = stop.value
    return out  # type: ignore[return-value]

  def decode(self, streams: Sequence[np.ndarray],
             progress: Callable[[int], None] | None = None,
             crc32s: Sequence[int | None] | None = None) -> list[bytes]:
    """Symbols -> bytes for many documents, batching the model calls of all their windows.

    ``crc32s`` (``zlib.crc32`` of each original document, as stored in the
    shards): a document decoded to other bytes raises
    ``coder.DecodeMismatchError`` instead of returning them.
    """
    if crc32s is not None and len(crc32s) != len(streams):
      raise ValueError(f"{len(crc32s)} CRC32s for {len(streams)} streams")
    parsed = [coder.parse_stream(s, self.settings) for s in streams]
    values = [v for items in parsed for is_window, v in items if is_window]
    pieces = iter(self.decode_windows(values))
    out = []
    for i, items in enumerate(parsed):
      data = bytearray()
      for is_window, v in items:
        if is_window:
          data += next(pieces)
        else:
          data.append(v)
      out.append(coder.check_crc32(bytes(data), None if crc32s is None else crc32s[i],
                                   f"document {i}"))
      if progress is not None:
        progress(i)
    return out


def load_compressor(config, workdir: str, settings) -> NeuralCompressor:
  """The compressor of run ``workdir`` (its newest checkpoint)."""
  return NeuralCompressor(byte_lm.ByteModel.restore(config, workdir, settings))


def register() -> None:
  """Lets ``NeuralView`` load compressors from run directories (idempotent).

  The views sit below the model and training layers, so the neural view does not
  import this module; it receives ``load_compressor`` here instead. Called by the entry
  points that may build a neural view (``trainer.train``, ``eval.run.evaluate``, the
  compressor analysis); importing this module alone does not register it.
  """
  neural_view.set_compressor_loader(load_compressor)
