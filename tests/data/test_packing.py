"""Segment ids, positions, targets and state of the packers."""

import grain
import numpy as np
import pytest

from proxyjax.data import packing


def _docs(lengths, seed=0):
  """Documents [BOS, x..., EOS] with distinct payload ids."""
  rng = np.random.default_rng(seed)
  out = []
  for n in lengths:
    out.append(np.concatenate([[1], rng.integers(64, 320, n), [2]]).astype(np.int32))
  return out


def _source(docs):
  return grain.MapDataset.source([{"ids": d} for d in docs]).to_iter_dataset()


def test_segments_and_positions_hand_written():
  row = np.array([1, 12, 70, 13, 2, 1, 12, 71, 13, 2, 1, 12])
  seg, pos = packing.segments_and_positions(row)
  assert seg.tolist() == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3]
  assert pos.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
  # A row starting mid-document: the continuation is its own segment; EOS closes it.
  seg, pos = packing.segments_and_positions(np.array([70, 71, 13, 2, 1, 12, 80]))
  assert seg.tolist() == [1, 1, 1, 1, 2, 2, 2]
  assert pos.tolist() == [0, 1, 2, 3, 0, 1, 2]
  # Padding beyond num_real: segment 0, position 0.
  seg, pos = packing.segments_and_positions(np.array([1, 70, 2, 1, 0, 0]), num_real=4)
  assert seg.tolist() == [1, 1, 1, 2, 0, 0] and pos.tolist() == [0, 1, 2, 0, 0, 0]
  # Translation pair = one segment; parallel pair = two.
  seg, _ = packing.segments_and_positions(np.array([1, 12, 70, 13, 14, 400, 15, 2]))
  assert seg.tolist() == [1] * 8
  seg, _ = packing.segments_and_positions(np.array([1, 12, 70, 13, 2, 1, 14, 400, 15, 2]))
  assert seg.tolist() == [1] * 5 + [2] * 5
  seg, pos = packing.segments_and_positions(np.array([1, 70, 2, 1, 71]), doc_mask=False)
  assert seg.tolist() == [1] * 5 and pos.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("num_targets", [1, 3])
def test_concat_split_rows_cover_the_stream(num_targets):
  docs = _docs([3, 40, 1, 7, 90, 2, 5, 11], seed=1)
  stream = np.concatenate(docs)
  L = 16
  rows = list(packing.ConcatSplitPackIterDataset(_source(docs), L, num_targets))
  inputs = np.concatenate([r["inputs"] for r in rows])
  assert len(rows) == -(-stream.size // L)
  np.testing.assert_array_equal(inputs[:stream.size], stream)  # nothing lost or duplicated
  assert (inputs[stream.size:] == 0).all()
  padded = np.concatenate([stream, np.zeros(L + num_targets, np.int32)])
  for r_i, r in enumerate(rows):
    t = np.arange(L) + r_i * L
    for h in range(num_targets):
      got = r["targets"] if num_targets == 1 else r["targets"][:, h]
      np.testing.assert_array_equal(got, padded[t + 1 + h])
    # Segment ids restart at every row and after each EOS; positions count from the start.
    seg, pos = packing.segments_and_positions(r["inputs"], min(L, stream.size - r_i * L))
    np.testing.assert_array_equal(r["segment_ids"], seg)
    np.testing.assert_array_equal(r["positions"], pos)
  # The long document continues into later rows without a new BOS.
  assert rows[1]["inputs"][0] != 1


def test_concat_split_state_restores_every_row():
  docs = _docs(np.random.default_rng(3).integers(1, 60, 40), seed=3)
  ds = packing.ConcatSplitPackIterDataset(_source(docs), 24, num_targets=2)
  ref = list(ds)
  for k in range(0, len(ref) + 1, 3):
    it = iter(ds)
    for _ in range(k):
      next(it)
    state = it.get_state()
    it2 = iter(ds)
    it2.set_state(state)
    rest = list(it2)
    assert len(rest) == len(ref) - k
    for a, b in zip(rest, ref[k:]):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_document_chunks_split_long_documents():
  doc = np.array([1, 70, 71, 72, 73, 74, 2], np.int32)
  chunks = packing.document_chunks(np.concatenate([doc, [1, 80, 2]]), seq_len=4, num_targets=2)
  assert [c["inputs"].tolist() for c in chunks] == [[1, 70, 71, 72], [73, 74], [1, 80]]
  assert chunks[0]["targets"].tolist() == [[70, 71], [71, 72], [72, 73], [73, 74]]
  assert chunks[1]["targets"].tolist() == [[74, 2], [2, 0]]
  assert chunks[2]["targets"].tolist() == [[80, 2], [2, 0]]


def test_first_fit_keeps_documents_whole_and_pads():
  docs = _docs([3, 10, 5, 20, 1, 8, 13], seed=5)
  rows = list(packing.first_fit_pack(_source(docs), seq_len=24, num_targets=1, num_bins=3,
                                     seed=0))
  seen = []
  for r in rows:
    pad = r["segment_ids"] == 0
    assert (r["inputs"][pad] == 0).all() and (r["targets"][pad] == 0).all()
    for s in np.unique(r["segment_ids"][~pad]):
      m = r["segment_ids"] == s
      assert r["positions"][m].tolist() == list(range(m.sum()))
      seen.append(tuple(r["inputs"][m].tolist()) + (int(r["targets"][m][-1]),))
  # Every document appears exactly once, whole (inputs + its final EOS target).
  assert sorted(seen) == sorted(tuple(d.tolist()) for d in docs)


def test_chunk_iterator_state():
  docs = _docs([30, 2, 45, 9], seed=9)
  ds = packing.ChunkIterDataset(_source(docs), seq_len=8, num_targets=1)
  ref = list(ds)
  for k in range(len(ref)):
    it = iter(ds)
    for _ in range(k):
      next(it)
    it2 = iter(ds)
    it2.set_state(it.get_state())
    assert [c["inputs"].tolist() for c in it2] == [c["inputs"].tolist() for c in ref[k:]]
