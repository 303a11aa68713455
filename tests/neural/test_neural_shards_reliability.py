"""Neural shards are verified when trained on (issue 10, item 7).

Each record carries ``record_crc32`` over its text and stored symbols: a record
whose text changed (its ``crc32`` kept) or whose symbols were permuted is
skipped and counted (``corrupt_record``), a ``neural`` field that is not
base64 is counted (``malformed_symbols``) and never re-encoded, a truncated
shard is an error naming the file, and shards of the previous format are
refused with the command that rewrites them.
"""

import base64
import json

import numpy as np
import pytest

from proxyjax.config import base_config
from proxyjax.data import pipeline, sources
from proxyjax.errors import ConfigError
from proxyjax.views.neural import shards as shards_lib

ALPHABET = 512


def _records(n=6):
  rng = np.random.default_rng(0)
  return [shards_lib.make_record(b"def f%d(x):\n    return x * %d\n" % (i, i),
                                 rng.integers(0, ALPHABET, 40 + i), key=f"pkg/m{i}.py",
                                 source="files", alphabet_size=ALPHABET)
          for i in range(n)]


def _edit(record: bytes, change) -> bytes:
  value = json.loads(record)
  change(value)
  return json.dumps(value).encode()


def _tamper_text(r):
  r["text"] = r["text"].replace("return", "retURN")  # crc32 and record_crc32 kept


def _permute_symbols(r):
  raw = np.frombuffer(base64.b64decode(r["neural"]), r["neural_dtype"])
  r["neural"] = base64.b64encode(raw[::-1].tobytes()).decode()


def _not_base64(r):
  r["neural"] = "!!not base64!!"


def _drop_checksum(r):
  del r[shards_lib.CHECKSUM_FIELD]


def _shard(tmp_path, records, name="neural-00000-of-00001.array_record") -> str:
  path = str(tmp_path / name)
  shards_lib.write_shard(path, records)
  return path


def test_records_carry_a_checksum_over_text_and_symbols(tmp_path):
  records = _records()
  path = _shard(tmp_path, records)
  src = sources.ArrayRecordSource(path)
  for i, raw in enumerate(records):
    doc = src[i]
    parsed = shards_lib.parse_record(raw)
    assert doc["error"] is None and doc["key"] == parsed.key
    np.testing.assert_array_equal(doc[sources.NEURAL_FIELD], parsed.symbols)
    assert doc["text"] == parsed.text
    assert shards_lib.CHECKSUM_FIELD in json.loads(raw)


@pytest.mark.parametrize("change,reason", [(_tamper_text, "corrupt_record"),
                                           (_permute_symbols, "corrupt_record"),
                                           (_not_base64, "malformed_symbols"),
                                           (_drop_checksum, "corrupt_record")])
def test_a_bad_record_is_skipped_and_counted(tmp_path, change, reason):
  records = _records()
  records[2] = _edit(records[2], change)  # (record 0 keeps the file's format current)
  src = sources.ArrayRecordSource(_shard(tmp_path, records))
  bad = src[2]
  assert bad["error"] == reason and bad["text"] == b""
  assert sources.NEURAL_FIELD not in bad  # never trained on, never re-encoded
  assert bad["key"] == "pkg/m2.py"
  assert all(src[i]["error"] is None for i in (0, 1, 3, 4, 5))
  with pytest.raises(ValueError):
    shards_lib.parse_record(records[2])
  # The training pipeline skips it and counts it.
  c = base_config()
  c.seq_len, c.batch_size = 64, 2
  c.data.view, c.data.num_epochs, c.data.schedule.enabled = "raw", 1, False
  it = pipeline.make_iterator(c, process_index=0, process_count=1, sources=[(src, 1.0)])
  while True:
    try:
      pipeline.next_batch(it)
    except StopIteration:
      break
  stats = pipeline.pipeline_stats(it)
  assert stats[f"skipped:{reason}"] == 1 and stats["docs_used"] == 5


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.001])
def test_a_truncated_shard_is_an_error_naming_the_file(tmp_path, keep):
  path = _shard(tmp_path, _records(40))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:max(1, int(len(data) * keep))])
  for split in ("all", "train"):
    with pytest.raises(ConfigError) as e:
      sources.ArrayRecordSource(path, split=split)
    message = str(e.value)
    assert path in message and "truncated or corrupt" in message
    assert "python -m proxyjax.compress" in message
  with pytest.raises(shards_lib.ShardFileError, match="truncated"):
    shards_lib.read_shard(path)


