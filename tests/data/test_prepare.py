"""``python -m proxyjax.data.prepare`` and the ``prepared:`` source: the same documents as
the source's splits, worker-count independence, kill -9 and resume, refusals, object
storage, and a pipeline kill -9/resume on a prepared directory."""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import data_config

from proxyjax import paths
from proxyjax.data import pipeline, prepare, sources
from proxyjax.data.sources import prepared
from proxyjax.errors import ConfigError, UserError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.join(REPO, "tests")


def _jsonl_corpus(root, files=4, lines=500, bad=True):
  """JSON lines with malformed lines, missing texts, blank lines, non-ASCII, lone
  surrogates and control characters."""
  os.makedirs(root, exist_ok=True)
  for f in range(files):
    with open(os.path.join(root, f"part{f}.jsonl"), "w") as fh:
      for i in range(lines):
        if bad and i % 97 == 5:
          fh.write("{not json\n")
        elif bad and i % 131 == 7:
          fh.write(json.dumps({"title": "no text"}) + "\n")
        elif i % 50 == 9:
          fh.write("   \n")  # blank: not a document
        else:
          text = f"doc {f}:{i} " + "é✓\U0001F600" * (i % 3) + "\ud800\x01" * (i % 5 == 0)
          fh.write(json.dumps({"text": text * (1 + i % 7)}) + "\n")
  return f"jsonl:{root}/*.jsonl"


def _files_corpus(root):
  os.makedirs(os.path.join(root, "pkg", "sub"), exist_ok=True)
  for i in range(40):
    d = "pkg/sub" if i % 3 else "pkg"
    with open(os.path.join(root, d, f"m{i}.py"), "wb") as fh:
      fh.write(b"def f%d():\n  return %d\n" % (i, i) + (b"\xff\xfe bad utf-8\n" if i % 4 == 0
                                                       else b""))
  with open(os.path.join(root, "pkg", "blob.py"), "wb") as fh:
    fh.write(bytes(range(256)) * 4)  # binary: an error document, skipped
  return f"files:{root}/**/*.py"


def _opts(spec, out, **kw):
  kw.setdefault("validation_fraction", 0.2)
  kw.setdefault("docs_per_shard", 150)
  kw.setdefault("progress", False)
  return prepare.Options(sources=spec, out=str(out), **kw)


def _usable(source):
  docs = (source[i] for i in range(len(source)))
  return [(d["text"], d["key"]) for d in docs if d["error"] is None]


def _assert_same_documents(spec, out, validation_fraction=0.2, text_field=""):
  loc = paths.join(str(out), "")
  for split in ("train", "validation"):
    original = sources.make_sources(spec, split=split, validation_fraction=validation_fraction,
                                    text_field=text_field)
    want = [doc for src, _ in original for doc in _usable(src)]
    got = prepared.PreparedSource(loc, split=split, validation_fraction=validation_fraction,
                                  text_field=text_field)
    assert len(got) == len(want)
    assert _usable(got) == want
  every = sources.make_source(sources.SourceSpec("prepared", str(out)), split="all",
                              validation_fraction=validation_fraction, text_field=text_field)
  assert len(every) == sum(len(prepared.PreparedSource(loc, split=s, text_field=text_field,
                                                       validation_fraction=validation_fraction))
                           for s in ("train", "validation"))


def _shards(out):
  return {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))
          if n.endswith(".array_record")}


