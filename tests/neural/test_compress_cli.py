"""``python -m proxyjax.compress``: shards, resume, workers, splits, and training on them."""

import dataclasses
import json
import math
import os
import pickle
import subprocess
import sys
import sysconfig
import zlib

import numpy as np
import pytest

from proxyjax import compress
from proxyjax import vocab as V
from proxyjax.config import base_config, tiny_config
from proxyjax.data import pipeline, sources
from proxyjax.errors import ConfigError
from proxyjax.neural import byte_lm, codec
from proxyjax.views.neural import NeuralView
from proxyjax.views.neural import shards as shards_lib

STDLIB = sysconfig.get_paths()["stdlib"]
FILES = ["json/__init__.py", "textwrap.py", "functools.py", "email/utils.py", "difflib.py",
         "string.py", "copy.py", "bisect.py"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def setup(neural_compressor_run, tmp_path_factory):
  config, workdir = neural_compressor_run
  model = byte_lm.ByteModel.restore(config, workdir)
  inputs = tmp_path_factory.mktemp("compress_inputs")
  docs = {}
  for i, name in enumerate(FILES[:7]):
    data = open(os.path.join(STDLIB, name), "rb").read()[:250 + 40 * i]
    docs[f"doc{i}.py"] = data
  docs["latin1.txt"] = "caf\xe9 na\xefve \xff".encode("latin-1") * 5  # not UTF-8
  docs["empty.txt"] = b""
  for name, data in docs.items():
    (inputs / name).write_bytes(data)
  return config, workdir, model, str(inputs), docs


def _options(inputs, output, **kw):
  return compress.Options(input=f"files:{inputs}/*", output=str(output), docs_per_shard=3,
                          progress_bar=False, **kw)


def _read_all(output):
  meta = shards_lib.read_metadata(str(output))
  records = []
  for s in range(meta["num_shards"]):
    name = shards_lib.shard_name(s, meta["num_shards"])
    records.append(shards_lib.read_shard(os.path.join(str(output), name)))
  return meta, records


def _with_batch_rows(model, rows):
  return byte_lm.ByteModel(model.model_cfg, model.host_params,
                             dataclasses.replace(model.settings, batch_rows=rows))


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
  """One uninterrupted run."""
  config, workdir, model, inputs, _ = setup
  output = tmp_path_factory.mktemp("shards_straight")
  summary = compress.run(config, workdir, _options(inputs, output), model=model)
  return output, summary


def test_shards_decode_back(setup, straight):
  _, _, model, _, docs = setup
  output, summary = straight
  assert summary["complete"] and summary["shards_done"] == summary["num_shards"] == 3
  t = summary["totals"]
  assert t["docs"] == 8 and t["skipped"] == 1  # the empty file
  assert t["bytes"] == sum(len(d) for d in docs.values())
  assert 1.0 < summary["bytes_per_symbol"] and 0 < summary["window_fill"] <= 1
  assert 0 <= summary["fragile_fraction"] < 0.01
  assert summary["this_run"]["gb_per_hour_per_process"] > 0
  assert summary["gb_per_hour_per_process"] == pytest.approx(
      summary["this_run"]["gb_per_hour_per_process"])
  meta, records = _read_all(output)
  assert meta["format"] == shards_lib.FORMAT and meta["tables"]["logits"] == "float64"
  assert meta["settings"]["batch_rows"] == 4 and meta["model"]["fingerprint"] == model.fingerprint
  parsed = [shards_lib.parse_record(r) for shard in records for r in shard]
  assert all(r.startswith(b'{"key": ') for shard in records for r in shard)
  assert [p.key for p in parsed] == sorted(k for k, d in docs.items() if d)  # input order
  assert all(p.text == docs[p.key] and p.crc32 == zlib.crc32(p.text) for p in parsed)
  decoded = codec.NeuralCompressor(model).decode([p.symbols for p in parsed],
                                                          crc32s=[p.crc32 for p in parsed])
  assert decoded == [p.text for p in parsed]
  # The one parser rejects a record whose text does not match its CRC32.
  bad = json.loads(records[0][0])
  bad["text"] += "x"
  with pytest.raises(ValueError, match="CRC32"):
    shards_lib.parse_record(json.dumps(bad).encode())


def test_resume_after_interruption(setup, straight, tmp_path):
  config, workdir, model, inputs, _ = setup
  output = tmp_path / "shards"
  first = compress.run(config, workdir, _options(inputs, output, max_shards=1), model=model)
  assert not first["complete"] and first["shards_done"] == 1
  # A crash mid-shard leaves a temporary file behind; it is never read as a shard.
  (output / (shards_lib.shard_name(1, 3) + ".tmp999")).write_bytes(b"garbage")
  second = compress.run(config, workdir, _options(inputs, output), model=model)
  assert second["complete"] and second["this_run"]["shards"] == 2
  assert second["totals"] == straight[1]["totals"]
  assert _read_all(output)[1] == _read_all(straight[0])[1]
  on_disk = json.loads((output / shards_lib.SUMMARY).read_text())
  assert len(on_disk["runs"]) == 2 and on_disk["gb_per_hour_per_process"] > 0
  # A rerun with nothing left to do keeps the recorded runs and throughput.
  again = compress.run(config, workdir, _options(inputs, output), model=model)
  assert again["this_run"]["shards"] == 0 and again["complete"]
  kept = json.loads((output / shards_lib.SUMMARY).read_text())
  assert kept["runs"] == on_disk["runs"] and kept["totals"] == on_disk["totals"]
  assert kept["gb_per_hour_per_process"] == on_disk["gb_per_hour_per_process"] > 0
  with pytest.raises(ValueError, match="different run"):
    opts = _options(inputs, output)
    opts.docs_per_shard = 2
    compress.run(config, workdir, opts, model=model)


def test_processes_split_the_shards(setup, straight, tmp_path):
  config, workdir, model, inputs, _ = setup
  output = tmp_path / "shards"
  for p in (1, 0):
    compress.run(config, workdir, _options(inputs, output, process_index=p, process_count=2),
                 model=model)
  assert _read_all(output)[1] == _read_all(straight[0])[1]


def test_coder_processes_and_batch_rows_give_the_same_shards(setup, straight, tmp_path):
  # Interrupted with 16 rows per call and the coder in a thread, resumed with 8 rows
  # and 2 coder processes: byte-identical shards (batch_rows may change on resume).
  config, workdir, model, inputs, _ = setup
  output = tmp_path / "shards"
  compress.run(config, workdir, _options(inputs, output, max_shards=1),
               model=_with_batch_rows(model, 16))
  summary = compress.run(config, workdir, _options(inputs, output, coder_workers=2),
                         model=_with_batch_rows(model, 8))
  assert summary["complete"] and summary["this_run"]["coder_workers"] == 2
  assert _read_all(output)[1] == _read_all(straight[0])[1]


def test_shards_split_like_the_source_corpus(setup, straight):
  # --split=all shards carry the original keys: the pipeline's train/validation split
  # of the shards is the corpus' own split.
  _, _, _, inputs, docs = setup
  output, _ = straight
  fraction = 0.4
  pattern = f"{output}/*.array_record"
  for split in ("train", "validation"):
    shards = sources.ArrayRecordSource(pattern, split=split, validation_fraction=fraction)
    corpus = sources.FileTreeSource(inputs, pattern="*", split=split,
                                    validation_fraction=fraction)
    expected = [k for k in corpus.relpaths if docs[k]]  # the empty file is not in the shards
    got = [shards[i]["key"] for i in range(len(shards))]
    assert got == expected and got, split
    assert all(sources.NEURAL_FIELD in shards[i] for i in range(len(shards)))
  everything = sources.ArrayRecordSource(pattern, split="all")
  assert sorted(everything[i]["key"] for i in range(len(everything))) == sorted(
      k for k, d in docs.items() if d)


def test_pipeline_reads_shards_as_neural_view(setup, straight):
  _, _, model, _, docs = setup
  output, _ = straight
  c = base_config()
  c.seq_len, c.batch_size = 64, 4
  c.data.sources = f"arrayrecord:{output}/*.array_record"
  c.data.view = "neural"
  c.data.neural_dir = str(output)
  c.data.validation_fraction = 0.0
  c.data.shuffle, c.data.num_epochs = False, 1
  c.data.schedule.enabled = False
  c.data.rate, c.data.mode = 1.0, "sentinel"
  view = pipeline.build_view(c)  # from the shards' neural.json; the model loads lazily
  assert isinstance(view, NeuralView) and view.alphabet_size == 256 + 65536
  assert pickle.loads(pickle.dumps(view)).settings == view.settings  # Grain workers
  it = pipeline.make_iterator(c, "train", process_index=0, process_count=1, view=view)
  batches = list(it)
  assert view._compressor is None  # pylint: disable=protected-access  (symbols were precomputed)
  stats = pipeline.pipeline_stats(it)
  assert stats["view_precomputed"] == 8 and stats.get("view_fallback_raw", 0) == 0
  stream = np.concatenate([r for b in batches for r in b["inputs"]])
  vocab = pipeline.build_vocab(c, view)
  assert vocab.size >= vocab.num_ids == 320 + 65536
  comp = codec.NeuralCompressor(model)
  parsed = V.parse_documents(stream)
  assert len(parsed) == 8 and all(d[0].kind == "compressed" for d in parsed)
  symbols = [vocab.ids_to_symbols(d[0].ids) for d in parsed]
  assert sorted(comp.decode(symbols)) == sorted(d for d in docs.values() if d)
  # The view itself decodes too: it restores the compressor named in neural.json and
  # checks its parameter fingerprint.
  shortest = min(symbols, key=len)
  assert view.decode(shortest) == comp.decode([shortest])[0]


def test_neural_view_needs_neural_dir(tmp_path):
  c = base_config()
  c.data.view = "neural"
  with pytest.raises(ConfigError, match="data.neural_dir") as info:
    pipeline.build_view(c)
  assert info.value.field == "data.neural_dir"
  c.data.neural_dir = str(tmp_path / "missing")
  with pytest.raises(ConfigError, match="data.neural_dir"):
    pipeline.build_vocab(c)
  c.data.neural_dir = str(tmp_path)  # a directory that is neither shards nor a run
  with pytest.raises(ConfigError, match="data.neural_dir"):
    pipeline.build_view(c)


def _tiny_lm_on_shards(output: str, workdir_steps: int = 3):
  """A very small LM trained on the neural shards (rate 1: every document compressed)."""
  c = tiny_config()
  c.seq_len, c.batch_size, c.num_steps = 64, 8, workdir_steps
  c.log_every, c.eval_every, c.checkpoint_every = 1, 0, 0
  c.progress_bar, c.async_checkpointing = False, False
  c.data.view, c.data.neural_dir = "neural", output
  c.data.sources = f"arrayrecord:{output}/*.array_record"
  c.data.validation_fraction = 0.0
  c.data.schedule.enabled = False
  c.data.rate, c.data.mode = 1.0, "sentinel"
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.head_dim, m.d_ff, m.logits_chunk = 32, 1, 2, 16, 64, 64
  return c


def test_train_on_shards_end_to_end(setup, tmp_path, monkeypatch):
  # compressor (session fixture) -> compress 4 documents -> train 3 steps on the shards.
  from proxyjax import trainer  # pylint: disable=g-import-not-at-top
  config, workdir, model, inputs, _ = setup
  output = tmp_path / "shards"
  compress.run(config, workdir, compress.Options(
      input=f"files:{inputs}/doc*.py", output=str(output), docs_per_shard=2, max_docs=4,
      progress_bar=False), model=model)
  iterators = []
  make_iterator = pipeline.make_iterator

  def capture(*args, **kwargs):
    iterators.append(make_iterator(*args, **kwargs))
    return iterators[-1]

  monkeypatch.setattr(pipeline, "make_iterator", capture)
  metrics = trainer.train(_tiny_lm_on_shards(str(output)), str(tmp_path / "lm"))
  assert math.isfinite(metrics["loss"]) and metrics["compressed_fraction"] == 1.0
  stats = pipeline.pipeline_stats(iterators[0])
  assert stats["docs_used"] > 0 and stats["view_precomputed"] == stats["docs_used"]
  assert stats.get("view_fallback_raw", 0) == 0


@pytest.mark.slow
def test_command_line_matches_in_process_run(setup, straight, tmp_path):
  config, workdir, _, inputs, _ = setup
  config_file = tmp_path / "tiny_compressor.py"
  config_file.write_text(
      "import json\nimport ml_collections\n"
      f"def get_config():\n  return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n")
  output = tmp_path / "shards"
  cmd = [sys.executable, "-m", "proxyjax.compress", f"--config={config_file}",
         f"--workdir={workdir}", f"--input=files:{inputs}/*", f"--output={output}",
         "--docs_per_shard=3", "--max_shards=2", "--config.compressor.batch_rows=16"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  subprocess.run(cmd, check=True, cwd=REPO, env=env, timeout=300)
  subprocess.run(cmd[:-2] + ["--coder_workers=2"], check=True, cwd=REPO, env=env,
                 timeout=300)  # resumes, other batch_rows and coder processes
  summary = json.loads((output / shards_lib.SUMMARY).read_text())
  assert summary["complete"] and summary["runs"][-1]["shards"] == 1
  assert _read_all(output)[1] == _read_all(straight[0])[1]
  # Train on them through main.
  lm = tmp_path / "lm"
  subprocess.run([sys.executable, "-m", "proxyjax.main", "--config=configs/tiny.py",
                  f"--workdir={lm}", "--config.data.view=neural",
                  f"--config.data.neural_dir={output}",
                  f"--config.data.sources=arrayrecord:{output}/*.array_record",
                  "--config.num_steps=2", "--config.seq_len=64", "--config.eval_every=0",
                  "--config.model.d_model=32", "--config.model.n_layers=1",
                  "--config.model.d_ff=64", "--config.model.logits_chunk=64",
                  "--config.progress_bar=False"],
                 check=True, cwd=REPO, env=env, timeout=600)
  lines = [json.loads(x) for x in (lm / "metrics.jsonl").read_text().splitlines()]
  assert lines and math.isfinite(lines[-1]["loss"])


def test_split_keys_come_from_the_sidecar(tmp_path):
  """Splitting neural shards by document key reads the keys sidecar, not the records."""
  records = [shards_lib.make_record(b"x = %d\n" % i, np.arange(3, dtype=np.int32),
                                    key=f"pkg/mod{i}.py", source="files", alphabet_size=512)
             for i in range(5)]
  path = str(tmp_path / "s-00000.array_record")
  shards_lib.write_shard(path, records)
  with open(path + shards_lib.KEYS_SUFFIX) as f:
    assert json.load(f) == [f"pkg/mod{i}.py" for i in range(5)]
  # A sidecar that names other keys wins (proof it is what is read) ...
  with open(path + shards_lib.KEYS_SUFFIX, "w") as f:
    json.dump([f"other{i}" for i in range(5)], f)
  assert shards_lib.record_keys(path) == [f"other{i}" for i in range(5)]
  # ... and a stale one (wrong length) falls back to the records themselves.
  with open(path + shards_lib.KEYS_SUFFIX, "w") as f:
    json.dump(["too", "few"], f)
  assert shards_lib.record_keys(path) == [f"pkg/mod{i}.py" for i in range(5)]
