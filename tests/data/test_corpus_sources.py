"""Corpus sources: parquet:, compressed jsonl:, hf: (save_to_disk and Hub
snapshots), the strided split, every file kind on gs:// and s3://, and resuming
the pipeline over them after a SIGKILL."""

import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from helpers import data_config

from proxyjax import paths
from proxyjax.data import pipeline, sources
from proxyjax.data.sources import hf, spec
from proxyjax.errors import ConfigError

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
  """The local cache of decompressed / copied files of each test (``decompressed/``
  under ``$PROXYJAX_CACHE_DIR``), not ~/.cache."""
  directory = tmp_path / "proxyjax-cache"
  monkeypatch.setenv("PROXYJAX_CACHE_DIR", str(directory))
  return directory / "decompressed"


def _docs(src):
  return [src[i] for i in range(len(src))]


def _make(kind, location, split="all", **kw):
  return sources.make_source(sources.SourceSpec(kind, location), split=split, **kw)


def _check_split(kind, location, expected_keys, fraction=0.2, **kw):
  """train and validation partition ``all`` (the expected keys) near ``fraction``."""
  all_keys = [d["key"] for d in _docs(_make(kind, location, "all", **kw))]
  assert sorted(all_keys) == sorted(expected_keys)
  train = [d["key"] for d in _docs(_make(kind, location, "train",
                                         validation_fraction=fraction, **kw))]
  val = [d["key"] for d in _docs(_make(kind, location, "validation",
                                       validation_fraction=fraction, **kw))]
  assert not set(train) & set(val)
  assert sorted(train + val) == sorted(all_keys)
  return train, val


# --- the strided split -----------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.37, 0.5, 0.9])
def test_strided_split_partitions_every_file(fraction):
  rows = [0, 1, 2, 7, 100, 1001]
  names = [f"f{i}.parquet" for i in range(len(rows))]
  train = spec.StridedSplit(names, rows, "train", fraction)
  val = spec.StridedSplit(names, rows, "validation", fraction)
  every = spec.StridedSplit(names, rows, "all", fraction)
  got_t = [train.locate(k) for k in range(len(train))]
  got_v = [val.locate(k) for k in range(len(val))]
  assert got_t == sorted(got_t) and got_v == sorted(got_v)
  assert sorted(got_t + got_v) == [every.locate(k) for k in range(len(every))]
  assert len(every) == sum(rows)
  for file_id, row in got_v:
    assert spec.strided_is_validation(row, fraction, spec.split_value(names[file_id]))
  # Each file: floor(n*f + o) validation rows, within one row of the fraction.
  assert np.all(np.abs(val.counts() - np.array(rows) * fraction) <= 1)
  assert np.all(val.counts() == [sum(1 for r in range(n)
                                     if spec.strided_is_validation(r, fraction,
                                                                   spec.split_value(name)))
                                 for name, n in zip(names, rows)])


def test_strided_split_is_o_files():
  """A billion rows: built from counts alone, any row located by binary search."""
  split = spec.StridedSplit(["a", "b"], [10**9, 3 * 10**8], "validation", 0.01)
  assert abs(len(split) - 1.3 * 10**7) <= 2
  file_id, row = split.locate(len(split) - 1)
  assert file_id == 1 and row >= 3 * 10**8 - 101
  assert len(pickle.dumps(split)) < 2000


# --- parquet -----------------------------------------------------------------------------


def _parquet_corpus(root):
  """Three Parquet files with several row groups (+ texts by key)."""
  os.makedirs(root / "sub", exist_ok=True)
  texts = {}
  for name, n, group in (("a.parquet", 23, 5), ("b.parquet", 40, 7), ("sub/c.parquet", 9, 4)):
    rows = [f"{name} row {i} ünï" for i in range(n)]
    pq.write_table(pa.table({"text": rows, "n": list(range(n))}), root / name,
                   row_group_size=group)
    texts.update({f"{name}:{i}": r.encode() for i, r in enumerate(rows)})
  return texts


