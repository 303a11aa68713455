"""Path globs of the file-based sources and their local cache.

Globs: ``*``, ``?``, ``[...]`` and ``**``. Local matches are deduplicated by real
path, symlinked directories followed once each and never into a loop; a
``gs://`` / ``s3://`` pattern is matched against one listing of its static root
(:func:`proxyjax.paths.walk_files`; object stores have no symlinks).

The local cache (:func:`local_copy`) holds files that cannot be read where they
are: decompressed ``.gz`` / ``.zst`` JSON lines (no random access into a
compressed stream) and ArrayRecord shards on object storage (the ArrayRecord
reader opens local files only). It lives in ``$PROXYJAX_CACHE_DIR``, else
``~/.cache/proxyjax/decompressed/``; each entry is named by the sha256 of the
source path, its size and its modification stamp (mtime, or the object's
etag/generation), so a changed file gets a new entry; it is written under a
temporary name and renamed into place, so concurrent processes (hosts, Grain
workers) never see a partial copy and at worst write it twice.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from typing import IO, Callable, Iterable

from proxyjax import paths
from proxyjax.data.sources.spec import FIELD
from proxyjax.errors import ConfigError

CACHE_DIR_ENV = "PROXYJAX_CACHE_DIR"

_GLOB_MAGIC = re.compile(r"[*?\[]")


def split_glob(location: str) -> tuple[str, str]:
  """Splits a path glob into (static root directory, relative pattern).

  ``/a/b/**/*.py`` -> (``/a/b``, ``**/*.py``); ``/a/b`` -> (``/a/b``, ``""``).
  """
  parts = location.split("/")
  for i, part in enumerate(parts):
    if _GLOB_MAGIC.search(part):
      root = "/".join(parts[:i]) or ("/" if location.startswith("/") else ".")
      return root, "/".join(parts[i:])
  return location, ""


def glob_regex(pattern: str) -> re.Pattern[str]:
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


def expand_glob(pattern: str, kind: str) -> tuple[str, list[str]]:
  """Sorted regular files matching ``pattern``, and the glob's static root.

  Each file appears once, however many paths (symlinks) lead to it: files are
  deduplicated by real path, preferring a path without symlinks, then the
  smallest. A ``**`` pattern walks the tree itself (:func:`walk_links`):
  symlinked directories are followed once each and never into a loop (a link
  to the directory itself or to an ancestor, e.g. ``self -> .`` or ``up -> ..``).
  """
  if paths.is_remote(pattern):
    return _expand_remote(pattern, kind)
  pattern = os.path.expanduser(pattern)
  root, magic = split_glob(pattern)
  if not magic:  # a single file named directly
    root = os.path.dirname(pattern) or "."
  if "**" in magic:
    keep = glob_regex(magic).match
    hidden = magic.startswith(".") or "/." in magic
    candidates = [p for p in walk_links(root)
                  if keep(relpath(p, root)) and (hidden or not _is_hidden(relpath(p, root)))]
  else:
    candidates = paths.glob(pattern)
  found = _dedupe_real(p for p in candidates if os.path.isfile(p))
  if not found:
    raise ConfigError(FIELD, f"{kind}:{pattern} matched no files")
  return root, found


def _expand_remote(pattern: str, kind: str) -> tuple[str, list[str]]:
  """``expand_glob`` on object storage: a ``**`` pattern is matched with
  :func:`glob_regex` against one listing of its static root (the same rules as
  locally), any other with the file system's own glob (one listing per level);
  hidden names only when the pattern names them; objects only, no directories."""
  root, magic = split_glob(pattern)
  if not magic:
    try:
      found = [pattern] if paths.isfile(pattern) else []
    except FileNotFoundError:
      found = []
    root = paths.dirname(pattern)
  else:
    try:
      if "**" in magic:
        keep = glob_regex(magic).match
        listed = [p for p in paths.walk_files(root) if keep(relpath(p, root))]
      else:
        listed = paths.glob(pattern, files_only=True)
    except FileNotFoundError:
      listed = []
    hidden = magic.startswith(".") or "/." in magic
    found = [p for p in listed if hidden or not _is_hidden(relpath(p, root))]
  if not found:
    raise ConfigError(FIELD, f"{kind}:{pattern} matched no files")
  return root, sorted(found)


def _is_hidden(path: str) -> bool:
  return any(part.startswith(".") for part in path.split("/"))


def _dedupe_real(paths: Iterable[str]) -> list[str]:
  """Sorted paths, one per real file (no symlink in the path first, then the smallest)."""
  best: dict[str, tuple[bool, str]] = {}
  for path in paths:
    real = os.path.realpath(path)
    candidate = (real != os.path.abspath(path), path)
    if real not in best or candidate < best[real]:
      best[real] = candidate
  return sorted(path for _, path in best.values())


def walk_links(root: str) -> list[str]:
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


def relpath(path: str, root: str) -> str:
  """``path`` relative to ``root``, with ``/`` separators."""
  if paths.is_remote(path):
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path
  return os.path.relpath(path, root).replace(os.sep, "/")


# ---------------------------------------------------------------------------
# The local cache.


def cache_root() -> str:
  """The root of proxyjax's local caches: ``$PROXYJAX_CACHE_DIR``, else ``~/.cache/proxyjax``."""
  return os.path.expanduser(os.environ.get(CACHE_DIR_ENV)
                            or os.path.join("~", ".cache", "proxyjax"))


def cache_dir() -> str:
  """:func:`local_copy`'s directory: ``decompressed/`` under :func:`cache_root` (next to
  the prepared shards' ``shards/``)."""
  return os.path.join(cache_root(), "decompressed")


def fill_atomically(target: str, path: str,
                    write: Callable[[IO[bytes], IO[bytes]], None]) -> str:
  """Creates local file ``target`` as ``write(src, dst)`` from ``path`` (local or remote)
  under a temporary name renamed into place: concurrent processes never see a partial
  file, and a failing ``write`` leaves nothing. Returns ``target``."""
  os.makedirs(os.path.dirname(target), exist_ok=True)
  tmp = f"{target}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    with paths.open_file(path, "rb") as src, open(tmp, "wb") as dst:
      write(src, dst)
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return target


def _stamp(path: str) -> tuple[str, int, str]:
  """(identity, size, modification stamp) of a local or remote file."""
  if not paths.is_remote(path):
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, str(st.st_mtime_ns)
  info = paths.info(path)
  stamp = next((str(info[k]) for k in ("etag", "ETag", "md5Hash", "generation", "mtime",
                                      "updated", "LastModified") if info.get(k)), "")
  return path, int(info.get("size") or 0), stamp


def local_copy(path: str, tag: str, write: Callable[[IO[bytes], IO[bytes]], None],
               suffix: str = "") -> str:
  """The local cache entry for ``path`` transformed by ``write(src, dst)`` (``tag``
  names the transformation), created on first use; see the module docstring.

  ``write`` may raise (e.g. a ConfigError for a corrupt file): nothing is cached then.
  """
  ident, nbytes, stamp = _stamp(path)
  digest = hashlib.sha256(repr((tag, ident, nbytes, stamp)).encode("utf-8",
                                                                    "surrogateescape"))
  target = os.path.join(cache_dir(), digest.hexdigest() + suffix)
  if os.path.exists(target):
    return target
  return fill_atomically(target, path, write)


def copy_stream(src: IO[bytes], dst: IO[bytes], chunk_bytes: int = 4 << 20) -> None:
  """``local_copy``'s plain copy."""
  while chunk := src.read(chunk_bytes):
    dst.write(chunk)
