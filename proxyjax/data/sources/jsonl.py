"""JSON-lines files (``jsonl:GLOB``): one document per non-blank line.

Plain files (local, ``gs://``, ``s3://``) are indexed and read where they are.
Compressed files, ``.gz`` (gzip, e.g. ``.jsonl.gz``) and ``.zst`` (zstandard,
e.g. ``.jsonl.zst``), allow no random access, so each is decompressed once, when
the source is built, into the local content-addressed cache
(:func:`proxyjax.data.sources.globs.local_copy`: ``$PROXYJAX_CACHE_DIR/decompressed/``,
default ``~/.cache/proxyjax``; named by the sha256 of path, size and
modification stamp, written under a temporary name and renamed atomically, so it
is safe with concurrent processes) and the copy is indexed and read like a plain
file. Keys still name the compressed file. A corrupt or truncated compressed
file is one ConfigError naming it, raised when the source is built (never in a
Grain worker). ``.bz2``, ``.xz`` and ``.lz4`` are refused.
"""

from __future__ import annotations

import zlib
from typing import IO

import numpy as np

from proxyjax import paths as paths_lib
from proxyjax.data.sources.document import (
  UNREADABLE,
  Document,
  check_index,
  error_doc,
  make_doc,
  parse_json_record,
)
from proxyjax.data.sources.globs import expand_glob, local_copy, relpath
from proxyjax.data.sources.spec import FIELD, check_split, keep_mask
from proxyjax.errors import ConfigError

_UNSUPPORTED_SUFFIXES = (".bz2", ".xz", ".lz4")
_DECOMPRESSED_SUFFIXES = {".gz": "gzip", ".zst": "zstd"}
_DECOMPRESS_CHUNK_BYTES = 1 << 16  # compressed bytes per step: bounds the memory per step
_IS_SPACE = np.isin(np.arange(256), [9, 10, 11, 12, 13, 32])  # bytes.isspace
_INDEX_CHUNK_BYTES = 4 << 20


class JsonlSource:
  """JSON-lines files: one document per non-blank line.

  Line offsets are indexed at construction (numpy int64 arrays, so the source
  pickles cheaply); ``__getitem__`` seeks and reads one line. The text is the
  ``text_field`` value when given, else ``text``, else ``content``. Compressed
  files are read through a decompressed local copy (module docstring).
  """

  def __init__(self, pattern: str, *, split: str = "all",
               validation_fraction: float = 0.01, text_field: str = "",
               name: str | None = None):
    check_split(split, validation_fraction)
    self.name = name or f"jsonl:{pattern}"
    self.split = split
    self.text_field = text_field
    _reject_compressed(pattern, self.name)
    root, found = expand_glob(pattern, "jsonl")
    for path in found:
      _reject_compressed(path, self.name)
    self._relnames = tuple(relpath(p, root) for p in found)
    self._paths = tuple(readable_path(p, self.name) for p in found)
    offsets, lengths, linenos, file_ids = [], [], [], []
    for file_id, path in enumerate(self._paths):
      starts, ends, numbers = index_lines(path)
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
      with paths_lib.open_file(self._paths[file_id], "rb") as f:
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
  if path.lower().endswith(_UNSUPPORTED_SUFFIXES):
    raise ConfigError(FIELD, f"{name}: {path} is compressed with "
                      f"{path.rsplit('.', 1)[-1]}, which is not supported; JSON lines may be "
                      "plain, .gz (gzip) or .zst (zstandard): recompress or decompress it")


def compression(path: str) -> str:
  """``gzip``, ``zstd`` or ``""`` (plain), by the file name's suffix."""
  lower = path.lower()
  return next((c for suffix, c in _DECOMPRESSED_SUFFIXES.items() if lower.endswith(suffix)), "")


def readable_path(path: str, name: str) -> str:
  """A path with random access to ``path``'s JSON lines: ``path`` itself, or for
  a ``.gz`` / ``.zst`` file its decompressed copy in the local cache.

  Raises:
    ConfigError: naming the file, if it is compressed with an unsupported
      codec, corrupt or truncated.
  """
  _reject_compressed(path, name)
  codec = compression(path)
  if not codec:
    return path

  def write(src: IO[bytes], dst: IO[bytes]) -> None:
    try:
      _decompress(src, dst, codec)
    except _CorruptError as e:
      raise ConfigError(FIELD, f"{name}: corrupt or truncated {codec} file {path} "
                        f"({e}): re-download it") from e

  return local_copy(path, f"decompress-{codec}", write, suffix=".jsonl")


class _CorruptError(Exception):
  pass


def _decompressor(codec: str):
  if codec == "gzip":
    return zlib.decompressobj(zlib.MAX_WBITS | 16)
  import zstandard  # pylint: disable=import-outside-toplevel
  return zstandard.ZstdDecompressor().decompressobj()


def _decompress(src: IO[bytes], dst: IO[bytes], codec: str) -> None:
  """Decompresses every member (gzip) / frame (zstd) of ``src`` into ``dst``.

  Raises:
    _CorruptError: for data that is not the codec's, or a last member cut short.
  """
  import zstandard  # pylint: disable=import-outside-toplevel
  errors = (zlib.error, zstandard.ZstdError, EOFError)
  d, open_member = _decompressor(codec), False
  while chunk := src.read(_DECOMPRESS_CHUNK_BYTES):
    data = chunk
    while data:
      if not open_member and not data.strip(b"\0"):
        break  # zero padding after the last member (tape/gzip convention)
      try:
        dst.write(d.decompress(data))
      except errors as e:
        raise _CorruptError(str(e) or type(e).__name__) from e
      if d.eof:
        data, d, open_member = d.unused_data, _decompressor(codec), False
      else:
        data, open_member = b"", True
  if open_member:
    raise _CorruptError("the compressed stream ends before its end marker")


def index_lines(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Byte (start, end) and 1-based line number of each non-blank line.

  Reads the file in chunks; a line is blank when it holds only ASCII
  whitespace. A final line without a trailing newline counts.
  """
  starts, ends, numbers = [], [], []
  pending_start, pending_content, newlines_seen, base = 0, False, 0, 0
  with paths_lib.open_file(path, "rb") as f:
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