def test_parquet_documents_keys_and_split(tmp_path):
  texts = _parquet_corpus(tmp_path)
  src = _make("parquet", f"{tmp_path}/**/*.parquet")
  assert pq.ParquetFile(tmp_path / "b.parquet").metadata.num_row_groups == 6
  assert {d["key"]: d["text"] for d in _docs(src)} == texts
  assert all(d["error"] is None and d["source"] == f"parquet:{tmp_path}/**/*.parquet"
             for d in _docs(src))
  # Random order reads the same (row-group cache of 2), and after pickling.
  order = np.random.default_rng(0).permutation(len(src))
  clone = pickle.loads(pickle.dumps(src))
  assert [clone[int(i)]["key"] for i in order] == [src[int(i)]["key"] for i in order]
  assert len(pickle.dumps(src)) < 4000
  train, val = _check_split("parquet", f"{tmp_path}/**/*.parquet", list(texts), 0.2)
  assert abs(len(val) - 0.2 * len(texts)) <= 3  # at most one row off per file


def test_parquet_start_up_reads_footers_and_reads_each_group_once(tmp_path, monkeypatch):
  from proxyjax.data.sources import parquet  # pylint: disable=import-outside-toplevel
  _parquet_corpus(tmp_path)
  calls = []

  def no_data(*args, **kwargs):
    raise AssertionError("read data at start-up")

  with monkeypatch.context() as m:
    m.setattr(pq.ParquetFile, "read_row_group", no_data)
    m.setattr(pq.ParquetFile, "read", no_data)
    src = _make("parquet", f"{tmp_path}/**/*.parquet", "train", validation_fraction=0.1)
  assert len(src) > 0
  original = parquet.ParquetTableFile.read_group
  monkeypatch.setattr(parquet.ParquetTableFile, "read_group",
                      lambda self, handle, group: calls.append((self.relname, group))
                      or original(self, handle, group))
  assert all(d["error"] is None for d in _docs(src))
  groups = [(f, g) for f, n in (("a.parquet", 5), ("b.parquet", 6), ("sub/c.parquet", 3))
            for g in range(n)]
  assert calls == groups  # in order: each row group decoded once


def test_parquet_content_column_and_text_field(tmp_path):
  pq.write_table(pa.table({"content": ["x", None, "z"]}), tmp_path / "c.parquet")
  docs = _docs(_make("parquet", str(tmp_path / "c.parquet")))
  assert [(d["text"], d["error"]) for d in docs] == [(b"x", None), (b"", "missing_text"),
                                                     (b"z", None)]
  pq.write_table(pa.table({"body": [b"raw\xff"]}), tmp_path / "d.parquet")
  docs = _docs(_make("parquet", str(tmp_path / "d.parquet"), text_field="body"))
  assert docs[0]["text"] == b"raw\xff"


def test_parquet_bad_files_are_one_config_error(tmp_path):
  pq.write_table(pa.table({"title": ["t"], "n": [1]}), tmp_path / "no_text.parquet")
  with pytest.raises(ConfigError, match=r"no_text.parquet has no 'text' or 'content' "
                     r"column; its columns: title \(string\), n \(int64\)") as e:
    _make("parquet", str(tmp_path / "no_text.parquet"))
  assert e.value.field == "data.sources"
  (tmp_path / "fake.parquet").write_bytes(b"not parquet at all\n" * 10)
  with pytest.raises(ConfigError, match="fake.parquet is not a readable Parquet file"):
    _make("parquet", str(tmp_path / "fake.parquet"))
  pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
  with pytest.raises(ConfigError, match="holds int64, not strings"):
    _make("parquet", str(tmp_path / "ints.parquet"))


def test_parquet_vanished_file_gives_unreadable(tmp_path):
  _parquet_corpus(tmp_path)
  src = _make("parquet", f"{tmp_path}/*.parquet")
  os.remove(tmp_path / "a.parquet")
  docs = _docs(src)
  assert {d["error"] for d in docs if d["key"].startswith("a.parquet")} == {"unreadable"}
  assert all(d["error"] is None for d in docs if d["key"].startswith("b.parquet"))


# --- compressed JSON lines ------------------------------------------------------------------


def _jsonl_body(prefix, n):
  return "".join(json.dumps({"text": f"{prefix} {i}"}) + ("\n\n" if i % 4 == 0 else "\n")
                 for i in range(n)).encode()


