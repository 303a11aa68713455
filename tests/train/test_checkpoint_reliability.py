"""Checkpoint reliability (issue 10, items 1-3): a failed restore never becomes a fresh
start, unreadable steps are moved aside (checksum manifests catch silent corruption),
and a save on a full disk fails with one clear line, older checkpoints intact."""

import errno
import json
import logging
import os
import shutil
import subprocess

import pytest

from proxyjax import config as config_lib
from proxyjax import parallel, trainer
from proxyjax.data import pipeline
from proxyjax.errors import ConfigError
from proxyjax.model import transformer
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import load as load_lib
from proxyjax.train import manifest as manifest_lib
from proxyjax.train import resume as resume_lib
from proxyjax.train import step as step_lib


def _config(**overrides):
  c = config_lib.tiny_config()
  c.seq_len, c.batch_size = 128, 8
  # One num_steps for every run (it is baked into the compiled step): runs end early with
  # `stop_at_step`, so each compiles the same program (cached below).
  c.num_steps, c.log_every, c.eval_every = 8, 2, 0
  c.checkpoint_every, c.keep_checkpoints, c.progress_bar = 2, 3, False
  c.async_checkpointing = True  # the default: failures surface from the background
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 32, 1, 2, 0, 16, 64
  m.logits_chunk = 64
  c.opt.warmup_steps, c.data.schedule.warmup_steps = 2, 2
  c.update_from_flattened_dict(overrides)  # dotted keys
  return c


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  """The train step compiles once for this module (a persistent cache, module-local)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  old = {n: getattr(jax.config, n) for n in names}
  if old["jax_compilation_cache_dir"]:  # configured by someone else: leave it alone
    yield
    return
  compilation_cache.reset_cache()
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  try:
    yield
  finally:
    for n, v in old.items():
      jax.config.update(n, v)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """A run with checkpoints at steps 2 and 4 (copied by each test, never modified)."""
  workdir = tmp_path_factory.mktemp("ckpt_base") / "run"
  trainer.train(_config(), str(workdir), stop_at_step=4)
  return workdir


def _copy(base, tmp_path):
  dst = tmp_path / "run"
  shutil.copytree(base, dst)
  return dst


def _listing(workdir):
  return sorted(os.listdir(workdir / "checkpoints"))


def _snapshot(workdir):
  """Every checkpoint file with its checksum: 'the old checkpoints are intact'."""
  root = workdir / "checkpoints"
  return {str(p.relative_to(root)): manifest_lib._sha256(str(p))  # pylint: disable=protected-access
          for p in sorted(root.rglob("*")) if p.is_file()}


def _target(c):
  setup = step_lib.build(c, transformer.ModelConfig.from_config(c, pipeline.build_vocab(c)),
                         parallel.make_mesh(c.mesh.shape))
  return ckpt_lib.abstract_with_shardings(setup.abstract_state, setup.state_shardings)


def _restore(workdir, c, data_iter=None, check=None):
  ck = ckpt_lib.Checkpointer(str(workdir / "checkpoints"))
  try:
    return ck.restore(_target(c), data_iter, check=check)
  finally:
    ck.close()


def _largest_state_file(step_dir):
  return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
             key=lambda p: p.stat().st_size)


# --- 1. an incompatible resume stops before training, the old checkpoints intact ----------


def test_worker_count_change_is_refused_before_training(base_run, tmp_path):
  workdir = _copy(base_run, tmp_path)
  before, metrics = _snapshot(workdir), (workdir / "metrics.jsonl").read_text()
  c = _config(**{"checkpoint_every": 5, "data.num_workers": 1})
  with pytest.raises(resume_lib.IncompatibleCheckpointError,
                     match=r"'data\.num_workers': this run has 1 but the checkpoint at step 4 .* "
                           r"written with 0.*restore_policy=fresh_data") as err:
    trainer.train(c, str(workdir))
  assert isinstance(err.value, ConfigError) and "\n" not in str(err.value)
  assert _snapshot(workdir) == before
  assert (workdir / "metrics.jsonl").read_text() == metrics  # nothing trained


def test_model_change_is_refused_under_every_policy(base_run, tmp_path):
  workdir = _copy(base_run, tmp_path)
  before = _snapshot(workdir)
  for policy in resume_lib.RESTORE_POLICIES:
    c = _config(**{"model.d_ff": 128, "restore_policy": policy})
    with pytest.raises(resume_lib.IncompatibleCheckpointError,
                       match=r"'model\.d_ff': this run has 128 but .* written with 64"):
      trainer.train(c, str(workdir))
  # Without a recorded config (checkpoints of older versions), the parameter shapes say it.
  with pytest.raises(resume_lib.IncompatibleCheckpointError, match=r"params\.\S+ has shape"):
    _restore(workdir, _config(**{"model.d_ff": 128}))
  assert _snapshot(workdir) == before


def test_fresh_data_policy_keeps_parameters_and_restarts_the_data_stream(base_run, tmp_path):
  workdir = _copy(base_run, tmp_path)
  c = _config(seed=7)
  with pytest.raises(resume_lib.IncompatibleCheckpointError, match=r"'seed': this run has 7"):
    _restore(workdir, c, check=resume_lib.resume_check(c, "strict", "d", 1))
  data_it = pipeline.make_iterator(c, "train")
  fresh_state = json.dumps(data_it.get_state(), sort_keys=True, default=str)
  step, state, meta = _restore(workdir, c, data_it,
                               check=resume_lib.resume_check(c, "fresh_data", "d", 1))
  assert step == 4 == int(state["step"]) == meta["step"]
  assert json.dumps(data_it.get_state(), sort_keys=True, default=str) == fresh_state
  with pytest.raises(ConfigError, match="restore_policy"):
    resume_lib.resume_check(c, "lenient", "d", 1)


def test_a_checkpoint_of_another_document_order_is_a_changed_data_stream(base_run, tmp_path):
  """The document order is recorded (``meta['data_stream']``). Checkpoints without the
  record (earlier releases: a numpy permutation for every source) continue a run whose
  order is the same, and one whose sources are shuffled by the keyed permutation (over
  ``EXACT_SHUFFLE_MAX_DOCUMENTS`` documents) only under fresh_data."""
  workdir = _copy(base_run, tmp_path)
  c = _config()
  meta = load_lib.read_meta(str(workdir / "checkpoints" / "4"))
  assert meta[resume_lib.DATA_STREAM_KEY] == pipeline.NUMPY_STREAM  # recorded by the trainer
  old = {k: v for k, v in meta.items() if k != resume_lib.DATA_STREAM_KEY}
  for m in (meta, old):
    assert resume_lib.resume_check(c, "strict", "d", 1, None, pipeline.NUMPY_STREAM)(4, m)
  check = resume_lib.resume_check(c, "strict", "d", 1, None, pipeline.KEYED_STREAM)
  for m in (meta, old):
    with pytest.raises(resume_lib.IncompatibleCheckpointError,
                       match=r"'data stream': this run has numpy-permutation<=2\^20,"
                             r"windowed-keyed-permutation-1 but the checkpoint at step 4 in d "
                             r"was "
                             r"written with numpy-permutation.*release that wrote it.*"
                             r"restore_policy=fresh_data"):
      check(4, m)
  assert resume_lib.resume_check(c, "fresh_data", "d", 1, None, pipeline.KEYED_STREAM)(4, old) \
      is False


# --- 2. unreadable steps are moved aside (never deleted); silent corruption detected ------


def test_corrupt_newest_step_is_moved_aside_and_training_continues(base_run, tmp_path, caplog):
  workdir = _copy(base_run, tmp_path)
  victim = _largest_state_file(workdir / "checkpoints" / "4")
  victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated
  leftover = workdir / "checkpoints" / "8.orbax-checkpoint-tmp"  # an interrupted save
  leftover.mkdir()
  (leftover / "junk").write_bytes(b"x" * 1000)
  with caplog.at_level(logging.WARNING):
    out = trainer.train(_config(), str(workdir), stop_at_step=6)
  assert out["step"] == 6
  assert _listing(workdir) == ["2", "4", "4.corrupt-1", "6"]  # no StepAlreadyExistsError at 4
  assert (workdir / "checkpoints" / "4.corrupt-1" / victim.relative_to(
      workdir / "checkpoints" / "4")).exists()  # moved, not deleted
  text = caplog.text
  assert "moved it aside to 4.corrupt-1" in text and "resuming from step 2" in text
  assert "last good" not in text


def test_one_bit_flip_is_detected(base_run, tmp_path):
  workdir = _copy(base_run, tmp_path)
  victim = _largest_state_file(workdir / "checkpoints" / "4")
  data = bytearray(victim.read_bytes())
  data[len(data) // 2] ^= 0x01
  victim.write_bytes(bytes(data))
  assert "sha256" in manifest_lib.verify_manifest(str(workdir / "checkpoints" / "4"))
  step, _, _ = _restore(workdir, _config())
  assert step == 2
  assert _listing(workdir) == ["2", "4.corrupt-1"]


def test_all_checkpoints_unreadable_never_starts_afresh(base_run, tmp_path):
  workdir = _copy(base_run, tmp_path)
  for step in ("2", "4"):
    (workdir / "checkpoints" / step / "state" / "_METADATA").unlink()
  for _ in range(2):  # and again on the re-run, when only the moved-aside steps remain
    with pytest.raises(ckpt_lib.NoReadableCheckpointError,
                       match=r"no readable checkpoint .*2\.corrupt-1, 4\.corrupt-1.*new --workdir"):
      trainer.train(_config(), str(workdir))
    assert _listing(workdir) == ["2.corrupt-1", "4.corrupt-1"]
  assert '"step": 6' not in (workdir / "metrics.jsonl").read_text()


# --- 3. a full disk: one clear line at the failed save, old checkpoints intact ----------


def _mount_tmpfs(path, size_bytes):
  path.mkdir()
  try:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                       capture_output=True, timeout=20, check=False)
  except (OSError, subprocess.SubprocessError):
    return False
  return r.returncode == 0


def test_full_disk_save_fails_with_one_clear_line(base_run, tmp_path, capfd, monkeypatch):
  ck_bytes = sum(p.stat().st_size for p in (base_run / "checkpoints" / "4").rglob("*")
                 if p.is_file())
  disk = tmp_path / "disk"
  mounted = _mount_tmpfs(disk, 8 << 20)
  try:
    if mounted:
      workdir = _copy(base_run, disk)
      st = os.statvfs(disk)  # fill the disk until half a checkpoint fits
      filler = disk / "filler"
      filler.write_bytes(b"\0" * max(st.f_bavail * st.f_frsize - ck_bytes // 2, 0))
    else:  # no tmpfs here: the commit of step 6 hits a simulated ENOSPC
      workdir = _copy(base_run, tmp_path)

      def no_space(step_dir):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), step_dir)
      monkeypatch.setattr(ckpt_lib, "write_manifest", no_space)
    before = _snapshot(workdir)
    capfd.readouterr()
    with pytest.raises(ckpt_lib.CheckpointSaveError) as err:
      trainer.train(_config(), str(workdir))
    message = str(err.value)
    assert "\n" not in message and err.value.step == 6
    assert message.startswith(f"checkpoint at step 6 could not be saved in {workdir}/checkpoints:"
                              " no space left on device; the partial save was removed")
    assert "the checkpoints at steps 2, 4 are intact" in message
    stderr = capfd.readouterr().err
    assert "Traceback" not in stderr and "Event loop is closed" not in stderr, stderr[-3000:]
    assert _listing(workdir) == ["2", "4"]  # no partial save left behind: a re-run resumes
    assert _snapshot(workdir) == before
    assert _restore(workdir, _config())[0] == 4
    if mounted:  # a read-only disk is reported at the start, not at the first save
      subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, timeout=20)
      with pytest.raises(ckpt_lib.CheckpointError, match="is not writable: read-only file system"):
        trainer.train(_config(), str(workdir))
  finally:
    if mounted:
      subprocess.run(["umount", "-l", str(disk)], check=False, timeout=20)
