"""``--workdir=gs://...`` / ``s3://...``: the whole run directory on object storage,
against real emulators on 127.0.0.1 (tests/objectstore.py).

On gs:// and s3:// alike: checkpoints (Orbax through TensorStore's GCS driver, and its
S3 driver through proxyjax.train.orbax_s3), metrics.jsonl, TensorBoard events,
config.json, the run's tokenizer and eval results land in the bucket, and a second run
resumes from the bucket's newest checkpoint. A store TensorStore has no driver for is
refused with one line before the first step.
"""

import json
import os
import shutil
import sysconfig

import pytest
from helpers import model_config, small_config

from proxyjax import parallel, paths, rundir, trainer
from proxyjax.data import pipeline, tokenizer_training
from proxyjax.errors import UserError
from proxyjax.eval import run as eval_run
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import load as load_lib
from proxyjax.train import manifest as manifest_lib
from proxyjax.train import metrics as metrics_lib
from proxyjax.train import step as step_lib


def _lines(workdir):
  return [json.loads(x) for x in paths.read_text(paths.join(workdir, "metrics.jsonl"))
          .splitlines() if x.strip()]


def _refuse_training(monkeypatch):
  def refuse(*a, **kw):
    raise AssertionError("a tokenizer was trained")
  monkeypatch.setattr(tokenizer_training, "train_tokenizer", refuse)


