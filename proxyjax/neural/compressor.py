"""Batched encoding and decoding of documents with a ``ByteModel`` (SPEC §6).

``NeuralCompressor.tables`` packs the model rows of many documents into
fixed-shape calls (dispatching call b+1 before reading call b, so the model
runs while the host quantises and codes); ``encode`` codes each document as
soon as its tables are complete; ``decode`` advances many documents in
lockstep, one model row per document per call.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from proxyjax.neural import coder
from proxyjax.neural import model as model_lib
from proxyjax.neural import quantize


class NeuralCompressor:
  """bytes <-> neural symbols with one model and one set of settings."""

  def __init__(self, model: model_lib.ByteModel):
    self.model = model
    self.settings = model.settings

  # --- encoding -----------------------------------------------------------------

  def tables(self, docs: Iterable[bytes]) -> Iterator[tuple[int, bytes, np.ndarray]]:
    """Yields ``(index, doc, tables [n + 1, 256] uint16)`` in document order."""
    st = self.settings
    r = st.batch_rows
    pending_docs: dict[int, list] = {}  # index -> [doc, tables, rows left]
    next_out = 0
    batch: list[tuple[int, int]] = []  # (doc index, row)
    in_flight = None  # (device logits, batch)

    def finish(flight):
      logits, rows = flight
      tables = quantize.frequencies(np.asarray(logits), st.prob_bits)
      for slot, (d, j) in enumerate(rows):
        entry = pending_docs[d]
        n = len(entry[0])
        a, e = model_lib.row_span(j, st)
        e = min(e, n + 1)
        start = model_lib.row_start(j, st)
        entry[1][a:e] = tables[slot, 1 + a - start:1 + e - start]
        entry[2] -= 1

    def ready():
      nonlocal next_out
      while next_out in pending_docs and pending_docs[next_out][2] == 0:
        doc, t, _ = pending_docs.pop(next_out)
        yield next_out, doc, t
        next_out += 1

    def dispatch(rows):
      ids = np.zeros((r, st.context), np.int32)
      for slot, (d, j) in enumerate(rows):
        ids[slot] = model_lib.row_ids(pending_docs[d][0], j, st)
      return self.model.logits_async(ids), rows

    for index, doc in enumerate(docs):
      doc = bytes(doc)
      rows = model_lib.num_rows(len(doc) + 1, st)
      pending_docs[index] = [doc, np.zeros((len(doc) + 1, 256), np.uint16), rows]
      for j in range(rows):
        batch.append((index, j))
        if len(batch) == r:
          flight = dispatch(batch)
          batch = []
          if in_flight is not None:
            finish(in_flight)
          in_flight = flight
          yield from ready()
    if batch:
      flight = dispatch(batch)
      if in_flight is not None:
        finish(in_flight)
      in_flight = flight
    if in_flight is not None:
      finish(in_flight)
    yield from ready()

  def encode_with_stats(self, docs: Iterable[bytes]) -> Iterator[
      tuple[np.ndarray, coder.EncodeStats]]:
    for _, doc, tables in self.tables(docs):
      yield coder.encode_document(doc, tables, self.settings)

  def encode(self, docs: Sequence[bytes]) -> list[np.ndarray]:
    return [symbols for symbols, _ in self.encode_with_stats(docs)]

  # --- decoding -----------------------------------------------------------------

  def decode(self, streams: Sequence[np.ndarray],
             progress: Callable[[int], None] | None = None) -> list[bytes]:
    """Symbols -> bytes for many documents, batching their model calls."""
    st = self.settings
    out: list[bytes | None] = [None] * len(streams)
    active: dict[int, tuple] = {}
    for i, symbols in enumerate(streams):
      steps = coder.decode_steps(symbols, st)
      try:
        active[i] = (steps, next(steps))
      except StopIteration as stop:
        out[i] = stop.value
    while active:
      items = list(active.items())
      for k in range(0, len(items), st.batch_rows):
        chunk = items[k:k + st.batch_rows]
        ids = np.zeros((st.batch_rows, st.context), np.int32)
        reads = []
        for slot, (_, (_, prefix)) in enumerate(chunk):
          pos = len(prefix)
          j = model_lib.row_of(pos, st)
          ids[slot] = model_lib.row_ids(bytes(prefix), j, st, end=pos)
          reads.append(1 + pos - model_lib.row_start(j, st))
        logits = np.asarray(self.model.logits_async(ids))
        picked = logits[np.arange(len(chunk)), np.asarray(reads)]
        tables = quantize.frequencies(picked, st.prob_bits)
        for slot, (i, (steps, _)) in enumerate(chunk):
          try:
            active[i] = (steps, steps.send(tables[slot]))
          except StopIteration as stop:
            out[i] = stop.value
            del active[i]
            if progress is not None:
              progress(i)
    return out  # type: ignore[return-value]
