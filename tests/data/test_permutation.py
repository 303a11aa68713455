"""``permutation.KeyedPermutation``: a bijection for every size, well mixed, pinned, O(1)."""

import pickle
import sys

import numpy as np
import pytest

from proxyjax.data import mixing, permutation, pipeline


def _all(p):
  return [p[i] for i in range(len(p))]


@pytest.mark.parametrize("key", [0, 1, 2**64 - 1, 123456789])
def test_a_bijection_for_every_size(key):
  for n in list(range(1, 300)) + [511, 512, 513, 4096, 65537]:
    assert sorted(_all(permutation.KeyedPermutation(n, key))) == list(range(n)), n


def test_bounds_and_empty():
  p = permutation.KeyedPermutation(5, 3)
  with pytest.raises(IndexError):
    p[5]
  with pytest.raises(IndexError):
    p[-1]
  assert len(permutation.KeyedPermutation(0, 3)) == 0
  with pytest.raises(ValueError):
    permutation.KeyedPermutation(-1, 3)


@pytest.mark.parametrize("n", [50, 64])  # with and without cycle walking
def test_positions_are_uniform_over_keys(n):
  """Where each element lands, over 4000 keys: a chi-square test of the n x n table
  (dof (n-1)^2; 5 standard deviations above its mean fails)."""
  keys = 4000
  counts = np.zeros((n, n))
  for k in range(keys):
    p = permutation.KeyedPermutation(n, mixing.stream_key(7, k))
    counts[np.arange(n), _all(p)] += 1
  expected = keys / n
  chi2 = ((counts - expected) ** 2 / expected).sum()
  dof = (n - 1) ** 2
  assert chi2 < dof + 5 * np.sqrt(2 * dof), chi2