CORPUS_FILES = ("json/__init__.py", "textwrap.py", "functools.py", "email/utils.py",
                "difflib.py", "string.py", "copy.py", "bisect.py", "heapq.py", "shlex.py",
                "fnmatch.py", "glob.py", "base64.py", "csv.py", "queue.py", "sched.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A few stdlib files: a tokenizer trains on them in a second."""
  root = tmp_path_factory.mktemp("corpus")
  stdlib = sysconfig.get_paths()["stdlib"]
  for name in CORPUS_FILES:
    shutil.copy(os.path.join(stdlib, name), root / name.replace("/", "_"))
  return str(root)


def _tokenizer_config(corpus_dir, cache_dir, **overrides):
  c = small_config(**overrides)
  c.data.sources = f"files:{corpus_dir}"
  c.data.validation_fraction = 0.25
  c.data.view = "tokenizer"
  c.data.tokenizer_vocab_size = 300
  c.data.tokenizer_cache_dir = str(cache_dir)
  return c


def test_train_resume_and_eval_on_object_store(object_store, corpus, tmp_path, monkeypatch):
  """The whole run in a bucket (GCS, S3), its auto-trained tokenizer included; the resume
  and eval read that tokenizer (with another, empty cache: none is trained again)."""
  workdir = object_store.new_bucket() + "/runs/a"
  c = _tokenizer_config(corpus, tmp_path / "cache", num_steps=6, checkpoint_every=2,
                        log_every=2, keep_checkpoints=2)
  trainer.train(c, workdir, stop_at_step=4)  # "preempted" at step 4
  ckpts = rundir.checkpoint_dir(workdir)
  assert load_lib.checkpoint_steps(workdir) == [2, 4]  # keep-last-2
  assert paths.exists(paths.join(ckpts, "4", manifest_lib.MANIFEST))
  assert manifest_lib.verify_manifest(paths.join(ckpts, "4")) is None
  assert rundir.load_run_config(workdir).num_steps == 6
  assert rundir.load_run_config(workdir).data.tokenizer_path == ""  # recorded as given
  tok = rundir.tokenizer_file(workdir)
  assert paths.exists(tok) and paths.exists(tok + ".summary.json")
  assert not (tmp_path / "cache" / "bpe300").exists() and not list(
      (tmp_path / "cache").glob("bpe*.json"))  # nothing trained into the per-host cache
  assert [x["step"] for x in _lines(workdir)] == [2, 4]
  events = paths.listdir(paths.join(workdir, "tensorboard"))
  assert events and all(n.startswith("events.out.tfevents") for n in events)

  _refuse_training(monkeypatch)
  c.data.tokenizer_cache_dir = str(tmp_path / "empty-cache")
  out = trainer.train(c, workdir)  # resumes from the bucket's step 4
  assert out["step"] == 6
  assert [x["step"] for x in _lines(workdir)] == [2, 4, 6]  # the same file, continued
  assert load_lib.checkpoint_steps(workdir) == [4, 6]
  assert len(paths.listdir(paths.join(workdir, "tensorboard"))) == len(events) + 1

  c.eval.tasks, c.eval.max_docs = "bpb", 2
  results = eval_run.evaluate(c, workdir)
  assert results["bpb"]["step"] == 6
  saved = json.loads(paths.read_text(paths.join(workdir, "eval", "bpb.json")))
  assert saved["step"] == 6 and saved["task"] == "bpb"
  loaded = load_lib.load_params(workdir)
  assert loaded.config.data.tokenizer_path == tok
  assert pipeline.vocab_without_training(c, workdir) == loaded.vocab


@pytest.mark.slow
def test_corrupt_step_on_object_store_is_moved_aside(object_store):
  workdir = object_store.new_bucket() + "/run"
  c = small_config(num_steps=4, checkpoint_every=2, log_every=2)
  trainer.train(c, workdir)
  ckpts = rundir.checkpoint_dir(workdir)
  victim = [f for f in paths.walk_files(paths.join(ckpts, "4", "state"))
            if "/d/" in f][0]
  paths.write_bytes(victim, paths.read_bytes(victim)[:-1] + b"\0")  # same size, other bytes
  ck = ckpt_lib.Checkpointer(ckpts, async_save=False)
  try:
    assert "sha256" in manifest_lib.verify_manifest(paths.join(ckpts, "4"))
    setup = step_lib.build(c, model_config(c), parallel.make_mesh(c.mesh.shape))
    step, _, _ = ck.restore(ckpt_lib.abstract_with_shardings(setup.abstract_state,
                                                             setup.state_shardings))
  finally:
    ck.close()
  assert step == 2
  assert ck.corrupt_dirs() == ["4.corrupt-1"]
  assert load_lib.checkpoint_steps(workdir) == [2]


def test_checkpoints_on_a_store_without_tensorstore_driver_are_refused_in_one_line():
  workdir = "memory://proxyjax-test/run"  # fsspec's in-memory store: no TensorStore driver
  c = small_config(num_steps=2)
  with pytest.raises(ckpt_lib.CheckpointError, match=r"gs://, s3:// and local") as info:
    trainer.train(c, workdir)
  assert "\n" not in str(info.value) and "memory://" in str(info.value)
  assert not paths.exists(paths.join(workdir, "metrics.jsonl"))  # refused before training


def test_s3_kvstore_spec_is_tensorstores_s3_driver(monkeypatch):
  """Orbax's spec for the same path on gs://, with the GCS driver made the S3 driver
  (bucket, key prefix, endpoint from AWS_ENDPOINT_URL_S3)."""
  from orbax.checkpoint._src.serialization import tensorstore_utils  # pylint: disable=g-import-not-at-top

  from proxyjax.train import orbax_s3  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
  orbax_s3.install()
  spec = tensorstore_utils.build_kvstore_tspec("s3://my-bucket/run/checkpoints/4/state",
                                               "params.w")
  assert spec["driver"] == "ocdbt" and spec["path"] == "params.w"
  assert spec["base"] == {"driver": "s3", "bucket": "my-bucket",
                          "path": "run/checkpoints/4/state/", "endpoint": "http://127.0.0.1:9"} \
      or spec["base"] == {"driver": "s3", "bucket": "my-bucket",
                          "path": "run/checkpoints/4/state", "endpoint": "http://127.0.0.1:9"}
  plain = tensorstore_utils.build_kvstore_tspec("s3://my-bucket/x", "a", use_ocdbt=False)
  assert plain["driver"] == "s3" and plain["bucket"] == "my-bucket"
  assert plain["path"] == "x/a"
  local = tensorstore_utils.build_kvstore_tspec("/tmp/x", "a", use_ocdbt=False)
  assert local == {"driver": "file", "path": "/tmp/x/a"}  # other paths: Orbax's own spec
  with pytest.raises(ValueError, match="no bucket"):
    tensorstore_utils.build_kvstore_tspec("s3:///x", "a")


def test_metrics_writer_mirrors_and_continues(object_store):
  workdir = object_store.new_bucket() + "/run"
  w = metrics_lib.MetricWriter(workdir)
  w.write(1, {"loss": 2.0})
  assert [x["step"] for x in _lines(workdir)] == [1]  # uploaded at the log step
  w.write(2, {"loss": 1.5})
  w.close()
  w = metrics_lib.MetricWriter(workdir)  # a resumed run appends to the bucket's file
  w.write(3, {"loss": 1.0})
  w.close()
  assert [x["step"] for x in _lines(workdir)] == [1, 2, 3]
  events = paths.listdir(paths.join(workdir, "tensorboard"))
  assert len(events) == 2 and all(paths.size(paths.join(workdir, "tensorboard", e)) > 0
                                  for e in events)
  rundir.write_run_config(small_config(), workdir)
  assert rundir.load_run_config(workdir).num_steps == 20
  assert rundir.load_run_config(workdir + "-none") is None
  eval_run.run_tasks.__globals__["TASKS"]["_t"] = lambda ctx: {"x": 1.0}
  try:
    eval_run.run_tasks(type("Ctx", (), {"step": 7})(), ["_t"], rundir.eval_dir(workdir))
  finally:
    del eval_run.run_tasks.__globals__["TASKS"]["_t"]
  assert json.loads(paths.read_text(paths.join(workdir, "eval", "_t.json")))["step"] == 7


# --- the run's own tokenizer (WORKDIR/tokenizer.json) ---------------------------------------


@pytest.mark.parametrize("store", ["local", "gs", "s3"])
def test_run_tokenizer_is_trained_once_into_the_workdir(store, corpus, tmp_path, monkeypatch,
                                                        request):
  if store == "local":
    workdir = str(tmp_path / "run")
  else:
    workdir = request.getfixturevalue(f"{'gcs' if store == 'gs' else 's3'}_server"
                                      ).new_bucket() + "/run"
  c = _tokenizer_config(corpus, tmp_path / "cache")
  resolved = pipeline.run_tokenizer(c, workdir)
  tok = rundir.tokenizer_file(workdir)
  assert resolved.data.tokenizer_path == tok and c.data.tokenizer_path == ""
  assert paths.exists(tok) and not (tmp_path / "cache").exists()
  _refuse_training(monkeypatch)
  assert pipeline.run_tokenizer(c, workdir).data.tokenizer_path == tok  # not trained again
  local = pipeline.resolve_tokenizer(resolved)  # the views read a local file
  with open(local, "rb") as f:
    assert f.read() == paths.read_bytes(tok)
  empty = _tokenizer_config(corpus, tmp_path / "empty-cache")
  assert pipeline.vocab_without_training(empty, workdir) == pipeline.build_vocab(resolved)
  assert pipeline.with_run_tokenizer(empty, workdir).data.tokenizer_path == tok
  with pytest.raises(UserError, match="data.tokenizer_path"):
    pipeline.vocab_without_training(empty)  # no run, no cache: one line naming the field
