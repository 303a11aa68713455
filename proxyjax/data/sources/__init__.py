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
    jsonl:GLOB                    JSON-lines files, one object per line
    arrayrecord:GLOB              ArrayRecord shards (JSON objects or raw bytes)
    tfds:NAME[/CONFIG]            a TFDS dataset (needs tensorflow_datasets)

entries separated by ``;``, each with an optional ``@weight``. How they are
read (validation fraction, text field, record format, TFDS data directory) is
one :class:`SourceOptions`, built from the config with
``SourceOptions.from_config(config)``.

The train/validation split of file, JSONL and ArrayRecord sources is decided by
hashing a stable key (relative path, or ``relpath:index``; neural shard records
keep their original document's key), so it is the same on every machine and
independent of the other documents.

Modules: ``spec`` (spec strings, the split), ``document`` (the Document, error
reasons, JSON record decoding), ``globs`` (path globs), one module per storage
backend (``memory``, ``files`` with the stdlib, ``jsonl``, ``arrayrecord``,
``tfds``) and ``factory`` (:class:`SourceOptions`, :func:`make_source`).
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
from proxyjax.data.sources.jsonl import JsonlSource
from proxyjax.data.sources.memory import ListSource
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
    "Document", "FIELD", "FileTreeSource", "JsonlSource", "KINDS", "ListSource",
    "MALFORMED_JSON", "MALFORMED_SYMBOLS", "MISSING_TEXT", "NEURAL_FIELD", "RECORD_FORMATS",
    "SPLITS", "Source", "SourceOptions", "SourceSpec", "TfdsSource", "UNREADABLE",
    "in_split", "make_source", "make_sources", "parse_sources", "split_value", "stdlib_root",
    "stdlib_source",
]