def test_shards_of_the_previous_format_are_refused(tmp_path):
  records = [_edit(r, _drop_checksum) for r in _records()]
  path = _shard(tmp_path, records)
  with pytest.raises(ConfigError, match=r"re-run `python -m proxyjax.compress`"):
    sources.ArrayRecordSource(path)


@pytest.mark.parametrize("old", ["proxyjax.neural/3", "proxyjax.neural/2"])
def test_shards_whose_windows_saw_earlier_bytes_are_refused(tmp_path, old):
  # Format 3 windows were conditioned on the whole document before them (issue 13): their
  # symbols mean other bytes, so the view refuses them with the command that rewrites them.
  from proxyjax.views.neural import NeuralView  # pylint: disable=g-import-not-at-top
  assert shards_lib.FORMAT == "proxyjax.neural/4" and old in shards_lib.OLD_FORMATS
  shards_lib.write_json(str(tmp_path / shards_lib.METADATA), {"format": old, "settings": {}})
  with pytest.raises(ValueError, match=r"re-run `python -m proxyjax.compress`") as e:
    NeuralView(str(tmp_path))
  assert old in str(e.value) and shards_lib.FORMAT in str(e.value)


def _shards_meta(directory, workdir, **settings):
  from proxyjax.views.neural import Settings  # pylint: disable=g-import-not-at-top
  meta = {"format": shards_lib.FORMAT, "settings": Settings(**settings).to_dict(),
          "config": {}, "model": {"workdir": str(workdir), "fingerprint": "f" * 64}}
  directory.mkdir(exist_ok=True)
  shards_lib.write_json(str(directory / shards_lib.METADATA), meta)


def _compressor_run(workdir, **compressor):
  from proxyjax.views.neural import compressor_config  # pylint: disable=g-import-not-at-top
  c = compressor_config()
  c.compressor.update(compressor)
  (workdir / "checkpoints").mkdir(parents=True)
  (workdir / "config.json").write_text(c.to_json())


def _train_on(shards, neural_dir):
  """A neural-view config training on ``shards`` with ``data.neural_dir=neural_dir``."""
  c = base_config()
  c.data.view, c.data.neural_dir = "neural", str(neural_dir)
  c.data.sources = f"arrayrecord:{shards}/*.array_record"
  return c


def test_shards_and_a_run_with_other_settings_are_refused_naming_both(tmp_path):
  from proxyjax.views.neural import NeuralView  # pylint: disable=g-import-not-at-top
  run, shards = tmp_path / "run", tmp_path / "shards"
  _compressor_run(run, entropy_threshold=5.0, batch_rows=4)
  # batch_rows / cache_entries do not change the symbols: not a mismatch.
  _shards_meta(shards, run, entropy_threshold=5.0, batch_rows=64, cache_entries=0)
  assert NeuralView(str(shards)).settings.entropy_threshold == 5.0
  # The run's config now codes differently from the shards: refused, naming both.
  _shards_meta(shards, run, entropy_threshold=6.0)
  with pytest.raises(ValueError, match="do not match") as e:
    NeuralView(str(shards))
  message = str(e.value)
  assert str(shards) in message and str(run) in message
  assert "compressor.entropy_threshold: 6.0" in message and "5.0" in message
  # Training with data.neural_dir = the run and data.sources = those shards: ConfigError.
  c = _train_on(shards, neural_dir=run)
  with pytest.raises(ConfigError, match="data.neural_dir") as e:
    pipeline.build_view(c)
  assert str(shards) in str(e.value) and str(run) in str(e.value)
  assert "entropy_threshold" in str(e.value)


def test_shards_of_another_compressor_run_are_refused(tmp_path):
  run, other, shards = tmp_path / "run", tmp_path / "other", tmp_path / "shards"
  _compressor_run(run)
  _compressor_run(other)
  _shards_meta(shards, other)
  c = _train_on(shards, neural_dir=run)
  with pytest.raises(ConfigError, match="compressor run") as e:
    pipeline.build_view(c)
  assert str(other) in str(e.value) and str(run) in str(e.value)
  c.data.neural_dir = str(shards)  # the shards' own directory: accepted
  assert pipeline.build_view(c).workdir == str(other)


def test_an_old_compressor_run_is_refused_in_one_line(tmp_path):
  c = base_config()
  run = tmp_path / "run"
  _compressor_run(run)
  config = json.loads((run / "config.json").read_text())
  config["compressor"]["entropy_window"] = 16  # written by the coder before format 4
  (run / "config.json").write_text(json.dumps(config))
  c.data.view, c.data.neural_dir = "neural", str(run)
  with pytest.raises(ConfigError, match="predates shard format 4") as e:
    pipeline.build_view(c)
  assert "compressor.entropy_window" in str(e.value) and "\n" not in str(e.value)
