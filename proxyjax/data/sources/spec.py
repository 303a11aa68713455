"""Sources spec strings (``kind[:location][@weight]`` joined by ``;``) and the
hashed train/validation split."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from proxyjax.errors import ConfigError

FIELD = "data.sources"

KINDS = ("stdlib", "files", "jsonl", "arrayrecord", "tfds")
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
