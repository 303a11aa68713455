"""ArrayRecord shards (``arrayrecord:GLOB``): JSON objects or raw bytes, one
document per record; neural records carry their original document's key and
the neural view's symbols.

The ArrayRecord reader (C++, riegeli) opens local files only, so shards on
object storage (``gs://``, ``s3://``) are copied once, when the source is built,
into the local cache of :func:`proxyjax.data.sources.globs.local_copy`
(``$PROXYJAX_CACHE_DIR/decompressed/``, default ``~/.cache/proxyjax``; named by the
sha256 of the object's path, size and etag; written under a temporary name and
renamed atomically) and read from there; keys still name the remote shards.
"""

from __future__ import annotations

import dataclasses
import json

import grain
import numpy as np

from proxyjax import paths as paths_lib
from proxyjax.data.sources.document import (
  NEURAL_FIELD,
  UNREADABLE,
  Document,
  check_index,
  error_doc,
  make_doc,
  parse_json_record_with_symbols,
)
from proxyjax.data.sources.globs import copy_stream, expand_glob, local_copy, relpath
from proxyjax.data.sources.spec import FIELD, check_split, in_split, keep_mask
from proxyjax.errors import ConfigError
from proxyjax.views.neural import shards as neural_shards  # numpy-only: the shard record format

RECORD_FORMATS = ("json", "bytes")


@dataclasses.dataclass(frozen=True)
class _Shard:
  """A whole ArrayRecord file, in the FileInstruction protocol's shape."""
  filename: str
  skip: int
  take: int
  examples_in_shard: int


class ArrayRecordSource:
  """ArrayRecord shards read with ``grain.sources.ArrayRecordDataSource``.

  ``record_format="json"``: each record is a JSON object holding the text (see
  :class:`~proxyjax.data.sources.JsonlSource`); ``"bytes"``: each record is the
  document's raw bytes. Records are named ``file:index``, except the neural
  records written by ``python -m proxyjax.compress`` (``proxyjax.views.neural.shards``),
  which carry the original document's key: that key names them and decides their
  split (reading each such file's keys once at construction), so shards of a
  corpus split exactly like the corpus.
  """

  def __init__(self, pattern: str, *, split: str = "all",
               validation_fraction: float = 0.01, record_format: str = "json",
               text_field: str = "", name: str | None = None):
    check_split(split, validation_fraction)
    if record_format not in RECORD_FORMATS:
      raise ConfigError("data.record_format", f"must be one of "
                        f"{RECORD_FORMATS}, got {record_format!r}")
    self.name = name or f"arrayrecord:{pattern}"
    self.split = split
    self.record_format = record_format
    self.text_field = text_field
    root, found = expand_glob(pattern, "arrayrecord")
    self._relnames = tuple(relpath(p, root) for p in found)
    paths = [local_shard(p) for p in found]
    counts = [_count_records(p, self.name, record_format) for p in paths]
    self._starts = np.cumsum([0] + counts[:-1]).astype(np.int64)
    self._source = _grain_array_record_source(
        [_Shard(p, 0, n, n) for p, n in zip(paths, counts)])
    self._index = None  # global record keys kept by the split; None = all
    if split != "all":
      kept = []
      for path, rel, start, n in zip(paths, self._relnames, self._starts, counts):
        try:
          doc_keys = neural_shards.record_keys(path) if record_format == "json" else None
        except neural_shards.ShardFileError as e:
          raise ConfigError(FIELD, f"{self.name}: {e}") from e
        if doc_keys is None:  # named file:index
          keep = keep_mask(rel, np.arange(n), split, validation_fraction)
        else:  # neural records: the original document's key, as its corpus splits it
          keep = np.fromiter((in_split(k if k is not None else f"{rel}:{i}", split,
                                       validation_fraction) for i, k in enumerate(doc_keys)),
                             dtype=bool, count=n)
        kept.append(start + np.flatnonzero(keep))
      self._index = np.concatenate(kept).astype(np.int64)
    self._len = sum(counts) if self._index is None else len(self._index)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> Document:
    i = check_index(index, self._len)
    record_key = i if self._index is None else int(self._index[i])
    file_id = int(np.searchsorted(self._starts, record_key, side="right")) - 1
    key = f"{self._relnames[file_id]}:{record_key - int(self._starts[file_id])}"
    try:
      record = self._source[record_key]
    except Exception:  # pylint: disable=broad-except
      return error_doc(self.name, key, UNREADABLE)
    if self.record_format == "bytes":
      return make_doc(bytes(record), self.name, key)
    text, error, neural_key, symbols = parse_json_record_with_symbols(bytes(record),
                                                                      self.text_field)
    doc = make_doc(text, self.name, neural_key or key, error)
    if symbols is not None:
      doc[NEURAL_FIELD] = symbols
    return doc

  def __repr__(self) -> str:
    return (f"ArrayRecordSource(name={self.name!r}, "
            f"files={len(self._relnames)}, format={self.record_format!r}, "
            f"split={self.split!r}, len={len(self)})")


def local_shard(path: str) -> str:
  """``path``, or for a shard on object storage its copy in the local cache."""
  if not paths_lib.is_remote(path):
    return path
  return local_copy(path, "copy", copy_stream, suffix=".array_record")


def _count_records(path: str, name: str, record_format: str = "json") -> int:
  """Number of records in an ArrayRecord file.

  Raises:
    ConfigError: naming the file, if it cannot be read (truncated, corrupt) or
      if it holds neural records of an older format (no per-record checksum).
  """
  try:
    with neural_shards.open_shard(path) as reader:
      n = int(reader.num_records())
      first = bytes(reader.read([0])[0]) if n and record_format == "json" else b""
  except neural_shards.ShardFileError as e:
    raise ConfigError(FIELD, f"{name}: {e}") from e
  if first:
    try:
      record = json.loads(first.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
      record = None
    if neural_shards.is_neural_record(record) and not neural_shards.has_checksum(record):
      raise ConfigError(FIELD, f"{name}: {path} holds neural records without a per-record "
                        f"checksum (format {neural_shards.OLD_FORMATS[-1]!r}); "
                        f"{neural_shards.RECOMPRESS_HINT}")
  return n


def _grain_array_record_source(shards: list[_Shard]):
  return grain.sources.ArrayRecordDataSource(shards)
