"""Packing documents into fixed-length rows with segment ids and positions (docs/method.md §4).

Default (``concat``): documents are concatenated and cut into rows of
``seq_len``; each row also carries ``num_targets`` look-ahead ids so every
position has targets for all prediction heads; no padding, and a long
document continues into the next row without a new BOS. Segment ids start at
1 in each row and a new segment starts *after* each EOS (EOS belongs to the
document it closes); a row that starts mid-document gives that continuation
its own segment. Positions restart at 0 after each EOS (rows start at 0, which
RoPE cannot tell apart from the true offset since it is relative).

Option (``first_fit``): documents are not split across rows unless longer
than a row (then cut into row-sized chunks, each its own segment); Grain's
``FirstFitPackIterDataset`` places them; PAD has segment id 0 and is never a
target.

Row features (int32): ``inputs [L]``, ``targets [L]`` (``[L, P]`` for P > 1
target columns; column k at position t is the id at t + 1 + k),
``segment_ids [L]``, ``positions [L]``. A model with H main heads and R look-ahead
raw heads (``head_counts``) trains on rows of P = H + R columns: main head h
predicts column h, raw head j column H + j (the id at t + 1 + H + j).
"""

from __future__ import annotations

import warnings
from typing import Any

import grain
import numpy as np

from proxyjax import vocab as vocab_lib
from proxyjax.data import stats as stats_lib
from proxyjax.errors import ConfigError

PAD, EOS = vocab_lib.PAD, vocab_lib.EOS
ID_DTYPE = vocab_lib.ID_DTYPE


def head_counts(model: Any, *, warn: bool = True) -> tuple[int, int]:
  """``(H, R)`` of a ``config.model`` section (a ConfigDict or a recorded dict): H main
  prediction heads (``num_pred_heads``) and R look-ahead raw heads
  (``num_raw_pred_heads``); rows carry ``H + R`` target columns. The one place that
  resolves the deprecated ``raw_head``: ``raw_head=True`` means R = 1 (a FutureWarning
  unless ``warn=False``); set together with ``num_raw_pred_heads`` it is a ConfigError.
  A config recorded before ``num_raw_pred_heads`` existed has R = 0 (or 1 by ``raw_head``).
  """
  num_pred = int(model.get("num_pred_heads", 1))
  num_raw = int(model.get("num_raw_pred_heads", 0) or 0)
  if num_raw < 0:
    raise ConfigError("model.num_raw_pred_heads", f"must be >= 0, got {num_raw}")
  if model.get("raw_head", False):
    if num_raw:
      raise ConfigError("model.raw_head", f"is deprecated and conflicts with "
                        f"model.num_raw_pred_heads={num_raw}: set only model.num_raw_pred_heads")
    if warn:
      warnings.warn("model.raw_head is deprecated: use model.num_raw_pred_heads=1 (raw_head=True "
                    "now means one look-ahead raw head, predicting the id after the main "
                    "heads' targets)", FutureWarning, stacklevel=1)
    num_raw = 1
  return num_pred, num_raw


