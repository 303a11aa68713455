"""TFDS datasets (``tfds:NAME[/CONFIG]``), read with random access through
``tfds.data_source``; needs ``tensorflow_datasets`` (``pip install proxyjax[tfds]``)."""

from __future__ import annotations

from typing import Any

from proxyjax.data.sources.document import (
  UNREADABLE,
  Document,
  check_index,
  error_doc,
  make_doc,
  text_from_record,
)
from proxyjax.data.sources.spec import FIELD, SPLITS
from proxyjax.errors import ConfigError


class TfdsSource:
  """A TFDS dataset split via ``tfds.data_source`` (random access).

  The TFDS source is rebuilt lazily after unpickling so that only the
  arguments travel to Grain workers.
  """

  def __init__(self, name: str, *, split: str = "train", data_dir: str = "",
               text_field: str = ""):
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    self.name = f"tfds:{name}"
    self.dataset = name
    self.split = split
    self.data_dir = data_dir
    self.text_field = text_field
    self._source = None
    try:
      self._len = len(self._tfds_source())
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # tfds raises DatasetNotFoundError (and others) for a missing/unprepared dataset.
      raise ConfigError(FIELD, f"cannot open tfds dataset {name!r} "
                        f"(split {split!r}, data_dir {data_dir or 'default'!r}): {e}") from e

  def _tfds_source(self):
    if self._source is None:
      tfds = _import_tfds()
      self._source = tfds.data_source(self.dataset, split=self.split,
                                      data_dir=self.data_dir or None)
    return self._source

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state["_source"] = None
    return state

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> Document:
    i = check_index(index, self._len)
    key = f"{self.split}:{i}"
    try:
      record = self._tfds_source()[i]
    except Exception:  # pylint: disable=broad-except
      return error_doc(self.name, key, UNREADABLE)
    text, error = text_from_record(record, self.text_field)
    return make_doc(text, self.name, key, error)

  def __repr__(self) -> str:
    return (f"TfdsSource(name={self.name!r}, split={self.split!r}, "
            f"len={len(self)})")


def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError(
        FIELD, "tfds source needs `pip install proxyjax[tfds]`") from e
  return tfds
