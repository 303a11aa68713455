"""The neural shards written by ``python -m proxyjax.compress``.

A shards directory holds::

    neural.json                          what produced them (settings, model, input)
    neural-SSSSS-of-NNNNN.array_record   one per shard of ``docs_per_shard`` documents
    neural-SSSSS-of-NNNNN.stats.json     that shard's counts (written just before it)
    progress.json                        the current run (rewritten after each shard)
    summary.json                         totals and throughput of the last run
(``progress-I-of-P.json`` / ``summary-I-of-P.json`` per process with several).

Each ArrayRecord record is a JSON object readable by ``ArrayRecordSource``
(``record_format='json'``), written with its ``key`` first::

    {"key": str, "source": str, "crc32": int, "text": str,
     "neural": base64 of little-endian symbols, "neural_dtype": "<u2" | "<u4",
     "record_crc32": int}

``key`` and ``source`` are the original document's (e.g. ``json/__init__.py``
of ``stdlib``): ``ArrayRecordSource`` names the document by this key and
splits train/validation by hashing it, exactly as the source corpus does, so a
``--split=all`` compression splits like the corpus itself. ``crc32`` is
``zlib.crc32`` of the document's bytes (decoders check it); ``record_crc32``
(:func:`record_checksum`) covers the stored symbols *and* the text, so a record
whose text or symbols changed (a permutation included) fails it. Readers check
both (:func:`verify_record`; the training source skips a failing record and
counts it as ``corrupt_record``, a ``neural`` field that is not base64 as
``malformed_symbols``). Shards of format 2 (no ``record_crc32``) are refused
with a message to re-run ``python -m proxyjax.compress``, and so are shards of
format 3 (windows conditioned on the whole document before them: their symbols
mean something else). ``text`` holds the
bytes as a str (invalid UTF-8 is smuggled as lone surrogates:
``bytes.decode('utf-8', 'surrogateescape')``, which the source reverses). A
shard file appears (atomic rename) only once complete, so its presence is the
completion marker.

This module is the one parser of the record format (``parse_record``,
``record_symbols``, ``record_key``, ``record_keys``): the training pipeline's
source (``proxyjax.data.sources``) uses it too. It imports numpy only.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import zlib
from typing import Any

import numpy as np
from array_record.python import array_record_module

FORMAT = "proxyjax.neural/4"  # 4: windows restart the model's context; entropy segments
# Readable by nothing here: recompress. (The last is the one without record checksums.)
OLD_FORMATS = ("proxyjax.neural/3", "proxyjax.neural/2")
METADATA = "neural.json"
PROGRESS = "progress.json"
SUMMARY = "summary.json"


def shard_name(index: int, count: int) -> str:
  return f"neural-{index:05d}-of-{count:05d}.array_record"


def stats_path(shard_path: str) -> str:
  return shard_path[:-len(".array_record")] + ".stats.json"


def symbol_dtype(alphabet_size: int) -> str:
  return "<u2" if alphabet_size <= 1 << 16 else "<u4"


SYMBOL_DTYPES = ("<u2", "<u4")
_KEY_PREFIX = b'{"key": "'
CHECKSUM_FIELD = "record_crc32"
RECOMPRESS_HINT = ("re-run `python -m proxyjax.compress` (into a new --output directory) "
                   "to rewrite the shards")


class CorruptRecordError(ValueError):
  """A record fails its checksum (text or symbols changed), or lacks one."""
  reason = "corrupt_record"


class MalformedSymbolsError(CorruptRecordError):
  """A record's ``neural`` field is not base64 of whole symbols of its dtype."""
  reason = "malformed_symbols"


def record_checksum(text: bytes, symbol_bytes: bytes, dtype: str) -> int:
  """CRC32 over a record's stored content: the text (length-prefixed), the symbol
  dtype and the symbols' little-endian bytes, as stored (base64-decoded)."""
  crc = zlib.crc32(len(text).to_bytes(8, "little"))
  crc = zlib.crc32(text, crc)
  crc = zlib.crc32(dtype.encode("ascii"), crc)
  return zlib.crc32(symbol_bytes, crc)


