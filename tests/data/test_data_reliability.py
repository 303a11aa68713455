"""Data that never hangs and never silently loses documents (issue 10, items 4 and 5).

* A source whose every document is unusable fails with one error naming
  ``data.sources`` and the skip counts (pipeline, inspect, training), and a
  SIGTERM while the pipeline is still looking stops training within seconds.
* ``**`` globs list each file once through symlinks and never loop.
* Tokenizer auto-training skips over-long documents and reports progress.
* A finite mixture of several sources reads every document (or, with
  ``data.mixture_end='first'``, counts the unread ones).

The hanging cases run under a deadline, so that they fail instead of hanging.
"""

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import data_config

from proxyjax import vocab as V
from proxyjax.data import mixing, pipeline, sources
from proxyjax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@contextlib.contextmanager
def deadline(seconds: float):
  """Raises TimeoutError in the main thread if the block runs longer than ``seconds``."""

  def expire(signum, frame):
    raise TimeoutError(f"still running after {seconds} s")

  previous = signal.signal(signal.SIGALRM, expire)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)




# --- unusable sources ----------------------------------------------------------------


def _unusable(tmp_path, kind: str) -> str:
  """A sources spec whose every document is skipped."""
  if kind == "empty_and_binary":
    d = tmp_path / "tree"
    d.mkdir()
    for i in range(10):
      (d / f"empty{i}.py").write_bytes(b"")
      (d / f"bin{i}.py").write_bytes(b"\x7fELF\x00\x01\x02" * 10)
    return f"files:{d}"
  if kind == "malformed_jsonl":
    p = tmp_path / "bad.jsonl"
    p.write_text("not json\n{broken\n[1, 2\n")
    return f"jsonl:{p}"
  p = tmp_path / "binary.jsonl"  # a binary saved as .jsonl
  p.write_bytes(bytes(range(256)) * 40)
  return f"jsonl:{p}"


@pytest.mark.parametrize("kind", ["empty_and_binary", "malformed_jsonl", "binary_as_jsonl"])
@pytest.mark.parametrize("num_epochs", [-1, 1])
def test_unusable_source_fails_with_skip_counts(tmp_path, kind, num_epochs):
  c = data_config(sources=_unusable(tmp_path, kind), num_epochs=num_epochs, view="raw",
              validation_fraction=0.0)
  it = pipeline.make_iterator(c, process_index=0, process_count=1)
  with deadline(20), pytest.raises(ConfigError) as e:
    pipeline.next_batch(it)
  assert isinstance(e.value, mixing.NoUsableDocumentsError)
  assert e.value.field == "data.sources"
  message = str(e.value)
  assert "no usable document" in message and "skipped " in message
  expected = {"empty_and_binary": ["binary=", "empty="], "malformed_jsonl": ["malformed_json="],
              "binary_as_jsonl": ["malformed_json="]}[kind]
  assert all(x in message for x in expected), message


def test_unusable_source_fails_in_grain_workers(tmp_path):
  """The error crosses from a worker process to the main process (picklable)."""
  c = data_config(sources=_unusable(tmp_path, "malformed_jsonl"), view="raw", num_workers=1,
              validation_fraction=0.0)
  it = pipeline.make_iterator(c, process_index=0, process_count=1)
  try:
    with deadline(60), pytest.raises(ConfigError, match="no usable document"):
      pipeline.next_batch(it)
  finally:
    it.close()


