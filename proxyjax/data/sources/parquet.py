"""Parquet files (``parquet:GLOB``, local or ``gs://`` / ``s3://``): one document
per row, the text in column ``text_field`` (default ``text``, else ``content``).

Building the source reads only each file's footer (the schema and the rows of
each row group): O(files), never the data. A document is found by (file, row
group, row); each process decodes the text column of one row group at a time and
keeps the last two decoded (:class:`RowGroupCache`, dropped when the source is
pickled into Grain's workers), so reading the rows of a group in order decodes it
once. Keys are ``relpath:row`` (row 0-based within the file). The split is the
strided rule of :mod:`proxyjax.data.sources.spec` (``StridedSplit``), which reads
and hashes nothing per row.

:class:`TableSource` is the machinery shared with ``hf:`` (Arrow and JSON-lines
files of a Hugging Face dataset): files that know their rows per group
(:class:`TableFile`) behind a split.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from proxyjax import paths
from proxyjax.data.sources.document import (
  MISSING_TEXT,
  UNREADABLE,
  Document,
  check_index,
  encode_text,
  error_doc,
  make_doc,
)
from proxyjax.data.sources.globs import expand_glob, relpath
from proxyjax.data.sources.spec import FIELD, StridedSplit, check_split
from proxyjax.errors import ConfigError

GROUPS_CACHED = 2  # decoded row groups kept per process
FILES_OPEN = 8  # open file handles kept per process


def text_column(names: Sequence[str], types: Sequence[pa.DataType], text_field: str,
                what: str) -> str:
  """The text column of a table with these columns: ``text_field``, else ``text``,
  else ``content``; it must hold strings or bytes.

  Raises:
    ConfigError: naming ``what`` (the file) and the columns it has.
  """
  candidates = [text_field] if text_field else ["text", "content"]
  column = next((c for c in candidates if c in names), None)
  listed = ", ".join(f"{n} ({t})" for n, t in zip(names, types)) or "none"
  if column is None:
    wanted = " or ".join(repr(c) for c in candidates)
    raise ConfigError(FIELD, f"{what} has no {wanted} column; its columns: {listed} "
                      "(set --config.data.text_field to the text column)")
  kind = types[list(names).index(column)]
  if not _is_text_type(kind):
    raise ConfigError(FIELD, f"{what}: column {column!r} holds {kind}, not strings or bytes; "
                      f"its columns: {listed} (set --config.data.text_field)")
  return column


def _is_text_type(t: pa.DataType) -> bool:
  return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
          or pa.types.is_large_binary(t) or pa.types.is_string_view(t)
          or pa.types.is_binary_view(t) or pa.types.is_fixed_size_binary(t))


def text_value(value: Any) -> tuple[bytes, str | None]:
  """A column value as (text bytes, error): strings and bytes are text, null is missing."""
  if isinstance(value, str):
    return encode_text(value), None
  if isinstance(value, (bytes, bytearray, memoryview)):
    return bytes(value), None
  return b"", MISSING_TEXT


class TableFile:
  """One file of rows, in groups decoded whole (Parquet row groups, Arrow record
  batches). Picklable: holds only the path, the column and the group sizes.

  Subclasses implement ``open`` (a per-process handle) and ``read_group``.
  """

  def __init__(self, path: str, relname: str, column: str, group_rows: Sequence[int]):
    self.path = path
    self.relname = relname
    self.column = column
    self.group_starts = np.concatenate([[0], np.cumsum(group_rows)]).astype(np.int64)

  @property
  def rows(self) -> int:
    return int(self.group_starts[-1])

  def open(self) -> Any:
    raise NotImplementedError

  def read_group(self, handle: Any, group: int) -> list[Any]:
    raise NotImplementedError

  def close(self, handle: Any) -> None:
    try:
      handle.close()
    except Exception:  # pylint: disable=broad-except
      pass

  def read(self, row: int, cache: RowGroupCache, file_id: int) -> tuple[bytes, str | None]:
    """The text of row ``row``: (bytes, error)."""
    group = int(np.searchsorted(self.group_starts, row, side="right")) - 1
    values = cache.group(file_id, group, self)
    return text_value(values[row - int(self.group_starts[group])])


class ParquetTableFile(TableFile):
  """A Parquet file: its footer is read at construction, row groups on demand."""

  @classmethod
  def from_footer(cls, path: str, relname: str, text_field: str, name: str) -> ParquetTableFile:
    """Reads the footer (schema and rows per row group) of ``path``.

    Raises:
      ConfigError: naming the file, if it is not Parquet or lacks the text column.
    """
    try:
      with paths.open_file(path, "rb") as f:
        meta = pq.ParquetFile(f).metadata
        schema = meta.schema.to_arrow_schema()
        group_rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    except paths.StorageError:
      raise
    except (pa.ArrowException, OSError, ValueError) as e:
      raise ConfigError(FIELD, f"{name}: {path} is not a readable Parquet file "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    column = text_column(schema.names, schema.types, text_field, f"{name}: {path}")
    return cls(path, relname, column, group_rows)

  def open(self) -> Any:
    return pq.ParquetFile(paths.open_file(self.path, "rb"))

  def close(self, handle: Any) -> None:
    try:
      handle.close(force=True)  # also the file object it was given
    except Exception:  # pylint: disable=broad-except
      pass

  def read_group(self, handle: Any, group: int) -> list[Any]:
    return handle.read_row_group(group, columns=[self.column]).column(0).to_pylist()


class RowGroupCache:
  """Per-process state of a :class:`TableSource`: a few open files and the last
  ``GROUPS_CACHED`` decoded groups (LRU). Thread-safe; pickles empty."""

  def __init__(self):
    self._lock = threading.Lock()  # guards the two dicts
    self._read_lock = threading.Lock()  # one decode at a time: handles are not thread-safe
    self._handles: collections.OrderedDict[int, tuple[TableFile, Any]] = (
        collections.OrderedDict())
    self._groups: collections.OrderedDict[tuple[int, int], list[Any]] = (
        collections.OrderedDict())

  def __getstate__(self) -> dict[str, Any]:
    return {}

  def __setstate__(self, state: dict[str, Any]) -> None:
    del state
    self.__init__()

  def _cached(self, key: tuple[int, int]) -> list[Any] | None:
    with self._lock:
      if key in self._groups:
        self._groups.move_to_end(key)
        return self._groups[key]
    return None

  def group(self, file_id: int, group: int, table_file: TableFile) -> list[Any]:
    """The decoded values of ``group`` of file ``file_id``."""
    key = (file_id, group)
    values = self._cached(key)
    if values is not None:
      return values
    with self._read_lock:
      values = self._cached(key)  # another thread may have decoded it meanwhile
      if values is not None:
        return values
      values = table_file.read_group(self.handle(file_id, table_file), group)
      with self._lock:
        self._groups[key] = values
        while len(self._groups) > GROUPS_CACHED:
          self._groups.popitem(last=False)
    return values

  def forget(self, file_id: int) -> None:
    """Drops a file's handle (after a read failed: reopen it next time)."""
    with self._read_lock:
      entry = self._handles.pop(file_id, None)
      if entry is not None:
        entry[0].close(entry[1])

  def lock(self) -> threading.Lock:
    """The lock for reads through a file's own handle (``handle(...)``)."""
    return self._read_lock

  def handle(self, file_id: int, table_file: Any) -> Any:
    """``table_file``'s open handle in this process; call with ``lock()`` held."""
    if file_id not in self._handles:
      self._handles[file_id] = (table_file, table_file.open())
      while len(self._handles) > FILES_OPEN:
        _, (old_file, old) = self._handles.popitem(last=False)
        old_file.close(old)
    self._handles.move_to_end(file_id)
    return self._handles[file_id][1]