@dataclasses.dataclass(frozen=True)
class Record:
  """One parsed shard record."""
  text: bytes
  symbols: np.ndarray  # int32
  key: str
  source: str
  crc32: int | None


def make_record(text: bytes, symbols: np.ndarray, *, key: str, source: str,
                alphabet_size: int) -> bytes:
  dtype = symbol_dtype(alphabet_size)
  symbol_bytes = np.asarray(symbols).astype(dtype).tobytes()
  return json.dumps({  # "key" first: record_keys() reads it without parsing the rest
      "key": key,
      "source": source,
      "crc32": zlib.crc32(text),
      "text": text.decode("utf-8", "surrogateescape"),
      "neural": base64.b64encode(symbol_bytes).decode("ascii"),
      "neural_dtype": dtype,
      CHECKSUM_FIELD: record_checksum(text, symbol_bytes, dtype),
  }).encode("utf-8")


def is_neural_record(record: Any) -> bool:
  """Whether a decoded JSON record carries precomputed neural symbols."""
  return isinstance(record, dict) and isinstance(record.get("neural"), str)


def _symbol_bytes(record: dict) -> tuple[bytes, str]:
  """The stored symbol bytes and dtype; MalformedSymbolsError if malformed."""
  value, dtype = record.get("neural"), record.get("neural_dtype")
  if not isinstance(value, str):
    raise MalformedSymbolsError("record has no 'neural' symbols")
  if dtype not in SYMBOL_DTYPES:
    raise MalformedSymbolsError(f"record has neural_dtype {dtype!r}, expected one of "
                                f"{SYMBOL_DTYPES}")
  try:
    raw = base64.b64decode(value, validate=True)
  except (ValueError, TypeError) as e:
    raise MalformedSymbolsError(f"record's 'neural' field is not base64: {e}") from e
  if len(raw) % np.dtype(dtype).itemsize:
    raise MalformedSymbolsError("record's 'neural' field has a partial symbol")
  return raw, dtype


def record_symbols(record: dict) -> np.ndarray:
  """The int32 symbols of a decoded record (unchecked: see ``verify_record``);
  ValueError (``MalformedSymbolsError``) if absent or malformed."""
  raw, dtype = _symbol_bytes(record)
  return np.frombuffer(raw, dtype).astype(np.int32)


def has_checksum(record: Any) -> bool:
  """Whether a decoded neural record carries ``record_crc32`` (format 3)."""
  return isinstance(record, dict) and isinstance(record.get(CHECKSUM_FIELD), int)


def verify_record(record: dict) -> tuple[bytes, np.ndarray]:
  """``(text, int32 symbols)`` of a decoded neural record, checked.

  Raises:
    MalformedSymbolsError: the ``neural`` field is not base64 of whole symbols.
    CorruptRecordError: no text, no ``record_crc32``, or the text fails its
      ``crc32`` or the record fails its ``record_crc32``.
  """
  try:
    text = record_text(record)
  except ValueError as e:
    raise CorruptRecordError(str(e)) from e
  raw, dtype = _symbol_bytes(record)
  key = record.get("key")
  if not has_checksum(record):
    raise CorruptRecordError(f"record {key!r} has no {CHECKSUM_FIELD} (written by an older "
                             f"proxyjax: {RECOMPRESS_HINT})")
  crc = record.get("crc32")
  if crc is not None and zlib.crc32(text) != crc:
    raise CorruptRecordError(f"record {key!r}: text fails its CRC32")
  if record_checksum(text, raw, dtype) != record[CHECKSUM_FIELD]:
    raise CorruptRecordError(f"record {key!r}: text or symbols fail the record checksum")
  return text, np.frombuffer(raw, dtype).astype(np.int32)


def record_key(record: dict) -> str | None:
  """The original document key of a neural record (None for other records)."""
  key = record.get("key") if is_neural_record(record) else None
  return key if isinstance(key, str) else None


def record_text(record: dict) -> bytes:
  text = record.get("text")
  if not isinstance(text, str):
    raise ValueError("record has no 'text'")
  return text.encode("utf-8", "surrogateescape")