def test_a_usable_source_next_to_an_unusable_one_is_not_an_error(tmp_path):
  bad = _unusable(tmp_path, "empty_and_binary")
  good = tmp_path / "good.jsonl"
  good.write_text("".join(json.dumps({"text": f"x = {i}\n"}) + "\n" for i in range(3)))
  c = data_config(sources=f"{bad}@50;jsonl:{good}", view="raw", validation_fraction=0.0)
  it = pipeline.make_iterator(c, process_index=0, process_count=1)
  with deadline(20):
    for _ in range(5):
      pipeline.next_batch(it)
  stats = pipeline.pipeline_stats(it)
  assert stats["docs_used"] > 0 and stats["skipped:binary"] > 0


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def test_inspect_fails_fast_on_an_unusable_source(tmp_path):
  spec = _unusable(tmp_path, "empty_and_binary")
  # A hang guard, not a speed test: on an unusable source the pipeline used to
  # search forever; a few seconds is normal, minutes under a loaded machine.
  try:
    proc = subprocess.run(
        [sys.executable, "-m", "proxyjax.data.inspect", "--config=configs/tiny.py",
         "--num_batches=1", "--stats", f"--config.data.sources={spec}"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
  except subprocess.TimeoutExpired:
    pytest.fail("inspect still running after 180 s on an unusable source")
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert "data.sources" in last and "binary=" in last and "empty=" in last, proc.stderr[-2000:]


def _train_config(spec, **data):
  from proxyjax import config as config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.tiny_config()
  c.seq_len, c.batch_size, c.num_steps, c.eval_every, c.progress_bar = 64, 8, 4, 0, False
  c.async_checkpointing = False
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 32, 1, 2, 2, 16, 64
  m.logits_chunk = 32
  c.data.sources, c.data.view, c.data.schedule.enabled = spec, "raw", False
  for k, v in data.items():
    c.data[k] = v
  return c


def test_training_fails_fast_on_an_unusable_source(tmp_path):
  from proxyjax import trainer  # pylint: disable=g-import-not-at-top
  c = _train_config(_unusable(tmp_path, "malformed_jsonl"))
  with deadline(180), pytest.raises(ConfigError, match="no usable document") as e:
    trainer.train(c, str(tmp_path / "w"))  # a hang guard (it used to search forever)
  assert "data.sources" in str(e.value) and "malformed_json=" in str(e.value)


class _EarlySignal(Exception):
  pass


def test_sigterm_while_the_pipeline_finds_nothing_stops_training(tmp_path):
  """A source too large to finish its passes quickly: SIGTERM must not wait for it."""
  import threading  # pylint: disable=g-import-not-at-top

  from proxyjax import trainer  # pylint: disable=g-import-not-at-top
  path = tmp_path / "huge.jsonl"
  with open(path, "w") as f:
    f.write("x\n" * 500_000)  # every line malformed: two passes take many seconds
  c = _train_config(f"jsonl:{path}", validation_fraction=0.0)
  sent = []

  def send_when_waiting_for_data():
    deadline_at = time.monotonic() + 60
    while time.monotonic() < deadline_at:  # next_batch's handler: the loop waits for data
      handler = signal.getsignal(signal.SIGTERM)
      if getattr(handler, "__self__", None).__class__.__name__ == "_DataWait":
        time.sleep(0.5)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)
        return
      time.sleep(0.05)

  def early(signum, frame):  # a signal before the loop's handler must not kill pytest
    raise _EarlySignal()

  previous = signal.signal(signal.SIGTERM, early)
  thread = threading.Thread(target=send_when_waiting_for_data, daemon=True)
  thread.start()
  try:
    with deadline(90), pytest.raises(SystemExit) as e:
      trainer.train(c, str(tmp_path / "w"))
  finally:
    thread.join(timeout=70)
    signal.signal(signal.SIGTERM, previous)
  e.value.cancel_exit_deadline()  # (only armed with worker processes)
  assert sent, "the loop never waited for data"
  assert time.monotonic() - sent[0] < 10
  assert e.value.code == 128 + signal.SIGTERM
  assert "SIGTERM while waiting for data" in str(e.value)


# --- globs ------------------------------------------------------------------------------


def _jsonl_tree(root, n=20):
  root.mkdir()
  (root / "a.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n"
                                        for i in range(n)))
  return root


def test_glob_with_a_self_link_lists_each_file_once(tmp_path):
  root = _jsonl_tree(tmp_path / "data")
  os.symlink(".", root / "self")
  with deadline(20):
    src = sources.JsonlSource(f"{root}/**/*.jsonl")
  assert len(src) == 20
  assert [src[i]["key"] for i in range(3)] == ["a.jsonl:1", "a.jsonl:2", "a.jsonl:3"]


def test_glob_with_up_links_does_not_hang(tmp_path):
  root = _jsonl_tree(tmp_path / "data")
  for sub in ("s1", "s2"):  # two loops: the old expansion grew as 2^depth
    (root / sub).mkdir()
    os.symlink("..", root / sub / "up")
  (root / "s1" / "b.jsonl").write_text(json.dumps({"text": "b"}) + "\n")
  with deadline(20):
    src = sources.JsonlSource(f"{root}/**/*.jsonl")
  assert len(src) == 21
  assert sorted({src[i]["key"].rsplit(":", 1)[0] for i in range(len(src))}) == [
      "a.jsonl", "s1/b.jsonl"]


def test_glob_follows_a_link_out_of_the_tree_once(tmp_path):
  outside = _jsonl_tree(tmp_path / "outside", n=3)
  root = _jsonl_tree(tmp_path / "data", n=2)
  os.symlink(str(outside), root / "ext")
  os.symlink(str(outside), root / "ext2")  # the same directory again: listed once
  os.symlink("a.jsonl", root / "alias.jsonl")  # a file link: the real path wins
  with deadline(20):
    src = sources.JsonlSource(f"{root}/**/*.jsonl")
  assert len(src) == 5
  assert sorted({src[i]["key"].rsplit(":", 1)[0] for i in range(len(src))}) == [
      "a.jsonl", "ext/a.jsonl"]


# --- tokenizer auto-training ---------------------------------------------------------


