"""Path globs of the file-based sources: ``*``, ``?``, ``[...]`` and ``**``,
matched files deduplicated by real path, symlinked directories followed once
each and never into a loop."""

from __future__ import annotations

import glob
import os
import re
from typing import Iterable

from proxyjax.data.sources.spec import FIELD
from proxyjax.errors import ConfigError

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
    candidates = glob.glob(pattern)
  paths = _dedupe_real(p for p in candidates if os.path.isfile(p))
  if not paths:
    raise ConfigError(FIELD, f"{kind}:{pattern} matched no files")
  return root, paths


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
  return os.path.relpath(path, root).replace(os.sep, "/")
