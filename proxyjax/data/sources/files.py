"""File trees (``files:DIR[/GLOB]``, local or ``gs://`` / ``s3://``) and the
interpreter's standard library (``stdlib``): one document per regular file."""

from __future__ import annotations

import os
import sysconfig
from typing import Iterable

from proxyjax import paths
from proxyjax.data.sources.document import (
  BINARY,
  UNREADABLE,
  Document,
  check_index,
  error_doc,
  make_doc,
)
from proxyjax.data.sources.globs import glob_regex, relpath
from proxyjax.data.sources.spec import FIELD, check_split, in_split
from proxyjax.errors import ConfigError

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


class FileTreeSource:
  """Regular files under a root directory, one document per file.

  Files are listed once at construction (symlinks are not followed; on object
  storage, one listing of the prefix), sorted by their posix relative path. A
  file that vanished or cannot be read gives an ``unreadable`` document; a NUL
  byte in its first 8192 bytes gives ``binary``.
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
    check_split(split, validation_fraction)
    remote = paths.is_remote(root)
    self.root = root.rstrip("/") if remote else os.path.expanduser(root)
    self.name = name or f"files:{root}"
    self.split = split
    if not paths.isdir(self.root):
      raise ConfigError(FIELD, f"{self.name}: directory {self.root!r} does not "
                        "exist")
    keep = glob_regex(pattern).match if pattern else None
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
    rel = self._relpaths[check_index(index, len(self._relpaths))]
    try:
      with paths.open_file(paths.join(self.root, rel), "rb") as f:
        data = f.read()
    except OSError:
      return error_doc(self.name, rel, UNREADABLE)
    if b"\0" in data[:BINARY_PROBE_BYTES]:
      return error_doc(self.name, rel, BINARY)
    return make_doc(data, self.name, rel)

  def __repr__(self) -> str:
    return (f"FileTreeSource(name={self.name!r}, root={self.root!r}, "
            f"split={self.split!r}, len={len(self)})")


def _suffix(path: str) -> str:
  return os.path.splitext(path)[1].lower()


def _walk(root: str, exclude_dirs: frozenset[str]) -> list[str]:
  """Sorted posix relative paths of the regular (non-symlink) files under root."""
  if paths.is_remote(root):
    listed = [relpath(p, root) for p in paths.walk_files(root)]
    return sorted(rel for rel in listed
                  if not exclude_dirs.intersection(rel.split("/")[:-1]))
  out = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
    dirnames[:] = [d for d in dirnames if d not in exclude_dirs]
    for filename in filenames:
      path = os.path.join(dirpath, filename)
      if os.path.islink(path) or not os.path.isfile(path):
        continue
      out.append(relpath(path, root))
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