def segments_and_positions(inputs: np.ndarray, num_real: int | None = None,
                           doc_mask: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Segment ids and positions of one row; ids beyond ``num_real`` are padding."""
  length = inputs.shape[0]
  num_real = length if num_real is None else num_real
  seg = np.zeros(length, dtype=ID_DTYPE)
  pos = np.zeros(length, dtype=ID_DTYPE)
  pos[:num_real] = np.arange(num_real, dtype=ID_DTYPE)
  if not doc_mask:
    seg[:num_real] = 1
    return seg, pos
  # Segment k+1 starts one past the k-th EOS; EOS stays in the segment it closes.
  starts = np.flatnonzero(inputs[:num_real - 1] == EOS) + 1
  if starts.size == 0:
    seg[:num_real] = 1
    return seg, pos
  bounds = np.concatenate([[0], starts, [num_real]])
  lengths = np.diff(bounds)
  seg[:num_real] = np.repeat(np.arange(1, lengths.size + 1, dtype=ID_DTYPE), lengths)
  pos[:num_real] -= np.repeat(bounds[:-1].astype(ID_DTYPE), lengths)
  return seg, pos


def row_features(window: np.ndarray, seq_len: int, num_targets: int, doc_mask: bool) -> dict:
  """Features of a row from ``window`` = the row's ids plus look-ahead ids.

  ``window`` may be shorter than ``seq_len + num_targets`` at the end of a
  finite stream; missing ids are PAD (segment 0, never a target). The arrays
  may be views of ``window`` (batching copies them).
  """
  need = seq_len + num_targets
  if window.shape[0] == need:
    buf = window
  else:
    buf = np.zeros(need, dtype=ID_DTYPE)
    buf[:window.shape[0]] = window
  inputs = buf[:seq_len]
  if num_targets == 1:
    targets = buf[1:seq_len + 1]
  else:
    targets = np.lib.stride_tricks.sliding_window_view(buf[1:], num_targets)[:seq_len]
  seg, pos = segments_and_positions(inputs, min(window.shape[0], seq_len), doc_mask)
  return {"inputs": inputs, "targets": targets, "segment_ids": seg, "positions": pos}


class ConcatSplitPackIterDataset(grain.IterDataset):
  """Concatenate-and-split packing of ``{"ids": int32[n]}`` elements."""

  def __init__(self, parent: grain.IterDataset, seq_len: int, num_targets: int = 1,
               doc_mask: bool = True):
    super().__init__(parent)
    self._seq_len = seq_len
    self._num_targets = num_targets
    self._doc_mask = doc_mask

  def __iter__(self) -> "ConcatSplitPackIterator":
    return ConcatSplitPackIterator(self._parent.__iter__(), self._seq_len, self._num_targets,
                                   self._doc_mask)

  def __str__(self) -> str:
    return f"ConcatSplitPackIterDataset(seq_len={self._seq_len}, num_targets={self._num_targets})"


class ConcatSplitPackIterator(grain.DatasetIterator):
  """Keeps the documents overlapping the next row, each with the parent state before it.

  The state is the parent state before the first pending document plus the
  offset of the next row start inside it: restoring replays those documents
  from the parent, so the state holds no buffered ids and resumed rows are
  identical.
  """

  def __init__(self, parent: grain.DatasetIterator, seq_len: int, num_targets: int,
               doc_mask: bool):
    super().__init__(parent)
    self._seq_len = seq_len
    self._num_targets = num_targets
    self._doc_mask = doc_mask
    self._pending: list[tuple[dict[str, Any], np.ndarray]] = []
    self._pending_len = 0
    self._offset = 0  # ids of the first pending document already behind the row start
    self._exhausted = False

  def _pull(self) -> bool:
    if self._exhausted:
      return False
    before = self._parent.get_state()
    try:
      ids = next(self._parent)["ids"]
    except StopIteration:
      self._exhausted = True
      return False
    self._pending.append((before, ids))
    self._pending_len += int(ids.shape[0])
    return True

  def __next__(self) -> dict[str, Any]:
    need = self._seq_len + self._num_targets
    while self._pending_len - self._offset < need and self._pull():
      pass
    available = self._pending_len - self._offset
    if available <= 0:
      raise StopIteration
    window = self._window(need)
    row = row_features(window, self._seq_len, self._num_targets, self._doc_mask)
    self._offset += min(self._seq_len, available)
    while self._pending and self._offset >= self._pending[0][1].shape[0]:
      n = self._pending.pop(0)[1].shape[0]
      self._offset -= n
      self._pending_len -= n
    return row

  def _window(self, need: int) -> np.ndarray:
    """Up to ``need`` ids from the row start, touching only the documents it spans."""
    pieces, start, remaining = [], self._offset, need
    for _, ids in self._pending:
      piece = ids[start:start + remaining]
      start = 0
      pieces.append(piece)
      remaining -= piece.shape[0]
      if remaining <= 0:
        break
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

  def get_state(self) -> dict[str, Any]:
    current = self._parent.get_state()
    parent = self._pending[0][0] if self._pending else current
    return {"parent": parent, "offset": self._offset,
            stats_lib.STATE_KEY: stats_lib.live(current)}

  def set_state(self, state: dict[str, Any]) -> None:
    # The live counters are recomputed by replaying the pending documents.
    self._parent.set_state(state["parent"])
    self._pending, self._pending_len = [], 0
    self._offset = int(state["offset"])
    self._exhausted = False


def document_chunks(ids: np.ndarray, seq_len: int, num_targets: int) -> list[dict[str, np.ndarray]]:
  """Splits an id array at EOS into documents, and documents into row-sized chunks.

  Each chunk is ``{"inputs": [n], "targets": [n] or [n, H]}`` with ``n <= seq_len``;
  a document of ``m`` ids yields ``m - 1`` positions (its last id, EOS, is only
  a target). Targets past the document's end are PAD.
  """
  ends = np.flatnonzero(ids == EOS) + 1
  if ends.size == 0 or ends[-1] != ids.shape[0]:
    ends = np.append(ends, ids.shape[0])
  out = []
  start = 0
  for end in ends:
    doc = ids[start:end]
    start = end
    n = doc.shape[0] - 1
    if n <= 0:
      continue
    padded = np.concatenate([doc, np.full(num_targets, PAD, ID_DTYPE)])
    if num_targets == 1:
      targets = padded[1:n + 1]
    else:
      idx = np.arange(n)[:, None] + 1 + np.arange(num_targets)[None, :]
      targets = padded[idx]
    for c in range(0, n, seq_len):
      out.append({"inputs": doc[c:min(c + seq_len, n)].astype(ID_DTYPE),
                  "targets": targets[c:c + seq_len].astype(ID_DTYPE)})
  return out


class ChunkIterDataset(grain.IterDataset):
  """``{"ids"}`` elements -> per-document chunks for first-fit packing."""

  def __init__(self, parent: grain.IterDataset, seq_len: int, num_targets: int = 1):
    super().__init__(parent)
    self._seq_len = seq_len
    self._num_targets = num_targets

  def __iter__(self) -> "ChunkIterator":
    return ChunkIterator(self._parent.__iter__(), self._seq_len, self._num_targets)


class ChunkIterator(grain.DatasetIterator):
  """State = parent state before the current element + index of the next chunk."""

  def __init__(self, parent: grain.DatasetIterator, seq_len: int, num_targets: int):
    super().__init__(parent)
    self._seq_len = seq_len
    self._num_targets = num_targets
    self._before = parent.get_state()
    self._chunks: list[dict[str, np.ndarray]] = []
    self._next = 0

  def __next__(self) -> dict[str, np.ndarray]:
    while self._next >= len(self._chunks):
      self._before = self._parent.get_state()
      self._chunks = document_chunks(next(self._parent)["ids"], self._seq_len, self._num_targets)
      self._next = 0
    chunk = self._chunks[self._next]
    self._next += 1
    return chunk

  def get_state(self) -> dict[str, Any]:
    current = self._parent.get_state()
    live = stats_lib.live(current)
    if self._next >= len(self._chunks):
      return {"parent": current, "next": 0, stats_lib.STATE_KEY: live}
    return {"parent": self._before, "next": self._next, stats_lib.STATE_KEY: live}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._chunks, self._next = [], 0
    if int(state["next"]):
      self._before = state["parent"]
      self._chunks = document_chunks(next(self._parent)["ids"], self._seq_len, self._num_targets)
      self._next = int(state["next"])


def first_fit_pack(parent: grain.IterDataset, seq_len: int, num_targets: int, num_bins: int,
                   seed: int, doc_mask: bool = True) -> grain.IterDataset:
  """First-fit packing with Grain; renames Grain's features to ours."""
  chunks = ChunkIterDataset(parent, seq_len, num_targets)
  packed = grain.experimental.FirstFitPackIterDataset(
      chunks, length_struct={"inputs": seq_len, "targets": seq_len},
      num_packing_bins=num_bins, seed=seed, shuffle_bins=True)
  return packed.map(_FirstFitFeatures(doc_mask))


class _FirstFitFeatures(grain.transforms.Map):

  def __init__(self, doc_mask: bool):
    self._doc_mask = doc_mask

  def map(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    seg = row["inputs_segment_ids"].astype(ID_DTYPE)
    pos = row["inputs_positions"].astype(ID_DTYPE)
    if not self._doc_mask:
      real = seg > 0
      seg = real.astype(ID_DTYPE)
      pos = np.where(real, np.arange(seg.shape[0], dtype=ID_DTYPE), 0).astype(ID_DTYPE)
    return {"inputs": row["inputs"].astype(ID_DTYPE), "targets": row["targets"].astype(ID_DTYPE),
            "segment_ids": seg, "positions": pos}
