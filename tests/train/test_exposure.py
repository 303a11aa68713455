"""Exposure accounting (issue 13, item 4): running totals of training FLOPs, symbols and
the data stream's UTF-8 bytes, raw bytes and compressed symbols."""

import pytest

from proxyjax.train import metrics as metrics_lib


class _Cfg:
  n_heads, head_dim, n_layers = 4, 16, 2


def test_train_flops_formula():
  # 6 N per symbol + 12 H E L per visible (query, key) pair, as step_flops (float) says.
  got = metrics_lib.train_flops(_Cfg, 1000, 64, 300)
  assert got == 6 * 1000 * 64 + 12 * 4 * 16 * 2 * 300
  assert float(got) == metrics_lib.step_flops(_Cfg, 1000, 64, 300)
  # Integers: no rounding at pod scale (1e21 FLOPs and beyond).
  big = metrics_lib.train_flops(_Cfg, 10**10, 10**11, 10**12)
  assert isinstance(big, int) and big == 6 * 10**21 + 1536 * 10**12


def _stats(doc_bytes, raw, comp):
  return {"doc_bytes": doc_bytes, "bytes:raw": raw, "symbols:compressed": comp, "ids": 7}


def test_totals_are_sums_of_window_values_and_survive_a_resume():
  steps = [(100, 10, _stats(50, 20, 9)), (120, 11, _stats(50, 20, 9)),
           (90, 9, _stats(80, 35, 14)), (110, 10, _stats(130, 50, 30))]
  straight = metrics_lib.Exposure(shards=2)
  lines = []
  for flops, symbols, stats in steps:
    straight.add_step(flops, symbols)
    straight.sync(stats)
    lines.append(straight.scalars())
    straight.start_window()
  for k in metrics_lib.EXPOSURE:
    running = 0
    for line in lines:
      running += line[k]
      assert line["total_" + k] == running
  assert lines[-1]["total_train_flops"] == 420 and lines[-1]["total_symbols"] == 40
  # Stream counters are this shard's, times 2 equal shards.
  assert lines[-1]["total_utf8_bytes"] == 260 and lines[-1]["total_raw_bytes"] == 100
  assert lines[-1]["total_compressed_symbols"] == 60

  # Saved after step 2 (a save syncs the stream first), resumed with the stream restored.
  first = metrics_lib.Exposure(shards=2)
  for flops, symbols, stats in steps[:2]:
    first.add_step(flops, symbols)
    first.sync(stats)
  recorded = first.record()
  resumed = metrics_lib.Exposure(shards=2)
  assert resumed.restore(recorded, stream_restored=True)
  for i, (flops, symbols, stats) in enumerate(steps[2:], 2):
    resumed.add_step(flops, symbols)
    resumed.sync(stats)
    assert resumed.scalars() == lines[i]
    resumed.start_window()


def test_fresh_data_resume_adds_the_new_stream_and_old_checkpoints_warn():
  ex = metrics_lib.Exposure()
  ex.add_step(10, 5)
  ex.sync(_stats(40, 30, 0))
  recorded = ex.record()
  fresh = metrics_lib.Exposure()
  assert fresh.restore(recorded, stream_restored=False)
  fresh.add_step(10, 5)
  fresh.sync(_stats(7, 0, 4))  # a new stream counts from zero
  assert fresh.scalars() == {
      "train_flops": 10, "total_train_flops": 20, "symbols": 5, "total_symbols": 10,
      "utf8_bytes": 7, "total_utf8_bytes": 47, "raw_bytes": 0, "total_raw_bytes": 30,
      "compressed_symbols": 4, "total_compressed_symbols": 4}
  # A checkpoint saved before totals were recorded: the restored stream's counters
  # count from the stream's start, FLOPs and symbols from the resume.
  old = metrics_lib.Exposure()
  assert old.restore({}, stream_restored=True) is False
  old.add_step(3, 1)
  old.sync(_stats(40, 30, 0))
  assert old.scalars()["total_utf8_bytes"] == 40 and old.scalars()["total_symbols"] == 1


@pytest.mark.parametrize("key", metrics_lib.EXPOSURE)
def test_every_total_is_written(key):
  assert "total_" + key in metrics_lib.Exposure().scalars()
