"""One path layer for local paths and object storage (``gs://``, ``s3://``, ...).

Every user-supplied path (sources, the run directory, tokenizers, reports) goes
through these functions instead of ``open`` / ``glob.glob`` / ``os.*``. Local
paths (no ``scheme://``) use the standard library directly, so nothing changes
for them; any other URL goes through fsspec (``gcsfs`` for ``gs://``, ``s3fs``
for ``s3://``, ``memory://`` for tests), the layer that Orbax's etils.epath and
Levanter use too.

Pointing at an emulator or a non-AWS endpoint uses each library's own settings
(no proxyjax flags): ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`` for GCS
(gcsfs, and TensorStore for Orbax), ``AWS_ENDPOINT_URL=http://127.0.0.1:PORT``
plus ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` for S3 (botocore/s3fs).
Against a real bucket: GCS reads Application Default Credentials
(``gcloud auth application-default login`` or a service account), S3 the usual
AWS credential chain.

Failures to reach storage (a bucket that does not exist, access denied, no
credentials, a missing scheme implementation) raise :class:`StorageError`, one
line naming the path and what to do.

Low in the layers: imports nothing from proxyjax but ``errors``.
"""

from __future__ import annotations

import contextlib
import glob as glob_lib
import os
import posixpath
import re
import shutil
import uuid
from typing import IO, Any, Iterator

from proxyjax.errors import UserError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_GLOB_MAGIC = re.compile(r"[*?\[]")
_HINT = {
    "gs": "check the bucket name and credentials (gcloud auth application-default login; "
          "STORAGE_EMULATOR_HOST for an emulator)",
    "s3": "check the bucket name and credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE; "
          "AWS_ENDPOINT_URL for another endpoint)",
}
_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "s3a": "s3fs"}


class StorageError(UserError, OSError):
  """A path that cannot be reached (no bucket, no access, no such file system)."""


class MissingPathError(StorageError, FileNotFoundError):
  """A remote object (or its bucket) that does not exist; a ``FileNotFoundError``."""


def scheme(path: str) -> str:
  """``gs`` for ``gs://b/x``, ``""`` for a local path."""
  m = _SCHEME.match(str(path))
  return m.group(1).lower() if m else ""


def is_remote(path: str) -> bool:
  """True for a URL (``scheme://...``) other than ``file://``."""
  return scheme(path) not in ("", "file")


def _local(path: str) -> str:
  path = str(path)
  if path.startswith("file://"):
    path = path[len("file://"):]
  return os.path.expanduser(path)


def _fs(path: str):
  """(fsspec file system, path as that file system names it)."""
  try:
    import fsspec  # pylint: disable=import-outside-toplevel
    return fsspec.core.url_to_fs(path)
  except ImportError as e:
    s = scheme(path)
    pkg = _PACKAGES.get(s, f"the fsspec implementation of {s}://")
    raise StorageError(f"{path}: reading {s}:// paths needs {pkg} "
                       f"(pip install {pkg})") from e
  except ValueError as e:
    raise StorageError(f"{path}: {e}") from e


def _wrap(path: str, e: Exception) -> StorageError:
  s = scheme(path)
  hint = _HINT.get(s, "check the path and its credentials")
  what = type(e).__name__
  text = str(e).splitlines()[0] if str(e) else what
  return StorageError(f"{path}: {what}: {text[:300]}; {hint}")


@contextlib.contextmanager
def _storage_errors(path: str):
  """Turns file-system failures of a remote path into StorageError (FileNotFoundError
  passes through unchanged: callers decide what a missing file means)."""
  try:
    yield
  except StorageError:
    raise
  except FileNotFoundError as e:
    text = str(e).splitlines()[0] if str(e) else "not found"
    raise MissingPathError(f"{path}: not found ({text[:200]})") from e
  except (IsADirectoryError, NotADirectoryError):
    raise
  except (OSError, ValueError, RuntimeError) as e:
    raise _wrap(path, e) from e
  except Exception as e:  # pylint: disable=broad-except  (botocore/google-auth errors)
    if type(e).__module__.split(".")[0] in ("botocore", "google", "aiohttp", "gcsfs", "s3fs",
                                          "requests", "urllib3"):
      raise _wrap(path, e) from e
    raise


def join(base: str, *parts: str) -> str:
  """``os.path.join`` for local paths, ``/``-joined for URLs."""
  if is_remote(base):
    return posixpath.join(str(base), *parts)
  return os.path.join(base, *parts)


def dirname(path: str) -> str:
  return posixpath.dirname(str(path).rstrip("/")) if is_remote(path) else os.path.dirname(path)


def basename(path: str) -> str:
  return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else os.path.basename(path)


def open_file(path: str, mode: str = "rb", **kwargs: Any) -> IO:
  """Opens a file (local or remote) like ``open``; binary modes for remote files
  read and write whole objects (writes become visible on close)."""
  if not is_remote(path):
    return open(_local(path), mode, **kwargs)  # pylint: disable=unspecified-encoding
  fs, p = _fs(path)
  with _storage_errors(path):
    return fs.open(p, mode, **kwargs)


def exists(path: str) -> bool:
  if not is_remote(path):
    return os.path.exists(_local(path))
  fs, p = _fs(path)
  with _storage_errors(path):
    return bool(fs.exists(p))


def isdir(path: str) -> bool:
  if not is_remote(path):
    return os.path.isdir(_local(path))
  fs, p = _fs(path)
  with _storage_errors(path):
    return bool(fs.isdir(p))


def isfile(path: str) -> bool:
  if not is_remote(path):
    return os.path.isfile(_local(path))
  fs, p = _fs(path)
  with _storage_errors(path):
    return bool(fs.isfile(p))