def test_no_structure_left_in_a_large_permutation():
  n = 100_003
  s = np.array(_all(permutation.KeyedPermutation(n, 11)))
  assert abs(np.corrcoef(np.arange(n), s)[0, 1]) < 0.02
  assert abs(np.corrcoef(s[:-1], s[1:])[0, 1]) < 0.02  # neighbours land far apart
  assert np.mean(np.abs(np.diff(s)) <= 2) < 1e-3
  assert np.mean(s[: n // 2] < n // 2) == pytest.approx(0.5, abs=0.01)  # halves mix
  assert (s % 2 == np.arange(n) % 2).mean() == pytest.approx(0.5, abs=0.01)  # low bits too


def test_keys_give_different_orders_and_the_same_key_the_same():
  a = _all(permutation.KeyedPermutation(1000, 1))
  assert a == _all(permutation.KeyedPermutation(1000, 1))
  b = _all(permutation.KeyedPermutation(1000, 2))
  assert np.mean(np.array(a) == np.array(b)) < 0.02


def test_pinned_values():
  """The order is part of every run's data over ``EXACT_SHUFFLE_MAX_DOCUMENTS`` documents
  (recorded as ``pipeline.KEYED_STREAM`` in checkpoints): a change must be deliberate and
  get a new stream name."""
  assert _all(permutation.KeyedPermutation(10, 0)) == [9, 6, 4, 8, 0, 3, 5, 1, 7, 2]
  p = permutation.KeyedPermutation(10**9, mixing.stream_key(0, 1000))
  assert [p[i] for i in (0, 1, 2, 10**9 - 1)] == [250225676, 523948979, 474572052,
                                                 131921573]


def test_memory_does_not_grow_with_n():
  small = permutation.KeyedPermutation(10, 1)
  large = permutation.KeyedPermutation(10**12, 1)
  assert len(pickle.dumps(large)) < 2 * len(pickle.dumps(small))
  assert sys.getsizeof(large) == sys.getsizeof(small)


@pytest.mark.parametrize("keyed", [False, True])
def test_epoch_shuffle_dataset_permutes_each_epoch_independently(keyed, monkeypatch):
  import grain  # pylint: disable=g-import-not-at-top
  n = 97
  if keyed:  # a source over the exact-permutation limit
    monkeypatch.setattr(pipeline, "EXACT_SHUFFLE_MAX_DOCUMENTS", n - 1)
  ds = pipeline.EpochShuffleMapDataset(grain.MapDataset.range(n), seed=5, block=10).repeat(3)
  got = [ds[i] for i in range(3 * n)]
  epochs = [got[e * n:(e + 1) * n] for e in range(3)]
  for e, order in enumerate(epochs):  # each epoch: every document once
    assert sorted(order) == list(range(n)), e
  assert epochs[0] != epochs[1] != epochs[2]
  if keyed:  # blocks of 10 documents, 8 blocks a window
    assert epochs[1] == _all(permutation.WindowedPermutation(
        n, mixing.stream_key(5, 1), 10, pipeline.SHUFFLE_WINDOW_BLOCKS))
  else:  # the order of every earlier release
    assert epochs[1] == np.random.default_rng([5, 1]).permutation(n).tolist()
  again = pickle.loads(pickle.dumps(ds))  # as a Grain worker receives it
  assert [again[i] for i in range(3 * n)] == got


def test_data_stream_names_the_order_and_the_iterator_records_it(monkeypatch):
  limit = pipeline.EXACT_SHUFFLE_MAX_DOCUMENTS
  assert limit == 2**20
  assert pipeline.data_stream([limit, 5]) == pipeline.NUMPY_STREAM
  assert pipeline.data_stream([limit + 1]) == pipeline.KEYED_STREAM
  assert pipeline.data_stream([limit + 1], shuffle=False) == pipeline.NUMPY_STREAM
  from helpers import small_config  # pylint: disable=g-import-not-at-top
  c = small_config()
  it = pipeline.make_iterator(c, "train", process_index=0, process_count=1)
  assert pipeline.iterator_data_stream(it) == pipeline.NUMPY_STREAM
  monkeypatch.setattr(pipeline, "EXACT_SHUFFLE_MAX_DOCUMENTS", 3)
  it = pipeline.make_iterator(c, "train", process_index=0, process_count=1)
  assert pipeline.iterator_data_stream(it) == pipeline.KEYED_STREAM
  next(it)


@pytest.mark.parametrize("n,block,window", [(1, 1, 1), (7, 3, 2), (100, 7, 3), (1000, 64, 8),
                                            (4096, 64, 8), (12345, 1000, 4), (300, 1000, 8)])
def test_windowed_permutation_is_a_bijection(n, block, window):
  for key in (0, 99):
    assert sorted(_all(permutation.WindowedPermutation(n, key, block, window))) == \
        list(range(n))


def test_windowed_permutation_reads_one_window_of_blocks_at_a_time():
  """Each window of ``window * block`` positions holds exactly ``window`` whole blocks,
  in a keyed order of blocks (different per key), with documents mixed inside it."""
  n, block, window = 100_000, 1000, 8
  p = permutation.WindowedPermutation(n, 3, block, window)
  s = np.array(_all(p))
  orders = []
  for w in range(0, n // (block * window)):
    part = s[w * block * window:(w + 1) * block * window]
    blocks = sorted(set((part // block).tolist()))
    assert len(blocks) == window and len(part) == block * window  # whole blocks only
    orders.append(blocks)
    assert abs(np.corrcoef(np.arange(len(part)), part)[0, 1]) < 0.1  # mixed inside
  flat = [b for o in orders for b in o]
  assert flat != sorted(flat)  # blocks in a random order, not the corpus order
  other = np.array(_all(permutation.WindowedPermutation(n, 4, block, window)))
  assert set((other[:block * window] // block).tolist()) != set(orders[0])
  fine = np.array(_all(permutation.WindowedPermutation(n, 3, 100, 8)))  # 1000 blocks
  assert abs(np.corrcoef(np.arange(n), fine)[0, 1]) < 0.1  # ~3 sd of a random block order


def test_windowed_permutation_pinned_and_bounded():
  p = permutation.WindowedPermutation(10**9, mixing.stream_key(0, 1000), 2**16, 8)
  assert [p[i] for i in (0, 1, 2, 10**9 - 1)] == [652085574, 111388654, 111404193, 926580305]
  windows = -(-(10**9) // (2**16 * 8))  # 1908: two ints each, nothing per document
  assert len(pickle.dumps(p)) < 16 * windows + 1000
