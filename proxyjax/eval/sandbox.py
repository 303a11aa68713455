"""Sandboxed execution of untrusted Python programs (generated code).

Every program runs in its own interpreter process, in a fresh temporary
directory that is deleted afterwards:

* **Interpreter**: ``python -s -P -B`` with a scrubbed environment (no proxies,
  credentials or ``PYTHON*`` variables of ours; ``HOME`` and ``TMPDIR`` are the
  temporary working directory; ``PYTHONHASHSEED=0`` so set/dict orders are
  reproducible). This is ``-I`` (isolated mode) minus ``-E``: ``-E`` would also
  ignore ``PYTHONHASHSEED``, and since the child gets only the environment
  built here, ignoring it buys nothing.
* **Limits**: address space (``RLIMIT_AS``), CPU seconds, file size, open
  files, no core dumps, and processes (``RLIMIT_NPROC``; the kernel does not
  enforce it for root). A small bootstrap sets them in the child itself, then
  runs the program: the same effect as a ``preexec_fn``, but the parent can
  spawn with ``vfork`` (``preexec_fn`` forces a full ``fork``, which costs
  ~0.1 s per sample from a parent holding a few GB, e.g. a loaded model, and
  is unsafe in a threaded parent).
* **Time**: a wall-clock limit; the child leads a new session/process group,
  and the whole group is SIGKILLed on timeout *and* after a normal exit, so
  background children never survive. Processes that left the group
  (``setsid``) are found by a per-run token in their initial environment
  (``/proc/PID/environ``) and killed too. The main process is reaped only after
  that, so its pid (= the group id) cannot be reused meanwhile.
* **No network**: a fresh network namespace (``unshare(CLONE_NEWNET)``, or
  ``CLONE_NEWUSER | CLONE_NEWNET`` for unprivileged users) where permitted --
  it has only a downed loopback, so nothing is reachable, not even
  127.0.0.1; plus, always, an audit hook in the child that refuses to create
  non-AF_UNIX sockets, connect, bind, send to an address or resolve names.
* **I/O**: stdin is ``/dev/null`` (reads see EOF at once); stdout and stderr
  go to files next to (not inside) the working directory, bounded by the file
  size limit, and only their tails are read back.
* **Completion proof**: exit code 0 alone does not pass -- ``sys.exit(0)`` or
  ``os._exit(0)`` in a generated function would otherwise end the program
  "successfully" before its tests ran. The parent draws a fresh secret per run
  (``secrets.token_hex``) and hands it to the bootstrap through a pipe that is
  read and closed before the program starts (it is not in the environment,
  argv or any file); the program runs as a fresh ``__main__`` module, and only
  when it returns normally does the bootstrap write the secret to a second,
  inherited pipe. A run passes iff it exits 0 *and* that pipe carries the
  secret, so output truncation cannot lose it and printing look-alike tokens
  does nothing.

What it is not: a security boundary against a determined attacker (no seccomp,
no chroot, same uid). It is meant for model-generated code, which is mostly
wrong in harmless ways, sometimes slow, sometimes fork-happy.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import math
import os
import resource
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from typing import Sequence

PASSED = "passed"
FAILED = "failed"
TIMEOUT = "timeout"
ERROR = "error"  # the sandbox could not run the program at all

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_TOKEN_VAR = "PROXYJAX_SANDBOX_TOKEN"

# Runs in the child: reads the completion secret, sets limits, network
# namespace, audit hook, then runs the program as a fresh ``__main__`` and,
# if it returns normally, writes the secret to ``done_fd``. argv[1] is the
# program's path, argv[2] the setup as JSON.
_BOOTSTRAP = r"""
import sys
def _proxyjax_sandbox_setup(cfg):
  import resource
  if cfg["unshare"]:
    try:
      import ctypes
      ctypes.CDLL(None, use_errno=True).unshare(cfg["unshare"])
    except Exception:
      pass  # best effort; the audit hook below still applies
  for res, soft, hard in cfg["rlimits"]:
    try:
      resource.setrlimit(res, (soft, hard))
    except (ValueError, OSError):
      try:  # our hard limit is above the current one: lower the soft limit only
        cur = resource.getrlimit(res)[1]
        resource.setrlimit(res, (soft if cur == resource.RLIM_INFINITY else min(soft, cur), cur))
      except (ValueError, OSError):
        pass
  if cfg["network"]:
    return
  import socket
  local = {getattr(socket, "AF_UNIX", 1)}
  refused = {"socket.bind", "socket.connect", "socket.sendto", "socket.sendmsg",
             "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
             "socket.gethostbyname_ex", "socket.getnameinfo"}
  def hook(event, args):
    if event == "socket.__new__":
      if args[1] not in local:
        raise PermissionError(13, "network access is disabled in the sandbox")
    elif event in refused:
      raise PermissionError(13, "network access is disabled in the sandbox")
  sys.addaudithook(hook)
