"""Sandboxed execution of untrusted Python programs (generated code).

Every program runs in its own interpreter process (``python -s -P -B``), set
up by a small bootstrap (``proxyjax.sandbox.isolation``, sent as ``-c`` source)
that applies, on Linux:

* **An unprivileged identity**: uid/gid 65534 (nobody) without supplementary
  groups and with an empty capability bounding set when started as root;
  a user namespace without capabilities (ids mapped to 65534) when not.
  ``no_new_privs`` either way, so setuid binaries give nothing back.
* **A pid namespace** with a fresh ``/proc``: the program is pid 2 under a
  small init (pid 1) and sees none of the caller's processes (so no
  ``/proc/<ppid>/environ``, no ``ns/net`` to ``setns`` into, nobody to kill).
  When the program ends, or on the wall-time limit, the init exits and the
  kernel kills *every* process left in the namespace -- ``setsid`` and
  ``execve`` grandchildren included -- before the run returns.
* **A network namespace** with only a downed loopback: nothing is reachable,
  not even the host's 127.0.0.1; plus an audit hook refusing non-AF_UNIX
  sockets, connect, bind, sendto and name resolution.
* **A mount namespace with a read-only view**: every mount is read-only;
  ``/tmp``, ``/var/tmp``, ``/dev/shm`` and the working directory are fresh
  size-limited tmpfs, private to the run and gone with it, wherever the
  interpreter lives (one under ``/tmp`` is bound back into the fresh ``/tmp``
  read-only); directories the unprivileged uid could not enter on the way to
  the interpreter, and the home directories (``/home``, ``/root``, the caller's
  ``$HOME``), are replaced by an empty tmpfs holding only the interpreter's
  trees; ``hide_paths`` (e.g. a benchmark's data) are covered.
* **An empty environment** apart from a fixed minimal set (``PATH``,
  ``HOME``/``TMPDIR`` = the working directory, ``LANG``, ``PYTHONHASHSEED=0``,
  one thread for BLAS): nothing of the caller's.
* **Limits**: address space (``RLIMIT_AS``), CPU seconds, file size, open
  files, processes (``RLIMIT_NPROC``, enforced now that the program is not
  root), no core dumps; and a wall-clock limit.
* **I/O**: stdin is ``/dev/null``; stdout and stderr go to unlinked files of
  the parent (only their tails are read back); the program's source comes
  through an unlinked file too, so nothing about a run is on disk where another
  run could read it. Optionally fd 3 is a result file whose contents come
  back as ``Result.data`` (``run(..., data_bytes=N)``).

Each ``Result`` says what was applied (``isolation``, e.g.
``uid+pidns+netns+mntns-ro+ipcns``) and what could not be, with the reason
(``isolation_missing``); a missing mechanism is also warned about once per
process. Without a pid namespace the fallback of old applies: the process
group is killed, plus processes carrying the run's token in their initial
environment (a ``setsid`` + ``execve`` with a new environment escapes that).

**Completion proof** (``Result.status == passed``): exit code 0 alone does not
pass -- ``sys.exit(0)`` or ``os._exit(0)`` would otherwise end a program
"successfully" before its tests ran. The parent draws a secret per run and
hands it to the bootstrap through a pipe closed before the program starts;
only when the program returns normally does the bootstrap write it to a second
pipe. This guards against accidents, not against a hostile program: the
secret lives in the program's own process (frames, ``gc``), so it *can* be
forged. Verdicts that matter must be decided outside the program's process:
``proxyjax.eval.codegen`` does so (``proxyjax.sandbox.differential``).
"""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import functools
import logging
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
import threading
import time
import warnings
from typing import Sequence

PASSED = "passed"
FAILED = "failed"
TIMEOUT = "timeout"
ERROR = "error"  # the sandbox could not run the program at all

NOBODY = 65534
_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_TOKEN_VAR = "PROXYJAX_SANDBOX_TOKEN"
_FATAL_EXIT = 125

