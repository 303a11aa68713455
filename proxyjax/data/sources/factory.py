"""Builds sources from spec entries: :class:`SourceOptions` (how to read any spec,
from ``config.data``), :func:`make_source` and :func:`make_sources`."""

from __future__ import annotations

import dataclasses
from typing import Any

from proxyjax.data.sources.arrayrecord import ArrayRecordSource
from proxyjax.data.sources.files import FileTreeSource, stdlib_source
from proxyjax.data.sources.globs import split_glob
from proxyjax.data.sources.hf import HfSource
from proxyjax.data.sources.jsonl import JsonlSource
from proxyjax.data.sources.memory import ListSource
from proxyjax.data.sources.parquet import ParquetSource
from proxyjax.data.sources.prepared import PreparedSource
from proxyjax.data.sources.spec import FIELD, SourceSpec, check_split, parse_sources
from proxyjax.data.sources.tfds import TfdsSource
from proxyjax.errors import ConfigError

Source = (ListSource | FileTreeSource | JsonlSource | ArrayRecordSource | TfdsSource
          | PreparedSource | ParquetSource | HfSource)


@dataclasses.dataclass(frozen=True)
class SourceOptions:
  """How sources are read, whatever the spec: the ``data`` settings that every
  caller of :func:`make_sources` passes together.

  Attributes:
    validation_fraction: the fraction of documents in validation, hashed (files,
      jsonl, arrayrecord) or strided (parquet, hf); ignored by tfds, and by hf
      for a dataset with its own train and validation splits.
    text_field: the JSON / TFDS field or Parquet / Arrow column holding the text
      (default: ``text``, else ``content``).
    record_format: ``json`` or ``bytes`` (ArrayRecord only).
    tfds_data_dir: TFDS data directory (empty: the TFDS default).
  """
  validation_fraction: float = 0.01
  text_field: str = ""
  record_format: str = "json"
  tfds_data_dir: str = ""

  @classmethod
  def from_config(cls, config: Any) -> SourceOptions:
    """The options of a run's config (``config.data.*``; a ``data`` section works too)."""
    data = getattr(config, "data", config)
    return cls(validation_fraction=data.validation_fraction, text_field=data.text_field,
               record_format=data.record_format, tfds_data_dir=data.tfds_data_dir)

  def kwargs(self) -> dict[str, Any]:
    """The options as keyword arguments (``validation_fraction=...``, ...)."""
    return dataclasses.asdict(self)


def make_source(spec: SourceSpec, *, split: str, options: SourceOptions | None = None,
                **settings: Any) -> Source:
  """Builds the source for one spec entry, restricted to ``split``.

  Args:
    spec: a parsed spec entry.
    split: ``train``, ``validation`` or ``all`` (no filtering).
    options: how to read it (default: ``SourceOptions()``).
    **settings: single :class:`SourceOptions` fields (``validation_fraction``,
      ``text_field``, ``record_format``, ``tfds_data_dir``) overriding ``options``.
  """
  o = dataclasses.replace(options or SourceOptions(), **settings)
  check_split(split, o.validation_fraction)
  kw = dict(split=split, validation_fraction=o.validation_fraction)
  if spec.kind == "stdlib":
    return stdlib_source(**kw)
  if spec.kind == "files":
    root, pattern = split_glob(spec.location)
    return FileTreeSource(root, pattern=pattern, name=f"files:{spec.location}", **kw)
  if spec.kind == "jsonl":
    return JsonlSource(spec.location, text_field=o.text_field, **kw)
  if spec.kind == "arrayrecord":
    return ArrayRecordSource(spec.location, record_format=o.record_format,
                             text_field=o.text_field, **kw)
  if spec.kind == "parquet":
    return ParquetSource(spec.location, text_field=o.text_field, **kw)
  if spec.kind == "hf":
    return HfSource(spec.location, text_field=o.text_field, **kw)
  if spec.kind == "tfds":
    return TfdsSource(spec.location, split=split, data_dir=o.tfds_data_dir,
                      text_field=o.text_field)
  if spec.kind == "prepared":
    return PreparedSource(spec.location, text_field=o.text_field, **kw)
  raise ConfigError(FIELD, f"unknown source kind {spec.kind!r}")


def make_sources(spec: str, **kwargs: Any) -> list[tuple[Source, float]]:
  """Parses a spec string and builds ``(source, weight)`` pairs.

  ``kwargs`` go to :func:`make_source` (``split`` is required).
  """
  return [(make_source(s, **kwargs), s.weight) for s in parse_sources(spec)]