def size(path: str) -> int:
  if not is_remote(path):
    return os.path.getsize(_local(path))
  fs, p = _fs(path)
  with _storage_errors(path):
    return int(fs.size(p))


def makedirs(path: str, exist_ok: bool = True) -> None:
  """Creates a directory and its parents (object stores have no directories: a no-op
  there, apart from checking that the bucket is reachable)."""
  if not is_remote(path):
    os.makedirs(_local(path), exist_ok=exist_ok)
    return
  fs, p = _fs(path)
  with _storage_errors(path):
    fs.makedirs(p, exist_ok=True)


def listdir(path: str) -> list[str]:
  """Sorted names (not paths) in a directory; FileNotFoundError if there is none."""
  if not is_remote(path):
    return sorted(os.listdir(_local(path)))
  fs, p = _fs(path)
  with _storage_errors(path):
    entries = fs.ls(p, detail=False)
  base = p.rstrip("/")
  return sorted({posixpath.basename(e.rstrip("/")) for e in entries
                 if e.rstrip("/") != base})


def glob(pattern: str, files_only: bool = False) -> list[str]:
  """Sorted paths matching ``pattern`` (``*``, ``?``, ``[...]``, ``**``); remote
  results keep their ``scheme://``. ``files_only`` leaves out directories."""
  if not is_remote(pattern):
    found = glob_lib.glob(_local(pattern), recursive=True)
    return sorted(f for f in found if not files_only or os.path.isfile(f))
  fs, p = _fs(pattern)
  with _storage_errors(pattern):
    if _GLOB_MAGIC.search(p):
      matches = fs.glob(p, detail=True)
    else:
      matches = {p: fs.info(p)} if fs.exists(p) else {}
  prefix = scheme(pattern) + "://"
  return sorted(f if f.startswith(prefix) else prefix + f.lstrip("/")
                for f, meta in matches.items() if not files_only or meta.get("type") == "file")


def info(path: str) -> dict[str, Any]:
  """The file's metadata: ``size`` and, for a remote object, the store's own fields
  (``etag``, ``generation``, ``updated``, ...); ``mtime_ns`` for a local file."""
  if not is_remote(path):
    st = os.stat(_local(path))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "type": "file"}
  fs, p = _fs(path)
  with _storage_errors(path):
    return dict(fs.info(p))


def walk_files(root: str) -> list[str]:
  """Every file under ``root`` (full paths, sorted); remote paths keep their scheme."""
  if not is_remote(root):
    out = []
    for dirpath, _, filenames in os.walk(_local(root)):
      out.extend(os.path.join(dirpath, f) for f in filenames)
    return sorted(out)
  fs, p = _fs(root)
  with _storage_errors(root):
    found = fs.find(p)
  prefix = scheme(root) + "://"
  return sorted(f if f.startswith(prefix) else prefix + f.lstrip("/") for f in found)


def refresh(path: str) -> None:
  """Forgets the file system's cached listings under ``path`` (remote paths only), so the
  next ``exists`` / ``isdir`` / ``listdir`` sees what another writer (TensorStore for
  Orbax, another process) changed since (the whole cache of that file system: fsspec
  drops a path's parents but not its children)."""
  if not is_remote(path):
    return
  fs, _ = _fs(path)
  fs.invalidate_cache()


def remove(path: str) -> None:
  if not is_remote(path):
    os.remove(_local(path))
    return
  fs, p = _fs(path)
  with _storage_errors(path):
    fs.rm(p)


def rmtree(path: str) -> None:
  if not is_remote(path):
    shutil.rmtree(_local(path), ignore_errors=True)
    return
  fs, p = _fs(path)
  with _storage_errors(path):
    if fs.exists(p):
      fs.rm(p, recursive=True)


def replace(src: str, dst: str) -> None:
  """Moves ``src`` over ``dst``: atomic for local paths (``os.replace``); on object
  storage a copy then a delete (each object write is itself atomic)."""
  if not is_remote(dst):
    os.replace(_local(src), _local(dst))
    return
  fs, p = _fs(src)
  _, q = _fs(dst)
  with _storage_errors(dst):
    fs.copy(p, q)  # not fs.mv: GCS's moveTo is new, not on every endpoint or emulator
    fs.rm(p)


def write_bytes(path: str, data: bytes) -> None:
  """Writes a whole file so that readers see the old or the new contents, never a part:
  a temporary file and ``os.replace`` locally, one object upload remotely."""
  if is_remote(path):
    with open_file(path, "wb") as f:
      f.write(data)
    return
  local = _local(path)
  tmp = f"{local}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, local)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  """``write_bytes`` of UTF-8 text."""
  write_bytes(path, text.encode("utf-8"))


def read_bytes(path: str) -> bytes:
  with open_file(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


def local_path(path: str) -> str:
  """The local file-system path of a non-remote path (``~`` expanded); ValueError for a URL."""
  if is_remote(path):
    raise ValueError(f"{path} is not a local path")
  return _local(path)


def iter_lines(path: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
  """The lines of a (local or remote) file, newline excluded."""
  with open_file(path, "rb") as f:
    pending = b""
    while chunk := f.read(chunk_bytes):
      lines = (pending + chunk).split(b"\n")
      pending = lines.pop()
      yield from lines
    if pending:
      yield pending


__all__ = ["MissingPathError", "StorageError", "basename", "dirname", "exists", "glob", "info",
           "is_remote", "isdir", "isfile", "iter_lines", "join", "listdir", "local_path",
           "makedirs", "open_file",
           "read_bytes", "read_text", "refresh", "remove", "replace", "rmtree", "scheme", "size",
           "walk_files", "write_bytes", "write_text"]
