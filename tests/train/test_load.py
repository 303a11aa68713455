"""One loader: load_params restores the trained parameters only, shaped by the run's config."""

import copy
import json

import jax
import numpy as np
import pytest
from helpers import restored_params as _params
from helpers import small_config

from proxyjax import rundir, trainer
from proxyjax.errors import UserError
from proxyjax.eval import run as eval_run
from proxyjax.tools import train_tokenizer
from proxyjax.train import load as load_lib


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  c = small_config(num_steps=4, checkpoint_every=2, log_every=2)
  trainer.train(c, str(workdir))
  return c, workdir


def _assert_same(a, b):
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in la] == [p for p, _ in lb]
  for (_, x), (_, y) in zip(la, lb):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_load_params_equals_full_restore(trained):
  c, workdir = trained
  step, full = _params(str(workdir), c)
  loaded = load_lib.load_params(str(workdir))  # no config: all from the run's record
  assert loaded.step == step == 4
  _assert_same(loaded.params, full)
  assert loaded.model_cfg.d_model == c.model.d_model and loaded.vocab.size == 640
  assert loaded.meta[rundir.VOCAB_KEY]["size"] == 640
  assert set(loaded.params) == set(full)  # parameters only: no optimizer state


def test_load_params_step_and_sharding(trained):
  c, workdir = trained
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
                           ("data", "fsdp", "tensor"))
  loaded = load_lib.load_params(str(workdir), step=2, mesh=mesh, config=c)
  assert loaded.step == 2
  assert loaded.params["blocks"]["wq"].sharding.mesh.size == 1


def test_load_params_errors(trained, tmp_path):
  c, workdir = trained
  with pytest.raises(rundir.NoCheckpointError, match="no checkpoint in") as info:
    load_lib.load_params(str(tmp_path))
  assert isinstance(info.value, UserError) and "\n" not in str(info.value)
  with pytest.raises(rundir.NoCheckpointError, match=r"no checkpoint at step 3 .*steps: 2, 4"):
    load_lib.load_params(str(workdir), step=3)
  other = copy.deepcopy(c)
  other.model.d_ff = 256
  with pytest.raises(UserError, match="model.d_ff"):
    load_lib.load_params(str(workdir), config=other)


def test_tokenizer_run_eval_trains_no_tokenizer(tmp_path, monkeypatch):
  """The vocabulary comes from the checkpoint, the tokenizer from the run directory
  (WORKDIR/tokenizer.json): eval trains none and needs no cache."""
  cache = tmp_path / "tokenizers"
  c = small_config(num_steps=2, checkpoint_every=2, log_every=1)
  c.data.view = "tokenizer"
  c.data.tokenizer_vocab_size = 300
  c.data.tokenizer_cache_dir = str(cache)
  c.eval.max_docs = 2
  trainer.train(c, str(tmp_path / "run"))
  tok = tmp_path / "run" / "tokenizer.json"
  trained_size = json.load(open(str(tok) + ".summary.json"))
  assert tok.exists() and not cache.exists()  # the run's, not the per-host cache's

  def refuse(*a, **kw):
    raise AssertionError("the tokenizer trainer was called")

  monkeypatch.setattr(train_tokenizer, "train_tokenizer", refuse)
  c.eval.tasks = "bpb"
  results = eval_run.evaluate(c, str(tmp_path / "run"))
  assert results["bpb"]["step"] == 2 and not cache.exists()
  loaded = load_lib.load_params(str(tmp_path / "run"))
  assert loaded.vocab.compressed_alphabet > 256 and trained_size
  assert load_lib.run_vocab(c, {}, str(tmp_path / "run")) == loaded.vocab  # the run's file
  # Without a recorded vocabulary (older checkpoints), a run tokenizer nor a cached one: one line.
  with pytest.raises(UserError, match="data.tokenizer_path"):
    load_lib.run_vocab(c, {})
