"""Random-access document sources for Grain.

Every source has ``__len__`` and ``__getitem__(int)``, pickles cheaply (Grain
pickles it into its worker processes) and returns a *Document*, a plain dict::

    {"text": bytes, "source": str, "key": str, "error": str | None}

``text`` holds the document's raw bytes as stored (normally UTF-8, but invalid
UTF-8 is kept verbatim); ``source`` is the source's name; ``key`` identifies the
document (a relative path, ``file:line`` or ``file:record``); ``error`` is
``None`` for a readable document, else one of the reasons below, and then
``text`` is ``b""``. Sources never raise for bad data: the consumer counts the
errors. Empty documents and invalid UTF-8 are not errors here. ArrayRecord
JSON records written by ``python -m proxyjax.compress`` also carry the neural
view's precomputed symbols: ``doc["neural"]`` (int32 array), which the mixer
uses instead of running the compressor.

Sources are named by a spec string (see :func:`parse_sources`)::

    stdlib                        the running interpreter's standard library
    files:DIR[/GLOB]              a tree of source/text files
    jsonl:GLOB                    JSON-lines files, one object per line (.gz/.zst too)
    arrayrecord:GLOB              ArrayRecord shards (JSON objects or raw bytes)
    parquet:GLOB                  Parquet files, one row per document
    hf:PATH[#SPLIT]               a Hugging Face dataset on disk (save_to_disk
                                  directory or Hub snapshot; no network)
    tfds:NAME[/CONFIG]            a TFDS dataset (needs tensorflow_datasets)
    prepared:DIR                  a directory written by ``python -m proxyjax.data.prepare``

entries separated by ``;``, each with an optional ``@weight``. How they are
read (validation fraction, text field, record format, TFDS data directory) is
one :class:`SourceOptions`, built from the config with
``SourceOptions.from_config(config)``.

Every file-based kind reads local paths and ``gs://`` / ``s3://`` ones (through
:mod:`proxyjax.paths`); what cannot be read in place (compressed JSON lines,
ArrayRecord and Arrow files on object storage) is copied once into a local cache
(:func:`proxyjax.data.sources.globs.local_copy`).

The train/validation split of file, JSONL and ArrayRecord sources is decided by
hashing a stable key (relative path, or ``relpath:index``; neural shard records
keep their original document's key), so it is the same on every machine and
independent of the other documents. Parquet and hf sources, too large to hash
every key at start-up, use the strided rule (:mod:`proxyjax.data.sources.spec`),
and hf datasets with their own train and validation splits use those.

Modules: ``spec`` (spec strings, the split), ``document`` (the Document, error
reasons, JSON record decoding), ``globs`` (path globs, the local cache), one module
per storage backend (``memory``, ``files`` with the stdlib, ``jsonl``, ``arrayrecord``,
``parquet``, ``hf``, ``tfds``, ``prepared``) and ``factory`` (:class:`SourceOptions`,
:func:`make_source`).
"""

from proxyjax.data.sources.arrayrecord import RECORD_FORMATS, ArrayRecordSource
from proxyjax.data.sources.document import (
                                            BINARY,
                                            CORRUPT_RECORD,
                                            MALFORMED_JSON,
                                            MALFORMED_SYMBOLS,
                                            MISSING_TEXT,
                                            NEURAL_FIELD,
                                            UNREADABLE,
                                            Document,
)
from proxyjax.data.sources.factory import Source, SourceOptions, make_source, make_sources
from proxyjax.data.sources.files import (
                                            BINARY_PROBE_BYTES,
                                            DEFAULT_SUFFIXES,
                                            FileTreeSource,
                                            stdlib_root,
                                            stdlib_source,
)
from proxyjax.data.sources.hf import HfSource
from proxyjax.data.sources.jsonl import JsonlSource
from proxyjax.data.sources.memory import ListSource
from proxyjax.data.sources.parquet import ParquetSource
from proxyjax.data.sources.prepared import PreparedSource
from proxyjax.data.sources.spec import (
                                            FIELD,
                                            KINDS,
                                            SPLITS,
                                            SourceSpec,
                                            in_split,
                                            parse_sources,
                                            split_value,
)
from proxyjax.data.sources.tfds import TfdsSource

__all__ = [
    "ArrayRecordSource", "BINARY", "BINARY_PROBE_BYTES", "CORRUPT_RECORD", "DEFAULT_SUFFIXES",
    "Document", "FIELD", "FileTreeSource", "HfSource", "JsonlSource", "KINDS", "ListSource",
    "MALFORMED_JSON", "MALFORMED_SYMBOLS", "MISSING_TEXT", "NEURAL_FIELD", "ParquetSource",
    "PreparedSource", "RECORD_FORMATS",
    "SPLITS", "Source", "SourceOptions", "SourceSpec", "TfdsSource", "UNREADABLE",
    "in_split", "make_source", "make_sources", "parse_sources", "split_value", "stdlib_root",
    "stdlib_source",
]