def _compressed_corpus(root):
  """a.jsonl.gz (two gzip members), b.jsonl.zst (two frames), c.gz; texts by key."""
  body_a, body_b, body_c = _jsonl_body("a", 30), _jsonl_body("b", 25), _jsonl_body("c", 5)
  half = len(body_a) // 2
  (root / "a.jsonl.gz").write_bytes(gzip.compress(body_a[:half]) + gzip.compress(body_a[half:]))
  z = zstandard.ZstdCompressor()
  (root / "b.jsonl.zst").write_bytes(z.compress(body_b[:100]) + z.compress(body_b[100:]))
  (root / "c.gz").write_bytes(gzip.compress(body_c))
  texts = {}
  for name, body in (("a.jsonl.gz", body_a), ("b.jsonl.zst", body_b), ("c.gz", body_c)):
    for lineno, line in enumerate(body.split(b"\n"), 1):
      if line.strip():
        texts[f"{name}:{lineno}"] = json.loads(line)["text"].encode()
  return texts


def test_compressed_jsonl_documents_split_and_cache(tmp_path, cache_dir):
  texts = _compressed_corpus(tmp_path)
  src = _make("jsonl", f"{tmp_path}/*")
  assert {d["key"]: d["text"] for d in _docs(src)} == texts
  cached = sorted(os.listdir(cache_dir))
  assert len(cached) == 3 and all(c.endswith(".jsonl") for c in cached)  # no temporaries
  stamps = [os.stat(cache_dir / c).st_mtime_ns for c in cached]
  clone = pickle.loads(pickle.dumps(_make("jsonl", f"{tmp_path}/*")))  # reuses the cache
  assert [os.stat(cache_dir / c).st_mtime_ns for c in sorted(os.listdir(cache_dir))] == stamps
  assert _docs(clone) == _docs(src)
  _check_split("jsonl", f"{tmp_path}/*", list(texts), 0.3)
  # A changed file gets a new cache entry.
  (tmp_path / "c.gz").write_bytes(gzip.compress(b'{"text": "new"}\n'))
  os.utime(tmp_path / "c.gz", ns=(1, 1))
  assert _make("jsonl", str(tmp_path / "c.gz"))[0]["text"] == b"new"
  assert len(os.listdir(cache_dir)) == 4


@pytest.mark.parametrize("name,data,codec", ids=["cut-gz", "cut-zst", "junk-gz", "junk-zst"],
                         argvalues=[
    ("cut.jsonl.gz", gzip.compress(_jsonl_body("x", 200))[:-40], "gzip"),
    ("cut.jsonl.zst", zstandard.ZstdCompressor().compress(_jsonl_body("x", 200))[:-40],
     "zstd"),
    ("junk.jsonl.gz", b"\x1f\x8b\x08\x00junkjunkjunk" * 20, "gzip"),
    ("junk.jsonl.zst", b"not zstd" * 20, "zstd"),
])
def test_corrupt_or_truncated_compressed_jsonl_is_one_config_error(tmp_path, cache_dir,
                                                                   name, data, codec):
  (tmp_path / name).write_bytes(data)
  with pytest.raises(ConfigError, match=f"corrupt or truncated {codec} file .*{name}.*"
                     "re-download it") as e:
    _make("jsonl", str(tmp_path / name))
  assert e.value.field == "data.sources"
  assert not os.path.isdir(cache_dir) or not os.listdir(cache_dir)  # nothing half-written


@pytest.mark.parametrize("suffix", [".bz2", ".xz", ".lz4"])
def test_other_compressions_are_refused(tmp_path, suffix):
  (tmp_path / f"a.jsonl{suffix}").write_bytes(b"\0" * 10)
  with pytest.raises(ConfigError, match=f"{suffix[1:]}, which is not supported"):
    _make("jsonl", str(tmp_path / f"a.jsonl{suffix}"))


