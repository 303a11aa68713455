"""A prepared directory (``prepared:DIR``): ArrayRecord shards of one split each, written by
``python -m proxyjax.data.prepare``, described by ``DIR/manifest.json``.

Start-up is O(shards): the source reads ``manifest.json`` only (it holds every shard's
record count) and opens nothing else until a document is read; each shard is opened
lazily, once per process, and the open readers are dropped when the source is pickled,
so a Grain worker receives the shard names and their cumulative counts, never a
per-document array. The train/validation split was decided when the directory was
prepared (``train-*.array_record`` / ``validation-*.array_record``), so nothing is hashed
here.

``DIR`` may be local or remote (``gs://``, ``s3://``; :mod:`proxyjax.paths`). The
ArrayRecord reader reads local files only: a remote shard is copied, when one of its
documents is first read, into a local cache directory (``$PROXYJAX_CACHE_DIR/shards/<hash>``,
default ``~/.cache/proxyjax/shards/<hash>``, the hash naming the directory and the
preparation), through a temporary file renamed into place, so concurrent processes and
workers never see a partial shard; a cached shard of the wrong size is fetched again.

Records are JSON objects ``{"text": str, "key": str}`` (see :func:`encode_record`), also
readable as ``arrayrecord:DIR/train-*.array_record`` (then named ``file:index``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import threading
from typing import Any

import numpy as np
from array_record.python import array_record_module

from proxyjax import paths
from proxyjax.data.sources import globs
from proxyjax.data.sources.document import (
  UNREADABLE,
  Document,
  check_index,
  error_doc,
  make_doc,
  parse_json_record,
)
from proxyjax.data.sources.spec import FIELD, check_split
from proxyjax.errors import ConfigError, UserError

FORMAT = "proxyjax.prepared/1"
MANIFEST = "manifest.json"
PREPARED_SPLITS = ("train", "validation")
CACHE_ENV = globs.CACHE_DIR_ENV  # the root of the local caches (globs.cache_root)
READER_OPTIONS = "readahead_buffer_size:0"
WRITER_OPTIONS = "group_size:1"
# Open shard readers kept per source (least recently used dropped): the windowed epoch
# shuffle reads <= 2 x pipeline.SHUFFLE_WINDOW_BLOCKS shards at a time.
MAX_OPEN_SHARDS = 32


def shard_name(split: str, index: int) -> str:
  """``train-00000.array_record``."""
  return f"{split}-{index:05d}.array_record"


def encode_record(text: bytes, key: str, **extra: Any) -> bytes:
  """One prepared record: compact JSON ``{"text", "key", ...}`` holding the raw bytes
  losslessly (invalid UTF-8 kept verbatim: decoded and re-encoded with surrogateescape)."""
  record = {"text": text.decode("utf-8", "surrogateescape"), "key": key, **extra}
  return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode(
      "utf-8", "surrogateescape")


def decode_record(raw: bytes) -> tuple[bytes, str | None, str | None]:
  """(text, key, error) of a prepared record."""
  text, error = parse_json_record(raw, "text")
  try:
    key = json.loads(raw.decode("utf-8", "surrogateescape")).get("key")
  except (ValueError, AttributeError, RecursionError):
    key = None
  return text, key if isinstance(key, str) else None, error


def read_manifest(directory: str, name: str | None = None) -> dict[str, Any]:
  """The manifest of a prepared directory.

  Raises:
    ConfigError: (``data.sources``) no manifest (not prepared, or preparation not
      finished), not JSON, or another format.
  """
  name = name or f"prepared:{directory}"
  path = paths.join(directory, MANIFEST)
  try:
    text = paths.read_text(path)
  except FileNotFoundError as e:
    raise ConfigError(FIELD, f"{name}: no {path} (prepare the directory with `python -m "
                      "proxyjax.data.prepare --out=DIR`; an unfinished preparation has "
                      "none: run it again)") from e
  except UserError as e:
    raise ConfigError(FIELD, f"{name}: {e}") from e
  try:
    manifest = json.loads(text)
  except ValueError as e:
    raise ConfigError(FIELD, f"{name}: {path} is not JSON ({e})") from e
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    found = manifest.get("format") if isinstance(manifest, dict) else None
    raise ConfigError(FIELD, f"{name}: {path} has format {found!r}, expected {FORMAT!r}")
  return manifest


def cache_dir(directory: str, manifest_id: str) -> str:
  """The local cache directory of a remote prepared directory's shards."""
  digest = hashlib.sha256(f"{directory.rstrip('/')}\n{manifest_id}".encode()).hexdigest()[:16]
  return os.path.join(globs.cache_root(), "shards", digest)