_log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _bootstrap_source() -> str:
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "isolation.py"),
            encoding="utf-8") as f:
    return f.read()


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits for one sandboxed run.

  Attributes:
    timeout_s: wall-clock seconds before every process of the run is killed.
    memory_bytes: address-space limit (RLIMIT_AS); allocations beyond it raise
      MemoryError in the child.
    cpu_s: CPU-seconds limit (RLIMIT_CPU); None = ceil(timeout_s) + 1.
    file_bytes: largest file the child may write (RLIMIT_FSIZE), stdout,
      stderr and the result file included (a child writing more gets SIGXFSZ).
    open_files: RLIMIT_NOFILE.
    extra_processes: RLIMIT_NPROC is set to the processes (tasks) the
      program's uid already has plus this many.
    output_bytes: tail of stdout/stderr kept in the result.
    network: allow network access (default: no network).
    site_packages: run with ``site`` (site-packages importable). False adds
      ``-S``: faster to start, standard library only.
    tmp_bytes: size of each private writable tmpfs (working directory,
      ``/tmp``; ``/var/tmp`` and ``/dev/shm`` get at most 16 MiB).
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
  tmp_bytes: int = 64 << 20


@dataclasses.dataclass(frozen=True)
class Result:
  """The outcome of one sandboxed run.

  ``status`` is ``passed`` (exit code 0 *and* the program ran to its end, see
  the module doc), ``failed`` (non-zero exit, an early exit with code 0, or
  killed by a signal other than the limits'), ``timeout`` (wall time or CPU time
  exceeded) or ``error`` (the sandbox could not start the program). ``reason``
  is a one-line summary (the last line of the traceback, the signal, ...).
  ``isolation`` names the mechanisms applied (``+``-joined, ``none`` if
  none), ``isolation_missing`` those wanted but unavailable, each with why.
  ``data`` is what the program wrote to fd 3 (with ``data_bytes``).
  ``verdict`` says who decided ``status``: ``completion-proof`` (this
  module: exit code and completion pipe, in the program's process) or, from
  ``proxyjax.eval.codegen``, ``outside`` / ``in-process``.
  """

  status: str
  returncode: int | None
  stdout: str
  stderr: str
  elapsed_s: float
  reason: str = ""
  isolation: str = ""
  isolation_missing: tuple[str, ...] = ()
  data: bytes = b""
  verdict: str = ""

  @property
  def passed(self) -> bool:
    return self.status == PASSED


# ---------------------------------------------------------------------------
# What isolation this machine gives (probed once per interpreter).


def wanted_mechanisms(network: bool = False) -> tuple[str, ...]:
  """The mechanisms a run asks for on this machine (as this user)."""
  ident = "uid" if os.geteuid() == 0 else "userns"
  return (ident, "pidns") + (() if network else ("netns",)) + ("mntns-ro",)


def _unshare_options(network: bool) -> list[int]:
  if not sys.platform.startswith("linux"):
    return []
  user = 0 if os.geteuid() == 0 else _CLONE_NEWUSER
  net = 0 if network else _CLONE_NEWNET
  full = user | _CLONE_NEWNS | _CLONE_NEWPID | net
  options = [full | _CLONE_NEWIPC, full, user | _CLONE_NEWPID | net,
             user | _CLONE_NEWNS | net, user | net]
  return [f for f in dict.fromkeys(options) if f]


_probe_lock = threading.Lock()
_probed: dict[str, Result] = {}


def _probe(python: str) -> Result:
  with _probe_lock:
    if python not in _probed:
      _probed[python] = run("pass", Limits(timeout_s=60.0, site_packages=False), python=python,
                            _probing=True)
    return _probed[python]


def isolation(python: str | None = None) -> dict:
  """What this machine's sandbox actually enforces (one probe run, cached).

  ``level`` is the ``Result.isolation`` string, ``missing`` the wanted
  mechanisms that are unavailable (with reasons), and one boolean per
  mechanism; ``network_namespace``, ``network_audit_hook`` and
  ``process_limit_enforced`` as before.
  """
  r = _probe(python or sys.executable)
  applied = set(r.isolation.split("+"))
  out = {"level": r.isolation, "missing": list(r.isolation_missing)}
  for m in ("uid", "userns", "pidns", "netns", "mntns-ro", "ipcns"):
    out[m] = m in applied
  out.update({"network_namespace": "netns" in applied, "network_audit_hook": True,
              "process_limit_enforced": os.geteuid() != 0 or "uid" in applied})
  return out


