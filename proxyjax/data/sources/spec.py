"""Sources spec strings (``kind[:location][@weight]`` joined by ``;``) and the
train/validation splits.

Two split rules, both the same on every machine:

* **Hashed** (``files``, ``jsonl``, ``arrayrecord``, the stdlib): a document is in
  validation iff ``split_value(key) < fraction`` (:func:`in_split`), one hash per
  document key, computed when the source is built.
* **Strided** (``parquet``, ``hf``: corpora too large to hash every key at
  start-up): in a file of ``n`` rows named ``relname``, with fraction ``f`` and the
  file's offset ``o = split_value(relname)`` in [0, 1), row ``i`` is in validation
  iff ``floor((i+1)*f + o) > floor(i*f + o)``. The validation rows among the first
  ``i`` are then ``floor(i*f + o)`` (closed form), so each file's split counts cost
  O(1), the source keeps O(files) cumulative counts, and the ``k``-th row of a
  split is found by binary search within its file (:class:`StridedSplit`). Each
  file gives validation ``floor(n*f + o)`` of its rows: ``f`` of them to within one
  row, the rows spread evenly through the file at a per-file phase.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from proxyjax.errors import ConfigError

FIELD = "data.sources"

KINDS = ("stdlib", "files", "jsonl", "arrayrecord", "tfds", "prepared", "parquet", "hf")
SPLITS = ("train", "validation", "all")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """One entry of a sources spec string: ``kind[:location][@weight]``."""
  kind: str
  location: str
  weight: float = 1.0


def parse_sources(spec: str) -> list[SourceSpec]:
  """Parses ``kind[:location][@weight]`` entries separated by ``;``.

  Raises:
    ConfigError: (field ``data.sources``) for an empty spec, an unknown kind, a
      missing (or, for ``stdlib``, unexpected) location, or a weight that is not
      a positive number.
  """
  entries = [e.strip() for e in (spec or "").split(";")]
  entries = [e for e in entries if e]
  if not entries:
    raise ConfigError(FIELD, f"empty sources spec {spec!r}; e.g. 'stdlib' or "
                      "'files:/path/to/repo@2;jsonl:/data/*.jsonl'")
  return [_parse_entry(e) for e in entries]


def _parse_entry(entry: str) -> SourceSpec:
  """Parses one non-empty spec entry."""
  body, weight = entry, 1.0
  if "@" in entry:
    body, _, weight_text = entry.rpartition("@")
    weight = _parse_weight(weight_text, entry)
  kind, sep, location = body.partition(":")
  kind, location = kind.strip(), location.strip()
  if kind not in KINDS:
    raise ConfigError(FIELD, f"unknown source kind {kind!r} in {entry!r}; "
                      f"expected one of {', '.join(KINDS)}")
  if kind == "stdlib":
    if location:
      raise ConfigError(FIELD, f"the stdlib source takes no location: {entry!r}")
  elif not location:
    hint = "" if sep else f" (write '{kind}:LOCATION')"
    raise ConfigError(FIELD, f"source {entry!r} needs a location{hint}")
  return SourceSpec(kind=kind, location=location, weight=weight)


def _parse_weight(text: str, entry: str) -> float:
  """Parses a positive finite weight."""
  try:
    weight = float(text.strip())
  except ValueError:
    weight = float("nan")
  if not math.isfinite(weight) or weight <= 0:
    raise ConfigError(FIELD, f"weight {text.strip()!r} in {entry!r} is not a "
                      "positive number")
  return weight


# ---------------------------------------------------------------------------
# The split.


def split_value(key: str) -> float:
  """A stable pseudo-random number in [0, 1) for ``key`` (sha256-based)."""
  digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
  return int.from_bytes(digest[:8], "big") / 2**64


def in_split(key: str, split: str, validation_fraction: float) -> bool:
  """Whether the document with this key belongs to ``split``."""
  if split == "all":
    return True
  is_validation = split_value(key) < validation_fraction
  return is_validation == (split == "validation")


def check_split(split: str, validation_fraction: float) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if not 0.0 <= validation_fraction < 1.0:
    raise ConfigError("data.validation_fraction",
                      f"must be in [0, 1), got {validation_fraction!r}")


def keep_mask(relname: str, numbers: np.ndarray, split: str,
              validation_fraction: float) -> np.ndarray:
  """Which indexed records (numbered ``numbers``) of a file belong to split."""
  if split == "all":
    return np.ones(numbers.shape, dtype=bool)
  return np.fromiter(
      (in_split(f"{relname}:{n}", split, validation_fraction) for n in numbers),
      dtype=bool, count=numbers.shape[0])


# ---------------------------------------------------------------------------
# The strided split (parquet, hf): O(files) state, nothing read or hashed per row.


def strided_validation_before(i: int, validation_fraction: float, offset: float) -> int:
  """Validation rows among rows ``[0, i)`` of a file with phase ``offset`` in [0, 1)."""
  return math.floor(i * validation_fraction + offset)


def strided_is_validation(i: int, validation_fraction: float, offset: float) -> bool:
  """Whether row ``i`` of a file with phase ``offset`` is in validation."""
  return (strided_validation_before(i + 1, validation_fraction, offset)
          > strided_validation_before(i, validation_fraction, offset))


def strided_counts(rows: np.ndarray, offsets: np.ndarray, split: str,
                   validation_fraction: float) -> np.ndarray:
  """Rows of ``split`` in each file (``rows`` per file, phases ``offsets``), int64."""
  rows = np.asarray(rows, dtype=np.int64)
  if split == "all":
    return rows.copy()
  # The same float64 arithmetic as strided_validation_before (Python floats are float64).
  val = np.floor(rows.astype(np.float64) * validation_fraction
                 + np.asarray(offsets, dtype=np.float64)).astype(np.int64)
  return val if split == "validation" else rows - val


def strided_row(j: int, n: int, split: str, validation_fraction: float, offset: float) -> int:
  """The row of the ``j``-th (0-based) document of ``split`` in a file of ``n`` rows."""
  if split == "all":
    return j

  def in_split_before(i: int) -> int:  # rows of the split among [0, i): monotone in i
    v = strided_validation_before(i, validation_fraction, offset)
    return v if split == "validation" else i - v

  lo, hi = j, n - 1  # the smallest i with in_split_before(i + 1) > j
  while lo < hi:
    mid = (lo + hi) // 2
    if in_split_before(mid + 1) > j:
      hi = mid
    else:
      lo = mid + 1
  return lo


class StridedSplit:
  """The strided split of files with known row counts: ``len`` and ``locate(k)``.

  Holds O(files) numpy arrays (rows, phases, cumulative split counts), so it is
  cheap to build and to pickle.
  """

  def __init__(self, relnames: list[str] | tuple[str, ...], rows: list[int] | np.ndarray,
               split: str, validation_fraction: float):
    check_split(split, validation_fraction)
    self.split = split
    self.validation_fraction = float(validation_fraction)
    self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    self.offsets = np.array([split_value(r) for r in relnames], dtype=np.float64)
    counts = strided_counts(self.rows, self.offsets, split, validation_fraction)
    self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

  def __len__(self) -> int:
    return int(self.starts[-1])

  def counts(self) -> np.ndarray:
    """Documents of the split in each file."""
    return np.diff(self.starts)

  def locate(self, k: int) -> tuple[int, int]:
    """(file index, row in that file) of the split's ``k``-th document (0 <= k < len)."""
    file_id = int(np.searchsorted(self.starts, k, side="right")) - 1
    j = k - int(self.starts[file_id])
    row = strided_row(j, int(self.rows[file_id]), self.split, self.validation_fraction,
                      float(self.offsets[file_id]))
    return file_id, row
