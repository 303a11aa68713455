"""``python -m proxyjax.compress``: shards, resume, and the pipeline reading them."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from proxyjax import compress
from proxyjax import vocab as V
from proxyjax.config import base_config
from proxyjax.data import pipeline
from proxyjax.neural import compressor as compressor_lib
from proxyjax.neural import model as model_lib
from proxyjax.neural import shards as shards_lib
from proxyjax.neural.settings import compressor_config
from proxyjax.views.neural import NeuralView

STDLIB = sysconfig.get_paths()["stdlib"]
FILES = ["json/__init__.py", "textwrap.py", "functools.py", "email/utils.py", "difflib.py",
         "string.py", "copy.py", "bisect.py"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_compressor_config(corpus_dir: str = ""):
  """Same as tests/test_neural_coder.py (kept in sync: they share one trained run)."""
  c = compressor_config()
  c.data.sources = f"files:{corpus_dir}" if corpus_dir else "stdlib"
  c.seq_len, c.batch_size = 64, 8
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 40, 10, 0, 0
  c.progress_bar, c.async_checkpointing = False, False
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 32, 1, 2, 0, 16, 64
  m.logits_chunk = 64
  c.opt.warmup_steps, c.opt.peak_lr = 5, 1e-2
  c.mesh.shape = (1, -1, 1)
  c.compressor.context = 32
  c.compressor.batch_rows = 4
  c.compressor.literal_threshold = 7.0
  return c


def trained_compressor(tmp_path_factory):
  base = tmp_path_factory.getbasetemp()
  workdir, corpus = base / "neural_compressor_run", base / "neural_compressor_corpus"
  config = tiny_compressor_config(str(corpus))
  if not (workdir / "checkpoints").exists():
    from proxyjax.train import loop  # pylint: disable=g-import-not-at-top
    corpus.mkdir(exist_ok=True)
    for name in FILES:
      shutil.copy(os.path.join(STDLIB, name), corpus / name.replace("/", "_"))
    loop.train(config, str(workdir))
  return config, str(workdir)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  config, workdir = trained_compressor(tmp_path_factory)
  model = model_lib.ByteModel.restore(config, workdir)
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
  assert summary["this_run"]["gb_per_hour_per_process"] > 0
  meta, records = _read_all(output)
  assert meta["settings"]["batch_rows"] == 4 and meta["model"]["fingerprint"] == model.fingerprint
  texts, streams = zip(*[shards_lib.parse_record(r) for shard in records for r in shard])
  assert sorted(texts) == sorted(d for d in docs.values() if d)
  decoded = compressor_lib.NeuralCompressor(model).decode(list(streams))
  assert list(decoded) == list(texts)
  keys = [json.loads(r)["key"] for shard in records for r in shard]
  assert keys == sorted(k for k, d in docs.items() if d)  # input order


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
  again = compress.run(config, workdir, _options(inputs, output), model=model)
  assert again["this_run"]["shards"] == 0 and again["complete"]
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


def test_pipeline_reads_shards_as_neural_view(setup, straight):
  _, _, model, _, docs = setup
  output, _ = straight
  c = base_config()
  c.seq_len, c.batch_size = 64, 4
  c.data.sources = f"arrayrecord:{output}/*.array_record"
  c.data.view = "neural"
  c.data.validation_fraction = 0.0
  c.data.shuffle, c.data.num_epochs = False, 1
  c.data.schedule.enabled = False
  c.data.rate, c.data.mode = 1.0, "sentinel"
  view = NeuralView(str(output))  # from the shards' neural.json; the model loads lazily
  assert view.alphabet_size == 256 + 65536
  assert pickle.loads(pickle.dumps(view)).settings == view.settings  # Grain workers
  it = pipeline.make_iterator(c, "train", process_index=0, process_count=1, view=view)
  batches = list(it)
  assert view._compressor is None  # pylint: disable=protected-access  (symbols were precomputed)
  stats = pipeline.pipeline_stats(it)
  assert stats["view_precomputed"] == 8 and stats.get("view_fallback_raw", 0) == 0
  stream = np.concatenate([r for b in batches for r in b["inputs"]])
  vocab = pipeline.build_vocab(c, view)
  assert vocab.size >= vocab.num_ids == 320 + 65536
  comp = compressor_lib.NeuralCompressor(model)
  parsed = V.parse_documents(stream)
  assert len(parsed) == 8 and all(d[0].kind == "compressed" for d in parsed)
  symbols = [vocab.ids_to_symbols(d[0].ids) for d in parsed]
  assert sorted(comp.decode(symbols)) == sorted(d for d in docs.values() if d)
  # The view itself decodes too: it restores the compressor named in neural.json and
  # checks its parameter fingerprint.
  shortest = min(symbols, key=len)
  assert view.decode(shortest) == comp.decode([shortest])[0]


@pytest.mark.slow
def test_command_line_matches_in_process_run(setup, straight, tmp_path):
  config, workdir, _, inputs, _ = setup
  config_file = tmp_path / "tiny_compressor.py"
  corpus = config.data.sources.split(":", 1)[1]
  config_file.write_text(
      "import sys\n"
      f"sys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
      "from test_compress_cli import tiny_compressor_config\n"
      f"def get_config():\n  return tiny_compressor_config({corpus!r})\n")
  output = tmp_path / "shards"
  cmd = [sys.executable, "-m", "proxyjax.compress", f"--config={config_file}",
         f"--workdir={workdir}", f"--input=files:{inputs}/*", f"--output={output}",
         "--docs_per_shard=3", "--max_shards=2"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  subprocess.run(cmd, check=True, cwd=REPO, env=env, timeout=300)
  subprocess.run(cmd[:-1], check=True, cwd=REPO, env=env, timeout=300)  # resumes
  summary = json.loads((output / shards_lib.SUMMARY).read_text())
  assert summary["complete"] and summary["this_run"]["shards"] == 1
  assert _read_all(output)[1] == _read_all(straight[0])[1]