def test_concurrent_processes_share_one_cache_entry(tmp_path, cache_dir):
  body = _jsonl_body("p", 20000)
  (tmp_path / "big.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
  script = textwrap.dedent(f"""
      from proxyjax.data import sources
      src = sources.JsonlSource({str(tmp_path / 'big.jsonl.zst')!r})
      print(len(src), src[len(src) - 1]["text"].decode())
  """)
  env = dict(os.environ, PROXYJAX_CACHE_DIR=str(cache_dir.parent), JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            text=True) for _ in range(2)]
  outs = [p.communicate(timeout=120)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs)
  assert set(outs) == {"20000 p 19999\n"}
  assert len(os.listdir(cache_dir)) == 1


# --- hf: save_to_disk and Hub snapshots --------------------------------------------------


def _save_to_disk(directory, shards, split="train", batch=4):
  """A Dataset directory as ``datasets.Dataset.save_to_disk`` writes it: Arrow IPC
  stream files ``data-XXXXX-of-XXXXX.arrow``, ``state.json`` and ``dataset_info.json``."""
  os.makedirs(directory, exist_ok=True)
  names = []
  for i, texts in enumerate(shards):
    name = f"data-{i:05d}-of-{len(shards):05d}.arrow"
    table = pa.table({"text": texts, "id": pa.array(range(len(texts)), pa.int64())})
    with pa.OSFile(os.path.join(directory, name), "wb") as sink:
      with pa.ipc.new_stream(sink, table.schema) as writer:
        for b in table.to_batches(max_chunksize=batch):
          writer.write_batch(b)
    names.append(name)
  state = {"_data_files": [{"filename": n} for n in names], "_fingerprint": "0123abcd",
           "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
           "_output_all_columns": False, "_split": split}
  info = {"features": {"text": {"dtype": "string", "_type": "Value"},
                       "id": {"dtype": "int64", "_type": "Value"}}, "splits": {}}
  with open(os.path.join(directory, "state.json"), "w") as f:
    json.dump(state, f)
  with open(os.path.join(directory, "dataset_info.json"), "w") as f:
    json.dump(info, f)


def _dataset_dict(root):
  """A DatasetDict with train (2 files) and validation (1 file)."""
  train = [[f"train {i}" for i in range(11)], [f"train {i}" for i in range(11, 20)]]
  _save_to_disk(root / "train", train, "train")
  _save_to_disk(root / "validation", [[f"val {i}" for i in range(6)]], "validation")
  (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))


def _hub_snapshot(root):
  """A Hub snapshot: data/{train-0000x-of-00002,validation-00000-of-00001}.parquet."""
  os.makedirs(root / "data", exist_ok=True)
  (root / "README.md").write_text("---\nconfigs: []\n---\n")
  (root / ".gitattributes").write_text("*.parquet filter=lfs\n")
  for name, texts in (("train-00000-of-00002", [f"t{i}" for i in range(10)]),
                      ("train-00001-of-00002", [f"t{i}" for i in range(10, 17)]),
                      ("validation-00000-of-00001", [f"v{i}" for i in range(5)])):
    pq.write_table(pa.table({"content": texts}), root / "data" / f"{name}.parquet",
                   row_group_size=3)


def test_hf_dataset_dict_uses_its_own_splits(tmp_path):
  _dataset_dict(tmp_path)
  loc = str(tmp_path)
  train = _docs(_make("hf", loc, "train", validation_fraction=0.5))
  val = _docs(_make("hf", loc, "validation", validation_fraction=0.5))
  assert [d["text"] for d in train] == [f"train {i}".encode() for i in range(20)]
  assert [d["key"] for d in train[9:13]] == [
      "train/data-00000-of-00002.arrow:9", "train/data-00000-of-00002.arrow:10",
      "train/data-00001-of-00002.arrow:0", "train/data-00001-of-00002.arrow:1"]
  assert [d["text"] for d in val] == [f"val {i}".encode() for i in range(6)]
  assert len(_make("hf", loc, "all")) == 26
  # A chosen split (path or #split) is split by the strided rule; keys are relative
  # to the path.
  keys = [d["key"] for d in train]
  for chosen, chosen_keys in ((f"{tmp_path}/train", [k[len("train/"):] for k in keys]),
                              (f"{tmp_path}#train", keys)):
    _, v = _check_split("hf", chosen, chosen_keys, 0.25)
    assert 4 <= len(v) <= 6  # floor(11/4 + o1) + floor(9/4 + o2)
  with pytest.raises(ConfigError, match="no split 'test'; the dataset has train, validation"):
    _make("hf", f"{tmp_path}#test")


