"""Grain worker processes (and the resource tracker) end when the trainer is killed;
the progress bar shows "–" for a log window without raw bytes."""

import os
import pickle
import signal
import subprocess
import sys
import time

from proxyjax.data import worker_lifetime
from proxyjax.train import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _children(pid: int) -> list[int]:
  out = []
  for name in os.listdir("/proc"):
    if name.isdigit():
      try:
        with open(f"/proc/{name}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == pid:
        out.append(int(name))
  return out


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
  except OSError:
    return False


def _cmdline(pid: int) -> str:
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      return f.read().replace(b"\0", b" ").decode(errors="replace")
  except OSError:
    return ""


def test_kill_9_of_the_trainer_ends_its_grain_workers(tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "proxyjax.main", "--config=configs/tiny.py",
         f"--workdir={workdir}", "--config.num_steps=100000", "--config.eval_every=0",
         "--config.checkpoint_every=0", "--config.seq_len=64", "--config.batch_size=2",
         "--config.log_every=1", "--config.progress_bar=False", "--config.data.num_workers=2",
         # A one-layer model: compiles in seconds.
         "--config.model.n_layers=1", "--config.model.d_model=64", "--config.model.d_ff=128",
         "--config.model.n_heads=2", "--config.model.head_dim=32"]
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  # Its own session: the cleanup below can kill exactly this trainer's process group.
  trainer = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  try:
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 180
    while not (metrics.exists() and metrics.stat().st_size) and trainer.poll() is None:
      assert time.time() < deadline, "the trainer logged no step in 180 s"
      time.sleep(0.5)
    assert trainer.poll() is None, trainer.stderr.read().decode()[-3000:]
    children = _children(trainer.pid)
    workers = [c for c in children if "multiprocessing.spawn" in _cmdline(c)]
    assert len(workers) == 2, [_cmdline(c) for c in children]
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    deadline = time.time() + 5
    while any(_alive(c) for c in children) and time.time() < deadline:
      time.sleep(0.1)
    survivors = [_cmdline(c)[:120] for c in children if _alive(c)]
    assert not survivors, survivors  # the workers and the resource tracker
  finally:
    try:
      os.killpg(trainer.pid, signal.SIGKILL)  # the group of the session started above
    except (ProcessLookupError, PermissionError):
      pass
    trainer.wait()
    trainer.stderr.close()


def test_worker_init_takes_the_pid_of_the_process_that_pickles_it():
  copy = pickle.loads(pickle.dumps(worker_lifetime.WorkerInit(None)))
  assert copy.parent_pid == os.getpid() and copy.init is None
  # In a child whose parent (this process) lives: the wrapped init runs, the child goes on.
  code = ("import os, time; from proxyjax.data import worker_lifetime as w;"
          "i = w.WorkerInit(lambda k, n: print('init', k, n, flush=True));"
          "i.parent_pid = os.getppid(); i(1, 2); time.sleep(1.5); print('alive')")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 0 and out.stdout.split("\n")[:2] == ["init 1 2", "alive"], out


def test_orphaned_worker_exits_at_once():
  """A worker whose parent already died (getppid differs) exits in its init."""
  code = ("from proxyjax.data import worker_lifetime as w; w.exit_with_parent(1 << 22);"
          "print('survived')")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 1 and "survived" not in out.stdout


def test_progress_bar_shows_a_dash_without_raw_bytes():
  assert metrics_lib.progress_postfix({"loss": 1.23456}) == {"loss": "1.235", "bpb": "–"}
  assert metrics_lib.progress_postfix({"loss": 1.0, "raw_bpb": 0.0})["bpb"] == "0.000"
  assert metrics_lib.progress_postfix({"loss": 1.0, "raw_bpb": 2.5})["bpb"] == "2.500"