class PreparedSource:
  """The documents of one split (or ``all``: train then validation) of a prepared
  directory, in their prepared order; keys are the original source's keys.

  ``validation_fraction`` (unless ``split="all"``) and ``text_field`` must be the ones
  the directory was prepared with (ConfigError naming the field and both values): the
  split and the texts were decided then.
  """

  def __init__(self, directory: str, *, split: str = "all",
               validation_fraction: float = 0.01, text_field: str = "",
               name: str | None = None):
    check_split(split, validation_fraction)
    self.name = name or f"prepared:{directory}"
    self.split = split
    self._directory = directory.rstrip("/") or directory
    manifest = read_manifest(self._directory, self.name)
    options = manifest.get("options", {})
    path = paths.join(self._directory, MANIFEST)
    if split != "all" and float(options.get("validation_fraction", -1)) != validation_fraction:
      raise ConfigError("data.validation_fraction", f"{self.name} was prepared with "
                        f"validation_fraction={options.get('validation_fraction')!r} ({path}), "
                        f"this run has {validation_fraction!r}; prepare again or use the "
                        "manifest's value")
    if options.get("text_field", "") != text_field:
      raise ConfigError("data.text_field", f"{self.name} was prepared with "
                        f"text_field={options.get('text_field', '')!r} ({path}), this run has "
                        f"{text_field!r}; prepare again or use the manifest's value")
    splits = PREPARED_SPLITS if split == "all" else (split,)
    files, counts, sizes = [], [], []
    for s in splits:
      for shard in manifest["splits"][s]["shards"]:
        if shard["documents"]:
          files.append(shard["file"])
          counts.append(int(shard["documents"]))
          sizes.append(int(shard["file_bytes"]))
    self._files = tuple(files)
    self._file_bytes = tuple(sizes)
    self._starts = np.cumsum([0] + counts).astype(np.int64)
    self._remote = paths.is_remote(self._directory)
    self._cache = cache_dir(self._directory, str(manifest.get("id", ""))) if self._remote else ""
    self._readers: collections.OrderedDict[int, Any] = collections.OrderedDict()
    self._lock = threading.Lock()
    # The epoch shuffle of a large corpus visits a few shards at a time in blocks of about a
    # shard (pipeline.EpochShuffleMapDataset): at most MAX_OPEN_SHARDS readers stay open.
    self.shuffle_block = max(1, int(round(float(np.mean(counts))))) if counts else 1

  def __len__(self) -> int:
    return int(self._starts[-1])

  @property
  def num_shards(self) -> int:
    return len(self._files)

  def __getitem__(self, index: int) -> Document:
    i = check_index(index, len(self))
    shard = int(np.searchsorted(self._starts, i, side="right")) - 1
    position = i - int(self._starts[shard])
    fallback_key = f"{self._files[shard]}:{position}"
    try:
      raw = bytes(self._reader(shard).read([position])[0])
    except Exception:  # pylint: disable=broad-except
      return error_doc(self.name, fallback_key, UNREADABLE)
    text, key, error = decode_record(raw)
    return make_doc(text, self.name, key or fallback_key, error)

  def _reader(self, shard: int):
    """The shard's open reader. Each holds its shard's record index in memory (~8 bytes a
    document), so the least recently used are dropped beyond ``MAX_OPEN_SHARDS`` (a read
    in flight keeps its reader alive)."""
    with self._lock:
      reader = self._readers.get(shard)
      if reader is None:
        reader = array_record_module.ArrayRecordReader(
            self._local_path(shard), options=READER_OPTIONS, file_reader_buffer_size=32768)
        self._readers[shard] = reader
        while len(self._readers) > MAX_OPEN_SHARDS:
          self._readers.popitem(last=False)
      else:
        self._readers.move_to_end(shard)
    return reader

  def _local_path(self, shard: int) -> str:
    """The shard's local file (a remote one is copied into the cache first)."""
    name = self._files[shard]
    if not self._remote:
      return paths.local_path(paths.join(self._directory, name))
    local = os.path.join(self._cache, name)
    if os.path.exists(local) and os.path.getsize(local) == self._file_bytes[shard]:
      return local
    return globs.fill_atomically(local, paths.join(self._directory, name), globs.copy_stream)

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_readers"] = collections.OrderedDict()
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __repr__(self) -> str:
    return (f"PreparedSource(name={self.name!r}, shards={len(self._files)}, "
            f"split={self.split!r}, len={len(self)})")
