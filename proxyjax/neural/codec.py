"""Batched encoding and decoding of documents with a ``ByteModel`` (SPEC §6).

``NeuralCompressor.tables`` packs the model rows of many documents into
fixed-shape calls (dispatching call b+1 before reading call b, so the model
runs while the host copies tables and codes); the tables are quantised on the
device inside the model call (``quantize.device_tables``), so the host only
copies the positions each row serves into the document's ``[n + 1, 256]``
table. ``encode`` codes each document as soon as its tables are complete;
``decode`` advances many documents in lockstep, one model row per document
per call. Symbols do not depend on ``batch_rows`` or on which documents share
a call (``proxyjax.neural.byte_lm``: float64 forward; ``quantize``: fragility).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from proxyjax.neural import byte_lm
from proxyjax.views import neural as neural_view
from proxyjax.views.neural import coder


class NeuralCompressor:
  """bytes <-> neural symbols with one model and one set of settings."""

  def __init__(self, model: byte_lm.ByteModel):
    self.model = model
    self.settings = model.settings

  # --- encoding -----------------------------------------------------------------

  def tables(self, docs: Iterable[bytes], allocate: Callable[[int], np.ndarray] | None = None
             ) -> Iterator[tuple[int, bytes, np.ndarray, np.ndarray]]:
    """Yields ``(index, doc, tables [n + 1, 256] uint16, fragile [n + 1] bool)`` in
    document order. ``allocate(n)`` makes a document's ``[n + 1, 256]`` uint16
    table buffer (default: a numpy array; ``proxyjax.compress``: shared memory
    that its coder processes read in place)."""
    allocate = allocate or (lambda n: np.zeros((n + 1, 256), np.uint16))
    st = self.settings
    r = st.batch_rows
    pending_docs: dict[int, list] = {}  # index -> [doc, tables, fragile, rows left]
    next_out = 0
    batch: list[tuple[int, int]] = []  # (doc index, row)
    in_flight = None  # (device tables, device fragility, batch)

    def finish(flight):
      dev_tables, dev_fragile, rows = flight
      tables, fragile = np.asarray(dev_tables), np.asarray(dev_fragile)
      for slot, (d, j) in enumerate(rows):
        entry = pending_docs[d]
        a, e = byte_lm.row_span(j, st)
        e = min(e, len(entry[0]) + 1)
        start = byte_lm.row_start(j, st)
        entry[1][a:e] = tables[slot, a - start:e - start]  # only the served positions
        entry[2][a:e] = fragile[slot, a - start:e - start]
        entry[3] -= 1

    def ready():
      nonlocal next_out
      while next_out in pending_docs and pending_docs[next_out][3] == 0:
        doc, t, f, _ = pending_docs.pop(next_out)
        yield next_out, doc, t, f
        next_out += 1

    def dispatch(rows):
      ids = np.zeros((r, st.context), np.int32)
      for slot, (d, j) in enumerate(rows):
        ids[slot] = byte_lm.row_ids(pending_docs[d][0], j, st)
      return (*self.model.tables_async(ids), rows)

    def submit(rows):  # dispatch call b + 1, then read call b
      nonlocal in_flight
      flight = dispatch(rows)
      if in_flight is not None:
        finish(in_flight)
      in_flight = flight

    for index, doc in enumerate(docs):
      doc = bytes(doc)
      rows = byte_lm.num_rows(len(doc) + 1, st)
      pending_docs[index] = [doc, allocate(len(doc)), np.zeros(len(doc) + 1, bool), rows]
      for j in range(rows):
        batch.append((index, j))
        if len(batch) == r:
          submit(batch)
          batch = []
          yield from ready()
    if batch:
      submit(batch)
    if in_flight is not None:
      finish(in_flight)
    yield from ready()

  def encode_with_stats(self, docs: Iterable[bytes]) -> Iterator[
      tuple[np.ndarray, coder.EncodeStats]]:
    for _, doc, tables, fragile in self.tables(docs):
      yield coder.encode_document(doc, tables, self.settings, fragile)

  def encode(self, docs: Sequence[bytes]) -> list[np.ndarray]:
    return [symbols for symbols, _ in self.encode_with_stats(docs)]

  def symbol_spans(self, docs: Iterable[bytes]) -> Iterator[
      tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(symbols, starts, ends)`` per document: ``coder.symbol_spans``."""
    for _, doc, tables, fragile in self.tables(docs):
      yield coder.symbol_spans(doc, tables, self.settings, fragile)

  # --- decoding -----------------------------------------------------------------

  def decode(self, streams: Sequence[np.ndarray],
             progress: Callable[[int], None] | None = None,
             crc32s: Sequence[int | None] | None = None) -> list[bytes]:
    """Symbols -> bytes for many documents, batching their model calls.

    ``crc32s`` (``zlib.crc32`` of each original document, as stored in the
    shards): a document decoded to other bytes raises
    ``coder.DecodeMismatchError`` instead of returning them.
    """
    st = self.settings
    if crc32s is not None and len(crc32s) != len(streams):
      raise ValueError(f"{len(crc32s)} CRC32s for {len(streams)} streams")
    out: list[bytes | None] = [None] * len(streams)

    def done(i: int, data: bytes) -> None:
      out[i] = coder.check_crc32(data, None if crc32s is None else crc32s[i], f"document {i}")
      if progress is not None:
        progress(i)

    active: dict[int, tuple] = {}
    for i, symbols in enumerate(streams):
      steps = coder.decode_steps(symbols, st)
      try:
        active[i] = (steps, next(steps))
      except StopIteration as stop:
        done(i, stop.value)
    while active:
      items = list(active.items())
      for k in range(0, len(items), st.batch_rows):
        chunk = items[k:k + st.batch_rows]
        ids = np.zeros((st.batch_rows, st.context), np.int32)
        reads = []
        for slot, (_, (_, prefix)) in enumerate(chunk):
          pos = len(prefix)
          j = byte_lm.row_of(pos, st)
          ids[slot] = byte_lm.row_ids(bytes(prefix), j, st, end=pos)
          reads.append(pos - byte_lm.row_start(j, st))
        dev_tables, _ = self.model.tables_async(ids)
        tables = np.asarray(dev_tables)[np.arange(len(chunk)), np.asarray(reads)]
        for slot, (i, (steps, _)) in enumerate(chunk):
          try:
            active[i] = (steps, steps.send(tables[slot]))
          except StopIteration as stop:
            del active[i]
            done(i, stop.value)
    return out  # type: ignore[return-value]


def load_compressor(config, workdir: str, settings) -> NeuralCompressor:
  """The compressor of run ``workdir`` (its newest checkpoint)."""
  return NeuralCompressor(byte_lm.ByteModel.restore(config, workdir, settings))


def register() -> None:
  """Lets ``NeuralView`` load compressors from run directories (idempotent).

  The views sit below the model and training layers, so the neural view does not
  import this module; it receives ``load_compressor`` here instead.
  """
  neural_view.set_compressor_loader(load_compressor)


register()