def parse_record(raw: bytes | dict) -> Record:
  """A whole, verified record (ValueError if malformed or if it fails a checksum:
  see ``verify_record``)."""
  record = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
  if not isinstance(record, dict):
    raise ValueError("record is not a JSON object")
  text, symbols = verify_record(record)
  return Record(text=text, symbols=symbols, key=str(record.get("key", "")),
                source=str(record.get("source", "")), crc32=record.get("crc32"))


def raw_record_key(raw: bytes) -> str | None:
  """``record_key`` of an undecoded record, reading only its leading ``key``
  (records written by ``make_record``); falls back to a full parse."""
  if raw.startswith(_KEY_PREFIX):
    head = raw[:4096]
    try:
      key, _ = json.decoder.scanstring(head.decode("ascii"), len(_KEY_PREFIX))
      return key
    except (ValueError, UnicodeDecodeError):
      pass  # a key longer than the head, or non-ASCII JSON: parse it all
  try:
    return record_key(json.loads(raw))
  except (ValueError, RecursionError):
    return None


class ShardFileError(ValueError):
  """An ArrayRecord file that cannot be read (truncated, corrupt, not ArrayRecord)."""


@contextlib.contextmanager
def open_shard(path: str):
  """An ``ArrayRecordReader`` for ``path``; every failure of the reader (opening,
  reading, closing: a truncated file fails on close) is a ``ShardFileError``
  naming the file."""
  try:
    reader = array_record_module.ArrayRecordReader(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ShardFileError(_unreadable(path, e)) from e
  failure = None
  try:
    yield reader
  except (RuntimeError, OSError) as e:
    failure = e
  finally:
    try:
      reader.close()
    except Exception as e:  # pylint: disable=broad-except
      failure = failure or e
  if failure is not None:
    raise ShardFileError(_unreadable(path, failure)) from failure


def _unreadable(path: str, error: Exception) -> str:
  detail = str(error).strip() or type(error).__name__
  return (f"cannot read ArrayRecord file {path} (truncated or corrupt? {detail}); if it is a "
          f"neural shard, {RECOMPRESS_HINT}")


def record_keys(path: str) -> list[str | None] | None:
  """The original document keys of an ArrayRecord file of neural records (one per
  record, None where a record has none), or None if its first record is not a
  neural record (then the file's records are named ``file:index``).
  ``ShardFileError`` if the file cannot be read."""
  with open_shard(path) as reader:
    n = reader.num_records()
    if not n:
      return None
    first = bytes(reader.read([0])[0])
    try:
      if not is_neural_record(json.loads(first)):
        return None
    except (ValueError, RecursionError):
      return None
    try:  # the keys sidecar of write_shard: no pass over the symbols
      with open(path + KEYS_SUFFIX) as f:
        keys = json.load(f)
      if isinstance(keys, list) and len(keys) == n:
        return keys
    except (OSError, ValueError):
      pass
    return [raw_record_key(bytes(r)) for r in reader.read_all()]


def read_shard(path: str) -> list[bytes]:
  """All records of one ArrayRecord file (``ShardFileError`` if unreadable)."""
  with open_shard(path) as reader:
    return list(reader.read_all())


# Sidecar of every shard: the JSON list of its records' document keys, so that
# splitting shards by key (``record_keys``) does not read the symbols at start-up.
KEYS_SUFFIX = ".keys.json"


def write_shard(path: str, records: list[bytes]) -> None:
  """Writes ``records`` to ``path`` atomically (temporary file, then rename),
  after its keys sidecar (so a shard on disk always has one)."""
  tmp_keys = f"{path}{KEYS_SUFFIX}.tmp{os.getpid()}"
  with open(tmp_keys, "w") as f:
    json.dump([raw_record_key(r) for r in records], f)
  os.replace(tmp_keys, path + KEYS_SUFFIX)
  tmp = f"{path}.tmp{os.getpid()}"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  try:
    for record in records:
      writer.write(record)
  finally:
    writer.close()
  os.replace(tmp, path)


def write_json(path: str, value: Any) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def read_metadata(directory: str) -> dict | None:
  path = os.path.join(directory, METADATA)
  return read_json(path) if os.path.exists(path) else None
