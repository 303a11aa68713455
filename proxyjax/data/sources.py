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

entries separated by ``;``, each with an optional ``@weight``.

The train/validation split of file, JSONL and ArrayRecord sources is decided by
hashing a stable key (relative path, or ``relpath:index``; neural shard records
keep their original document's key), so it is the same on every machine and
independent of the other documents.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import operator
import os
import re
import sysconfig
from typing import Any, Iterable, Sequence

import numpy as np

from proxyjax.errors import ConfigError
from proxyjax.neural import shards as neural_shards  # numpy-only: the shard record format

Document = dict[str, Any]

FIELD = "data.sources"

# Error reasons (exact strings; consumers count them).
UNREADABLE = "unreadable"
MALFORMED_JSON = "malformed_json"
MISSING_TEXT = "missing_text"
BINARY = "binary"
CORRUPT_RECORD = "corrupt_record"  # a neural record failing its checksums (proxyjax.neural.shards)
MALFORMED_SYMBOLS = "malformed_symbols"  # a neural record whose symbols are not decodable

# Optional Document key: precomputed symbols of the neural view (ArrayRecord JSON
# records written by ``python -m proxyjax.compress``; format: proxyjax.neural.shards).
NEURAL_FIELD = "neural"

KINDS = ("stdlib", "files", "jsonl", "arrayrecord", "tfds")
SPLITS = ("train", "validation", "all")
RECORD_FORMATS = ("json", "bytes")

BINARY_PROBE_BYTES = 8192

DEFAULT_SUFFIXES = frozenset({
    ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".hxx",
    ".java", ".kt", ".scala", ".js", ".jsx", ".mjs", ".ts", ".tsx", ".go",
    ".rs", ".rb", ".php", ".pl", ".lua", ".swift", ".cs", ".m", ".r", ".jl",
    ".hs", ".ml", ".ex", ".exs", ".erl", ".clj", ".dart", ".zig", ".sh",
    ".bash", ".zsh", ".fish", ".ps1", ".bat", ".cmake", ".mk", ".md", ".rst",
    ".txt", ".tex", ".json", ".toml", ".yaml", ".yml", ".ini", ".cfg", ".xml",
    ".html", ".htm", ".css", ".scss", ".sql", ".proto", ".graphql", ".csv",
})
_EXCLUDED_STDLIB_DIRS = frozenset({"site-packages", "dist-packages"})
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")
_IS_SPACE = np.isin(np.arange(256), [9, 10, 11, 12, 13, 32])  # bytes.isspace
_INDEX_CHUNK_BYTES = 4 << 20
_GLOB_MAGIC = re.compile(r"[*?\[]")


# ---------------------------------------------------------------------------
# Specs.


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
# Split helpers.


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


def _check_split(split: str, validation_fraction: float) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if not 0.0 <= validation_fraction < 1.0:
    raise ConfigError("data.validation_fraction",
                      f"must be in [0, 1), got {validation_fraction!r}")


def _make_doc(text: bytes, source: str, key: str,
              error: str | None = None) -> Document:
  return {"text": text, "source": source, "key": key, "error": error}


def _error_doc(source: str, key: str, error: str) -> Document:
  return _make_doc(b"", source, key, error)


def _check_index(index: Any, length: int) -> int:
  """Normalizes a (possibly numpy / negative) index; IndexError if out of range."""
  i = operator.index(index)
  if i < 0:
    i += length
  if not 0 <= i < length:
    raise IndexError(f"index {index} out of range for a source of {length}")
  return i


def _text_from_record(record: Any, text_field: str) -> tuple[bytes, str | None]:
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
    return _encode_text(value), None
  return b"", MISSING_TEXT


def _encode_text(text: str) -> bytes:
  """UTF-8 encodes, keeping smuggled raw bytes and lone surrogates."""
  try:
    return text.encode("utf-8", "surrogateescape")
  except UnicodeEncodeError:
    return text.encode("utf-8", "surrogatepass")


def _parse_json_record(raw: bytes, text_field: str) -> tuple[bytes, str | None]:
  """Parses one JSON object (raw bytes) and extracts its text."""
  text, error, _, _ = _parse_json_record_with_symbols(raw, text_field)
  return text, error


def _parse_json_record_with_symbols(
    raw: bytes, text_field: str) -> tuple[bytes, str | None, str | None, np.ndarray | None]:
  """Like ``_parse_json_record``, plus, for a neural record
  (``proxyjax.neural.shards``), its original document key and its symbols.

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
    text, error = _text_from_record(record, text_field)
    return text, error, None, None
  key = neural_shards.record_key(record)
  try:
    text, symbols = neural_shards.verify_record(record)
  except neural_shards.CorruptRecordError as e:
    return b"", e.reason, key, None
  return text, None, key, symbols


# ---------------------------------------------------------------------------
# Globs.


def _split_glob(location: str) -> tuple[str, str]:
  """Splits a path glob into (static root directory, relative pattern).

  ``/a/b/**/*.py`` -> (``/a/b``, ``**/*.py``); ``/a/b`` -> (``/a/b``, ``""``).
  """
  parts = location.split("/")
  for i, part in enumerate(parts):
    if _GLOB_MAGIC.search(part):
      root = "/".join(parts[:i]) or ("/" if location.startswith("/") else ".")
      return root, "/".join(parts[i:])
  return location, ""


def _glob_regex(pattern: str) -> re.Pattern[str]:
  """Compiles a relative posix glob (``*``, ``?``, ``[...]``, ``**``) to a regex."""
  out, i, n = [], 0, len(pattern)
  while i < n:
    c = pattern[i]
    if pattern.startswith("**/", i):
      out.append("(?:.*/)?")
      i += 3
    elif pattern.startswith("**", i):
      out.append(".*")
      i += 2
    elif c == "*":
      out.append("[^/]*")
      i += 1
    elif c == "?":
      out.append("[^/]")
      i += 1
    elif c == "[" and (j := pattern.find("]", i + 2)) != -1:
      body = pattern[i + 1:j]
      if body.startswith("!"):
        body = "^" + body[1:]
      out.append("[" + body.replace("\\", "\\\\") + "]")
      i = j + 1
    else:
      out.append(re.escape(c))
      i += 1
  return re.compile("".join(out) + r"\Z")


def _expand_glob(pattern: str, kind: str) -> tuple[str, list[str]]:
  """Sorted regular files matching ``pattern``, and the glob's static root.

  Each file appears once, however many paths (symlinks) lead to it: files are
  deduplicated by real path, preferring a path without symlinks, then the
  smallest. A ``**`` pattern walks the tree itself (:func:`_walk_links`):
  symlinked directories are followed once each and never into a loop (a link
  to the directory itself or to an ancestor, e.g. ``self -> .`` or ``up -> ..``).
  """
  pattern = os.path.expanduser(pattern)
  root, magic = _split_glob(pattern)
  if not magic:  # a single file named directly
    root = os.path.dirname(pattern) or "."
  if "**" in magic:
    keep = _glob_regex(magic).match
    hidden = magic.startswith(".") or "/." in magic
    candidates = [p for p in _walk_links(root)
                  if keep(_relpath(p, root)) and (hidden or not _is_hidden(_relpath(p, root)))]
  else:
    candidates = glob.glob(pattern)
  paths = _dedupe_real(p for p in candidates if os.path.isfile(p))
  if not paths:
    raise ConfigError(FIELD, f"{kind}:{pattern} matched no files")
  return root, paths


def _is_hidden(relpath: str) -> bool:
  return any(part.startswith(".") for part in relpath.split("/"))


def _dedupe_real(paths: Iterable[str]) -> list[str]:
  """Sorted paths, one per real file (no symlink in the path first, then the smallest)."""
  best: dict[str, tuple[bool, str]] = {}
  for path in paths:
    real = os.path.realpath(path)
    candidate = (real != os.path.abspath(path), path)
    if real not in best or candidate < best[real]:
      best[real] = candidate
  return sorted(path for _, path in best.values())


def _walk_links(root: str) -> list[str]:
  """Every file path under ``root``, following symlinked directories except loops.

  Real directories are walked first; then each symlinked directory whose target
  was not walked yet and is not an ancestor of the link (a loop) is walked the
  same way, so a directory reachable by several paths is listed once, through
  its real path when it has one under ``root``.
  """
  visited: set[str] = set()
  files: list[str] = []
  links: list[str] = []

  def walk(top: str) -> None:
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
      real = os.path.realpath(dirpath)
      if real in visited:
        dirnames[:] = []
        continue
      visited.add(real)
      dirnames.sort()
      kept = []
      for d in dirnames:
        path = os.path.join(dirpath, d)
        if os.path.islink(path):
          links.append(path)
        else:
          kept.append(d)
      dirnames[:] = kept
      files.extend(os.path.join(dirpath, f) for f in sorted(filenames))

  walk(root)
  while links:
    link = links.pop(0)
    target = os.path.realpath(link)
    parent = os.path.realpath(os.path.dirname(link))
    if target in visited or not os.path.isdir(target) or _is_ancestor(target, parent):
      continue
    walk(link)
  return files


def _is_ancestor(directory: str, path: str) -> bool:
  """Whether real path ``directory`` is ``path`` or one of its ancestors."""
  return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _relpath(path: str, root: str) -> str:
  return os.path.relpath(path, root).replace(os.sep, "/")


# ---------------------------------------------------------------------------
# Sources.


class ListSource:
  """Documents held in memory (tests and programmatic use)."""

  def __init__(self, docs: Sequence[bytes], name: str = "list"):
    self.name = name
    self._docs = [d.encode("utf-8") if isinstance(d, str) else bytes(d)
                  for d in docs]

  def __len__(self) -> int:
    return len(self._docs)

  def __getitem__(self, index: int) -> Document:
    i = _check_index(index, len(self._docs))
    return _make_doc(self._docs[i], self.name, str(i))

  def __repr__(self) -> str:
    return f"ListSource(name={self.name!r}, len={len(self)})"


class FileTreeSource:
  """Regular files under a root directory, one document per file.

  Files are listed once at construction (symlinks are not followed), sorted by
  their posix relative path. A file that vanished or cannot be read gives an
  ``unreadable`` document; a NUL byte in its first 8192 bytes gives ``binary``.
  """

  def __init__(self, root: str, *, pattern: str = "",
               suffixes: Iterable[str] | None = None,
               exclude_dirs: Iterable[str] = (), split: str = "all",
               validation_fraction: float = 0.01, name: str | None = None):
    """Lists the files.

    Args:
      root: the directory to walk.
      pattern: a relative posix glob (``**/*.py``) the relative paths must
        match; when empty, files are selected by ``suffixes``.
      suffixes: file suffixes to keep when there is no pattern (default: a set
        of common code and text suffixes).
      exclude_dirs: directory names pruned anywhere in the tree.
      split: ``train``, ``validation`` or ``all``.
      validation_fraction: the fraction of files hashed into validation.
      name: the source name (default ``files:ROOT``).
    """
    _check_split(split, validation_fraction)
    self.root = os.path.expanduser(root)
    self.name = name or f"files:{root}"
    self.split = split
    if not os.path.isdir(self.root):
      raise ConfigError(FIELD, f"{self.name}: directory {self.root!r} does not "
                        "exist")
    keep = _glob_regex(pattern).match if pattern else None
    suffix_set = frozenset(DEFAULT_SUFFIXES if suffixes is None else suffixes)
    listed = [rel for rel in _walk(self.root, frozenset(exclude_dirs))
              if (keep(rel) if keep else _suffix(rel) in suffix_set)]
    if not listed:
      what = f"matching {pattern!r}" if pattern else "with a known suffix"
      raise ConfigError(FIELD, f"{self.name}: no files {what} under "
                        f"{self.root!r}")
    self._relpaths = tuple(
        rel for rel in listed if in_split(rel, split, validation_fraction))

  @property
  def relpaths(self) -> tuple[str, ...]:
    return self._relpaths

  def __len__(self) -> int:
    return len(self._relpaths)

  def __getitem__(self, index: int) -> Document:
    rel = self._relpaths[_check_index(index, len(self._relpaths))]
    try:
      with open(os.path.join(self.root, rel), "rb") as f:
        data = f.read()
    except OSError:
      return _error_doc(self.name, rel, UNREADABLE)
    if b"\0" in data[:BINARY_PROBE_BYTES]:
      return _error_doc(self.name, rel, BINARY)
    return _make_doc(data, self.name, rel)

  def __repr__(self) -> str:
    return (f"FileTreeSource(name={self.name!r}, root={self.root!r}, "
            f"split={self.split!r}, len={len(self)})")


def _suffix(relpath: str) -> str:
  return os.path.splitext(relpath)[1].lower()


def _walk(root: str, exclude_dirs: frozenset[str]) -> list[str]:
  """Sorted posix relative paths of the regular (non-symlink) files under root."""
  out = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
    dirnames[:] = [d for d in dirnames if d not in exclude_dirs]
    for filename in filenames:
      path = os.path.join(dirpath, filename)
      if os.path.islink(path) or not os.path.isfile(path):
        continue
      out.append(_relpath(path, root))
  out.sort()
  return out


def stdlib_root() -> str:
  """The running interpreter's standard-library directory."""
  return sysconfig.get_paths()["stdlib"]


def stdlib_source(*, split: str = "all",
                  validation_fraction: float = 0.01) -> FileTreeSource:
  """All ``*.py`` files of the standard library, without site/dist-packages."""
  return FileTreeSource(stdlib_root(), suffixes={".py"},
                        exclude_dirs=_EXCLUDED_STDLIB_DIRS, split=split,
                        validation_fraction=validation_fraction, name="stdlib")


class JsonlSource:
  """JSON-lines files: one document per non-blank line.

  Line offsets are indexed at construction (numpy int64 arrays, so the source
  pickles cheaply); ``__getitem__`` seeks and reads one line. The text is the
  ``text_field`` value when given, else ``text``, else ``content``.
  """

  def __init__(self, pattern: str, *, split: str = "all",
               validation_fraction: float = 0.01, text_field: str = "",
               name: str | None = None):
    _check_split(split, validation_fraction)
    self.name = name or f"jsonl:{pattern}"
    self.split = split
    self.text_field = text_field
    _reject_compressed(pattern, self.name)
    root, paths = _expand_glob(pattern, "jsonl")
    for path in paths:
      _reject_compressed(path, self.name)
    self._paths = tuple(paths)
    self._relnames = tuple(_relpath(p, root) for p in paths)
    offsets, lengths, linenos, file_ids = [], [], [], []
    for file_id, path in enumerate(paths):
      starts, ends, numbers = _index_lines(path)
      keep = _keep_mask(self._relnames[file_id], numbers, split,
                        validation_fraction)
      offsets.append(starts[keep])
      lengths.append(ends[keep] - starts[keep])
      linenos.append(numbers[keep])
      file_ids.append(np.full(int(keep.sum()), file_id, dtype=np.int32))
    self._offsets = np.concatenate(offsets).astype(np.int64)
    self._lengths = np.concatenate(lengths).astype(np.int64)
    self._linenos = np.concatenate(linenos).astype(np.int64)
    self._file_ids = np.concatenate(file_ids).astype(np.int32)

  def __len__(self) -> int:
    return int(self._offsets.shape[0])

  def __getitem__(self, index: int) -> Document:
    i = _check_index(index, len(self))
    file_id = int(self._file_ids[i])
    key = f"{self._relnames[file_id]}:{int(self._linenos[i])}"
    try:
      with open(self._paths[file_id], "rb") as f:
        f.seek(int(self._offsets[i]))
        raw = f.read(int(self._lengths[i]))
    except OSError:
      return _error_doc(self.name, key, UNREADABLE)
    text, error = _parse_json_record(raw, self.text_field)
    return _make_doc(text, self.name, key, error)

  def __repr__(self) -> str:
    return (f"JsonlSource(name={self.name!r}, files={len(self._paths)}, "
            f"split={self.split!r}, len={len(self)})")


def _reject_compressed(path: str, name: str) -> None:
  if path.lower().endswith(_COMPRESSED_SUFFIXES):
    raise ConfigError(FIELD, f"{name}: compressed JSONL ({path}) is not "
                      "supported; decompress it or convert it to ArrayRecord")


def _keep_mask(relname: str, numbers: np.ndarray, split: str,
               validation_fraction: float) -> np.ndarray:
  """Which indexed records (numbered ``numbers``) of a file belong to split."""
  if split == "all":
    return np.ones(numbers.shape, dtype=bool)
  return np.fromiter(
      (in_split(f"{relname}:{n}", split, validation_fraction) for n in numbers),
      dtype=bool, count=numbers.shape[0])


def _index_lines(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Byte (start, end) and 1-based line number of each non-blank line.

  Reads the file in chunks; a line is blank when it holds only ASCII
  whitespace. A final line without a trailing newline counts.
  """
  starts, ends, numbers = [], [], []
  pending_start, pending_content, newlines_seen, base = 0, False, 0, 0
  with open(path, "rb") as f:
    while chunk := f.read(_INDEX_CHUNK_BYTES):
      buf = np.frombuffer(chunk, dtype=np.uint8)
      newlines = np.flatnonzero(buf == 10)
      content = np.zeros(buf.shape[0] + 1, dtype=np.int32)
      np.cumsum(~_IS_SPACE[buf], dtype=np.int32, out=content[1:])
      # Segments of this chunk: [0, nl0), [nl0+1, nl1), ..., [nlk+1, len).
      seg_starts = np.concatenate([[0], newlines + 1])
      seg_ends = np.concatenate([newlines, [buf.shape[0]]])
      has_content = content[seg_ends] > content[seg_starts]
      if newlines.shape[0]:
        # The first segment completes the line pending from earlier chunks.
        first_content = pending_content or bool(has_content[0])
        full_starts = np.concatenate([[pending_start], base + seg_starts[1:-1]])
        full_content = np.concatenate([[first_content], has_content[1:-1]])
        keep = np.flatnonzero(full_content)
        starts.append(full_starts[keep])
        ends.append(base + newlines[keep])
        numbers.append(newlines_seen + 1 + keep)
        newlines_seen += newlines.shape[0]
        pending_start = base + int(seg_starts[-1])
        pending_content = bool(has_content[-1])
      else:
        pending_content = pending_content or bool(has_content[-1])
      base += buf.shape[0]
  if pending_content:
    starts.append(np.array([pending_start]))
    ends.append(np.array([base]))
    numbers.append(np.array([newlines_seen + 1]))
  if not starts:
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty, empty
  return (np.concatenate(starts).astype(np.int64),
          np.concatenate(ends).astype(np.int64),
          np.concatenate(numbers).astype(np.int64))


@dataclasses.dataclass(frozen=True)
class _Shard:
  """A whole ArrayRecord file, in the FileInstruction protocol's shape."""
  filename: str
  skip: int
  take: int
  examples_in_shard: int


class ArrayRecordSource:
  """ArrayRecord shards read with ``grain.sources.ArrayRecordDataSource``.

  ``record_format="json"``: each record is a JSON object holding the text (see
  :class:`JsonlSource`); ``"bytes"``: each record is the document's raw bytes.
  Records are named ``file:index``, except the neural records written by
  ``python -m proxyjax.compress`` (``proxyjax.neural.shards``), which carry
  the original document's key: that key names them and decides their split
  (reading each such file's keys once at construction), so shards of a corpus
  split exactly like the corpus.
  """

  def __init__(self, pattern: str, *, split: str = "all",
               validation_fraction: float = 0.01, record_format: str = "json",
               text_field: str = "", name: str | None = None):
    _check_split(split, validation_fraction)
    if record_format not in RECORD_FORMATS:
      raise ConfigError("data.record_format", f"must be one of "
                        f"{RECORD_FORMATS}, got {record_format!r}")
    self.name = name or f"arrayrecord:{pattern}"
    self.split = split
    self.record_format = record_format
    self.text_field = text_field
    root, paths = _expand_glob(pattern, "arrayrecord")
    counts = [_count_records(p, self.name, record_format) for p in paths]
    self._relnames = tuple(_relpath(p, root) for p in paths)
    self._starts = np.cumsum([0] + counts[:-1]).astype(np.int64)
    self._source = _grain_array_record_source(
        [_Shard(p, 0, n, n) for p, n in zip(paths, counts)])
    self._index = None  # global record keys kept by the split; None = all
    if split != "all":
      kept = []
      for path, rel, start, n in zip(paths, self._relnames, self._starts, counts):
        try:
          doc_keys = neural_shards.record_keys(path) if record_format == "json" else None
        except neural_shards.ShardFileError as e:
          raise ConfigError(FIELD, f"{self.name}: {e}") from e
        if doc_keys is None:  # named file:index
          keep = _keep_mask(rel, np.arange(n), split, validation_fraction)
        else:  # neural records: the original document's key, as its corpus splits it
          keep = np.fromiter((in_split(k if k is not None else f"{rel}:{i}", split,
                                       validation_fraction) for i, k in enumerate(doc_keys)),
                             dtype=bool, count=n)
        kept.append(start + np.flatnonzero(keep))
      self._index = np.concatenate(kept).astype(np.int64)
    self._len = sum(counts) if self._index is None else len(self._index)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> Document:
    i = _check_index(index, self._len)
    record_key = i if self._index is None else int(self._index[i])
    file_id = int(np.searchsorted(self._starts, record_key, side="right")) - 1
    key = f"{self._relnames[file_id]}:{record_key - int(self._starts[file_id])}"
    try:
      record = self._source[record_key]
    except Exception:  # pylint: disable=broad-except
      return _error_doc(self.name, key, UNREADABLE)
    if self.record_format == "bytes":
      return _make_doc(bytes(record), self.name, key)
    text, error, neural_key, symbols = _parse_json_record_with_symbols(bytes(record),
                                                                       self.text_field)
    doc = _make_doc(text, self.name, neural_key or key, error)
    if symbols is not None:
      doc[NEURAL_FIELD] = symbols
    return doc

  def __repr__(self) -> str:
    return (f"ArrayRecordSource(name={self.name!r}, "
            f"files={len(self._relnames)}, format={self.record_format!r}, "
            f"split={self.split!r}, len={len(self)})")


def _count_records(path: str, name: str, record_format: str = "json") -> int:
  """Number of records in an ArrayRecord file.

  Raises:
    ConfigError: naming the file, if it cannot be read (truncated, corrupt) or
      if it holds neural records of an older format (no per-record checksum).
  """
  try:
    with neural_shards.open_shard(path) as reader:
      n = int(reader.num_records())
      first = bytes(reader.read([0])[0]) if n and record_format == "json" else b""
  except neural_shards.ShardFileError as e:
    raise ConfigError(FIELD, f"{name}: {e}") from e
  if first:
    try:
      record = json.loads(first.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
      record = None
    if neural_shards.is_neural_record(record) and not neural_shards.has_checksum(record):
      raise ConfigError(FIELD, f"{name}: {path} holds neural records without a per-record "
                        f"checksum (format {neural_shards.OLD_FORMATS[-1]!r}); "
                        f"{neural_shards.RECOMPRESS_HINT}")
  return n


def _grain_array_record_source(shards: list[_Shard]):
  import grain  # pylint: disable=g-import-not-at-top
  return grain.sources.ArrayRecordDataSource(shards)


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
      raise ConfigError("data.sources", f"cannot open tfds dataset {name!r} "
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
    i = _check_index(index, self._len)
    key = f"{self.split}:{i}"
    try:
      record = self._tfds_source()[i]
    except Exception:  # pylint: disable=broad-except
      return _error_doc(self.name, key, UNREADABLE)
    text, error = _text_from_record(record, self.text_field)
    return _make_doc(text, self.name, key, error)

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


# ---------------------------------------------------------------------------
# Factories.

Source = ListSource | FileTreeSource | JsonlSource | ArrayRecordSource | TfdsSource


def make_source(spec: SourceSpec, *, split: str,
                validation_fraction: float = 0.01, text_field: str = "",
                record_format: str = "json", tfds_data_dir: str = "") -> Source:
  """Builds the source for one spec entry, restricted to ``split``.

  Args:
    spec: a parsed spec entry.
    split: ``train``, ``validation`` or ``all`` (no filtering).
    validation_fraction: the hashed fraction of documents in validation
      (ignored by tfds, which uses the dataset's own splits).
    text_field: the JSON / TFDS field holding the text (default: ``text``,
      else ``content``).
    record_format: ``json`` or ``bytes`` (ArrayRecord only).
    tfds_data_dir: TFDS data directory (empty: the TFDS default).
  """
  _check_split(split, validation_fraction)
  kw = dict(split=split, validation_fraction=validation_fraction)
  if spec.kind == "stdlib":
    return stdlib_source(**kw)
  if spec.kind == "files":
    root, pattern = _split_glob(spec.location)
    return FileTreeSource(root, pattern=pattern,
                          name=f"files:{spec.location}", **kw)
  if spec.kind == "jsonl":
    return JsonlSource(spec.location, text_field=text_field, **kw)
  if spec.kind == "arrayrecord":
    return ArrayRecordSource(spec.location, record_format=record_format,
                             text_field=text_field, **kw)
  if spec.kind == "tfds":
    return TfdsSource(spec.location, split=split, data_dir=tfds_data_dir,
                      text_field=text_field)
  raise ConfigError(FIELD, f"unknown source kind {spec.kind!r}")


def make_sources(spec: str, **kwargs) -> list[tuple[Source, float]]:
  """Parses a spec string and builds ``(source, weight)`` pairs.

  ``kwargs`` go to :func:`make_source` (``split`` is required).
  """
  return [(make_source(s, **kwargs), s.weight) for s in parse_sources(spec)]
