"""Trainer kill -9 and resume on every corpus source kind of issue 22: ``parquet:`` (several
row groups), ``jsonl:`` over ``.jsonl.gz`` and ``.jsonl.zst``, ``hf:`` on a ``save_to_disk``
directory and on a Hub snapshot (``data/*.parquet``), and ``prepared:DIR`` (made by
``python -m proxyjax.data.prepare``, read by Grain workers).

Each case trains ``python -m proxyjax.main`` (``helpers.small_config``, rows of 64 ids) three
times in subprocesses: once straight through, once SIGKILLed after a checkpoint committed
and a few steps later were logged, and once more with the same command (the resume). The
resumed run restarts at the newest committed checkpoint; every metric line of the
interrupted work directory (those of the killed run and those of the resume) equals the
straight run's line of that step (timings aside), and the final parameters are identical.
"""

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from proxyjax.train import load

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.join(ROOT, "tests")

NUM_STEPS = 30
CHECKPOINT_EVERY = 6
KILL_AT = CHECKPOINT_EVERY + 2  # SIGKILL once this step is logged: past the first checkpoint
VALIDATION_FRACTION = 0.1
# Wall-clock measurements differ between runs; every other field of a metric line must not.
TIMING = frozenset({"step_time", "symbols_per_s", "utf8_bytes_per_s", "tflops_per_device",
                    "mfu", "data_wait_fraction"})

_CONFIG = """
import sys
sys.path.insert(0, {tests!r})
from helpers import small_config


def get_config():
  return small_config(**{overrides!r})
"""


# --- corpora ---------------------------------------------------------------------------------


def _documents(n=64):
  """``n`` code documents (1-9 lines of textwrap.py each, some non-ASCII), ~11 KB in all:
  a run of 30 steps reads about twice as many bytes (``_corpus_bytes``)."""
  with open(os.path.join(sysconfig.get_paths()["stdlib"], "textwrap.py"),
            encoding="utf-8") as f:
    lines = f.read().splitlines(keepends=True)
  rng = np.random.default_rng(22)
  docs, at = [], 0
  for i in range(n):
    size = int(rng.integers(1, 10))
    doc = "".join(lines[at:at + size])
    at = (at + size) % (len(lines) - 12)
    docs.append(doc + (f"# doc {i}: ünïcödé ✓\n" if i % 5 == 0 else ""))
  return docs


def _corpus_bytes():
  return sum(len(d.encode()) for d in _documents())


def _parts(docs, k):
  return [docs[i::k] for i in range(k)]


def _jsonl(docs):
  return "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()


def _write_parquet(root):
  os.makedirs(root / "sub", exist_ok=True)
  names = ["a.parquet", "b.parquet", "sub/c.parquet"]
  for name, part in zip(names, _parts(_documents(), 3)):
    pq.write_table(pa.table({"text": part, "n": list(range(len(part)))}), root / name,
                   row_group_size=5)
  assert all(pq.ParquetFile(root / name).metadata.num_row_groups >= 4 for name in names)
  return f"parquet:{root}/**/*.parquet"


def _write_jsonl_gz(root):
  os.makedirs(root, exist_ok=True)
  for i, part in enumerate(_parts(_documents(), 2)):
    body = _jsonl(part)
    half = len(body) // 2  # two gzip members, as concatenated .gz files have
    (root / f"part{i}.jsonl.gz").write_bytes(gzip.compress(body[:half]) +
                                             gzip.compress(body[half:]))
  return f"jsonl:{root}/*.jsonl.gz"


def _write_jsonl_zst(root):
  os.makedirs(root, exist_ok=True)
  z = zstandard.ZstdCompressor()
  for i, part in enumerate(_parts(_documents(), 2)):
    body = _jsonl(part)
    third = len(body) // 3  # two zstd frames
    (root / f"part{i}.jsonl.zst").write_bytes(z.compress(body[:third]) +
                                              z.compress(body[third:]))
  return f"jsonl:{root}/*.jsonl.zst"


def _write_save_to_disk(root):
  """A Dataset directory as ``datasets.Dataset.save_to_disk`` writes it (Arrow IPC streams
  ``data-XXXXX-of-XXXXX.arrow``, ``state.json``, ``dataset_info.json``): one split, so the
  strided split holds out the validation documents."""
  os.makedirs(root, exist_ok=True)
  parts = _parts(_documents(), 2)
  names = [f"data-{i:05d}-of-{len(parts):05d}.arrow" for i in range(len(parts))]
  for name, part in zip(names, parts):
    table = pa.table({"text": part, "id": pa.array(range(len(part)), pa.int64())})
    with pa.OSFile(str(root / name), "wb") as sink:
      with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=7):
          writer.write_batch(batch)
  (root / "state.json").write_text(json.dumps({
      "_data_files": [{"filename": n} for n in names], "_fingerprint": "5eed0022",
      "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
      "_output_all_columns": False, "_split": "train"}))
  (root / "dataset_info.json").write_text(json.dumps({"features": {
      "text": {"dtype": "string", "_type": "Value"},
      "id": {"dtype": "int64", "_type": "Value"}}, "splits": {}}))
  return f"hf:{root}"


