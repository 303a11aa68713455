"""Multi-process training on one machine: 2 CPU processes x 4 fake devices over gloo.

The reference for "2 processes compute the same thing as 1" must see the same
data. Each process reads its own shard of the documents (``docs[i::n]``, with a
per-process mixing seed), so a plain 1-process run trains on other batches.
The 1-process reference here therefore feeds the training loop the
concatenation of what process 0 and process 1 read (the pipeline takes
``process_index/process_count``): the same global batch, row for row, as the
2-process run, whose ``make_array_from_process_local_data`` puts process 0's
rows first. Losses then agree to float round-off (reduction order differs).
"""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import grain
import jax
import numpy as np
import pytest

from proxyjax import config as config_lib
from proxyjax import distributed, parallel, trainer
from proxyjax.data import pipeline
from proxyjax.errors import ConfigError
from proxyjax.model import transformer
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# configs/tiny.py shrunk like small_config() in test_train.py; 6 steps, checkpoints at 3, 6.
OVERRIDES = {
    "seq_len": 64, "batch_size": 8, "num_steps": 6, "log_every": 1, "eval_every": 0,
    "checkpoint_every": 3, "progress_bar": False, "async_checkpointing": False,
    "model.d_model": 64, "model.n_layers": 2, "model.n_heads": 4, "model.n_kv_heads": 2,
    "model.head_dim": 16, "model.d_ff": 128, "model.logits_chunk": 32,
    "model.scan_layers": True, "opt.warmup_steps": 5, "opt.peak_lr": 2e-3,
    "data.schedule.warmup_steps": 3, "mesh.shape": (1, -1, 1),
}


def _flag(value):
  if isinstance(value, tuple):
    return "(" + ",".join(str(v) for v in value) + ")"
  return str(value)


def _cli_overrides(overrides):
  return [f"--config.{k}={_flag(v)}" for k, v in overrides.items()]