class TableSource:
  """Documents of :class:`TableFile` s (or any file object with ``relname`` and
  ``read(row, cache, file_id)``) behind a :class:`StridedSplit`."""

  def __init__(self, name: str, files: Sequence[Any], split: StridedSplit):
    self.name = name
    self.split = split.split
    self._files = tuple(files)
    self._split = split
    self._cache = RowGroupCache()

  @property
  def relnames(self) -> tuple[str, ...]:
    return tuple(f.relname for f in self._files)

  def __len__(self) -> int:
    return len(self._split)

  def __getitem__(self, index: int) -> Document:
    k = check_index(index, len(self))
    file_id, row = self._split.locate(k)
    table_file = self._files[file_id]
    key = f"{table_file.relname}:{row}"
    try:
      text, error = table_file.read(row, self._cache, file_id)
    except Exception:  # pylint: disable=broad-except  (I/O, Arrow decoding, storage)
      self._cache.forget(file_id)
      return error_doc(self.name, key, UNREADABLE)
    return make_doc(text, self.name, key, error)

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(name={self.name!r}, files={len(self._files)}, "
            f"split={self.split!r}, len={len(self)})")


class ParquetSource(TableSource):
  """Parquet files matching a glob (module docstring)."""

  def __init__(self, pattern: str, *, split: str = "all", validation_fraction: float = 0.01,
               text_field: str = "", name: str | None = None):
    check_split(split, validation_fraction)
    name = name or f"parquet:{pattern}"
    root, found = expand_glob(pattern, "parquet")
    files = [ParquetTableFile.from_footer(p, relpath(p, root), text_field, name)
             for p in found]
    super().__init__(name, files, StridedSplit([f.relname for f in files],
                                               [f.rows for f in files], split,
                                               validation_fraction))
