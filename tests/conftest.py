"""Shared test setup: 8 fake CPU devices, parsed absl flags, small fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# gcsfs's bucket-layout probe (read when gcsfs is imported) has no emulator: tests/objectstore.py
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()

# Left out of the default (CI) run to keep it under 20 minutes on 2 cores; each is
# covered there by a faster test of the same path (named after it). `pytest -m slow` runs them.
CI_SLOW = (
    # the trainer's validation is pinned by train/test_train_pin.py; --mode=eval by
    # eval/test_eval_run.py::test_main_eval_mode_cli
    "eval/test_eval_run.py::test_training_logs_eval_raw_bpb",
    "eval/test_eval_run.py::test_evaluate_latest_checkpoint",
    # shards are decoded and pinned by neural/test_compress_cli.py and test_compress_pin.py
    "neural/test_compress_cli.py::test_train_on_shards_end_to_end",
    # FSDP over all 8 devices is the mesh of helpers.small_config, used by most train tests
    "train/test_train.py::test_sharding_presets_match_one_device[shape1-fsdp]",
    # multi-host failure paths (dead peer, SIGTERM to one process) run only with -m slow; CI keeps
    # the two-process training run and the stop agreement's unit tests
    "commands/test_multihost.py::test_a_dead_process_fails_the_other_within_seconds[0]",
    "commands/test_multihost.py::test_sigterm_to_one_process_stops_all_at_the_same_step",
    # the tensor axis is tested on 8 fake devices (train/test_train.py sharding presets,
    # fsdp_tp), restores onto other meshes by train/test_train.py::
    # test_restore_onto_another_mesh_and_corrupt_fallback; CI keeps the two-process run that
    # matches one process on the same global batches and the local launcher script
    "commands/test_multihost.py::test_tensor_axis_across_processes_replicates_the_rows",
    "commands/test_multihost.py::test_two_process_checkpoint_restores_on_other_meshes",
    # the GPU suite's dry run on CPU (59 s) is for the session before a device run; CI keeps
    # its hung-section and partial-report tests
    "commands/test_gpu_suite.py::test_dry_run_writes_every_section_with_numbers",
    # decoding with other batch rows: CI keeps neural/test_neural_coder.py::
    # test_decode_with_other_batch_rows_and_crc (trained compressor, 4 vs 16 rows, CRC32)
    "neural/test_neural_coder.py::test_decode_with_other_batch_rows",
    # symbols independent of batch rows: CI keeps neural/test_compress_cli.py::
    # test_coder_processes_and_batch_rows_give_the_same_shards (same shards for other batch
    # rows and coder processes)
    "neural/test_neural_coder.py::test_same_symbols_from_any_batch_rows[trained]",
    # compressor pins: CI keeps the tiny and gqa_window cases
    "model/test_transformer_pins.py::test_compressor_tables_and_symbols_are_pinned[wide]",
    # KV-cache decode = full forward: CI keeps float32 (the dtype generation runs in) with a
    # window and GQA; float64 decode is not on any production path (the compressor codes
    # window rows with the full forward, pinned in neural/test_neural_coder.py)
    "model/test_decode.py::test_decode_equals_full_forward_float64[5]",
    # greedy generation pins: CI keeps the float32 case (what CPU generation runs in); the
    # same greedy text from the streamed sampler (sample/test_sample.py) and from speculative
    # decoding (eval/test_speculative.py) is checked there too
    "model/test_transformer_pins.py::test_greedy_generation_is_pinned[bf16]",
    # a raw look-ahead head in training: CI keeps train/test_heads.py::
    # test_loss_is_the_weighted_nll (the raw heads' weighted NLL, the loss it logs)
    "train/test_heads.py::test_training_with_a_raw_head_logs_its_loss",
    # speculative sampling's distribution with top-p and in batches of 4: CI keeps the
    # temperature-1 case (one row a batch, the sensitive one, and a 2048-row stream)
    "eval/test_speculative.py::test_speculative_sampling_has_plain_samplings_distribution"
    "[0.8-0.9-batch_sizes1]",
)


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.nodeid.split("tests/", 1)[-1] in CI_SLOW:
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def stdlib_sample():
  """A few real stdlib files (bytes), for round-trip tests on real code."""
  import sysconfig  # pylint: disable=g-import-not-at-top
  root = sysconfig.get_paths()["stdlib"]
  names = ["json/__init__.py", "textwrap.py", "functools.py", "email/utils.py", "difflib.py"]
  out = []
  for n in names:
    with open(os.path.join(root, n), "rb") as f:
      out.append(f.read())
  return out


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory, stdlib_sample):
  """A small byte-level BPE trained on real code."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator([d.decode("utf-8") for d in stdlib_sample], trainer)
  path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
  tok.save(str(path))
  return str(path)


# --- the neural compressor (tests/neural/test_neural_coder.py, tests/neural/test_compress_cli.py) ------

NEURAL_CORPUS_FILES = ("json/__init__.py", "textwrap.py", "functools.py", "email/utils.py",
                       "difflib.py", "string.py", "copy.py", "bisect.py")


def _tiny_compressor_config(corpus_dir: str = ""):
  """A compressor small enough to train in seconds (40 steps) and code fast."""
  from proxyjax.views.neural.settings import compressor_config  # pylint: disable=g-import-not-at-top
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
  c.compressor.context = 32  # rows of 30 bytes: test documents are far longer
  c.compressor.batch_rows = 4
  c.compressor.literal_threshold = 7.0  # the barely trained model: random bytes stay literal
  return c


@pytest.fixture(scope="session")
def tiny_compressor_config():
  """``make(corpus_dir='') -> ConfigDict``: the tiny compressor's config."""
  return _tiny_compressor_config


@pytest.fixture(scope="session")
def neural_compressor_run(tmp_path_factory):
  """(config, workdir) of a briefly trained tiny compressor, shared by the session."""
  import shutil  # pylint: disable=g-import-not-at-top
  import sysconfig  # pylint: disable=g-import-not-at-top

  from proxyjax import trainer  # pylint: disable=g-import-not-at-top
  stdlib = sysconfig.get_paths()["stdlib"]
  base = tmp_path_factory.mktemp("neural_compressor")
  workdir, corpus = base / "run", base / "corpus"
  corpus.mkdir()
  for name in NEURAL_CORPUS_FILES:
    shutil.copy(os.path.join(stdlib, name), corpus / name.replace("/", "_"))
  config = _tiny_compressor_config(str(corpus))
  trainer.train(config, str(workdir))
  return config, str(workdir)


# --- object storage (tests/objectstore.py): real GCS and S3 emulators on 127.0.0.1 -------------


def _server_fixture(start):
  server = start()
  saved = {k: os.environ.get(k) for k in server.env}
  os.environ.update(server.env)
  try:
    yield server
  finally:
    server.stop()
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


@pytest.fixture(scope="session")
def gcs_server():
  """A GCS emulator (gcp-storage-emulator) on 127.0.0.1; its env is set for the session."""
  import objectstore  # pylint: disable=g-import-not-at-top
  yield from _server_fixture(objectstore.start_gcs)


@pytest.fixture(scope="session")
def s3_server():
  """An S3 server (moto) on 127.0.0.1; its env is set for the session."""
  import objectstore  # pylint: disable=g-import-not-at-top
  yield from _server_fixture(objectstore.start_s3)


@pytest.fixture(params=["gs", "s3"])
def object_store(request):
  """Each object store in turn: ``object_store.new_bucket()`` -> ``gs://...`` / ``s3://...``."""
  return request.getfixturevalue("gcs_server" if request.param == "gs" else "s3_server")