def _config(overrides):
  """The config the launched processes build (``--config=configs/tiny.py`` + overrides)."""
  c = config_lib.load_config(os.path.join(ROOT, "configs", "tiny.py"))
  c.update_from_flattened_dict(overrides)
  return c


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, extra=(), *, n=2, local_devices=4, timeouts=("--heartbeat_timeout_s=10",),
            overrides=None):
  """Starts n processes of ``proxyjax.main``; stderr of each in WORKDIR.p<i>.log."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false")
  procs = []
  for i in range(n):
    cmd = [sys.executable, "-m", "proxyjax.main", "--config=configs/tiny.py",
           f"--workdir={workdir}", *_cli_overrides(overrides or OVERRIDES),
           f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={n}",
           f"--process_id={i}", f"--local_device_count={local_devices}",
           "--distributed_init_timeout_s=60", *timeouts, *extra]
    log = open(f"{workdir}.p{i}.log", "w")  # pylint: disable=consider-using-with
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    log.close()
  return procs


def _wait(procs, timeout):
  """Return codes; kills every process still running after ``timeout`` seconds."""
  deadline = time.time() + timeout
  codes = []
  for p in procs:
    try:
      codes.append(p.wait(timeout=max(deadline - time.time(), 0.1)))
    except subprocess.TimeoutExpired:
      for q in procs:
        if q.poll() is None:
          q.kill()
      for q in procs:
        q.wait()
      raise
  return codes


def _log(workdir, i):
  with open(f"{workdir}.p{i}.log") as f:
    return "".join(l for l in f if not l.startswith("[Gloo]"))


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(l) for l in f]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


class _BothProcesses(grain.DatasetIterator):
  """One process reading what 2 processes read: [process 0 rows; process 1 rows]."""

  def __init__(self, config, split):
    super().__init__()
    self._its = [_MAKE_ITERATOR(config, split, process_index=i, process_count=2)
                 for i in range(2)]

  def __next__(self):
    parts = [next(it) for it in self._its]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self):
    return {f"process_{i}": it.get_state() for i, it in enumerate(self._its)}

  def set_state(self, state):
    for i, it in enumerate(self._its):
      it.set_state(state[f"process_{i}"])

  def close(self):
    for it in self._its:
      it.close()


_MAKE_ITERATOR = pipeline.make_iterator


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """2 processes x 4 devices, (1, 8, 1) FSDP mesh, 6 steps, checkpoints at 3 and 6."""
  workdir = str(tmp_path_factory.mktemp("mh") / "two")
  codes = _wait(_launch(workdir), timeout=150)
  assert codes == [0, 0], _log(workdir, 0)[-3000:] + _log(workdir, 1)[-3000:]
  return workdir


@pytest.fixture(scope="module")
def one_process_reference(tmp_path_factory):
  """The same global batches in this (1-process, 8-device) pytest process."""
  workdir = str(tmp_path_factory.mktemp("mh") / "one")
  mp = pytest.MonkeyPatch()
  mp.setattr(pipeline, "make_iterator", lambda config, split="train", **_: _BothProcesses(
      config, split))
  try:
    trainer.train(_config(OVERRIDES), workdir)
  finally:
    mp.undo()
  return workdir


def test_two_processes_match_one_process_on_the_same_global_batches(two_process_run,
                                                                    one_process_reference):
  two, one = _losses(two_process_run), _losses(one_process_reference)
  assert sorted(two) == sorted(one) == list(range(1, 7))
  for s in two:
    assert two[s] == pytest.approx(one[s], rel=2e-6), (s, two[s], one[s])
  assert "process 0 of 2" in _log(two_process_run, 0)
  assert "4 local / 8 global cpu devices" in _log(two_process_run, 1)
  # Per-process data: each process read its own shard, and saved its own Grain state.
  c = _config(OVERRIDES)
  b0 = next(_MAKE_ITERATOR(c, process_index=0, process_count=2))
  b1 = next(_MAKE_ITERATOR(c, process_index=1, process_count=2))
  assert b0["inputs"].shape == (4, 64) and not np.array_equal(b0["inputs"], b1["inputs"])
  data = os.path.join(two_process_run, "checkpoints", "6", "data")
  states = [open(os.path.join(data, f"process_{i}-of-2.json")).read() for i in range(2)]
  assert states[0] != states[1]


def _restore_params(workdir, mesh_shape, rules):
  c = _config(dict(OVERRIDES, **{"mesh.shape": mesh_shape, "mesh.rules": rules}))
  cfg = transformer.ModelConfig.from_config(c, pipeline.build_vocab(c))
  setup = step_lib.build(c, cfg, parallel.make_mesh(mesh_shape))
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    step, state, _ = ck.restore(
        ckpt_lib.abstract_with_shardings(setup.abstract_state, setup.state_shardings), None)
  finally:
    ck.close()
  return step, state["params"]


@pytest.mark.slow  # CI time (20 min on 2 cores): run with -m slow
def test_two_process_checkpoint_restores_on_other_meshes(two_process_run, one_process_reference,
                                                         tmp_path):
  # 1) Parameters alone restore in one process, onto another mesh (2, 2, 2) FSDP+TP.
  step, params = _restore_params(two_process_run, (2, 2, 2), "fsdp_tp")
  ref_step, ref = _restore_params(one_process_reference, (1, 8, 1), "fsdp")
  assert step == ref_step == 6
  assert len(params["blocks"]["w_up"].sharding.device_set) == 8
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       rtol=1e-4, atol=1e-6), params, ref)

  # 2) Resuming training with another process count fails clearly (Grain state is per
  #    process) instead of silently restarting from scratch.
  with pytest.raises(RuntimeError, match="written by 2 process"):
    distributed.check_resume(os.path.join(two_process_run, "checkpoints"), 1)
  distributed.check_resume(os.path.join(two_process_run, "checkpoints"), 2)
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  one = subprocess.run([sys.executable, "-m", "proxyjax.main", "--config=configs/tiny.py",
                        f"--workdir={two_process_run}", *_cli_overrides(OVERRIDES)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert one.returncode != 0 and "written by 2 process(es) but this run has 1" in one.stderr

  # 3) 2 processes resume from step 3 on a hybrid (2, 2, 2) mesh: data over the two
  #    processes (DCN), fsdp x tensor inside each; same data stream, same losses.
  workdir = str(tmp_path / "resumed")
  shutil.copytree(two_process_run, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
  os.remove(os.path.join(workdir, "metrics.jsonl"))
  hybrid = dict(OVERRIDES, **{"mesh.shape": (2, 2, 2), "mesh.dcn_shape": (2, 1, 1),
                              "mesh.rules": "fsdp_tp"})
  codes = _wait(_launch(workdir, overrides=hybrid), timeout=150)
  assert codes == [0, 0], _log(workdir, 0)[-3000:]
  assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in _log(workdir, 0)
  resumed, straight = _losses(workdir), _losses(two_process_run)
  assert sorted(resumed) == [4, 5, 6]
  for s in resumed:
    assert resumed[s] == pytest.approx(straight[s], rel=1e-5), (s, resumed[s], straight[s])


def _wait_for_steps(workdir, procs, n, timeout=150):
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= n:
      return
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.3)
  for p in procs:
    p.kill()
  raise AssertionError("training did not start: " + _log(workdir, 0)[-3000:])


@pytest.mark.parametrize("victim", [pytest.param(1, marks=pytest.mark.slow), 0])
def test_a_dead_process_fails_the_other_within_seconds(tmp_path, victim):
  workdir = str(tmp_path / "run")
  long_run = dict(OVERRIDES, num_steps=100_000, checkpoint_every=0)
  procs = _launch(workdir, overrides=long_run,
                  timeouts=("--heartbeat_timeout_s=5", "--shutdown_timeout_s=10"))
  _wait_for_steps(workdir, procs, 2)
  procs[victim].kill()
  t0 = time.time()
  survivor = procs[1 - victim]
  try:
    code = survivor.wait(timeout=45)
  except subprocess.TimeoutExpired as e:
    survivor.kill()
    raise AssertionError("the surviving process hangs after its peer died") from e
  procs[victim].wait()
  assert code != 0 and time.time() - t0 < 45
  log = _log(workdir, 1 - victim)
  assert (f"proxyjax: process {1 - victim} of 2 failed" in log
          or "JAX distributed service detected fatal errors" in log), log[-3000:]


@pytest.mark.slow  # CI time (20 min on 2 cores): run with -m slow
def test_sigterm_to_one_process_stops_all_at_the_same_step(tmp_path):
  workdir = str(tmp_path / "run")
  long_run = dict(OVERRIDES, num_steps=100_000, checkpoint_every=0)
  procs = _launch(workdir, overrides=long_run)
  _wait_for_steps(workdir, procs, 2)
  procs[1].send_signal(signal.SIGTERM)  # a preemption notice that reaches one host only
  assert _wait(procs, timeout=60) == [0, 0]
  steps = sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints"))
                 if p.isdigit())
  assert len(steps) == 1 and steps[0] >= 2
  for i in range(2):
    assert f"checkpoint saved at step {steps[0]}" in _log(workdir, i)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", str(steps[0]), "data"))) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]


# --- start-up decisions and hybrid meshes (no processes) ------------------------------


def test_decide_single_explicit_and_cluster_launches():
  decide = lambda env, **kw: distributed.decide(distributed.Options(**kw).with_env(env), env)
  assert not decide({}).initialize  # plain single process
  assert not decide({}, num_processes=1).initialize
  d = decide({"PROXYJAX_COORDINATOR": "10.0.0.1:1234", "PROXYJAX_NUM_PROCESSES": "4",
              "PROXYJAX_PROCESS_ID": "3"}, heartbeat_timeout_s=7)
  assert d.initialize and d.kwargs["coordinator_address"] == "10.0.0.1:1234"
  assert d.kwargs["num_processes"] == 4 and d.kwargs["process_id"] == 3
  assert d.kwargs["heartbeat_timeout_seconds"] == 7
  assert d.kwargs["cluster_detection_method"] == "deactivate"  # nothing left to detect
  flags_win = decide({"PROXYJAX_PROCESS_ID": "3"}, coordinator_address="h:1", num_processes=2,
                     process_id=1)
  assert flags_win.kwargs["process_id"] == 1
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
           "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}
  d = decide(slurm, local_device_ids="0,1,2,3")
  assert d.initialize and "slurm" in d.reason and "coordinator_address" not in d.kwargs
  assert d.kwargs["local_device_ids"] == [0, 1, 2, 3]  # one process per node, all GPUs
  assert not decide(dict(slurm, SLURM_NTASKS="1")).initialize
  k8s = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "2",
         "PROXYJAX_COORDINATOR": "job-0.svc:1234", "PROXYJAX_NUM_PROCESSES": "4"}
  d = decide(k8s)
  assert d.initialize and d.kwargs["process_id"] == 2
  if importlib.util.find_spec("kubernetes") is None:  # else jax's k8s detection applies
    # A single-pod Indexed Job (JOB_COMPLETION_INDEX=0, nothing else): one process.
    pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "0"}
    assert not decide(pod).initialize
    # Pod 2 of an Indexed Job without a process count would train alone: refused.
    with pytest.raises(ConfigError, match="process id 2 without a process count"):
      decide(dict(pod, JOB_COMPLETION_INDEX="2"))
  with pytest.raises(ConfigError, match="process id 3 without a process count"):
    decide({"PROXYJAX_PROCESS_ID": "3"})
  assert not decide(slurm, mode="off").initialize
  assert decide({}, mode="on").initialize
  with pytest.raises(ConfigError, match="coordinator_address"):
    decide({}, num_processes=2)
  with pytest.raises(ConfigError, match="process_id"):
    decide({}, coordinator_address="h:1", num_processes=2, process_id=2)


def test_hybrid_mesh_puts_dcn_axes_across_granules():
  def fake(i, per_granule=4, **kw):
    return types.SimpleNamespace(id=i, process_index=i // per_granule, platform="cpu",
                                 device_kind="cpu", **kw)
  grid = parallel.hybrid_device_grid((2, 2, 2), (2, 1, 1), [fake(i) for i in range(8)])
  assert [{d.process_index for d in grid[j].flat} for j in range(2)] == [{0}, {1}]
  grid = parallel.hybrid_device_grid((1, 8, 1), (1, 2, 1), [fake(i) for i in range(8)])
  assert [d.process_index for d in grid.flat] == [0] * 4 + [1] * 4
  # TPU-style slices (two processes per slice): slices are the granules.
  devs = [fake(i, per_granule=2, slice_index=i // 4) for i in range(8)]
  grid = parallel.hybrid_device_grid((2, 4, 1), (2, 1, 1), devs)
  assert [{d.slice_index for d in grid[j].flat} for j in range(2)] == [{0}, {1}]
  with pytest.raises(ConfigError, match="one process per host"):
    parallel.hybrid_device_grid((4, 2, 1), (4, 1, 1), [fake(i) for i in range(8)])
  with pytest.raises(ConfigError, match="mesh.dcn_shape"):
    parallel.make_mesh((2, 4, 1), dcn_shape=(3, 1, 1))
  assert parallel.make_mesh((2, 4, 1), dcn_shape=(1, 1, 1)).shape["fsdp"] == 4
  with pytest.raises(ConfigError, match="one process per host"):  # 1 process, 8 devices
    parallel.make_mesh((2, 4, 1), dcn_shape=(2, 1, 1))


def test_data_shards_follow_the_mesh():
  fake = lambda i: types.SimpleNamespace(id=i, process_index=i // 4)
  grid = lambda order, shape: np.array([fake(i) for i in order]).reshape(shape)
  shards = lambda g: [parallel.data_shard(g, 8, p) for p in (0, 1)]
  assert shards(grid(range(8), (1, 8, 1))) == [(0, 2), (1, 2)]  # FSDP over both
  assert shards(grid(range(8), (2, 2, 2))) == [(0, 2), (1, 2)]  # data across processes
  # tensor across processes: both hold every row, so both load the same data
  assert shards(grid([0, 4, 1, 5, 2, 6, 3, 7], (1, 4, 2))) == [(0, 1), (0, 1)]
  # interleaved rows are fine (global_batch places a process's blocks in order)
  assert shards(grid([0, 4, 1, 5, 2, 6, 3, 7], (1, 8, 1))) == [(0, 2), (1, 2)]
  with pytest.raises(ConfigError, match="batch_size"):
    parallel.data_shard(grid(range(8), (1, 8, 1)), 12, 0)
  three = np.array([types.SimpleNamespace(id=i, process_index=p)
                    for i, p in enumerate([0, 1, 1, 2])]).reshape(1, 2, 2)
  with pytest.raises(ConfigError, match="partly overlapping"):
    parallel.data_shard(three, 8, 0)


@pytest.mark.slow  # CI time (20 min on 2 cores): run with -m slow
def test_tensor_axis_across_processes_replicates_the_rows(tmp_path):
  """Mesh (1, 2, 4) with the tensor axis split over the 2 processes (dcn (1, 1, 2)):
  both processes hold all 8 rows, load identical batches, and match one process."""
  tp = dict(OVERRIDES, **{"num_steps": 3, "checkpoint_every": 0, "mesh.shape": (1, 2, 4),
                          "mesh.rules": "fsdp_tp"})
  workdir = str(tmp_path / "two")
  codes = _wait(_launch(workdir, overrides=dict(tp, **{"mesh.dcn_shape": (1, 1, 2)})),
                timeout=150)
  assert codes == [0, 0], _log(workdir, 0)[-3000:] + _log(workdir, 1)[-3000:]
  trainer.train(_config(tp), str(tmp_path / "one"))
  two, one = _losses(workdir), _losses(str(tmp_path / "one"))
  assert sorted(two) == sorted(one) == [1, 2, 3]
  for s in two:
    assert two[s] == pytest.approx(one[s], rel=2e-6), (s, two[s], one[s])


@pytest.mark.slow  # CI time (20 min on 2 cores): run with -m slow
def test_local_launcher_script(tmp_path):
  """launch/local.sh itself: 2 processes x 2 fake devices, 2 steps, exit 0; a failing
  process makes it exit non-zero (a bad flag value fails both at start)."""
  workdir = str(tmp_path / "run")
  short = dict(OVERRIDES, num_steps=2, checkpoint_every=2)
  env = dict(os.environ, XLA_FLAGS="", LOG_DIR=str(tmp_path / "logs"))
  out = subprocess.run(["bash", "launch/local.sh", "2", "2", "--config=configs/tiny.py",
                        f"--workdir={workdir}", *_cli_overrides(short)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "process 0 of 2" in out.stderr and "2 local / 4 global cpu devices" in out.stderr
  assert sorted(_losses(workdir)) == [1, 2]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "2", "data"))) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
  assert "process 1 of 2" in open(tmp_path / "logs" / "process_1.log").read()
  bad = subprocess.run(["bash", "launch/local.sh", "2", "2", "--config=configs/tiny.py",
                        f"--workdir={tmp_path / 'bad'}", "--config.data.rate=2.0"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
  assert bad.returncode != 0 and "data.rate" in bad.stderr