def test_jsonl_prepared_documents_equal_the_source_splits(tmp_path):
  spec = _jsonl_corpus(tmp_path / "corpus")
  out = tmp_path / "out"
  manifest = prepare.run(_opts(spec, out))
  _assert_same_documents(spec, out)
  on_disk = json.loads((out / "manifest.json").read_text())
  assert on_disk == manifest and manifest["format"] == prepared.FORMAT
  assert manifest["options"] == {"validation_fraction": 0.2, "text_field": ""}
  for split in ("train", "validation"):
    s = manifest["splits"][split]
    src = sources.make_source(sources.parse_sources(spec)[0], split=split,
                              validation_fraction=0.2)
    assert s["read"] == len(src)  # every document read is accounted for
    assert s["documents"] + sum(s["skipped"].values()) == s["read"]
    errors = {}
    for i in range(len(src)):
      if (e := src[i]["error"]) is not None:
        errors[e] = errors.get(e, 0) + 1
    assert s["skipped"] == errors and set(errors) == {"malformed_json", "missing_text"}
    assert sum(sh["documents"] for sh in s["shards"]) == s["documents"]
    assert [sh["first_document"] for sh in s["shards"]] == list(
        np.cumsum([0] + [sh["documents"] for sh in s["shards"]])[:-1])
    assert all(os.path.getsize(out / sh["file"]) == sh["file_bytes"] for sh in s["shards"])
  assert len(manifest["splits"]["train"]["shards"]) == -(-manifest["splits"]["train"]["read"]
                                                          // 150)
  # The shards are plain JSON ArrayRecord: readable as arrayrecord: too.
  ar = sources.make_source(sources.SourceSpec("arrayrecord", f"{out}/train-*.array_record"),
                           split="all")
  assert [t for t, _ in _usable(ar)] == [
      t for t, _ in _usable(prepared.PreparedSource(str(out), split="train",
                                                    validation_fraction=0.2))]


def test_files_tree_and_too_long_documents(tmp_path):
  spec = _files_corpus(tmp_path / "tree")
  out = tmp_path / "out"
  manifest = prepare.run(_opts(spec, out, docs_per_shard=7, validation_fraction=0.3))
  _assert_same_documents(spec, out, validation_fraction=0.3)
  skipped = {k: v for s in manifest["splits"].values() for k, v in s["skipped"].items()}
  assert skipped == {"binary": 1}
  keys = [k for _, k in _usable(prepared.PreparedSource(str(out), validation_fraction=0.3))]
  assert sorted(keys) == sorted(f"pkg/{'sub/' if i % 3 else ''}m{i}.py" for i in range(40))
  # --max_document_bytes: longer documents are skipped as too_long.
  short = prepare.run(_opts(spec, tmp_path / "short", docs_per_shard=7, validation_fraction=0.3,
                            max_document_bytes=30))
  too_long = sum(s["skipped"].get("too_long", 0) for s in short["splits"].values())
  assert too_long == sum(1 for i in range(40) if i % 4 == 0)
  assert all(len(t) <= 30 for t, _ in _usable(prepared.PreparedSource(
      str(tmp_path / "short"), validation_fraction=0.3)))


def test_two_workers_write_the_same_shards(tmp_path):
  spec = _jsonl_corpus(tmp_path / "corpus", files=3, lines=300)
  one = prepare.run(_opts(spec, tmp_path / "one"))
  two = prepare.run(_opts(spec, tmp_path / "two", num_workers=2))
  assert _shards(tmp_path / "one") == _shards(tmp_path / "two")
  assert one["splits"] == two["splits"] and one["inputs"] == two["inputs"]


def test_prepared_source_is_lazy_and_pickles_small(tmp_path):
  spec = _jsonl_corpus(tmp_path / "corpus", files=2, lines=300)
  out = tmp_path / "out"
  prepare.run(_opts(spec, out, docs_per_shard=50))
  src = prepared.PreparedSource(str(out), split="train", validation_fraction=0.2)
  assert src.num_shards > 5 and not src._readers  # pylint: disable=protected-access
  src[len(src) - 1]
  src[0]
  assert len(src._readers) == 2  # pylint: disable=protected-access
  blob = pickle.dumps(src)
  assert len(blob) < 2000 + 100 * src.num_shards  # O(shards), no per-document array
  copy = pickle.loads(blob)
  assert not copy._readers and copy[3] == src[3]  # pylint: disable=protected-access
  with pytest.raises(IndexError):
    src[len(src)]


def test_open_shard_readers_are_bounded(tmp_path, monkeypatch):
  """Each open reader holds its shard's record index: at most MAX_OPEN_SHARDS stay open
  (least recently used dropped), and a dropped shard reads the same when it comes back.
  The shuffle's blocks are a shard's worth of documents."""
  spec = _jsonl_corpus(tmp_path / "corpus", files=2, lines=300)
  out = tmp_path / "out"
  prepare.run(_opts(spec, out, docs_per_shard=50))
  monkeypatch.setattr(prepared, "MAX_OPEN_SHARDS", 3)
  src = prepared.PreparedSource(str(out), split="train", validation_fraction=0.2)
  assert src.num_shards >= 8
  assert 40 <= src.shuffle_block <= 50  # documents per train shard (some went to validation)
  first = [src[i] for i in range(0, len(src), 37)]  # every shard
  assert len(src._readers) == 3  # pylint: disable=protected-access
  assert [src[i] for i in range(0, len(src), 37)] == first
  src[0]
  assert next(reversed(src._readers)) == 0  # pylint: disable=protected-access


def test_mismatched_run_options_name_the_field(tmp_path):
  spec = _jsonl_corpus(tmp_path / "corpus", files=1, lines=100)
  out = tmp_path / "out"
  prepare.run(_opts(spec, out))
  with pytest.raises(ConfigError, match=r"data\.validation_fraction.*0\.2.*0\.01"):
    sources.make_sources(f"prepared:{out}", split="train", validation_fraction=0.01)
  with pytest.raises(ConfigError, match=r"data\.text_field.*''.*'content'"):
    sources.make_sources(f"prepared:{out}", split="train", validation_fraction=0.2,
                         text_field="content")
  with pytest.raises(ConfigError, match="no .*manifest.json"):
    sources.make_sources(f"prepared:{tmp_path / 'corpus'}", split="train")


def test_rerun_with_other_inputs_is_refused(tmp_path):
  spec = _jsonl_corpus(tmp_path / "corpus", files=1, lines=200)
  out = tmp_path / "out"
  prepare.run(_opts(spec, out))
  before = _shards(out)
  assert prepare.run(_opts(spec, out))["splits"]  # same inputs: already prepared, no-op
  with pytest.raises(UserError) as e:
    prepare.run(_opts(spec, out, validation_fraction=0.1))
  message = str(e.value)
  assert str(out / "manifest.json") in message and "validation_fraction 0.2 there, 0.1 here" \
      in message and "\n" not in message
  with pytest.raises(UserError, match="docs_per_shard 150 there, 10 here"):
    prepare.run(_opts(spec, out, docs_per_shard=10))
  assert _shards(out) == before


def _cli(*args, **kw):
  return subprocess.run([sys.executable, "-m", "proxyjax.data.prepare", *args],
                        capture_output=True, text=True, cwd=REPO, timeout=120, **kw)


def test_cli_bad_input_is_one_line(tmp_path):
  r = _cli(f"--sources=jsonl:{tmp_path}/nothing/*.jsonl", f"--out={tmp_path / 'out'}")
  assert r.returncode == 2, r.stderr
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "matched no files" in lines[0] and "Traceback" not in r.stderr
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_prepares(tmp_path):
  spec = _jsonl_corpus(tmp_path / "corpus", files=1, lines=200)
  r = _cli(f"--sources={spec}", f"--out={tmp_path / 'out'}", "--validation_fraction=0.2",
           "--docs_per_shard=50", "--noprogress")
  assert r.returncode == 0, r.stderr
  assert "train" in r.stderr and "manifest.json" in r.stderr
  _assert_same_documents(spec, tmp_path / "out")


def test_kill_during_prepare_and_resume(tmp_path):
  spec = _jsonl_corpus(tmp_path / "corpus", files=6, lines=6000, bad=False)
  out = tmp_path / "out"
  progress = out / prepare.PROGRESS_DIR
  proc = subprocess.Popen([sys.executable, "-m", "proxyjax.data.prepare", f"--sources={spec}",
                           f"--out={out}", "--validation_fraction=0.2", "--docs_per_shard=400",
                           "--noprogress"], cwd=REPO, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline and proc.poll() is None:
    done = [n for n in (os.listdir(progress) if progress.exists() else [])
            if n != prepare.INPUTS_FILE and n.endswith(".json")]
    if len(done) >= 2:
      break
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
  assert not (out / "manifest.json").exists()
  finished = {json.loads((progress / n).read_text())["file"] for n in os.listdir(progress)
              if n != prepare.INPUTS_FILE and n.endswith(".json")}
  assert finished
  mtimes = {f: os.stat(out / f).st_mtime_ns for f in finished}
  # Another run's inputs are refused even before the manifest exists.
  with pytest.raises(UserError, match="inputs.json.*validation_fraction"):
    prepare.run(_opts(spec, out, validation_fraction=0.1, docs_per_shard=400))
  part = tmp_path / "corpus" / "part0.jsonl"
  original = part.read_bytes()
  part.write_bytes(original + b'{"text": "one more"}\n')
  with pytest.raises(UserError, match="the sources changed"):
    prepare.run(_opts(spec, out, docs_per_shard=400))
  part.write_bytes(original)
  resumed = prepare.run(_opts(spec, out, docs_per_shard=400))
  assert {f: os.stat(out / f).st_mtime_ns for f in finished} == mtimes
  assert not [n for n in os.listdir(out) if ".tmp-" in n]
  reference = prepare.run(_opts(spec, tmp_path / "reference", docs_per_shard=400))
  assert _shards(out) == _shards(tmp_path / "reference")
  assert resumed["splits"] == reference["splits"]


def test_prepare_to_and_read_from_object_storage(object_store, tmp_path, monkeypatch):
  monkeypatch.setenv(prepared.CACHE_ENV, str(tmp_path / "cache"))
  spec = _jsonl_corpus(tmp_path / "corpus", files=2, lines=150)
  out = object_store.new_bucket() + "/prep"
  manifest = prepare.run(_opts(spec, out, docs_per_shard=60))
  assert paths.exists(paths.join(out, "manifest.json"))
  assert sorted(n for n in paths.listdir(out) if n.endswith(".array_record")) == sorted(
      sh["file"] for s in manifest["splits"].values() for sh in s["shards"])
  _assert_same_documents(spec, out)
  cached = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "cache") for f in fs]
  assert cached and all(".tmp-" not in f for f in cached)
  # A second reader uses the cache (a damaged cached shard of the wrong size is fetched again).
  with open(cached[0], "r+b") as f:
    f.truncate(10)
  _assert_same_documents(spec, out)
  # Resume and refusal work remotely too.
  assert prepare.run(_opts(spec, out, docs_per_shard=60))["id"] == manifest["id"]
  with pytest.raises(UserError, match="text_field"):
    prepare.run(_opts(spec, out, docs_per_shard=60, text_field="content"))


