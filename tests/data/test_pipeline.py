"""The Grain pipeline end to end: resume, accounting, bad input, property test."""

import os

import numpy as np
import pytest
from helpers import data_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxyjax import vocab as V
from proxyjax.data import mixing, pipeline, sources
from proxyjax.errors import ConfigError
from proxyjax.views import make_view


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _stream(batches):
  """Concat packing: rows are consecutive slices of one stream."""
  return np.concatenate([r for b in batches for r in b["inputs"]])


@pytest.mark.parametrize("packing", ["concat", "first_fit"])
def test_resume_reproduces_batches(packing):
  c = data_config(packing=packing)
  n, k = 12, 5
  straight_it = pipeline.make_iterator(c, process_index=0, process_count=1)
  straight = _take(straight_it, n)
  it = pipeline.make_iterator(c, process_index=0, process_count=1)
  first = _take(it, k)
  state = it.get_state()
  resumed = pipeline.make_iterator(c, process_index=0, process_count=1)
  resumed.set_state(state)
  _assert_batches_equal(straight, first + _take(resumed, n - k))
  # The accounting continues across the resume as if nothing happened.
  stats = pipeline.pipeline_stats(resumed)
  assert stats == pipeline.pipeline_stats(straight_it)
  assert stats["docs_read"] == stats["docs_used"] + stats["docs_skipped"] >= 1
  assert stats["ids"] >= n * c.batch_size * c.seq_len