def test_hf_single_saved_dataset_uses_the_strided_split(tmp_path):
  shards = [[f"a {i}" for i in range(13)], [f"b {i}" for i in range(8)]]
  _save_to_disk(tmp_path / "ds", shards, batch=3)
  src = _make("hf", str(tmp_path / "ds"))
  assert [d["text"] for d in _docs(src)] == [s.encode() for shard in shards for s in shard]
  keys = [d["key"] for d in _docs(src)]
  assert keys[0] == "data-00000-of-00002.arrow:0" and keys[-1] == "data-00001-of-00002.arrow:7"
  _check_split("hf", str(tmp_path / "ds"), keys, 0.3)
  clone = pickle.loads(pickle.dumps(src))
  assert _docs(clone) == _docs(src)


def test_hf_hub_snapshot_splits_by_file_name(tmp_path):
  _hub_snapshot(tmp_path)
  train = _docs(_make("hf", str(tmp_path), "train"))
  assert [d["text"] for d in train] == [f"t{i}".encode() for i in range(17)]
  assert train[10]["key"] == "data/train-00001-of-00002.parquet:0"
  val = _docs(_make("hf", str(tmp_path), "validation"))
  assert [d["text"] for d in val] == [f"v{i}".encode() for i in range(5)]
  chosen = _docs(_make("hf", f"{tmp_path}#validation", "all"))
  assert [d["key"] for d in chosen] == [d["key"] for d in
                                        _docs(_make("hf", f"{tmp_path}#valid", "all"))]
  assert [d["text"] for d in chosen] == [f"v{i}".encode() for i in range(5)]
  # An Arrow IPC *file* (not a stream) is read too.
  table = pa.table({"text": ["x0", "x1", "x2"]})
  with pa.OSFile(str(tmp_path / "data" / "test-00000-of-00001.arrow"), "wb") as sink:
    with pa.ipc.new_file(sink, table.schema) as writer:
      writer.write_table(table, max_chunksize=2)
  assert [d["text"] for d in _docs(_make("hf", f"{tmp_path}#test"))] == [b"x0", b"x1", b"x2"]
  assert len(_make("hf", str(tmp_path), "train")) == 17
  # The Hub cache's layout: snapshot files are symlinks to blobs.
  os.makedirs(tmp_path / "cache" / "blobs")
  os.makedirs(tmp_path / "cache" / "snapshots" / "rev" / "data")
  for name in sorted(os.listdir(tmp_path / "data")):
    blob = tmp_path / "cache" / "blobs" / f"blob-{name}"
    os.rename(tmp_path / "data" / name, blob)
    os.symlink(os.path.relpath(blob, tmp_path / "cache" / "snapshots" / "rev" / "data"),
               tmp_path / "cache" / "snapshots" / "rev" / "data" / name)
  linked = _docs(_make("hf", str(tmp_path / "cache" / "snapshots" / "rev"), "train"))
  assert [(d["key"], d["text"]) for d in linked] == [(d["key"], d["text"]) for d in train]
  assert hf.split_of("data/train/part-0.parquet") == "train"
  assert hf.split_of("en/dev.jsonl.zst") == "validation"
  assert hf.split_of("data/retrain-x.parquet") == "train"  # no split word: train
  assert hf.split_of("test-00000-of-00001.parquet") == "test"
  assert hf.split_of("dev-config/train-00000.parquet") == "train"
  assert hf.split_of("x/test/validation.jsonl") == "validation"


def test_hf_snapshot_of_jsonl_without_validation_is_strided(tmp_path):
  os.makedirs(tmp_path / "snap" / "data" / "train")
  body = _jsonl_body("j", 30)
  (tmp_path / "snap" / "data" / "train" / "0.jsonl.zst").write_bytes(
      zstandard.ZstdCompressor().compress(body))
  (tmp_path / "snap" / "data" / "train" / "1.jsonl").write_bytes(_jsonl_body("k", 10))
  src = _make("hf", str(tmp_path / "snap"))
  assert len(src) == 40 and src[0]["key"] == "data/train/0.jsonl.zst:0"
  assert src[0]["text"] == b"j 0" and src[39]["text"] == b"k 9"
  _check_split("hf", str(tmp_path / "snap"), [d["key"] for d in _docs(src)], 0.25)
  _check_split("hf", str(tmp_path / "snap" / "data" / "train"),
               [d["key"][len("data/train/"):] for d in _docs(src)], 0.25)