def _write_hub_snapshot(root):
  """A Hub snapshot on disk: ``data/train-0000k-of-00002.parquet`` and a validation file
  (split by file name), the text in a ``content`` column."""
  os.makedirs(root / "data", exist_ok=True)
  (root / "README.md").write_text("---\nconfigs: []\n---\n")
  docs = _documents()
  train, val = docs[:-8], docs[-8:]
  files = [(f"train-{i:05d}-of-00002", part) for i, part in enumerate(_parts(train, 2))]
  for name, part in files + [("validation-00000-of-00001", val)]:
    pq.write_table(pa.table({"content": part}), root / "data" / f"{name}.parquet",
                   row_group_size=6)
  return f"hf:{root}"


def _write_prepared(root):
  """``python -m proxyjax.data.prepare`` over the .jsonl.zst corpus: shards of 10 documents."""
  spec = _write_jsonl_zst(root / "zst")
  out = root / "prepared"
  r = subprocess.run([sys.executable, "-m", "proxyjax.data.prepare", f"--sources={spec}",
                      f"--out={out}", f"--validation_fraction={VALIDATION_FRACTION}",
                      "--docs_per_shard=10", "--noprogress"],
                     cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, PROXYJAX_CACHE_DIR=str(root / "prepare-cache")))
  assert r.returncode == 0, r.stderr[-3000:]
  manifest = json.loads((out / "manifest.json").read_text())
  assert len(manifest["splits"]["train"]["shards"]) >= 5
  assert manifest["splits"]["validation"]["documents"] > 0
  return f"prepared:{out}"


# --- runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
  """A persistent compilation cache shared by this module's trainer processes: every run
  compiles the same train step (the data source does not change it)."""
  return str(tmp_path_factory.mktemp("xla_cache"))


