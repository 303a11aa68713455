"""The Document every source returns, its error reasons and the record decoding
shared by the JSON-based backends (JSON lines, ArrayRecord, TFDS)."""

from __future__ import annotations

import json
import operator
from typing import Any

import numpy as np

from proxyjax.views.neural import shards as neural_shards  # numpy-only: the shard record format

Document = dict[str, Any]

# Error reasons (exact strings; consumers count them).
UNREADABLE = "unreadable"
MALFORMED_JSON = "malformed_json"
MISSING_TEXT = "missing_text"
BINARY = "binary"
CORRUPT_RECORD = "corrupt_record"  # a neural record failing its checksums (proxyjax.views.neural.shards)
MALFORMED_SYMBOLS = "malformed_symbols"  # a neural record whose symbols are not decodable

# Optional Document key: precomputed symbols of the neural view (ArrayRecord JSON
# records written by ``python -m proxyjax.compress``; format: proxyjax.views.neural.shards).
NEURAL_FIELD = "neural"


def make_doc(text: bytes, source: str, key: str, error: str | None = None) -> Document:
  return {"text": text, "source": source, "key": key, "error": error}


def error_doc(source: str, key: str, error: str) -> Document:
  return make_doc(b"", source, key, error)


def check_index(index: Any, length: int) -> int:
  """Normalizes a (possibly numpy / negative) index; IndexError if out of range."""
  i = operator.index(index)
  if i < 0:
    i += length
  if not 0 <= i < length:
    raise IndexError(f"index {index} out of range for a source of {length}")
  return i


def text_from_record(record: Any, text_field: str) -> tuple[bytes, str | None]:
  """Extracts the text bytes from a decoded record: (text, error)."""
  if not isinstance(record, dict):
    return b"", MALFORMED_JSON
  if text_field:
    value = record.get(text_field)
  else:
    value = record.get("text", record.get("content"))
  if isinstance(value, bytes):
    return value, None
  if isinstance(value, str):
    return encode_text(value), None
  return b"", MISSING_TEXT


def encode_text(text: str) -> bytes:
  """UTF-8 encodes, keeping smuggled raw bytes and lone surrogates."""
  try:
    return text.encode("utf-8", "surrogateescape")
  except UnicodeEncodeError:
    return text.encode("utf-8", "surrogatepass")


def parse_json_record(raw: bytes, text_field: str) -> tuple[bytes, str | None]:
  """Parses one JSON object (raw bytes) and extracts its text."""
  text, error, _, _ = parse_json_record_with_symbols(raw, text_field)
  return text, error


def parse_json_record_with_symbols(
    raw: bytes, text_field: str) -> tuple[bytes, str | None, str | None, np.ndarray | None]:
  """Like ``parse_json_record``, plus, for a neural record
  (``proxyjax.views.neural.shards``), its original document key and its symbols.

  Neural records are verified (``shards.verify_record``: the text's CRC32 and
  the checksum over text and symbols): a failing record gives ``corrupt_record``
  and one whose symbols cannot be decoded (not base64, a partial symbol) gives
  ``malformed_symbols``; neither is ever trained on, nor re-encoded.
  """
  try:
    record = json.loads(raw.decode("utf-8", "surrogateescape"))
  except (ValueError, RecursionError):
    return b"", MALFORMED_JSON, None, None
  if not neural_shards.is_neural_record(record):
    text, error = text_from_record(record, text_field)
    return text, error, None, None
  key = neural_shards.record_key(record)
  try:
    text, symbols = neural_shards.verify_record(record)
  except neural_shards.CorruptRecordError as e:
    return b"", e.reason, key, None
  return text, None, key, symbols