def test_hf_bad_paths_are_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="is not a directory"):
    _make("hf", str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "README.md").write_text("x")
  with pytest.raises(ConfigError, match="no data files"):
    _make("hf", str(tmp_path / "empty"))
  _save_to_disk(tmp_path / "notext", [["x"]])
  pa_table = pa.table({"title": ["x"]})
  with pa.OSFile(str(tmp_path / "notext" / "data-00000-of-00001.arrow"), "wb") as sink:
    with pa.ipc.new_stream(sink, pa_table.schema) as writer:
      writer.write_table(pa_table)
  with pytest.raises(ConfigError, match=r"has no 'text' or 'content' column; its columns: "
                     r"title \(string\)"):
    _make("hf", str(tmp_path / "notext"))


def test_spec_strings_with_split_suffix_and_weight():
  entries = sources.parse_sources("hf:/snap#validation@2;parquet:gs://b/x/*.parquet@0.5")
  assert [(e.kind, e.location, e.weight) for e in entries] == [
      ("hf", "/snap#validation", 2.0), ("parquet", "gs://b/x/*.parquet", 0.5)]
  assert hf.parse_location("/snap#validation") == ("/snap", "validation")
  assert hf.parse_location("gs://b/ds/") == ("gs://b/ds", "")


# --- object storage: every file kind on gs:// and s3:// ---------------------------------


def _upload(local_root, remote_root):
  for dirpath, _, filenames in os.walk(local_root):
    for filename in filenames:
      path = os.path.join(dirpath, filename)
      rel = os.path.relpath(path, local_root).replace(os.sep, "/")
      with open(path, "rb") as f:
        paths.write_bytes(f"{remote_root}/{rel}", f.read())


def _array_record_corpus(root):
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  os.makedirs(root, exist_ok=True)
  for shard in range(2):
    writer = array_record_module.ArrayRecordWriter(str(root / f"s{shard}.array_record"),
                                                   "group_size:1")
    for i in range(7):
      writer.write(json.dumps({"text": f"shard {shard} rec {i}"}).encode())
    writer.close()


def test_every_file_kind_reads_object_storage(tmp_path, object_store, cache_dir):
  local = tmp_path / "corpus"
  _parquet_corpus(local / "pq")
  os.makedirs(local / "jl")
  _compressed_corpus(local / "jl")
  (local / "jl" / "plain.jsonl").write_bytes(_jsonl_body("plain", 9))
  (local / "jl" / ".hidden.jsonl").write_bytes(_jsonl_body("hidden", 2))  # not matched by *
  os.makedirs(local / "jl" / "nested")  # a directory matching * is no file
  (local / "jl" / "nested" / "x.jsonl").write_bytes(_jsonl_body("nested", 2))
  _dataset_dict(local / "dd")
  _hub_snapshot(local / "snap")
  _array_record_corpus(local / "ar")
  os.makedirs(local / "code" / "pkg")
  (local / "code" / "pkg" / "m.py").write_text("x = 1\n")
  (local / "code" / "README.md").write_text("# hi\n")
  bucket = object_store.new_bucket()
  remote = f"{bucket}/corpus"
  _upload(local, remote)
  cases = [("parquet", "pq/**/*.parquet", {}), ("jsonl", "jl/*", {}),
           ("jsonl", "jl/**/*.jsonl", {}),
           ("hf", "dd", {}), ("hf", "dd#validation", {}), ("hf", "snap", {}),
           ("arrayrecord", "ar/*.array_record", {}), ("files", "code", {}),
           ("files", "code/**/*.py", {})]
  for kind, location, kw in cases:
    for split in ("train", "validation"):
      here = _docs(_make(kind, f"{local}/{location}", split, validation_fraction=0.3, **kw))
      there = _docs(_make(kind, f"{remote}/{location}", split, validation_fraction=0.3, **kw))
      strip = lambda docs: [(d["key"], d["text"], d["error"]) for d in docs]  # noqa: E731
      assert strip(there) == strip(here), (kind, location, split)
      assert there or split == "validation", (kind, location)
  # ArrayRecord and Arrow files on object storage were read through local copies.
  cached = os.listdir(cache_dir)
  assert sum(c.endswith(".array_record") for c in cached) == 2  # the remote shards only
  assert sum(c.endswith(".arrow") for c in cached) == 3  # the remote DatasetDict's files
  assert sum(c.endswith(".jsonl") for c in cached) == 6  # local and remote compressed files
  keys = [d["key"] for d in _docs(_make("jsonl", f"{remote}/jl/*"))]
  assert keys and not [k for k in keys if "hidden" in k or "nested" in k]
  deep = [d["key"] for d in _docs(_make("jsonl", f"{remote}/jl/**/*.jsonl"))]
  assert sorted({k.rsplit(":", 1)[0] for k in deep}) == ["nested/x.jsonl", "plain.jsonl"]
  with pytest.raises(ConfigError, match="matched no files"):
    _make("parquet", f"{remote}/nothing/*.parquet")


