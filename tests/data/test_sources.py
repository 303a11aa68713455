"""Tests for proxyjax.data.sources."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import pickle
import sys
import sysconfig

import pytest

from proxyjax.data import sources
from proxyjax.errors import ConfigError

STDLIB = sources.SourceSpec("stdlib", "", 1.0)


@pytest.fixture(scope="module")
def stdlib_splits():
  return {split: sources.make_source(STDLIB, split=split)
          for split in ("train", "validation", "all")}


def _docs(source):
  return [source[i] for i in range(len(source))]


def _write_arrayrecord(path, records):
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=g-import-not-at-top
  writer = ArrayRecordWriter(str(path), "group_size:1")
  for record in records:
    writer.write(record)
  writer.close()


# --- spec parsing -----------------------------------------------------------


def test_parse_sources_entries_and_weights():
  specs = sources.parse_sources(
      " stdlib ; files:/src/repo@2.5;jsonl:/d/*.jsonl @ 0.5 ;;tfds:foo/bar")
  assert specs == [
      sources.SourceSpec("stdlib", "", 1.0),
      sources.SourceSpec("files", "/src/repo", 2.5),
      sources.SourceSpec("jsonl", "/d/*.jsonl", 0.5),
      sources.SourceSpec("tfds", "foo/bar", 1.0),
  ]
  with pytest.raises(dataclasses.FrozenInstanceError):
    specs[0].weight = 3.0  # pytype: disable=attribute-error


@pytest.mark.parametrize("spec, words", [
    ("", "empty"),
    (" ; ", "empty"),
    ("bogus:/x", "unknown source kind"),
    ("files", "needs a location"),
    ("jsonl:", "needs a location"),
    ("stdlib:/usr/lib", "no location"),
    ("stdlib@0", "not a positive number"),
    ("stdlib@-1", "not a positive number"),
    ("stdlib@abc", "not a positive number"),
    ("stdlib@nan", "not a positive number"),
    ("stdlib@inf", "not a positive number"),
])
def test_parse_sources_errors(spec, words):
  with pytest.raises(ConfigError, match=words) as info:
    sources.parse_sources(spec)
  assert info.value.field == "data.sources"
  assert "data.sources" in str(info.value)


def test_make_source_errors(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    sources.make_source(sources.SourceSpec("files", str(tmp_path / "nope"), 1),
                        split="all")
  with pytest.raises(ConfigError, match="matched no files") as info:
    sources.make_source(
        sources.SourceSpec("jsonl", str(tmp_path / "*.jsonl"), 1), split="all")
  assert info.value.field == "data.sources"
  with pytest.raises(ConfigError, match="matched no files"):
    sources.make_source(
        sources.SourceSpec("arrayrecord", str(tmp_path / "*.ar"), 1),
        split="all")
  (tmp_path / "a.bin").write_bytes(b"x")
  with pytest.raises(ConfigError, match="no files"):
    sources.make_source(sources.SourceSpec("files", str(tmp_path), 1),
                        split="all")
  with pytest.raises(ConfigError, match="validation_fraction"):
    sources.make_source(STDLIB, split="train", validation_fraction=1.0)
  with pytest.raises(ConfigError, match="validation_fraction"):
    sources.make_source(STDLIB, split="train", validation_fraction=-0.1)
  with pytest.raises(ValueError, match="split"):
    sources.make_source(STDLIB, split="test")


# --- stdlib -----------------------------------------------------------------


def test_stdlib_contents(stdlib_splits):
  src = stdlib_splits["all"]
  assert src.name == "stdlib"
  assert len(src) > 500
  keys = list(src.relpaths)
  assert keys == sorted(keys)
  assert all(k.endswith(".py") for k in keys)
  assert not any("site-packages" in k or "dist-packages" in k for k in keys)
  i = keys.index("json/__init__.py")
  doc = src[i]
  root = sysconfig.get_paths()["stdlib"]
  with open(os.path.join(root, "json", "__init__.py"), "rb") as f:
    assert doc == {"text": f.read(), "source": "stdlib",
                   "key": "json/__init__.py", "error": None}
  assert "stdlib" in repr(src)


def test_stdlib_split_disjoint_complete_stable(stdlib_splits):
  train = set(stdlib_splits["train"].relpaths)
  valid = set(stdlib_splits["validation"].relpaths)
  everything = set(stdlib_splits["all"].relpaths)
  assert valid and train
  assert not train & valid
  assert train | valid == everything
  again = sources.make_source(STDLIB, split="validation")
  assert again.relpaths == stdlib_splits["validation"].relpaths
  for rel in valid:
    assert sources.split_value(rel) < 0.01


def test_stdlib_validation_fraction_roughly_right():
  n_all = len(sources.make_source(STDLIB, split="all"))
  n_valid = len(sources.make_source(STDLIB, split="validation",
                                    validation_fraction=0.2))
  assert 0.15 < n_valid / n_all < 0.25
  assert len(sources.make_source(STDLIB, split="validation",
                                 validation_fraction=0.0)) == 0


def test_stdlib_source_pickles(stdlib_splits):
  src = stdlib_splits["validation"]
  clone = pickle.loads(pickle.dumps(src))
  assert len(clone) == len(src)
  assert clone[0] == src[0] and clone[-1] == src[-1]
  assert len(pickle.dumps(stdlib_splits["all"])) < 200_000


# --- file trees -------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
  root = tmp_path / "repo"
  (root / "pkg" / "sub").mkdir(parents=True)
  (root / "pkg" / "a.py").write_bytes(b"print('a')\n")
  (root / "pkg" / "sub" / "b.py").write_bytes(b"x = 1\n")
  (root / "empty.txt").write_bytes(b"")
  (root / "blob.c").write_bytes(b"int x;\0\1\2")
  (root / "latin.md").write_bytes(b"caf\xe9 \xff\xfe\n")
  (root / "gone.rs").write_bytes(b"fn main() {}\n")
  (root / "image.png").write_bytes(b"\x89PNG")  # suffix not selected
  os.symlink(root / "pkg" / "a.py", root / "link.py")  # symlinks skipped
  return root


def test_file_tree_documents(tree):
  src = sources.make_source(sources.SourceSpec("files", str(tree), 1),
                            split="all")
  assert src.name == f"files:{tree}"
  by_key = {d["key"]: d for d in _docs(src)}
  assert list(by_key) == ["blob.c", "empty.txt", "gone.rs", "latin.md",
                          "pkg/a.py", "pkg/sub/b.py"]
  assert by_key["empty.txt"] == {"text": b"", "source": src.name,
                                 "key": "empty.txt", "error": None}
  assert by_key["blob.c"]["error"] == "binary"
  assert by_key["blob.c"]["text"] == b""
  assert by_key["latin.md"]["text"] == b"caf\xe9 \xff\xfe\n"
  assert by_key["latin.md"]["error"] is None
  assert by_key["pkg/sub/b.py"]["text"] == b"x = 1\n"
  (tree / "gone.rs").unlink()
  gone = src[src.relpaths.index("gone.rs")]
  assert gone == {"text": b"", "source": src.name, "key": "gone.rs",
                  "error": "unreadable"}


def test_file_tree_binary_probe_limit(tmp_path):
  (tmp_path / "late.txt").write_bytes(b"a" * 8192 + b"\0")
  (tmp_path / "early.txt").write_bytes(b"a" * 8191 + b"\0")
  src = sources.make_source(sources.SourceSpec("files", str(tmp_path), 1),
                            split="all")
  docs = {d["key"]: d for d in _docs(src)}
  assert docs["early.txt"]["error"] == "binary"
  assert docs["late.txt"]["error"] is None
  assert docs["late.txt"]["text"] == b"a" * 8192 + b"\0"


def test_file_tree_glob(tree):
  src = sources.make_source(
      sources.SourceSpec("files", f"{tree}/**/*.py", 1), split="all")
  assert src.relpaths == ("pkg/a.py", "pkg/sub/b.py")
  src = sources.make_source(
      sources.SourceSpec("files", f"{tree}/pkg/*.py", 1), split="all")
  assert src.relpaths == ("a.py",)
  with pytest.raises(ConfigError, match="no files"):
    sources.make_source(sources.SourceSpec("files", f"{tree}/**/*.java", 1),
                        split="all")


def test_file_tree_split_by_relpath_hash(tmp_path):
  for i in range(200):
    (tmp_path / f"f{i:03d}.py").write_bytes(b"%d\n" % i)
  spec = sources.SourceSpec("files", str(tmp_path), 1)
  valid = sources.make_source(spec, split="validation", validation_fraction=0.3)
  train = sources.make_source(spec, split="train", validation_fraction=0.3)
  expected = [f"f{i:03d}.py" for i in range(200)
              if sources.split_value(f"f{i:03d}.py") < 0.3]
  assert list(valid.relpaths) == expected
  assert len(train) + len(valid) == 200
  assert not set(train.relpaths) & set(valid.relpaths)
  assert 30 < len(valid) < 90


def test_split_value_matches_definition():
  key = "json/__init__.py"
  digest = hashlib.sha256(key.encode()).digest()
  assert sources.split_value(key) == int.from_bytes(digest[:8], "big") / 2**64


# --- JSONL ------------------------------------------------------------------


def test_jsonl_documents(tmp_path):
  lines = [
      json.dumps({"text": "hello"}),
      "",
      "   \t",
      json.dumps({"content": "from content", "text_other": 1}),
      "{not json",
      json.dumps({"title": "no text"}),
      json.dumps([1, 2]),
      json.dumps({"text": 5}),
      json.dumps({"text": "caf\u00e9 \U0001f600", "content": "ignored"}),
      json.dumps({"text": ""}),
  ]
  path = tmp_path / "a.jsonl"
  path.write_bytes(("\n".join(lines) + "\n\n").encode())
  (tmp_path / "b.jsonl").write_bytes(b'\r\n{"text": "last"}')  # no final \n
  src = sources.make_source(
      sources.SourceSpec("jsonl", str(tmp_path / "*.jsonl"), 1), split="all")
  docs = _docs(src)
  got = [(d["key"], d["text"], d["error"]) for d in docs]
  assert got == [
      ("a.jsonl:1", b"hello", None),
      ("a.jsonl:4", b"from content", None),
      ("a.jsonl:5", b"", "malformed_json"),
      ("a.jsonl:6", b"", "missing_text"),
      ("a.jsonl:7", b"", "malformed_json"),
      ("a.jsonl:8", b"", "missing_text"),
      ("a.jsonl:9", "caf\u00e9 \U0001f600".encode(), None),
      ("a.jsonl:10", b"", None),
      ("b.jsonl:2", b"last", None),
  ]
  assert all(d["source"] == f"jsonl:{tmp_path}/*.jsonl" for d in docs)
  assert src._offsets.dtype.name == "int64"  # pylint: disable=protected-access


def test_jsonl_explicit_text_field_and_raw_bytes(tmp_path):
  path = tmp_path / "a.jsonl"
  path.write_bytes(b'{"body": "x\\u00e9", "text": "no"}\n'
                   b'{"text": "only text"}\n'
                   b'{"body": "raw \xff byte"}\n')
  src = sources.JsonlSource(str(path), text_field="body")
  assert [d["text"] for d in _docs(src)] == [b"x\xc3\xa9", b"", b"raw \xff byte"]
  assert [d["error"] for d in _docs(src)] == [None, "missing_text", None]


def test_jsonl_chunk_boundaries(tmp_path, monkeypatch):
  monkeypatch.setattr(sources.jsonl, "_INDEX_CHUNK_BYTES", 7)  # the JSONL backend module
  texts = [f"doc {i}" * (i % 4) for i in range(40)]
  body = "".join(json.dumps({"text": t}) + ("\n  \n" if i % 3 else "\n")
                 for i, t in enumerate(texts))
  path = tmp_path / "c.jsonl"
  path.write_text(body + "   ")
  src = sources.JsonlSource(str(path))
  assert [d["text"].decode() for d in _docs(src)] == texts
  assert all(d["error"] is None for d in _docs(src))


def test_jsonl_gz_read_and_bz2_rejected(tmp_path, monkeypatch):
  monkeypatch.setenv("PROXYJAX_CACHE_DIR", str(tmp_path / "cache"))
  path = tmp_path / "a.jsonl.gz"
  with gzip.open(path, "wt") as f:
    f.write('{"text": "x"}\n')
  src = sources.make_source(sources.SourceSpec("jsonl", str(path), 1), split="all")
  assert [(d["text"], d["key"]) for d in _docs(src)] == [(b"x", "a.jsonl.gz:1")]
  (tmp_path / "b.jsonl.bz2").write_bytes(b"BZh9")
  with pytest.raises(ConfigError, match="bz2, which is not supported"):
    sources.make_source(sources.SourceSpec("jsonl", str(tmp_path / "*"), 1),
                        split="all")


def test_jsonl_split_and_pickle(tmp_path):
  path = tmp_path / "d.jsonl"
  path.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n"
                          for i in range(300)))
  spec = sources.SourceSpec("jsonl", str(path), 1)
  train = sources.make_source(spec, split="train", validation_fraction=0.2)
  valid = sources.make_source(spec, split="validation", validation_fraction=0.2)
  expected_valid = [f"d.jsonl:{n}" for n in range(1, 301)
                    if sources.split_value(f"d.jsonl:{n}") < 0.2]
  assert [d["key"] for d in _docs(valid)] == expected_valid
  texts = {d["text"] for d in _docs(train)} | {d["text"] for d in _docs(valid)}
  assert len(train) + len(valid) == 300 and len(texts) == 300
  clone = pickle.loads(pickle.dumps(train))
  assert _docs(clone) == _docs(train)
  path.unlink()
  assert train[0]["error"] == "unreadable"


# --- ArrayRecord ------------------------------------------------------------


def test_arrayrecord_json(tmp_path):
  _write_arrayrecord(tmp_path / "s-00000.array_record", [
      json.dumps({"text": "one"}).encode(),
      json.dumps({"content": "two"}).encode(),
  ])
  _write_arrayrecord(tmp_path / "s-00001.array_record", [
      b"{broken",
      json.dumps({"other": 1}).encode(),
      json.dumps({"text": "five"}).encode(),
  ])
  src = sources.make_source(
      sources.SourceSpec("arrayrecord", str(tmp_path / "s-*.array_record"), 1),
      split="all")
  got = [(d["key"], d["text"], d["error"]) for d in _docs(src)]
  assert got == [
      ("s-00000.array_record:0", b"one", None),
      ("s-00000.array_record:1", b"two", None),
      ("s-00001.array_record:0", b"", "malformed_json"),
      ("s-00001.array_record:1", b"", "missing_text"),
      ("s-00001.array_record:2", b"five", None),
  ]
  clone = pickle.loads(pickle.dumps(src))
  assert _docs(clone) == _docs(src)


def test_arrayrecord_bytes_and_split(tmp_path):
  records = [b"\x00\xffraw %d" % i for i in range(100)]
  _write_arrayrecord(tmp_path / "r.array_record", records)
  spec = sources.SourceSpec("arrayrecord", str(tmp_path / "r.array_record"), 1)
  src = sources.make_source(spec, split="all", record_format="bytes")
  assert [d["text"] for d in _docs(src)] == records
  assert all(d["error"] is None for d in _docs(src))
  valid = sources.make_source(spec, split="validation", record_format="bytes",
                              validation_fraction=0.25)
  train = sources.make_source(spec, split="train", record_format="bytes",
                              validation_fraction=0.25)
  expected = [records[i] for i in range(100)
              if sources.split_value(f"r.array_record:{i}") < 0.25]
  assert [d["text"] for d in _docs(valid)] == expected
  assert len(valid) + len(train) == 100
  assert {d["text"] for d in _docs(train)} == set(records) - set(expected)
  clone = pickle.loads(pickle.dumps(valid))
  assert _docs(clone) == _docs(valid)
  with pytest.raises(ConfigError, match="record_format"):
    sources.make_source(spec, split="all", record_format="proto")


# --- lists and tfds -----------------------------------------------------------


def test_list_source():
  src = sources.ListSource([b"a", b"", b"\xff"])
  assert len(src) == 3
  assert src[2] == {"text": b"\xff", "source": "list", "key": "2",
                    "error": None}
  assert src[-1] == src[2]
  with pytest.raises(IndexError):
    src[3]  # pylint: disable=pointless-statement
  assert pickle.loads(pickle.dumps(src))[0]["text"] == b"a"


def test_tfds_missing_gives_config_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(ConfigError, match=r"pip install proxyjax\[tfds\]") as e:
    sources.make_source(sources.SourceSpec("tfds", "foo/bar", 1), split="train")
  assert e.value.field == "data.sources"


def test_make_sources_weights(tree, tmp_path):
  pairs = sources.make_sources(f"files:{tree}@3;stdlib", split="validation",
                               validation_fraction=0.5)
  assert [w for _, w in pairs] == [3.0, 1.0]
  assert [s.name for s, _ in pairs] == [f"files:{tree}", "stdlib"]