def network_namespace_flags() -> int:
  """unshare() flags that give a child its own network namespace here, or 0 (compat)."""
  if not isolation()["netns"]:
    return 0
  return _CLONE_NEWNET | (0 if os.geteuid() == 0 else _CLONE_NEWUSER)


_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn_once(message: str) -> None:
  with _warn_lock:
    if message in _warned:
      return
    _warned.add(message)
  _log.warning(message)
  warnings.warn(message, RuntimeWarning, stacklevel=3)


def _user_tasks(uid: int) -> int:
  """Tasks (threads included, as RLIMIT_NPROC counts them) owned by ``uid``."""
  total = 0
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
  uid = NOBODY if os.geteuid() == 0 else os.getuid()
  nproc = _user_tasks(uid) + int(limits.extra_processes)
  out.append((resource.RLIMIT_NPROC, nproc, nproc))
  return out


def home_directories() -> list[str]:
  """What the sandbox hides as home directories: every entry of ``/home`` (the directory
  itself is covered), ``/root``, and the caller's ``$HOME`` wherever it is. The
  interpreter's own trees inside them (a virtualenv in a home directory) are bound back."""
  out = [d for d in ("/home", "/root") if os.path.isdir(d)]
  home = os.path.expanduser("~")
  if home not in ("/", "") and os.path.isdir(home) and os.path.realpath(home) not in (
      os.path.realpath(d) for d in out):
    out.append(home)
  return out


def _child_env(workdir: str, token: str | None) -> dict[str, str]:
  env = {
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
  }
  if token:
    env[_TOKEN_VAR] = token
  return env


def _live_strays(pgid: int, token: str | None) -> list[int]:
  """Live (non-zombie) processes of the run: in its process group, or carrying
  its token in their initial environment (those that called ``setsid``)."""
  needle = f"{_TOKEN_VAR}={token}".encode() if token else None
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
      if needle is not None:
        with open(f"/proc/{name}/environ", "rb") as f:
          if needle in f.read():
            out.append(int(name))
    except (OSError, IndexError, ValueError):
      continue
  return out


def _kill_all(pgid: int, token: str | None, max_rounds: int = 100) -> None:
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


def _tail(f, limit: int) -> str:
  try:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - limit))
    data = f.read(limit)
  except (OSError, ValueError):
    return ""
  text = data.decode("utf-8", "replace")
  return ("...[truncated]\n" + text) if size > limit else text


def _head(f, limit: int) -> bytes:
  try:
    f.seek(0)
    return f.read(limit)
  except (OSError, ValueError):
    return b""


def _reason(returncode: int, stderr: str) -> str:
  if returncode < 0:
    try:
      return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
      return f"killed by signal {-returncode}"
  lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
  return lines[-1].strip()[:300] if lines else f"exit code {returncode}"


# CPython 3.11's AST constructor keeps its recursion depth in shared state: ast.literal_eval
# from several threads at once (run_many) can fail with "SystemError: AST constructor
# recursion depth mismatch" (seen in tests/eval/test_codegen.py). One parse at a time.
_LITERAL_LOCK = threading.Lock()


class _Control:
  """The lines (Python literals) the bootstrap sends on the control pipe."""

  def __init__(self, fd: int):
    self.fd = fd
    os.set_blocking(fd, False)
    self.buf = b""
    self.msgs: dict = {}

  def poll(self) -> dict:
    while True:
      try:
        chunk = os.read(self.fd, 65536)
      except BlockingIOError:
        break
      except OSError:
        break
      if not chunk:
        break
      self.buf += chunk
    *lines, self.buf = self.buf.split(b"\n")
    for line in lines:
      try:
        with _LITERAL_LOCK:
          msg = ast.literal_eval(line.decode("utf-8", "replace"))
      except (ValueError, SyntaxError, MemoryError, RecursionError):
        continue
      if isinstance(msg, dict):
        for k, v in msg.items():
          self.msgs.setdefault(k, v)  # first one wins
    return self.msgs