# --- resuming after SIGKILL -----------------------------------------------------------------

_CHILD = """
import os, pickle, sys, time
sys.path.insert(0, {tests!r})
from helpers import data_config
from proxyjax.data import pipeline
config = data_config(**{data!r})
it = pipeline.make_iterator(config, "train", process_index=0, process_count=1)
for k in range(1, 100000):
  next(it)
  tmp = {state!r} + ".tmp"
  with open(tmp, "wb") as f:
    pickle.dump((k, it.get_state()), f)
  os.replace(tmp, {state!r})
  time.sleep(0.05)
"""


def _resume_corpus(tmp_path, kind):
  if kind == "parquet":
    _parquet_corpus(tmp_path / "c")
    return f"parquet:{tmp_path}/c/**/*.parquet"
  if kind == "jsonl.zst":
    os.makedirs(tmp_path / "c")
    for i in range(3):
      body = "".join(json.dumps({"text": f"def f{i}_{j}():\n  return {j}\n" * (j % 5 + 1)}) + "\n"
                     for j in range(40)).encode()
      (tmp_path / "c" / f"{i}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    return f"jsonl:{tmp_path}/c/*.jsonl.zst"
  _dataset_dict(tmp_path / "c")
  return f"hf:{tmp_path}/c"


@pytest.mark.parametrize("kind", ["parquet", "jsonl.zst", "hf"])
def test_resume_after_sigkill_reproduces_the_batches(tmp_path, cache_dir, kind):
  data = {"sources": _resume_corpus(tmp_path, kind), "view": "raw",
          "validation_fraction": 0.1}
  state_file = str(tmp_path / "state.pkl")
  script = _CHILD.format(tests=TESTS_DIR, data=data, state=state_file)
  env = dict(os.environ, PROXYJAX_CACHE_DIR=str(cache_dir.parent), JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-c", script], env=env,
                           stderr=subprocess.PIPE, start_new_session=True)
  try:
    deadline = time.monotonic() + 90
    k = 0
    while k < 3:
      assert child.poll() is None, child.stderr.read().decode()[-3000:]
      assert time.monotonic() < deadline, "the child made no progress"
      if os.path.exists(state_file):
        with open(state_file, "rb") as f:
          k, _ = pickle.load(f)
      time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    assert child.returncode == -signal.SIGKILL
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()
    child.stderr.close()
  with open(state_file, "rb") as f:
    k, state = pickle.load(f)
  config = data_config(**data)
  n = k + 6
  straight = pipeline.make_iterator(config, "train", process_index=0, process_count=1)
  expected = [next(straight) for _ in range(n)]
  resumed = pipeline.make_iterator(config, "train", process_index=0, process_count=1)
  resumed.set_state(state)
  got = [next(resumed) for _ in range(n - k)]
  for x, y in zip(expected[k:], got):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)
