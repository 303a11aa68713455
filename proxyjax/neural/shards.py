"""The neural shards written by ``python -m proxyjax.compress``.

A shards directory holds::

    neural.json                          what produced them (settings, model, input)
    neural-SSSSS-of-NNNNN.array_record   one per shard of ``docs_per_shard`` documents
    neural-SSSSS-of-NNNNN.stats.json     that shard's counts (written just before it)
    progress.json                        the current run (rewritten after each shard)
    summary.json                         totals and throughput of the last run
(``progress-I-of-P.json`` / ``summary-I-of-P.json`` per process with several).

Each ArrayRecord record is a JSON object readable by ``ArrayRecordSource``
(``record_format='json'``)::

    {"text": str, "key": str, "source": str,
     "neural": base64 of little-endian symbols, "neural_dtype": "<u2" | "<u4"}

``text`` holds the document's bytes as a str (invalid UTF-8 is smuggled as
lone surrogates: ``bytes.decode('utf-8', 'surrogateescape')``, which the
source reverses). A shard file appears (atomic rename) only once complete, so
its presence is the completion marker.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import numpy as np

FORMAT = "proxyjax.neural/1"
METADATA = "neural.json"
PROGRESS = "progress.json"
SUMMARY = "summary.json"


def shard_name(index: int, count: int) -> str:
  return f"neural-{index:05d}-of-{count:05d}.array_record"


def stats_path(shard_path: str) -> str:
  return shard_path[:-len(".array_record")] + ".stats.json"


def symbol_dtype(alphabet_size: int) -> str:
  return "<u2" if alphabet_size <= 1 << 16 else "<u4"


def make_record(text: bytes, symbols: np.ndarray, *, key: str, source: str,
                alphabet_size: int) -> bytes:
  dtype = symbol_dtype(alphabet_size)
  return json.dumps({
      "text": text.decode("utf-8", "surrogateescape"),
      "key": key,
      "source": source,
      "neural": base64.b64encode(np.asarray(symbols).astype(dtype).tobytes()).decode("ascii"),
      "neural_dtype": dtype,
  }).encode("utf-8")


def parse_record(raw: bytes) -> tuple[bytes, np.ndarray]:
  """(text bytes, int32 symbols) of a record (tests and tools)."""
  record = json.loads(raw)
  text = record["text"].encode("utf-8", "surrogateescape")
  symbols = np.frombuffer(base64.b64decode(record["neural"]), record["neural_dtype"])
  return text, symbols.astype(np.int32)


def read_shard(path: str) -> list[bytes]:
  """All records of one ArrayRecord file."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  reader = array_record_module.ArrayRecordReader(path)
  try:
    return list(reader.read_all())
  finally:
    reader.close()


def write_shard(path: str, records: list[bytes]) -> None:
  """Writes ``records`` to ``path`` atomically (temporary file, then rename)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
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