import json as _proxyjax_json
def _proxyjax_completion(cfg):
  # The secret comes through a pipe that is closed before the program runs; it
  # lives on only in this closure.
  import os
  fd, chunks = cfg["secret_fd"], []
  while True:
    chunk = os.read(fd, 256)
    if not chunk:
      break
    chunks.append(chunk)
  os.close(fd)
  secret, done_fd = b"".join(chunks), cfg["done_fd"]
  write, getpid, pid = os.write, os.getpid, os.getpid()
  def done():
    if getpid() == pid:  # not from a forked child that fell through
      write(done_fd, secret)
  return done
_proxyjax_cfg = _proxyjax_json.loads(sys.argv[2])
_proxyjax_done = _proxyjax_completion(_proxyjax_cfg)
_proxyjax_sandbox_setup(_proxyjax_cfg)
del _proxyjax_sandbox_setup, _proxyjax_completion, _proxyjax_json, _proxyjax_cfg
_proxyjax_path = sys.argv[1]
sys.argv = sys.argv[1:2]
with open(_proxyjax_path, encoding="utf-8") as _proxyjax_f:
  _proxyjax_code = compile(_proxyjax_f.read(), _proxyjax_path, "exec")
del _proxyjax_f
import types as _proxyjax_types
_proxyjax_main = _proxyjax_types.ModuleType("__main__")
_proxyjax_main.__file__ = _proxyjax_path
_proxyjax_main.__builtins__ = __builtins__
sys.modules["__main__"] = _proxyjax_main  # the program gets a clean namespace of its own
del _proxyjax_types, _proxyjax_path
exec(_proxyjax_code, _proxyjax_main.__dict__)
_proxyjax_done()  # reached only when the program returned normally
"""


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits for one sandboxed run.

  Attributes:
    timeout_s: wall-clock seconds before the process group is killed.
    memory_bytes: address-space limit (RLIMIT_AS); allocations beyond it raise
      MemoryError in the child.
    cpu_s: CPU-seconds limit (RLIMIT_CPU); None = ceil(timeout_s) + 1.
    file_bytes: largest file the child may write (RLIMIT_FSIZE), stdout and
      stderr included (a child writing more gets SIGXFSZ).
    open_files: RLIMIT_NOFILE.
    extra_processes: RLIMIT_NPROC is set to the processes (tasks) this uid
      already has plus this many; not enforced by the kernel for root.
    output_bytes: tail of stdout/stderr kept in the result.
    network: allow network access (default: no network).
    site_packages: run with ``site`` (site-packages importable). False adds
      ``-S``: faster to start, standard library only.
  """

  timeout_s: float = 10.0
  memory_bytes: int = 2 << 30
  cpu_s: float | None = None
  file_bytes: int = 64 << 20
  open_files: int = 256
  extra_processes: int = 64
  output_bytes: int = 16 << 10
  network: bool = False
  site_packages: bool = True


