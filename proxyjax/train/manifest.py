"""Checksum manifests of checkpoint steps: ``<step>/checksums.json``, the size and sha256
of every file of a committed step, written just before Orbax commits it and verified
before it is read (``proxyjax.train.checkpoint``). Local and object-storage steps alike.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os

from proxyjax import paths
from proxyjax.errors import first_line

MANIFEST = "checksums.json"
_MANIFEST_FORMAT = 1
# Written by Orbax into the step directory after the manifest (commit timestamp, marker).
_UNVERIFIED_TOP_LEVEL = ("_CHECKPOINT_METADATA", "commit_success.txt", MANIFEST)
_HASH_THREADS = min(8, os.cpu_count() or 1)


def _step_files(step_dir: str) -> list[str]:
  """Relative paths (``/``-separated on object storage) of the regular files of a step
  that the manifest covers."""
  out = []
  if paths.is_remote(step_dir):
    paths.refresh(step_dir)
    prefix = step_dir.rstrip("/") + "/"
    rels = sorted(f[len(prefix):] for f in paths.walk_files(step_dir) if f.startswith(prefix))
  else:
    rels = []
    for root, dirs, files in os.walk(step_dir):
      dirs.sort()
      rel_root = os.path.relpath(root, step_dir)
      rels += [name if rel_root == "." else os.path.join(rel_root, name)
               for name in sorted(files)]
  for rel in rels:
    name = rel.replace(os.sep, "/").rsplit("/", 1)[-1]
    if rel in _UNVERIFIED_TOP_LEVEL or name.startswith(f".{MANIFEST}"):
      continue
    out.append(rel)
  return out


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with paths.open_file(path, "rb") as f:
    while chunk := f.read(1 << 22):
      h.update(chunk)
  return h.hexdigest()


def _hash_all(step_dir: str, rels: list[str]) -> list[str]:
  with concurrent.futures.ThreadPoolExecutor(_HASH_THREADS) as pool:  # hashlib drops the GIL
    return list(pool.map(lambda r: _sha256(paths.join(step_dir, r)), rels))


def write_manifest(step_dir: str) -> None:
  """``step_dir/checksums.json``: size and sha256 of every file (written atomically)."""
  rels = _step_files(step_dir)
  digests = _hash_all(step_dir, rels)
  files = {r: {"size": paths.size(paths.join(step_dir, r)), "sha256": d}
           for r, d in zip(rels, digests)}
  if paths.is_remote(step_dir):  # one object upload: atomic
    paths.write_text(paths.join(step_dir, MANIFEST), json.dumps(
        {"format": _MANIFEST_FORMAT, "algorithm": "sha256", "files": files}, indent=0,
        sort_keys=True))
    return
  tmp = os.path.join(step_dir, f".{MANIFEST}.tmp")
  with open(tmp, "w") as f:
    json.dump({"format": _MANIFEST_FORMAT, "algorithm": "sha256", "files": files}, f,
              indent=0, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(step_dir, MANIFEST))


def verify_manifest(step_dir: str) -> str | None:
  """None if every file listed in the manifest is present with its size and checksum
  (or the step has no manifest: saved before manifests existed), else what is wrong."""
  paths.refresh(step_dir)  # object storage: files TensorStore wrote since a listing
  path = paths.join(step_dir, MANIFEST)
  if not paths.exists(path):
    return None
  try:
    files = json.loads(paths.read_text(path))["files"]
    assert isinstance(files, dict)
  except Exception as e:  # pylint: disable=broad-except
    return f"its checksum manifest is unreadable ({first_line(e, 120)})"
  bad = []
  present = []
  for rel, want in sorted(files.items()):
    full = paths.join(step_dir, rel)
    if not paths.isfile(full):
      bad.append(f"{rel} is missing")
    elif paths.size(full) != want["size"]:
      bad.append(f"{rel} has {paths.size(full)} bytes, not {want['size']}")
    else:
      present.append(rel)
  for rel, digest in zip(present, _hash_all(step_dir, present)):
    if digest != files[rel]["sha256"]:
      bad.append(f"{rel} fails its sha256 checksum")
  if not bad:
    return None
  more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
  return f"{bad[0]}{more}"
