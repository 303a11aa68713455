"""safetensors files written one tensor at a time, sharded with an index, and read back.

The format (https://huggingface.co/docs/safetensors): 8 bytes little-endian header
length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]},
"__metadata__": {...}}`` (padded with spaces to a multiple of 8), then the tensors'
bytes, offsets relative to the end of the header. Since every tensor's shape and
dtype is known before its data, the header is written first and each tensor is
then produced, converted, written and dropped: a whole model never sits in host
memory (``write_sharded``). Shards above ``max_shard_size`` bytes are split as
Hugging Face does: ``model-00001-of-0000K.safetensors`` plus
``model.safetensors.index.json`` (``metadata.total_size``, ``weight_map``); one
shard is written as ``model.safetensors`` without an index.

Reading (``read_tensor``, ``SafetensorsDir``) memory-maps the file; bfloat16 is
``ml_dtypes.bfloat16``. No dependency on the ``safetensors`` package.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
from typing import Callable, Iterable

import ml_dtypes
import numpy as np

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
SHARD_PATTERN = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")

DTYPES = {"float32": ("F32", np.dtype(np.float32)),
          "bfloat16": ("BF16", np.dtype(ml_dtypes.bfloat16)),
          "float16": ("F16", np.dtype(np.float16))}
_FROM_CODE = {"F32": np.dtype(np.float32), "BF16": np.dtype(ml_dtypes.bfloat16),
              "F16": np.dtype(np.float16), "F64": np.dtype(np.float64),
              "I64": np.dtype(np.int64), "I32": np.dtype(np.int32)}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


@dataclasses.dataclass(frozen=True)
class Tensor:
  """A tensor to write: its name, shape and a function producing its float32 values."""
  name: str
  shape: tuple[int, ...]
  fetch: Callable[[], np.ndarray]


def parse_size(text: str | int) -> int:
  """``5GB`` (10^9), ``500MiB`` (2^20), ``1000`` (bytes) -> bytes.

  Raises:
    ValueError: not a size.
  """
  if isinstance(text, int):
    return text
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
  if not m or m.group(2).upper() not in _UNITS:
    raise ValueError(f"not a size: {text!r} (e.g. 5GB, 500MB, 2GiB or a number of bytes)")
  size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
  if size <= 0:
    raise ValueError(f"not a positive size: {text!r}")
  return size


def _header(entries: list[tuple[str, str, tuple[int, ...], int]],
            metadata: dict[str, str]) -> bytes:
  """The length-prefixed, space-padded JSON header of ``(name, code, shape, nbytes)``."""
  header: dict = {"__metadata__": dict(metadata)}
  offset = 0
  for name, code, shape, nbytes in entries:
    header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-len(raw) % 8)
  return struct.pack("<Q", len(raw)) + raw


def write_file(path: str, tensors: Iterable[Tensor], dtype: str = "float32",
               metadata: dict[str, str] | None = None) -> int:
  """Writes ``tensors`` to one safetensors file, one at a time; returns the bytes of data."""
  code, np_dtype = DTYPES[dtype]
  tensors = list(tensors)
  entries = [(t.name, code, tuple(t.shape), int(np.prod(t.shape)) * np_dtype.itemsize)
             for t in tensors]
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(_header(entries, {"format": "pt", **(metadata or {})}))
    for t, (_, _, shape, nbytes) in zip(tensors, entries):
      value = np.asarray(t.fetch())
      if tuple(value.shape) != shape:
        raise ValueError(f"{t.name}: produced shape {value.shape}, planned {shape}")
      data = np.ascontiguousarray(value.astype(np_dtype)).tobytes()
      assert len(data) == nbytes
      f.write(data)
      del value, data
  os.replace(tmp, path)
  return sum(e[3] for e in entries)


def plan_shards(tensors: list[Tensor], dtype: str, max_shard_size: int) -> list[list[Tensor]]:
  """Tensors in order, grouped into shards of at most ``max_shard_size`` bytes of data
  (a tensor larger than that alone in its shard)."""
  itemsize = DTYPES[dtype][1].itemsize
  shards: list[list[Tensor]] = [[]]
  size = 0
  for t in tensors:
    nbytes = int(np.prod(t.shape)) * itemsize
    if shards[-1] and size + nbytes > max_shard_size:
      shards.append([])
      size = 0
    shards[-1].append(t)
    size += nbytes
  return shards


def write_sharded(directory: str, tensors: list[Tensor], dtype: str,
                  max_shard_size: int) -> list[str]:
  """The model's weights in ``directory`` as Hugging Face names them; returns the files."""
  shards = plan_shards(tensors, dtype, max_shard_size)
  if len(shards) == 1:
    write_file(os.path.join(directory, SINGLE_FILE), shards[0], dtype)
    return [SINGLE_FILE]
  names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  total = 0
  weight_map = {}
  for name, shard in zip(names, shards):
    total += write_file(os.path.join(directory, name), shard, dtype)
    weight_map.update({t.name: name for t in shard})
  with open(os.path.join(directory, INDEX_FILE), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    f.write("\n")
  return names + [INDEX_FILE]


def read_header(path: str) -> tuple[dict, int]:
  """(the header without ``__metadata__``, the offset of the data) of a safetensors file."""
  with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
  header.pop("__metadata__", None)
  return header, 8 + n


def read_tensor(path: str, name: str) -> np.ndarray:
  """One tensor of a safetensors file (a read-only memory map, in its stored dtype)."""
  header, start = read_header(path)
  entry = header[name]
  dtype = _FROM_CODE.get(entry["dtype"])
  if dtype is None:
    raise ValueError(f"{path}: tensor {name} has an unsupported dtype {entry['dtype']}")
  begin, end = entry["data_offsets"]
  count = (end - begin) // dtype.itemsize
  data = np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=(count,))
  return data.reshape(entry["shape"])


class SafetensorsDir:
  """The tensors of a Hugging Face checkpoint directory (single file or sharded)."""

  def __init__(self, directory: str):
    self.directory = directory
    index = os.path.join(directory, INDEX_FILE)
    if os.path.exists(index):
      with open(index) as f:
        self.weight_map = dict(json.load(f)["weight_map"])
    elif os.path.exists(os.path.join(directory, SINGLE_FILE)):
      header, _ = read_header(os.path.join(directory, SINGLE_FILE))
      self.weight_map = {name: SINGLE_FILE for name in header}
    else:
      raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {directory}")
    self._shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(set(self.weight_map.values())):
      header, _ = read_header(os.path.join(directory, file))
      self._shapes.update({k: tuple(v["shape"]) for k, v in header.items()})

  def __contains__(self, name: str) -> bool:
    return name in self.weight_map

  def shape(self, name: str) -> tuple[int, ...]:
    return self._shapes[name]

  def get(self, name: str) -> np.ndarray:
    return read_tensor(os.path.join(self.directory, self.weight_map[name]), name)


def read_all(path: str) -> dict[str, np.ndarray]:
  """Every tensor of one safetensors file."""
  header, _ = read_header(path)
  return {name: read_tensor(path, name) for name in header}