@dataclasses.dataclass(frozen=True)
class Result:
  """The outcome of one sandboxed run.

  ``status`` is ``passed`` (exit code 0 *and* the program ran to its end, see
  the module doc), ``failed`` (non-zero exit, an early exit with code 0, or
  killed by a signal other than the limits'), ``timeout`` (wall time or CPU time
  exceeded) or ``error`` (the sandbox could not start the program). ``reason``
  is a one-line summary (the last line of the traceback, the signal, ...).
  """

  status: str
  returncode: int | None
  stdout: str
  stderr: str
  elapsed_s: float
  reason: str = ""

  @property
  def passed(self) -> bool:
    return self.status == PASSED


# ---------------------------------------------------------------------------
# Isolation probes (cached per process).


@functools.lru_cache(maxsize=1)
def network_namespace_flags() -> int:
  """unshare() flags that give a child its own network namespace here, or 0."""
  if not sys.platform.startswith("linux"):
    return 0
  for flags in (_CLONE_NEWNET, _CLONE_NEWUSER | _CLONE_NEWNET):
    probe = ("import ctypes, sys\n"
             "libc = ctypes.CDLL(None, use_errno=True)\n"
             f"sys.exit(0 if libc.unshare({flags}) == 0 else 1)\n")
    try:
      r = subprocess.run([sys.executable, "-s", "-c", probe], env={"PATH": os.defpath},
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
      continue
    if r.returncode == 0:
      return flags
  return 0


def isolation() -> dict[str, bool]:
  """What this machine's sandbox actually enforces."""
  return {"network_namespace": bool(network_namespace_flags()),
          "network_audit_hook": True,
          "process_limit_enforced": os.geteuid() != 0}


def _user_tasks() -> int:
  """Tasks (threads included, as RLIMIT_NPROC counts them) owned by this uid."""
  uid, total = os.getuid(), 0
  try:
    names = os.listdir("/proc")
  except OSError:
    return 0
  for name in names:
    if not name.isdigit():
      continue
    try:
      if os.stat(f"/proc/{name}").st_uid == uid:
        total += len(os.listdir(f"/proc/{name}/task"))
    except OSError:
      continue
  return total


# ---------------------------------------------------------------------------
# Child setup and cleanup.


def _rlimits(limits: Limits) -> list[tuple[int, int, int]]:
  """(resource, soft, hard) limits for the child."""
  cpu = limits.cpu_s if limits.cpu_s is not None else math.ceil(limits.timeout_s) + 1
  cpu = max(1, int(math.ceil(cpu)))
  out = [(resource.RLIMIT_AS, int(limits.memory_bytes), int(limits.memory_bytes)),
         (resource.RLIMIT_CPU, cpu, cpu + 1),  # SIGXCPU, then SIGKILL a second later
         (resource.RLIMIT_FSIZE, int(limits.file_bytes), int(limits.file_bytes)),
         (resource.RLIMIT_NOFILE, int(limits.open_files), int(limits.open_files)),
         (resource.RLIMIT_CORE, 0, 0)]
  if os.geteuid() != 0:
    nproc = _user_tasks() + int(limits.extra_processes)
    out.append((resource.RLIMIT_NPROC, nproc, nproc))
  return out


def _child_env(workdir: str, token: str) -> dict[str, str]:
  return {
      "PATH": "/usr/local/bin:/usr/bin:/bin",
      "HOME": workdir,
      "TMPDIR": workdir,
      "LANG": "C.UTF-8",
      "LC_ALL": "C.UTF-8",
      "PYTHONHASHSEED": "0",
      "PYTHONDONTWRITEBYTECODE": "1",
      "PYTHONIOENCODING": "utf-8",
      "OMP_NUM_THREADS": "1",
      "OPENBLAS_NUM_THREADS": "1",
      "MKL_NUM_THREADS": "1",
      _TOKEN_VAR: token,
  }


def _live_strays(pgid: int, token: str) -> list[int]:
  """Live (non-zombie) processes of the run: in its process group, or carrying
  its token in their initial environment (those that called ``setsid``)."""
  needle = f"{_TOKEN_VAR}={token}".encode()
  me = os.getpid()
  out = []
  try:
    names = os.listdir("/proc")
  except OSError:
    return out
  for name in names:
    if not name.isdigit() or int(name) == me:
      continue
    try:
      with open(f"/proc/{name}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
      state, pgrp = fields[0], int(fields[2])
      if state in (b"Z", b"X"):
        continue
      if pgrp == pgid:
        out.append(int(name))
        continue
      with open(f"/proc/{name}/environ", "rb") as f:
        if needle in f.read():
          out.append(int(name))
    except (OSError, IndexError, ValueError):
      continue
  return out


def _kill_all(pgid: int, token: str, max_rounds: int = 100) -> None:
  """SIGKILLs the run's process group and every process carrying its token,
  repeating while new ones show up (a fork loop) or some are still dying."""
  for _ in range(max_rounds):
    try:
      os.killpg(pgid, signal.SIGKILL)
    except OSError:  # ESRCH: the group is gone
      pass
    stray = _live_strays(pgid, token)
    if not stray:
      return
    for pid in stray:
      try:
        os.kill(pid, signal.SIGKILL)
      except OSError:
        pass
    time.sleep(0.01)


def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
  """Waits up to ``timeout`` seconds for ``proc`` to exit, without reaping it
  where a pidfd is available; True if it exited.

  (``Popen.wait(timeout)`` polls with sleeps of up to 50 ms, a large cost for
  short programs, and reaps, which frees the pid for reuse.)
  """
  pidfd_open = getattr(os, "pidfd_open", None)
  if pidfd_open is not None:
    try:
      fd = pidfd_open(proc.pid)
    except OSError:
      fd = None
    if fd is not None:
      try:
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        return bool(ready)
      finally:
        os.close(fd)
  try:
    proc.wait(timeout=timeout)
    return True
  except subprocess.TimeoutExpired:
    return False


def _rmtree(path: str) -> None:
  def on_error(func, p, exc_info):  # the program may have made things read-only
    del func, exc_info
    try:
      os.chmod(os.path.dirname(p), stat.S_IRWXU)
      os.chmod(p, stat.S_IRWXU)
      if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
      else:
        os.unlink(p)
    except OSError:
      pass

  shutil.rmtree(path, onerror=on_error)
  if os.path.exists(path):
    shutil.rmtree(path, ignore_errors=True)


def _tail(path: str, limit: int) -> str:
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      size = f.tell()
      f.seek(max(0, size - limit))
      data = f.read(limit)
  except OSError:
    return ""
  text = data.decode("utf-8", "replace")
  return ("...[truncated]\n" + text) if size > limit else text


def _reason(returncode: int, stderr: str) -> str:
  if returncode < 0:
    try:
      return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
      return f"killed by signal {-returncode}"
  lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
  return lines[-1].strip()[:300] if lines else f"exit code {returncode}"


# ---------------------------------------------------------------------------
# Public API.


def run(program: str, limits: Limits | None = None, *, python: str | None = None) -> Result:
  """Runs ``program`` (Python source) in the sandbox and waits for it."""
  limits = limits or Limits()
  python = python or sys.executable
  root = tempfile.mkdtemp(prefix="proxyjax-sandbox-")
  try:
    workdir = os.path.join(root, "work")
    os.mkdir(workdir, 0o700)
    prog_path = os.path.join(root, "program.py")
    with open(prog_path, "w", encoding="utf-8") as f:
      f.write(program)
    out_path, err_path = os.path.join(root, "stdout"), os.path.join(root, "stderr")
    token = secrets.token_hex(16)  # finds the run's processes (in their environment)
    secret = secrets.token_hex(16).encode()  # proves the program ran to its end
    secret_r, secret_w = os.pipe()
    done_r, done_w = os.pipe()
    try:
      os.write(secret_w, secret)  # 32 bytes: fits the pipe buffer, never blocks
      os.close(secret_w)
      secret_w = -1
      setup = {"rlimits": _rlimits(limits), "network": bool(limits.network),
               "unshare": 0 if limits.network else network_namespace_flags(),
               "secret_fd": secret_r, "done_fd": done_w}
      flags = ["-s", "-P", "-B"] + ([] if limits.site_packages else ["-S"])
      argv = [python, *flags, "-c", _BOOTSTRAP, prog_path, json.dumps(setup)]
      with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
        start = time.monotonic()
        try:
          proc = subprocess.Popen(argv, cwd=workdir, env=_child_env(workdir, token),
                                  stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f,
                                  close_fds=True, pass_fds=(secret_r, done_w),
                                  start_new_session=True)
        except (OSError, subprocess.SubprocessError) as e:
          return Result(ERROR, None, "", "", time.monotonic() - start, f"could not start: {e}")
        finally:  # the parent keeps only the read end of the completion pipe
          for fd in (secret_r, done_w):
            os.close(fd)
          secret_r = done_w = -1
        try:
          timed_out = not _wait_exit(proc, limits.timeout_s)
          elapsed = time.monotonic() - start
        finally:
          _kill_all(proc.pid, token)  # on timeout, and background children of a finished one
          returncode = proc.wait()
      completed = not timed_out and _read_done(done_r) == secret
    finally:
      for fd in (secret_r, secret_w, done_r, done_w):
        if fd >= 0:
          os.close(fd)
    stdout = _tail(out_path, limits.output_bytes)
    stderr = _tail(err_path, limits.output_bytes)
  finally:
    _rmtree(root)
  if timed_out:
    status, reason = TIMEOUT, f"wall time limit ({limits.timeout_s:g}s)"
  elif returncode == -signal.SIGXCPU:
    status, reason = TIMEOUT, "CPU time limit"
  elif returncode == 0 and completed:
    status, reason = PASSED, ""
  elif returncode == 0:
    status, reason = FAILED, ("exited with code 0 before the program finished "
                              "(sys.exit / os._exit?)")
  else:
    status, reason = FAILED, _reason(returncode, stderr)
  return Result(status, returncode, stdout, stderr, elapsed, reason)


def _read_done(fd: int, limit: int = 4096) -> bytes:
  """What the completion pipe holds (its writers are all dead by now)."""
  os.set_blocking(fd, False)
  data = b""
  while len(data) <= limit:
    try:
      chunk = os.read(fd, 4096)
    except BlockingIOError:  # a writer that escaped the kill still holds it open
      break
    if not chunk:
      break
    data += chunk
  return data


def run_many(programs: Sequence[str], limits: Limits | Sequence[Limits] | None = None, *,
             workers: int | None = None, python: str | None = None) -> list[Result]:
  """Runs programs in parallel (one subprocess each, ``workers`` at a time).

  ``limits`` is one ``Limits`` for all programs or one per program. Results
  come back in the order of ``programs``.
  """
  programs = list(programs)
  if limits is None or isinstance(limits, Limits):
    per = [limits or Limits()] * len(programs)
  else:
    per = list(limits)
    if len(per) != len(programs):
      raise ValueError(f"{len(per)} limits for {len(programs)} programs")
  if not programs:
    return []
  network_namespace_flags()  # probe once, before the threads start
  workers = max(1, min(workers or os.cpu_count() or 1, len(programs)))
  if workers == 1:
    return [run(p, lim, python=python) for p, lim in zip(programs, per)]
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    futures = [pool.submit(run, p, lim, python=python) for p, lim in zip(programs, per)]
    return [f.result() for f in futures]


__all__ = ["PASSED", "FAILED", "TIMEOUT", "ERROR", "Limits", "Result", "run", "run_many",
           "isolation", "network_namespace_flags"]