def _terminate(proc: subprocess.Popen, control: _Control, token: str | None) -> None:
  """Ends every process of the run and waits until they are gone (``proc`` stays unreaped,
  so its pid and process group id cannot be reused meanwhile)."""
  if "launcher" in control.poll():
    if not _wait_exit(proc, 0.0):  # the wall-time limit: the launcher kills the namespace's
      try:                         # init; the kernel kills the rest before it is reaped
        os.kill(proc.pid, signal.SIGTERM)
      except OSError:
        pass
      _wait_exit(proc, 10.0)
    try:
      os.killpg(proc.pid, signal.SIGKILL)  # normally nothing is left in the group
    except OSError:
      pass
  else:
    _kill_all(proc.pid, token)


def _describe_missing(wanted: Sequence[str], applied: Sequence[str], notes: dict) -> tuple:
  """``mechanism: why`` for each wanted mechanism not applied, then every other degradation."""
  out = []
  generic = notes.get("unshare") or notes.get("namespaces") or "not available"
  for m in wanted:
    if m not in applied:
      out.append(f"{m}: {notes.get(m) or generic}")
  for key, why in notes.items():
    if key in ("unshare", "namespaces") or (key in wanted and key not in applied):
      continue
    out.append(f"{key}: {why}")
  return tuple(out)


# ---------------------------------------------------------------------------
# Public API.


