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
     "neural": base64 of little-endian symbols, "neural_dtype": "<u2" | "<u4"}

``key`` and ``source`` are the original document's (e.g. ``json/__init__.py``
of ``stdlib``): ``ArrayRecordSource`` names the document by this key and
splits train/validation by hashing it, exactly as the source corpus does, so a
``--split=all`` compression splits like the corpus itself. ``crc32`` is
``zlib.crc32`` of the document's bytes (decoders check it). ``text`` holds the
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
import dataclasses
import json
import os
import zlib
from typing import Any

import numpy as np

FORMAT = "proxyjax.neural/2"  # 2: float64 tables with fragility, CRC32, keys first
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
  return json.dumps({  # "key" first: record_keys() reads it without parsing the rest
      "key": key,
      "source": source,
      "crc32": zlib.crc32(text),
      "text": text.decode("utf-8", "surrogateescape"),
      "neural": base64.b64encode(np.asarray(symbols).astype(dtype).tobytes()).decode("ascii"),
      "neural_dtype": dtype,
  }).encode("utf-8")


def is_neural_record(record: Any) -> bool:
  """Whether a decoded JSON record carries precomputed neural symbols."""
  return isinstance(record, dict) and isinstance(record.get("neural"), str)


def record_symbols(record: dict) -> np.ndarray:
  """The int32 symbols of a decoded record; ValueError if absent or malformed."""
  value, dtype = record.get("neural"), record.get("neural_dtype")
  if not isinstance(value, str):
    raise ValueError("record has no 'neural' symbols")
  if dtype not in SYMBOL_DTYPES:
    raise ValueError(f"record has neural_dtype {dtype!r}, expected one of {SYMBOL_DTYPES}")
  try:
    raw = base64.b64decode(value, validate=True)
  except (ValueError, TypeError) as e:
    raise ValueError(f"record's 'neural' field is not base64: {e}") from e
  if len(raw) % np.dtype(dtype).itemsize:
    raise ValueError("record's 'neural' field has a partial symbol")
  return np.frombuffer(raw, dtype).astype(np.int32)


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
  """A whole record (ValueError if malformed, or if its text fails its CRC32)."""
  record = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
  if not isinstance(record, dict):
    raise ValueError("record is not a JSON object")
  text = record_text(record)
  crc = record.get("crc32")
  if crc is not None and zlib.crc32(text) != crc:
    raise ValueError(f"record {record.get('key')!r}: text fails its CRC32")
  return Record(text=text, symbols=record_symbols(record), key=str(record.get("key", "")),
                source=str(record.get("source", "")), crc32=crc)


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


def record_keys(path: str) -> list[str | None] | None:
  """The original document keys of an ArrayRecord file of neural records (one per
  record, None where a record has none), or None if its first record is not a
  neural record (then the file's records are named ``file:index``)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  reader = array_record_module.ArrayRecordReader(path)
  try:
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
  finally:
    reader.close()


def read_shard(path: str) -> list[bytes]:
  """All records of one ArrayRecord file."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  reader = array_record_module.ArrayRecordReader(path)
  try:
    return list(reader.read_all())
  finally:
    reader.close()


# Sidecar of every shard: the JSON list of its records' document keys, so that
# splitting shards by key (``record_keys``) does not read the symbols at start-up.
KEYS_SUFFIX = ".keys.json"


def write_shard(path: str, records: list[bytes]) -> None:
  """Writes ``records`` to ``path`` atomically (temporary file, then rename),
  after its keys sidecar (so a shard on disk always has one)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
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