class _Runs:
  """Trainer subprocesses of one test (one config file, one environment)."""

  def __init__(self, tmp_path, xla_cache, sources, num_workers):
    self.tmp_path, self.sources = tmp_path, sources
    config = tmp_path / "config.py"
    config.write_text(_CONFIG.format(tests=TESTS, overrides={
        "num_steps": NUM_STEPS, "checkpoint_every": CHECKPOINT_EVERY, "log_every": 1,
        "keep_checkpoints": 2, "summary_prompt": "",
        "data.validation_fraction": VALIDATION_FRACTION, "data.num_workers": num_workers}))
    self.config = str(config)
    self.env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=xla_cache,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")

  def command(self, workdir):
    return [sys.executable, "-m", "proxyjax.main", f"--config={self.config}",
            f"--workdir={workdir}", f"--config.data.sources={self.sources}"]

  def env_for(self, name):
    """Each process its own decompression cache: the resume must not rely on the killed
    run's (a resume on another machine starts with an empty one)."""
    return dict(self.env, PROXYJAX_CACHE_DIR=str(self.tmp_path / f"cache-{name}"))

  def run(self, workdir, name):
    r = subprocess.run(self.command(workdir), cwd=ROOT, env=self.env_for(name),
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, f"{name}: {r.stderr[-4000:]}"
    return r.stderr

  def run_and_kill(self, workdir, name):
    """Starts the trainer and SIGKILLs it once step ``KILL_AT`` is logged (past the first
    checkpoint: saves are synchronous, so step CHECKPOINT_EVERY committed before)."""
    proc = subprocess.Popen(self.command(workdir), cwd=ROOT, env=self.env_for(name),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own group: Grain workers included
    try:
      deadline = time.monotonic() + 400
      while _logged_steps(workdir, complete_only=True)[-1:] < [KILL_AT]:
        assert proc.poll() is None, f"{name} ended before the kill: " + (
            proc.stderr.read().decode()[-4000:])
        assert time.monotonic() < deadline, f"{name} logged no step {KILL_AT} in 400 s"
        time.sleep(0.005)
      proc.send_signal(signal.SIGKILL)
      proc.wait(60)
      assert proc.returncode == -signal.SIGKILL
    finally:
      try:
        os.killpg(proc.pid, signal.SIGKILL)  # the session started above (leftover workers)
      except (ProcessLookupError, PermissionError):
        pass
      proc.wait()
      proc.stderr.close()


def _logged_steps(workdir, complete_only=False):
  try:
    with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    return []
  lines = text.split("\n")
  if complete_only:
    lines = lines[:-1]  # the part after the last newline may be a line being written
  return [json.loads(line)["step"] for line in lines if line.strip()]


def _metric_lines(workdir):
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _committed_steps(workdir):
  return sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())


def _deterministic(line):
  return {k: v for k, v in line.items() if k not in TIMING}


def _kill_and_resume(tmp_path, xla_cache, sources, num_workers=0):
  runs = _Runs(tmp_path, xla_cache, sources, num_workers)
  straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
  runs.run(straight, "straight")

  runs.run_and_kill(interrupted, "killed")
  killed_steps = _logged_steps(interrupted)
  committed = _committed_steps(interrupted)
  last = killed_steps[-1]
  assert killed_steps == list(range(1, last + 1))
  assert KILL_AT <= last < NUM_STEPS, "killed too late: nothing left to resume"
  assert committed and committed[0] >= CHECKPOINT_EVERY and committed[-1] <= last
  assert all(s % CHECKPOINT_EVERY == 0 for s in committed) and NUM_STEPS not in committed

  err = runs.run(interrupted, "resumed")
  announced = re.search(r"steps (\d+)->(\d+)", err)
  assert announced, err[-3000:]
  resumed_at = int(announced.group(1))
  assert (resumed_at, int(announced.group(2))) == (committed[-1], NUM_STEPS)

  # The killed run's lines, then the resume's from the step after its checkpoint.
  want = {line["step"]: _deterministic(line) for line in _metric_lines(straight)}
  assert sorted(want) == list(range(1, NUM_STEPS + 1))
  lines = _metric_lines(interrupted)
  assert [line["step"] for line in lines] == (list(range(1, last + 1)) +
                                             list(range(resumed_at + 1, NUM_STEPS + 1)))
  for i, line in enumerate(lines):
    who = "killed" if i < last else "resumed"
    assert _deterministic(line) == want[line["step"]], (who, line["step"])
  # The stream went on: losses change from step to step, and the run read more bytes than
  # the whole corpus holds (the resume continued into another pass over the train split).
  losses = [want[s]["loss"] for s in range(resumed_at + 1, NUM_STEPS + 1)]
  assert len(set(losses)) == len(losses)
  assert want[NUM_STEPS]["total_utf8_bytes"] > _corpus_bytes()

  a, b = load.load_params(str(straight)), load.load_params(str(interrupted))
  assert a.step == b.step == NUM_STEPS
  assert a.config.data.sources == b.config.data.sources == sources
  assert b.config.data.num_workers == num_workers
  leaves_a, tree_a = jax.tree.flatten(a.params)
  leaves_b, tree_b = jax.tree.flatten(b.params)
  assert tree_a == tree_b and len(leaves_a) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  return runs


def _cached_files(tmp_path, name):
  """Files under a process's ``PROXYJAX_CACHE_DIR`` (whatever its layout inside)."""
  return sorted(f for _, _, files in os.walk(tmp_path / f"cache-{name}") for f in files)


# --- tests -------------------------------------------------------------------------------------


def test_parquet_kill_and_resume(tmp_path, xla_cache):
  _kill_and_resume(tmp_path, xla_cache, _write_parquet(tmp_path / "corpus"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gz", "zst"])
def test_compressed_jsonl_kill_and_resume(tmp_path, xla_cache, kind):
  write = _write_jsonl_gz if kind == "gz" else _write_jsonl_zst
  _kill_and_resume(tmp_path, xla_cache, write(tmp_path / "corpus"))
  # Every process decompressed the two files into its own cache.
  for name in ("straight", "killed", "resumed"):
    cached = _cached_files(tmp_path, name)
    assert len(cached) == 2 and all(c.endswith(".jsonl") for c in cached), (name, cached)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["save_to_disk", "hub_snapshot"])
def test_hf_kill_and_resume(tmp_path, xla_cache, layout):
  write = _write_save_to_disk if layout == "save_to_disk" else _write_hub_snapshot
  _kill_and_resume(tmp_path, xla_cache, write(tmp_path / "corpus"))


@pytest.mark.slow
def test_prepared_kill_and_resume_with_grain_workers(tmp_path, xla_cache):
  _kill_and_resume(tmp_path, xla_cache, _write_prepared(tmp_path / "corpus"), num_workers=2)