def test_missing_bucket_is_one_clear_error(object_store, tmp_path):
  spec = _jsonl_corpus(tmp_path / "corpus", files=1, lines=10)
  missing = f"{object_store.scheme}://no-such-bucket-{os.getpid()}/prep"
  with pytest.raises(UserError, match="no-such-bucket"):
    prepare.run(_opts(spec, missing))
  with pytest.raises(ConfigError, match="no-such-bucket"):
    sources.make_sources(f"prepared:{missing}", split="train")


_ITERATE = textwrap.dedent("""
    import os, pickle, sys, time
    import numpy as np
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    from helpers import data_config
    from proxyjax.data import pipeline
    out, source = sys.argv[1], sys.argv[2]
    c = data_config(sources=source, validation_fraction=0.2, view="raw")
    it = pipeline.make_iterator(c, "train", process_index=0, process_count=1)
    for i in range(10_000):
      batch = next(it)
      np.savez(os.path.join(out, f"batch{i}.npz"), **batch)
      with open(os.path.join(out, f"state{i}.tmp"), "wb") as f:
        pickle.dump(it.get_state(), f)
      os.replace(os.path.join(out, f"state{i}.tmp"), os.path.join(out, f"state{i}.pkl"))
      time.sleep(0.05)
""")


def test_pipeline_on_prepared_resumes_after_kill(tmp_path):
  spec = _jsonl_corpus(tmp_path / "corpus", files=2, lines=200)
  data = tmp_path / "prep"
  prepare.run(_opts(spec, data, docs_per_shard=40))
  run = tmp_path / "run"
  run.mkdir()
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, REPO])}
  proc = subprocess.Popen([sys.executable, "-c", _ITERATE, str(run), f"prepared:{data}"],
                          cwd=REPO, env=env, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 90
  while time.monotonic() < deadline and proc.poll() is None:
    if (run / "state4.pkl").exists():
      break
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-3000:]
  k = max(int(n[5:-4]) for n in os.listdir(run) if n.startswith("state") and n.endswith(".pkl"))
  assert k >= 4
  c = data_config(sources=f"prepared:{data}", validation_fraction=0.2, view="raw")
  straight_it = pipeline.make_iterator(c, "train", process_index=0, process_count=1)
  straight = [next(straight_it) for _ in range(k + 4)]
  for i in range(k + 1):
    saved = np.load(run / f"batch{i}.npz")
    for key, value in straight[i].items():
      np.testing.assert_array_equal(saved[key], value, err_msg=f"batch {i} {key}")
  resumed = pipeline.make_iterator(c, "train", process_index=0, process_count=1)
  with open(run / f"state{k}.pkl", "rb") as f:
    resumed.set_state(pickle.load(f))
  for i in range(k + 1, k + 4):
    batch = next(resumed)
    for key, value in straight[i].items():
      np.testing.assert_array_equal(batch[key], value, err_msg=f"batch {i} {key}")
  stats = pipeline.pipeline_stats(resumed)
  assert stats["docs_read"] == stats["docs_used"] + stats["docs_skipped"] > 0


def test_training_stream_reads_the_source_split(tmp_path):
  """One pass over prepared:DIR's train split (no shuffle) reads exactly the source's
  train documents, in order, and its validation stream the validation ones."""
  spec = _jsonl_corpus(tmp_path / "corpus", files=2, lines=120)
  data = tmp_path / "prep"
  prepare.run(_opts(spec, data, docs_per_shard=33))
  for split in ("train", "validation"):
    c = data_config(sources=f"prepared:{data}", validation_fraction=0.2, shuffle=False,
                    num_epochs=1)
    docs, plan = pipeline.plan_documents(c, split)
    original = sources.make_sources(spec, split=split, validation_fraction=0.2)
    assert [(docs[i]["text"], docs[i]["key"]) for i in range(len(docs))] == [
        d for src, _ in original for d in _usable(src)]
    assert plan.sizes == (len(docs),)