def test_tokenizer_training_skips_overlong_documents(tmp_path, capsys):
  from proxyjax.tools import train_tokenizer as tt  # pylint: disable=g-import-not-at-top
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  for i in range(20):
    (corpus / f"m{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 5)
  (corpus / "huge.py").write_text("y = 1  " * 20_000)  # one 140 kB line
  c = data_config(sources=f"files:{corpus}", view="tokenizer", max_document_bytes=10_000,
              tokenizer_vocab_size=300, tokenizer_cache_dir=str(tmp_path / "cache"),
              validation_fraction=0.0)
  with deadline(60):
    path = pipeline.resolve_tokenizer(c)
  with open(path + ".summary.json") as f:
    summary = json.load(f)
  assert summary["skipped"] == {"too_large": 1}
  assert summary["documents"] == 20
  assert "tokenizer: 20 documents" in capsys.readouterr().err  # progress on stderr
  direct = tt.train_tokenizer(f"files:{corpus}", 300, str(tmp_path / "t.json"),
                              validation_fraction=0.0, max_document_bytes=10_000)
  assert direct["skipped"] == {"too_large": 1}


# --- several finite sources --------------------------------------------------------


def _two_sources():
  a = sources.ListSource([f"alpha {i}\n" for i in range(12)], name="a")
  b = sources.ListSource([f"beta {i}\n" for i in range(30)], name="b")
  return [(a, 1.0), (b, 1.0)]


def _read_all(c, **kwargs):
  it = pipeline.make_iterator(c, process_index=0, process_count=1,
                              sources=_two_sources(), **kwargs)
  batches = []
  with deadline(30):
    while True:
      try:
        batches.append(pipeline.next_batch(it))
      except StopIteration:
        break
  stream = np.concatenate([r for b in batches for r in b["inputs"]])
  texts = collections.Counter(V.ids_to_bytes(doc[0].ids).decode()
                              for doc in V.parse_documents(stream))
  return pipeline.pipeline_stats(it), texts


def test_two_finite_sources_read_every_document():
  c = data_config(num_epochs=1, view="raw", shuffle=True)
  stats, texts = _read_all(c)
  assert stats["docs_from:a"] == 12 and stats["docs_from:b"] == 30
  assert stats["unread_at_end:a"] == 0 and stats["unread_at_end:b"] == 0
  assert stats["docs_used"] == 42
  assert sorted(texts) == sorted([f"alpha {i}\n" for i in range(12)]
                                 + [f"beta {i}\n" for i in range(30)])
  assert set(texts.values()) == {1}


def test_two_finite_sources_first_end_counts_the_unread():
  c = data_config(num_epochs=2, view="raw", mixture_end="first")
  stats, _ = _read_all(c)
  assert stats["docs_from:a"] == 24  # two epochs of a: the first source to run out
  read_b = stats["docs_from:b"]
  assert read_b + stats["unread_at_end:b"] == 60 and stats["unread_at_end:a"] == 0
  assert abs(read_b - 24) <= 1  # equal weights hold to the end


@pytest.mark.parametrize("processes,workers", [(2, 0), (1, 2)])
def test_two_finite_sources_split_over_processes_or_workers_read_everything(processes, workers):
  c = data_config(num_epochs=1, view="raw", num_workers=workers)
  seen = collections.Counter()
  for p in range(processes):
    it = pipeline.make_iterator(c, process_index=p, process_count=processes,
                                sources=_two_sources())
    try:
      with deadline(60):
        while True:
          try:
            pipeline.next_batch(it)
          except StopIteration:
            break
      stats = pipeline.pipeline_stats(it)
    finally:
      it.close()
    seen.update({k: v for k, v in stats.items() if k.startswith(("docs_from:", "unread"))})
  assert seen["docs_from:a"] == 12 and seen["docs_from:b"] == 30
  assert seen["unread_at_end:a"] == seen["unread_at_end:b"] == 0


@pytest.mark.parametrize("end", ["all", "first"])
@pytest.mark.parametrize("lengths,weights", [([12, 30], [1, 1]), ([5, 100, 7], [0.7, 0.2, 0.1]),
                                             ([3, 3], [1, 1000]), ([9], [2.0])])
def test_finite_mixture_plan(lengths, weights, end):
  from proxyjax.data import mixture  # pylint: disable=g-import-not-at-top
  m = mixture.FiniteMixture(lengths, weights, end)
  picked = collections.defaultdict(list)
  for j in range(len(m)):
    src, key = m[j]
    picked[src].append(key)
  for keys in picked.values():
    assert keys == list(range(len(keys)))  # each document once, in order
  unread = [n - len(picked[i]) for i, n in enumerate(lengths)]
  assert unread == m.unread()
  if end == "all":
    assert len(m) == sum(lengths) and unread == [0] * len(lengths)
  else:
    assert 0 in unread and any(len(picked[i]) == n for i, n in enumerate(lengths))
  for stride in (2, 3):  # the streams' shares add up
    shares = [m.unread(s, stride) for s in range(stride)]
    assert [sum(x) for x in zip(*shares)] == unread
