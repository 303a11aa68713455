"""JSON-lines files (``jsonl:GLOB``): one document per non-blank line."""

from __future__ import annotations

import numpy as np

from proxyjax.data.sources.document import (
  UNREADABLE,
  Document,
  check_index,
  error_doc,
  make_doc,
  parse_json_record,
)
from proxyjax.data.sources.globs import expand_glob, relpath
from proxyjax.data.sources.spec import FIELD, check_split, keep_mask
from proxyjax.errors import ConfigError

_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")
_IS_SPACE = np.isin(np.arange(256), [9, 10, 11, 12, 13, 32])  # bytes.isspace
_INDEX_CHUNK_BYTES = 4 << 20


class JsonlSource:
  """JSON-lines files: one document per non-blank line.

  Line offsets are indexed at construction (numpy int64 arrays, so the source
  pickles cheaply); ``__getitem__`` seeks and reads one line. The text is the
  ``text_field`` value when given, else ``text``, else ``content``.
  """

  def __init__(self, pattern: str, *, split: str = "all",
               validation_fraction: float = 0.01, text_field: str = "",
               name: str | None = None):
    check_split(split, validation_fraction)
    self.name = name or f"jsonl:{pattern}"
    self.split = split
    self.text_field = text_field
    _reject_compressed(pattern, self.name)
    root, paths = expand_glob(pattern, "jsonl")
    for path in paths:
      _reject_compressed(path, self.name)
    self._paths = tuple(paths)
    self._relnames = tuple(relpath(p, root) for p in paths)
    offsets, lengths, linenos, file_ids = [], [], [], []
    for file_id, path in enumerate(paths):
      starts, ends, numbers = _index_lines(path)
      keep = keep_mask(self._relnames[file_id], numbers, split, validation_fraction)
      offsets.append(starts[keep])
      lengths.append(ends[keep] - starts[keep])
      linenos.append(numbers[keep])
      file_ids.append(np.full(int(keep.sum()), file_id, dtype=np.int32))
    self._offsets = np.concatenate(offsets).astype(np.int64)
    self._lengths = np.concatenate(lengths).astype(np.int64)
    self._linenos = np.concatenate(linenos).astype(np.int64)
    self._file_ids = np.concatenate(file_ids).astype(np.int32)

  def __len__(self) -> int:
    return int(self._offsets.shape[0])

  def __getitem__(self, index: int) -> Document:
    i = check_index(index, len(self))
    file_id = int(self._file_ids[i])
    key = f"{self._relnames[file_id]}:{int(self._linenos[i])}"
    try:
      with open(self._paths[file_id], "rb") as f:
        f.seek(int(self._offsets[i]))
        raw = f.read(int(self._lengths[i]))
    except OSError:
      return error_doc(self.name, key, UNREADABLE)
    text, error = parse_json_record(raw, self.text_field)
    return make_doc(text, self.name, key, error)

  def __repr__(self) -> str:
    return (f"JsonlSource(name={self.name!r}, files={len(self._paths)}, "
            f"split={self.split!r}, len={len(self)})")


def _reject_compressed(path: str, name: str) -> None:
  if path.lower().endswith(_COMPRESSED_SUFFIXES):
    raise ConfigError(FIELD, f"{name}: compressed JSONL ({path}) is not "
                      "supported; decompress it or convert it to ArrayRecord")


def _index_lines(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Byte (start, end) and 1-based line number of each non-blank line.

  Reads the file in chunks; a line is blank when it holds only ASCII
  whitespace. A final line without a trailing newline counts.
  """
  starts, ends, numbers = [], [], []
  pending_start, pending_content, newlines_seen, base = 0, False, 0, 0
  with open(path, "rb") as f:
    while chunk := f.read(_INDEX_CHUNK_BYTES):
      buf = np.frombuffer(chunk, dtype=np.uint8)
      newlines = np.flatnonzero(buf == 10)
      content = np.zeros(buf.shape[0] + 1, dtype=np.int32)
      np.cumsum(~_IS_SPACE[buf], dtype=np.int32, out=content[1:])
      # Segments of this chunk: [0, nl0), [nl0+1, nl1), ..., [nlk+1, len).
      seg_starts = np.concatenate([[0], newlines + 1])
      seg_ends = np.concatenate([newlines, [buf.shape[0]]])
      has_content = content[seg_ends] > content[seg_starts]
      if newlines.shape[0]:
        # The first segment completes the line pending from earlier chunks.
        first_content = pending_content or bool(has_content[0])
        full_starts = np.concatenate([[pending_start], base + seg_starts[1:-1]])
        full_content = np.concatenate([[first_content], has_content[1:-1]])
        keep = np.flatnonzero(full_content)
        starts.append(full_starts[keep])
        ends.append(base + newlines[keep])
        numbers.append(newlines_seen + 1 + keep)
        newlines_seen += newlines.shape[0]
        pending_start = base + int(seg_starts[-1])
        pending_content = bool(has_content[-1])
      else:
        pending_content = pending_content or bool(has_content[-1])
      base += buf.shape[0]
  if pending_content:
    starts.append(np.array([pending_start]))
    ends.append(np.array([base]))
    numbers.append(np.array([newlines_seen + 1]))
  if not starts:
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, empty
  return (np.concatenate(starts).astype(np.int64),
          np.concatenate(ends).astype(np.int64),
          np.concatenate(numbers).astype(np.int64))