def test_resume_with_worker_processes_and_orbax(tmp_path):
  import grain
  import orbax.checkpoint as ocp
  c = data_config(num_workers=2)
  n, k = 10, 4
  it = pipeline.make_iterator(c, process_index=0, process_count=1)
  straight = _take(it, n)
  it.close()
  it = pipeline.make_iterator(c, process_index=0, process_count=1)
  first = _take(it, k)
  with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as mngr:
    mngr.save(k, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  it.close()
  resumed = pipeline.make_iterator(c, process_index=0, process_count=1)
  with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as mngr:
    mngr.restore(k, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  rest = _take(resumed, n - k)
  stats = pipeline.pipeline_stats(resumed)
  resumed.close()
  _assert_batches_equal(straight, first + rest)
  assert stats["docs_read"] == stats["docs_used"] + stats["docs_skipped"]


def test_worker_count_changes_are_refused():
  c = data_config(num_workers=2)
  it = pipeline.make_iterator(c, process_index=0, process_count=1)
  _take(it, 2)
  state = it.get_state()
  it.close()
  c.data.num_workers = 0
  other = pipeline.make_iterator(c, process_index=0, process_count=1)
  with pytest.raises((KeyError, ValueError)):  # Grain's multi-worker state has other keys
    other.set_state(state)


def test_processes_get_disjoint_documents():
  docs = [b"doc %d\n" % i for i in range(40)]
  c = data_config(shuffle=False, num_epochs=1)
  c.data.schedule.enabled = False
  c.data.rate = 0.0
  seen = []
  for p in range(2):
    it = pipeline.make_iterator(c, process_index=p, process_count=2,
                                sources=[(sources.ListSource(docs), 1.0)])
    for doc in V.parse_documents(_stream(list(it))):
      seen.append(V.ids_to_bytes(doc[0].ids))
  assert sorted(seen) == sorted(docs)
  with pytest.raises(ConfigError, match="batch_size"):
    pipeline.build_dataset(c, process_index=0, process_count=3)


def test_schedule_follows_stream_position():
  # Rate 0 for step 0, 0.5 at step 1, 1.0 from step 2 on; sentinel mode throughout.
  c = data_config(shuffle=False)
  sched = mixing.Schedule(initial_rate=0.0, peak_rate=1.0, final_rate=1.0, warmup_steps=2,
                          initial_mode="sentinel", steady_mode="sentinel", final_mode="sentinel")
  docs = [b"x" * (i % 13 + 1) for i in range(500)]
  it = pipeline.make_iterator(c, process_index=0, process_count=1, schedule=sched,
                              sources=[(sources.ListSource(docs), 1.0)])
  stream = _stream(_take(it, 6))
  per_step = c.batch_size * c.seq_len
  eos = np.flatnonzero(stream == V.EOS)
  starts = np.concatenate([[0], eos[:-1] + 1])
  kinds = [stream[s + 1] for s in starts]
  steps = starts // per_step
  assert all(k == V.RAW_OPEN for k, s in zip(kinds, steps) if s == 0)
  assert all(k == V.COMP_OPEN for k, s in zip(kinds, steps) if s >= 2)
  mid = [k for k, s in zip(kinds, steps) if s == 1]
  assert V.RAW_OPEN in mid and V.COMP_OPEN in mid


def test_bad_input_is_counted_not_fatal(tmp_path):
  root = tmp_path / "corpus"
  root.mkdir()
  (root / "empty.py").write_bytes(b"")
  (root / "binary.py").write_bytes(b"\x00\x01\x02" * 10)
  (root / "latin1.py").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
  (root / "long.py").write_bytes(b"x = 1\n" * 2000)  # many rows long
  (root / "ok.py").write_bytes(b"print('hi')\n")
  (root / "gone.py").write_bytes(b"vanishes\n")
  c = data_config(sources=f"files:{root}", validation_fraction=0.0, shuffle=False, num_epochs=1)
  ds = pipeline.build_dataset(c, process_index=0, process_count=1)
  os.remove(root / "gone.py")  # vanishes after listing, before reading
  it = iter(ds)
  batches = list(it)
  stats = pipeline.pipeline_stats(it)
  assert stats["docs_read"] == 6
  assert stats["skipped:empty"] == 1 and stats["skipped:binary"] == 1
  assert stats["skipped:unreadable"] == 1
  assert stats["docs_used"] == 3 and stats["invalid_utf8_kept"] == 1
  assert stats["docs_read"] == stats["docs_used"] + stats["docs_skipped"]
  docs = V.parse_documents(_stream(batches))
  assert len(docs) == 3  # the long file spans many rows and is still one document
  assert len(batches) * c.batch_size * c.seq_len >= 12_000


def test_bad_jsonl_lines_are_counted(tmp_path):
  path = tmp_path / "data.jsonl"
  path.write_text('{"text": "a = 1"}\n{not json\n{"content": "b = 2"}\n{"other": 1}\n')
  c = data_config(sources=f"jsonl:{path}", validation_fraction=0.0, shuffle=False, num_epochs=1)
  it = pipeline.make_iterator(c, process_index=0, process_count=1)
  list(it)
  stats = pipeline.pipeline_stats(it)
  assert stats["docs_read"] == 4 and stats["docs_used"] == 2
  assert stats["skipped:malformed_json"] == 1 and stats["skipped:missing_text"] == 1


@pytest.mark.parametrize("field, value, match", [
    ("view", "lzma", "data.view"),
    ("mode", "translation", "data.mode"),
    ("rate", 1.5, "data.rate"),
    ("packing", "best", "data.packing"),
    ("sources", "nosuchkind:x", "data.sources"),
])
def test_bad_config_names_the_field(field, value, match):
  c = data_config(**{field: value})
  with pytest.raises(ConfigError, match=match):
    pipeline.build_dataset(c, process_index=0, process_count=1)


def test_bad_top_level_config():
  c = data_config()
  c.seq_len = 3
  with pytest.raises(ConfigError, match="seq_len"):
    pipeline.build_dataset(c, process_index=0, process_count=1)
  c = data_config()
  c.data.schedule.peak_rate = -0.1
  with pytest.raises(ConfigError, match="data.schedule.peak_rate"):
    pipeline.build_dataset(c, process_index=0, process_count=1)


def test_vocab_size_is_derived():
  assert pipeline.build_vocab(data_config(view="raw")).size == 384
  assert pipeline.build_vocab(data_config(view="deflate")).size == 640
  assert pipeline.build_vocab(data_config(view="deflate", separate_embedding=False)).size == 384
  assert pipeline.build_vocab(data_config(view="doublebyte")).size == 320 + 65536 + 64
  assert pipeline.build_vocab(data_config(view="halfbyte")).size == 384


_MODES = ["sentinel", "translation_random", "parallel_random", "translation_raw_compressed",
          "parallel_compressed_raw"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=25),
       mode=st.sampled_from(_MODES), rate=st.floats(0.0, 1.0),
       seq_len=st.integers(4, 48), heads=st.integers(1, 3),
       view=st.sampled_from(["deflate", "halfbyte", "gzip"]))
def test_unpacking_recovers_every_document(docs, mode, rate, seq_len, heads, view):
  c = data_config(shuffle=False, num_epochs=1, view=view)
  c.seq_len = seq_len
  c.batch_size = 3
  c.model.num_pred_heads = heads
  it = pipeline.make_iterator(c, process_index=0, process_count=1,
                              schedule=mixing.Schedule.constant(rate, mode),
                              sources=[(sources.ListSource(docs), 1.0)])
  batches = list(it)
  stats = pipeline.pipeline_stats(it)
  expected = [d for d in docs if d]
  assert stats["docs_read"] == len(docs) and stats["docs_used"] == len(expected)
  if not expected:
    assert not batches
    return
  stream = _stream(batches)
  stream = stream[:np.flatnonzero(stream)[-1] + 1]  # drop the final row's padding
  v = make_view(view)
  vocab = V.Vocab(v.alphabet_size)
  decoded = []  # (bytes, kinds) per BOS..EOS document
  for doc in V.parse_documents(stream):
    parts = [(V.ids_to_bytes(p.ids) if p.kind == "raw" else v.decode(vocab.ids_to_symbols(p.ids)),
              p.kind) for p in doc]
    assert len({data for data, _ in parts}) == 1  # both halves of a translation pair agree
    decoded.append((parts[0][0], tuple(k for _, k in parts)))
  # A parallel pair is two adjacent single-view documents (one raw, one compressed).
  merged, i = [], 0
  while i < len(decoded):
    if (mode.startswith("parallel") and i + 1 < len(decoded)
        and decoded[i][0] == decoded[i + 1][0]
        and {decoded[i][1], decoded[i + 1][1]} == {("raw",), ("compressed",)}):
      i += 2
      merged.append(decoded[i - 2][0])
    else:
      merged.append(decoded[i][0])
      i += 1
  assert merged == expected  # nothing lost, nothing duplicated, in order
  views = [k for _, kinds in decoded for k in kinds]
  assert views.count("raw") == stats.get("views:raw", 0)
  assert views.count("compressed") == stats.get("views:compressed", 0)
  # Targets are the next ids of the stream.
  flat_t = np.concatenate([r for b in batches for r in
                           (b["targets"] if heads == 1 else b["targets"][..., 0])])
  np.testing.assert_array_equal(flat_t[:stream.size - 1], stream[1:])


def test_weighted_source_mixing():
  a = sources.ListSource([b"a%d" % i for i in range(50)], name="a")
  b = sources.ListSource([b"b%d" % i for i in range(50)], name="b")
  c = data_config()
  it = pipeline.make_iterator(c, process_index=0, process_count=1, view=None,
                              sources=[(a, 3.0), (b, 1.0)])
  _take(it, 20)
  stats = pipeline.pipeline_stats(it)
  frac = stats["docs_from:a"] / (stats["docs_from:a"] + stats["docs_from:b"])
  assert abs(frac - 0.75) < 0.03, frac
  assert stats["docs_read"] > 300  # repeats past one epoch of each source


def test_too_large_documents_are_skipped_and_counted():
  docs = [b"x" * 100, b"y" * 10, b"z" * 5000]
  c = data_config(shuffle=False, num_epochs=1, max_document_bytes=1000)
  it = pipeline.make_iterator(c, process_index=0, process_count=1, view=None,
                              sources=[(sources.ListSource(docs), 1.0)])
  out = [V.ids_to_bytes(d[0].ids) for d in V.parse_documents(_stream(list(it)))]
  assert out == docs[:2]
  assert pipeline.pipeline_stats(it)["skipped:too_large"] == 1


def test_schedule_follows_position_with_worker_processes():
  # With 2 workers, batch b comes from worker b % 2 and is the process's step b.
  c = data_config(shuffle=False, num_workers=2)
  c.data.schedule.update(initial_rate=0.0, peak_rate=1.0, final_rate=1.0, warmup_steps=4,
                         initial_mode="sentinel", steady_mode="sentinel", final_mode="sentinel")
  docs = [b"q" * (i % 7 + 1) for i in range(400)]
  it = pipeline.make_iterator(c, process_index=0, process_count=1,
                              sources=[(sources.ListSource(docs), 1.0)])
  batches = _take(it, 8)
  it.close()
  for step, batch in enumerate(batches):
    ids = batch["inputs"]
    opens = ids[:, 1:][ids[:, :-1] == V.BOS]  # the sentinel after each BOS
    if step == 0:
      assert (opens == V.RAW_OPEN).all()
    elif step >= 4:
      assert (opens == V.COMP_OPEN).all()
    else:  # rates 0.25, 0.5, 0.75
      assert {V.RAW_OPEN, V.COMP_OPEN} <= set(opens.tolist())
