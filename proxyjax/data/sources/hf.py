"""Hugging Face datasets on disk (``hf:PATH[#SPLIT]``), read without the
``datasets`` library and without network.

``PATH`` (local, ``gs://`` or ``s3://``) is one of:

* a ``save_to_disk`` directory: a Dataset (``state.json`` listing its
  ``data-XXXXX-of-XXXXX.arrow`` files, Arrow IPC streams) or a DatasetDict
  (``dataset_dict.json`` naming the splits, one such directory per split);
* a Hub snapshot: data files (``*.parquet``, ``*.arrow``, ``*.jsonl``,
  ``*.jsonl.gz``, ``*.jsonl.zst``) anywhere under it (hidden paths skipped), each
  in the split its path names the way the Hub does: ``train-00000-of-00002.parquet``,
  ``data/validation/x.parquet``, ``test.jsonl`` (a split word set off by
  ``-._ /``, digits or the path's ends; ``valid``/``val``/``dev`` mean
  validation, ``eval``/``testing`` test); files naming none are ``train``.

A split (or a config) is chosen by the path (``hf:/snap/data/train``,
``hf:/ds/train``) or by a ``#SPLIT`` suffix (``hf:/snap#validation``; ``#`` does
not clash with ``@weight``). Then:

* without a chosen split, a dataset with its own ``train`` and validation split
  (``validation``, ``valid``, ``val``, ``dev``) gives those as proxyjax's train and
  validation, like ``tfds:`` (``data.validation_fraction`` is not used); ``all``
  is both;
* otherwise (a chosen split, or a dataset without such a pair: its ``train``
  split, else all its files) the documents are split by the strided rule of
  :mod:`proxyjax.data.sources.spec`, which reads and hashes nothing per row.

Arrow files are memory-mapped (those on object storage copied once into the
local cache of :func:`proxyjax.data.sources.globs.local_copy`); building the
source reads their record-batch headers only, Parquet files their footers
(:mod:`proxyjax.data.sources.parquet`) and JSON-lines files are indexed like
``jsonl:`` (compressed ones decompressed into the same cache). The text is the
``text_field`` column, else ``text``, else ``content``. Keys are
``relpath:row``, the path relative to ``PATH``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pyarrow as pa

from proxyjax import paths
from proxyjax.data.sources.document import parse_json_record
from proxyjax.data.sources.globs import copy_stream, local_copy, relpath
from proxyjax.data.sources.jsonl import index_lines, readable_path
from proxyjax.data.sources.parquet import (
  ParquetTableFile,
  RowGroupCache,
  TableFile,
  TableSource,
  text_column,
)
from proxyjax.data.sources.spec import FIELD, StridedSplit, check_split
from proxyjax.errors import ConfigError

DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".jsonl.gz", ".jsonl.zst")
VALIDATION_NAMES = ("validation", "valid", "val", "dev")
# The Hub's split words (datasets' data-files patterns), by the split they name.
_SPLIT_WORDS = {"train": "train", "training": "train", "validation": "validation",
                "valid": "validation", "val": "validation", "dev": "validation",
                "test": "test", "testing": "test", "eval": "test", "evaluation": "test"}
_SPLIT_WORD = re.compile(r"(?:^|(?<=[-._ /0-9]))(" + "|".join(
    sorted(_SPLIT_WORDS, key=len, reverse=True)) + r")(?=[-._ /0-9]|$)")


def parse_location(location: str) -> tuple[str, str]:
  """``PATH[#SPLIT]`` -> (path, split or "")."""
  path, sep, split = location.rpartition("#")
  if not sep:
    return location.rstrip("/") or location, ""
  return path.rstrip("/") or path, split.strip()


class ArrowStreamFile(TableFile):
  """A ``save_to_disk`` Arrow IPC stream file (or an Arrow IPC file), memory-mapped;
  groups are its record batches."""

  @classmethod
  def from_headers(cls, path: str, relname: str, text_field: str, name: str) -> ArrowStreamFile:
    """Reads the schema and the rows of each record batch (zero-copy: the
    batches' data pages are mapped, not read).

    Raises:
      ConfigError: naming the file, if it is not Arrow IPC or lacks the text column.
    """
    local = path if not paths.is_remote(path) else local_copy(path, "copy", copy_stream,
                                                              suffix=".arrow")
    try:
      with pa.memory_map(local, "r") as source:
        reader = _open_ipc(source)
        schema = reader.schema
        if isinstance(reader, pa.ipc.RecordBatchFileReader):
          group_rows = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        else:
          group_rows = [batch.num_rows for batch in reader]
    except (pa.ArrowException, OSError, ValueError) as e:
      raise ConfigError(FIELD, f"{name}: {path} is not a readable Arrow stream file "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    column = text_column(schema.names, schema.types, text_field, f"{name}: {path}")
    return cls(local, relname, column, group_rows)

  def open(self) -> Any:
    # The table's buffers keep the mapping alive after the file object is closed.
    with pa.memory_map(self.path, "r") as source:
      return _open_ipc(source).read_all().column(self.column)

  def read_group(self, handle: Any, group: int) -> list[Any]:
    return handle.chunk(group).to_pylist()

  def close(self, handle: Any) -> None:
    del handle  # the mapping is released with the table


def _open_ipc(source: Any) -> Any:
  """An Arrow IPC stream reader (``save_to_disk``), else an Arrow IPC file reader."""
  try:
    return pa.ipc.open_stream(source)
  except pa.ArrowInvalid:
    source.seek(0)
    return pa.ipc.open_file(source)


class JsonlTableFile:
  """A JSON-lines file of a Hub snapshot: rows are its non-blank lines (indexed
  at construction, like ``jsonl:``)."""

  def __init__(self, path: str, relname: str, text_field: str, name: str):
    self.path = readable_path(path, name)
    self.relname = relname
    self.text_field = text_field
    starts, ends, _ = index_lines(self.path)
    self.offsets = starts
    self.lengths = ends - starts

  @property
  def rows(self) -> int:
    return int(self.offsets.shape[0])

  def read(self, row: int, cache: RowGroupCache, file_id: int) -> tuple[bytes, str | None]:
    del cache, file_id
    with paths.open_file(self.path, "rb") as f:
      f.seek(int(self.offsets[row]))
      raw = f.read(int(self.lengths[row]))
    return parse_json_record(raw, self.text_field)


def _open_data_file(path: str, relname: str, text_field: str, name: str) -> Any:
  lower = path.lower()
  if lower.endswith(".parquet"):
    return ParquetTableFile.from_footer(path, relname, text_field, name)
  if lower.endswith(".arrow"):
    return ArrowStreamFile.from_headers(path, relname, text_field, name)
  return JsonlTableFile(path, relname, text_field, name)


def discover(root: str, name: str) -> dict[str, list[str]]:
  """The data files of the dataset at ``root``, by split name (in the dataset's
  order: DatasetDict splits as listed, a Dataset's files as ``state.json`` lists
  them, a snapshot's files sorted).

  Raises:
    ConfigError: for a path that is not a directory or holds no data files.
  """
  try:
    if paths.isfile(paths.join(root, "dataset_dict.json")):
      splits = json.loads(paths.read_text(paths.join(root, "dataset_dict.json")))["splits"]
      return {s: _saved_dataset_files(paths.join(root, s), name) for s in splits}
    if paths.isfile(paths.join(root, "state.json")):
      state = json.loads(paths.read_text(paths.join(root, "state.json")))
      return {state.get("_split") or "train": _saved_dataset_files(root, name)}
    if not paths.isdir(root):
      raise ConfigError(FIELD, f"{name}: {root} is not a directory (expected a save_to_disk "
                        "directory or a Hugging Face Hub snapshot)")
    listed = paths.walk_files(root)
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(FIELD, f"{name}: unreadable dataset metadata under {root}: {e}") from e
  out: dict[str, list[str]] = {}
  for path in listed:
    rel = relpath(path, root)
    if any(part.startswith(".") for part in rel.split("/")):
      continue
    if rel.lower().endswith(DATA_SUFFIXES):
      out.setdefault(split_of(rel), []).append(path)
  if not out:
    raise ConfigError(FIELD, f"{name}: no data files ({', '.join(DATA_SUFFIXES)}) under "
                      f"{root}")
  return {s: sorted(files) for s, files in out.items()}


def _saved_dataset_files(directory: str, name: str) -> list[str]:
  """The Arrow files of one ``save_to_disk`` Dataset, in ``state.json`` order."""
  state_path = paths.join(directory, "state.json")
  try:
    state = json.loads(paths.read_text(state_path))
    files = [paths.join(directory, f["filename"]) for f in state["_data_files"]]
  except FileNotFoundError as e:
    raise ConfigError(FIELD, f"{name}: {state_path} is missing (not a save_to_disk "
                      "directory?)") from e
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(FIELD, f"{name}: {state_path} does not list the data files: {e}") from e
  if not files:
    raise ConfigError(FIELD, f"{name}: {state_path} lists no data files")
  return files


def split_of(relname: str) -> str:
  """The split a Hub snapshot file's path names (``train`` when none; a path
  naming several is train's, else validation's, as the Hub decides)."""
  named = {_SPLIT_WORDS[m.group(1)] for m in _SPLIT_WORD.finditer(relname.lower())}
  return next((s for s in ("train", "validation", "test") if s in named), "train")


def _canonical(split_name: str) -> str:
  return _SPLIT_WORDS.get(split_name.lower(), split_name.lower())


class HfSource(TableSource):
  """A Hugging Face dataset on disk (module docstring)."""

  def __init__(self, location: str, *, split: str = "all", validation_fraction: float = 0.01,
               text_field: str = "", name: str | None = None):
    check_split(split, validation_fraction)
    name = name or f"hf:{location}"
    root, chosen = parse_location(location)
    by_split = discover(root, name)
    own = _own_splits(by_split) if not chosen else None
    if chosen:
      found = _chosen(by_split, chosen, name)
    elif own is not None and split != "all":
      found = by_split[own[0] if split == "train" else own[1]]
    elif own is not None:
      found = by_split[own[0]] + by_split[own[1]]
    else:
      found = by_split.get("train") or [p for files in by_split.values() for p in files]
    self.dataset_splits = own  # (train, validation) names when the dataset's own are used
    files = [_open_data_file(p, relpath(p, root), text_field, name) for p in found]
    strided = "all" if own is not None else split
    super().__init__(name, files, StridedSplit([f.relname for f in files],
                                               np.array([f.rows for f in files]),
                                               strided, validation_fraction))
    self.split = split


def _own_splits(by_split: dict[str, list[str]]) -> tuple[str, str] | None:
  """(train, validation) split names of a dataset that has both, else None."""
  names = {_canonical(s): s for s in reversed(list(by_split))}
  exact = {s.lower(): s for s in by_split}
  train = exact.get("train") or names.get("train")
  validation = next((exact[v] for v in VALIDATION_NAMES if v in exact), None)
  validation = validation or names.get("validation")
  if train is None or validation is None:
    return None
  return train, validation


def _chosen(by_split: dict[str, list[str]], chosen: str, name: str) -> list[str]:
  if chosen in by_split:
    return by_split[chosen]
  matches = [s for s in by_split if _canonical(s) == _canonical(chosen)]
  if len(matches) == 1:
    return by_split[matches[0]]
  raise ConfigError(FIELD, f"{name}: no split {chosen!r}; the dataset has "
                    f"{', '.join(sorted(by_split))}")