def run(program: str, limits: Limits | None = None, *, python: str | None = None,
        data_bytes: int = 0, hide_paths: Sequence[str] = (), _probing: bool = False) -> Result:
  """Runs ``program`` (Python source) in the sandbox and waits for it.

  Args:
    program: the source; it runs as ``__main__``.
    limits: resource limits.
    python: the interpreter (default: this one).
    data_bytes: if > 0, fd 3 of the program is a write-only result file and
      its first ``data_bytes`` bytes come back as ``Result.data``.
    hide_paths: files or directories the program must not read (covered in
      its mount namespace; reported in ``isolation_missing`` if it cannot be).
  """
  limits = limits or Limits()
  python = python or sys.executable
  root_mode = os.geteuid() == 0
  pidns_known = False
  if not _probing:
    pidns_known = "pidns" in _probe(python).isolation.split("+")
  token = None if pidns_known else secrets.token_hex(16)
  root = tempfile.mkdtemp(prefix="proxyjax-sandbox-")
  files = []
  fds: list[int] = []
  try:
    workdir = os.path.join(root, "work")
    os.mkdir(workdir, 0o700)
    if root_mode:  # reachable by the unprivileged uid if no mount namespace hides it
      os.chmod(root, 0o711)
      os.chown(workdir, NOBODY, NOBODY)
    prog_f, out_f, err_f = (tempfile.TemporaryFile() for _ in range(3))
    files += [prog_f, out_f, err_f]
    prog_f.write(program.encode("utf-8", "surrogateescape"))
    prog_f.flush()
    prog_f.seek(0)
    data_f = None
    if data_bytes > 0:
      data_f = tempfile.TemporaryFile()
      files.append(data_f)
    secret = secrets.token_hex(16).encode()  # proves the program ran to its end
    secret_r, secret_w = os.pipe()
    done_r, done_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    fds += [secret_r, secret_w, done_r, done_w, ctl_r, ctl_w]
    os.write(secret_w, secret)  # 32 bytes: fits the pipe buffer, never blocks
    os.close(secret_w)
    fds.remove(secret_w)
    hide = [os.path.abspath(p) for p in hide_paths] + home_directories()
    setup = {
        "program_fd": prog_f.fileno(), "secret_fd": secret_r, "done_fd": done_w,
        "ctl_fd": ctl_w, "data_fd": data_f.fileno() if data_f else -1,
        "unshare": _unshare_options(limits.network),
        "drop_uid": NOBODY if root_mode else None,
        "outer_ids": [os.getuid(), os.getgid()],
        "rlimits": _rlimits(limits), "network": bool(limits.network),
        "workdir": workdir, "program_path": os.path.join(root, "program.py"),
        "hide": hide, "tmp_bytes": int(limits.tmp_bytes),
    }
    flags = ["-s", "-P", "-B"] + ([] if limits.site_packages else ["-S"])
    argv = [python, *flags, "-c", _bootstrap_source(), repr(setup)]
    pass_fds = [prog_f.fileno(), secret_r, done_w, ctl_w] + ([data_f.fileno()] if data_f else [])
    start = time.monotonic()
    try:
      proc = subprocess.Popen(argv, cwd=root, env=_child_env(workdir, token),
                              stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f,
                              close_fds=True, pass_fds=pass_fds, start_new_session=True)
    except (OSError, subprocess.SubprocessError) as e:
      return Result(ERROR, None, "", "", time.monotonic() - start, f"could not start: {e}")
    finally:  # the parent keeps only the read ends
      for fd in (secret_r, done_w, ctl_w):
        os.close(fd)
        fds.remove(fd)
    control = _Control(ctl_r)
    try:
      timed_out = not _wait_exit(proc, limits.timeout_s)
      elapsed = time.monotonic() - start
    finally:
      _terminate(proc, control, token)
      p0_code = proc.wait()
    msgs = control.poll()
    completed = not timed_out and _read_done(done_r) == secret
    stdout = _tail(out_f, limits.output_bytes)
    stderr = _tail(err_f, limits.output_bytes)
    data = _head(data_f, data_bytes) if data_f else b""
  finally:
    for fd in fds:
      try:
        os.close(fd)
      except OSError:
        pass
    for f in files:
      f.close()
    _rmtree(root)
  applied = [m for m in msgs.get("iso") or [] if isinstance(m, str)]
  notes = msgs.get("notes") if isinstance(msgs.get("notes"), dict) else {}
  iso = "+".join(applied) or "none"
  missing = _describe_missing(wanted_mechanisms(limits.network), applied, notes)
  if hide_paths and "mntns-ro" not in applied:
    missing += ("hide_paths: not hidden (no mount namespace)",)
  if missing and not _probing and "iso" in msgs:
    warn_once(f"sandbox isolation is {iso}; unavailable: {'; '.join(missing)}")
  if "launcher" in msgs:  # the program's status comes from the namespace's init
    status_raw = msgs.get("status")
    returncode = (os.waitstatus_to_exitcode(status_raw) if isinstance(status_raw, int)
                  else None)
  else:
    returncode = p0_code
  common = dict(isolation=iso, isolation_missing=missing, data=data, verdict="completion-proof")
  if "fatal" in msgs:
    return Result(ERROR, returncode, stdout, stderr, elapsed,
                  f"sandbox setup failed: {msgs['fatal']}"[:300], **common)
  if timed_out:
    status, reason = TIMEOUT, f"wall time limit ({limits.timeout_s:g}s)"
  elif returncode is None:
    status, reason = ERROR, "the sandbox's init ended without the program's status"
  elif returncode == -signal.SIGXCPU:
    status, reason = TIMEOUT, "CPU time limit"
  elif returncode == 0 and completed:
    status, reason = PASSED, ""
  elif returncode == 0:
    status, reason = FAILED, ("exited with code 0 before the program finished "
                              "(sys.exit / os._exit?)")
  else:
    status, reason = FAILED, _reason(returncode, stderr)
  return Result(status, returncode, stdout, stderr, elapsed, reason, **common)


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
             workers: int | None = None, python: str | None = None, data_bytes: int = 0,
             hide_paths: Sequence[str] = ()) -> list[Result]:
  """Runs programs in parallel (one sandbox each, ``workers`` at a time).

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
  _probe(python or sys.executable)  # once, before the threads start
  workers = max(1, min(workers or os.cpu_count() or 1, len(programs)))
  kw = dict(python=python, data_bytes=data_bytes, hide_paths=tuple(hide_paths))
  if workers == 1:
    return [run(p, lim, **kw) for p, lim in zip(programs, per)]
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    futures = [pool.submit(run, p, lim, **kw) for p, lim in zip(programs, per)]
    return [f.result() for f in futures]


__all__ = ["PASSED", "FAILED", "TIMEOUT", "ERROR", "NOBODY", "Limits", "Result", "run",
           "run_many", "isolation", "wanted_mechanisms", "network_namespace_flags",
           "home_directories"]
