"""The path layer (proxyjax.paths) on local paths and on real GCS / S3 emulators."""

import os

import pytest

from proxyjax import paths


def _roundtrip(root: str) -> None:
  p = paths.join(root, "a/b.txt")
  paths.makedirs(paths.dirname(p))
  paths.write_text(p, "hello")
  assert paths.read_text(p) == "hello"
  assert paths.exists(p) and paths.isfile(p) and not paths.isdir(p)
  assert paths.size(p) == 5
  assert paths.glob(paths.join(root, "a/*.txt")) == [p]
  assert paths.glob(paths.join(root, "**/*.txt")) == [p]
  assert paths.listdir(paths.join(root, "a")) == ["b.txt"]
  with paths.open_file(p, "rb") as f:
    f.seek(1)
    assert f.read(2) == b"el"
  paths.write_text(p, "second")  # overwrite
  assert paths.read_text(p) == "second"
  q = paths.join(root, "a/c.txt")
  paths.replace(p, q)
  assert not paths.exists(p) and paths.read_text(q) == "second"
  assert list(paths.iter_lines(q)) == [b"second"]
  paths.remove(q)
  assert not paths.exists(q)


def test_local_roundtrip(tmp_path):
  _roundtrip(str(tmp_path))
  assert not paths.is_remote(str(tmp_path)) and paths.scheme("gs://b/x") == "gs"


def test_object_store_roundtrip(object_store):
  root = object_store.new_bucket()
  assert paths.is_remote(root)
  _roundtrip(root)


def test_missing_bucket_is_one_clear_error(object_store):
  missing = f"{object_store.scheme}://no-such-bucket-{os.getpid()}/a.txt"
  with pytest.raises((paths.StorageError, FileNotFoundError)) as e:
    paths.read_text(missing)
  assert "no-such-bucket" in str(e.value)
