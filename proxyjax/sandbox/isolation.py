"""The child side of ``proxyjax.sandbox.runner``: sets up isolation, then runs the program.

The parent never imports this module for its functions: it sends the source
text as ``python -c <source> CONFIG`` (stdlib only, self-contained; CONFIG
is a Python literal, and the control messages are too -- no ``json``, ``re``
or ``enum`` import costs every run). The process tree, on Linux with
namespaces:

* **P0, the launcher**, in the caller's pid namespace: ``unshare``s a new pid,
  mount, network and IPC namespace (plus a user namespace when not root),
  forks P1, and waits for it. On SIGTERM from the parent (the wall-time limit)
  it SIGKILLs P1. The program never sees P0 (it is outside its pid namespace).
* **P1, pid 1 of the new pid namespace**: builds the program's view of the
  file system (below), forks P2 and reaps until P2 ends, then exits -- and
  when the init of a pid namespace exits the kernel kills every process left
  in it, ``setsid``/``execve`` grandchildren included, before P1 can be
  reaped. P1 is not dumpable and ignores signals, so the program cannot
  ptrace or stop it.
* **P2, the program**: drops to uid/gid 65534 with no supplementary groups
  (when started as root) or all capabilities (in a user namespace), sets
  ``no_new_privs`` (setuid binaries give nothing back), its resource limits,
  an audit hook refusing network sockets, closes every descriptor but stdio,
  the completion pipe and (optionally) the result file (fd 3), and runs the
  program as a fresh ``__main__`` module.

The file-system view (mount namespace, propagation private, nothing leaks to
the host): directories the program's uid cannot enter on the path to the
interpreter (e.g. ``/root`` holding a pyenv), the home directories (``/home``,
``/root`` and the caller's ``$HOME``) and ``/run``
(daemons' unix sockets: a read-only mount does not stop ``connect``) are
replaced by an empty tmpfs into which only the interpreter's trees are
bind-mounted back; the caller's ``hide`` paths are covered (an empty tmpfs,
or ``/dev/null`` for a file); then *every* mount is made read-only
(``mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)``, or a remount per mount on
kernels before 5.12); then a fresh read-only ``/proc`` for the new pid
namespace (the caller's processes, their ``environ`` and ``ns/net`` are not in
it); then fresh size-limited tmpfs on ``/tmp``, ``/var/tmp``, ``/dev/shm`` and
the working directory -- the only writable places, all private to this run. An
interpreter that lives in one of those (a virtualenv under ``/tmp``) is bound
back into the fresh tmpfs read-only, so the program sees its own interpreter
and nothing else of the host's ``/tmp``.
The network namespace has one loopback interface, down: not even the host's
127.0.0.1 is reachable, and there is no other namespace to join (no
capability, and no handle on one in the fresh ``/proc``).

Every mechanism is best effort and *reported*: the parent receives literal lines
on the control pipe (``iso``: what was applied and why anything was not;
``status``: the program's wait status). Nothing is skipped silently.
"""

import _signal as signal  # the C module: ``signal`` would import enum
import os
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MOUNT_ATTR_RDONLY, AT_RECURSIVE, AT_FDCWD, SYS_MOUNT_SETATTR = 1, 0x8000, -100, 442
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
_CAP_VERSION_3 = 0x20080522


class _Ctl:
  """Python-literal lines (``repr`` of a dict) to the parent on the control pipe."""

  def __init__(self, fd):
    self.fd = fd

  def send(self, **msg):
    if self.fd < 0:
      return
    data = (repr(msg) + "\n").encode()
    try:
      while data:
        data = data[os.write(self.fd, data):]
    except OSError:
      pass

  def close(self):
    if self.fd >= 0:
      os.close(self.fd)
      self.fd = -1


def _read_all(fd):
  chunks = []
  while True:
    chunk = os.read(fd, 1 << 20)
    if not chunk:
      break
    chunks.append(chunk)
  os.close(fd)
  return b"".join(chunks)


class _Libc:
  """The few libc calls Python 3.11's ``os`` lacks (via ctypes)."""

  def __init__(self):
    import ctypes  # pylint: disable=import-outside-toplevel
    self.ct = ctypes
    self.lib = ctypes.CDLL(None, use_errno=True)
    self.lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                               ctypes.c_ulong, ctypes.c_char_p]
    self.lib.unshare.argtypes = [ctypes.c_int]
    self.lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                               ctypes.c_ulong]

  def _check(self, ret, what):
    if ret != 0:
      err = self.ct.get_errno()
      raise OSError(err, f"{what}: {os.strerror(err)}")

  def unshare(self, flags):
    self._check(self.lib.unshare(flags), "unshare")

  def mount(self, source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else os.fsencode(s)
    self._check(self.lib.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
                f"mount {target}")

  def prctl(self, option, arg2=0):
    self._check(self.lib.prctl(option, arg2, 0, 0, 0), f"prctl {option}")

  def all_read_only(self, path="/"):
    """Every mount at and under ``path`` read-only, recursively (mount_setattr, Linux >= 5.12)."""
    ct = self.ct

    class MountAttr(ct.Structure):
      _fields_ = [("attr_set", ct.c_uint64), ("attr_clr", ct.c_uint64),
                  ("propagation", ct.c_uint64), ("userns_fd", ct.c_uint64)]

    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    ret = self.lib.syscall(ct.c_long(SYS_MOUNT_SETATTR), ct.c_int(AT_FDCWD),
                           ct.c_char_p(os.fsencode(path)),
                           ct.c_uint(AT_RECURSIVE), ct.byref(attr), ct.c_size_t(ct.sizeof(attr)))
    self._check(ret, "mount_setattr")

  def drop_capabilities(self):
    """Empties the bounding, effective, permitted and inheritable sets."""
    ct = self.ct
    for cap in range(64):
      if self.lib.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
        break  # EINVAL past the last capability (or EPERM: nothing to drop)

    class Header(ct.Structure):
      _fields_ = [("version", ct.c_uint32), ("pid", ct.c_int)]

    class Data(ct.Structure):
      _fields_ = [("effective", ct.c_uint32), ("permitted", ct.c_uint32),
                  ("inheritable", ct.c_uint32)]

    data = (Data * 2)()
    self._check(self.lib.capset(ct.byref(Header(_CAP_VERSION_3, 0)), data), "capset")


def _under(path, root):
  return path == root or path.startswith(root.rstrip("/") + "/")


_INTERPRETER_PATHS = None


def _interpreter_paths():
  """Directories this interpreter reads from (imports happen lazily, after the drop)."""
  global _INTERPRETER_PATHS
  if _INTERPRETER_PATHS is None:
    _INTERPRETER_PATHS = frozenset(_find_interpreter_paths())
  return _INTERPRETER_PATHS


def _find_interpreter_paths():
  out = set()
  for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
            os.path.dirname(sys.executable)):
    if p:
      out.add(os.path.abspath(p))
  for p in sys.path:
    if not p:
      continue
    p = os.path.abspath(p)
    if os.path.isfile(p):  # a zip archive
      p = os.path.dirname(p)
    if os.path.isdir(p):
      out.add(p)
  out |= {os.path.realpath(p) for p in out}
  return out


def _minimal(paths):
  """``paths`` without those inside another one."""
  out = []
  for p in sorted(set(paths), key=len):
    if not any(_under(p, q) for q in out):
      out.append(p)
  return out


def _walk_stop(path, uid):
  """Where walking down to ``path`` stops for ``uid`` (no groups, no capabilities).

  ``(dir, True)`` at the first directory ``uid`` may not enter, ``(prefix, False)`` at the
  first prefix that cannot be stat'ed, ``None`` if the walk reaches ``path``.
  """
  cur = ""
  for part in path.strip("/").split("/"):
    cur += "/" + part
    try:
      st = os.stat(cur)
    except OSError:
      return cur, False
    if stat.S_ISDIR(st.st_mode) and st.st_uid != uid and not st.st_mode & 0o001:
      return cur, True
  return None


def _blocked_dirs(paths, uid):
  """The first directory on the way to each path that ``uid`` may not enter."""
  out = set()
  for p in paths:
    stop = _walk_stop(p, uid)
    if stop is not None and stop[1]:
      out.add(stop[0])
  return out


def _reachable(path, uid):
  """True if ``uid`` (no groups, no capabilities) can enter every directory down to ``path``."""
  return _walk_stop(path, uid) is None


def _unescape_mountinfo(field):
  out, i = [], 0
  while i < len(field):
    if field[i] == "\\" and field[i + 1:i + 4].isdigit():
      out.append(chr(int(field[i + 1:i + 4], 8)))
      i += 4
    else:
      out.append(field[i])
      i += 1
  return "".join(out)


def _remount_each_read_only(libc, under="/"):
  """Per-mount read-only bind remounts of the mounts at and under ``under`` (kernels without
  mount_setattr)."""
  keep = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
          "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
  with open("/proc/self/mountinfo", encoding="utf-8") as f:
    lines = f.read().splitlines()
  failed = []
  for line in lines:
    fields = line.split()
    target, opts = _unescape_mountinfo(fields[4]), fields[5].split(",")
    if not _under(target, under):
      continue
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY
    for o in opts:
      flags |= keep.get(o, 0)
    try:
      libc.mount(None, target, None, flags)
    except OSError:
      failed.append(target)
  if failed:
    raise OSError(f"could not make read-only: {', '.join(failed[:5])}")


def _makedirs(path, mode=0o711):
  """``os.makedirs`` giving every directory it creates ``mode`` (traversable, not listable by
  others: a covered ``/root`` shows the unprivileged program no names)."""
  missing = []
  while path and path != "/" and not os.path.isdir(path):
    missing.append(path)
    path = os.path.dirname(path)
  for p in reversed(missing):
    os.mkdir(p, mode)
    os.chmod(p, mode)  # not reduced by the umask


def _cover(libc, target, keep, options="size=1m,nr_inodes=4096,mode=0711"):
  """Replaces directory ``target`` with an empty tmpfs (mount ``options``) holding only the
  ``keep`` paths (bind mounts of the originals), or a file with /dev/null. Returns the bind
  mount points."""
  if not os.path.isdir(target):
    libc.mount("/dev/null", target, None, MS_BIND)
    return []
  handles = [(p, os.open(p, os.O_PATH | os.O_CLOEXEC)) for p in keep if os.path.exists(p)]
  try:
    libc.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, options)
    for p, fd in handles:
      if stat.S_ISDIR(os.fstat(fd).st_mode):
        _makedirs(p)
      else:
        _makedirs(os.path.dirname(p))
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
      libc.mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
  finally:
    for _, fd in handles:
      os.close(fd)
  return [p for p, _ in handles]


def _read_only_tree(libc, path):
  """Makes the mounts at and under ``path`` read-only."""
  try:
    libc.all_read_only(path)
  except OSError:
    _remount_each_read_only(libc, path)


def _build_view(libc, cfg, source, pidns, owner, notes):
  """The mount namespace's view (see the module doc). Returns (read_only, fresh_proc)."""
  os.umask(0o022)
  libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
  workdir = cfg["workdir"]
  needed = set(_interpreter_paths()) | {workdir}
  hide = {os.path.realpath(p) for p in cfg["hide"] if os.path.lexists(p)}
  cover = set(hide)
  if os.path.isdir("/run"):  # daemons' unix sockets (a read-only mount does not stop connect)
    cover.add(os.path.realpath("/run"))
  if cfg["drop_uid"] is not None:
    cover |= _blocked_dirs(needed, cfg["drop_uid"])
  for target in sorted(cover, key=lambda p: p.count("/")):  # outer ones first
    if target == "/" or not os.path.lexists(target):
      continue
    keep = _minimal(p for p in needed if _under(p, target) and p != target)
    if any(_under(target, p) for p in needed) and target not in hide:
      continue  # a needed tree itself (cover only what was asked for inside one)
    try:
      _cover(libc, target, keep)
    except OSError as e:
      notes[f"cover {target}"] = str(e)
  try:
    libc.all_read_only()
    read_only = True
  except OSError as e:
    try:
      _remount_each_read_only(libc)
      read_only = True
    except OSError as e2:
      notes["mntns-ro"] = f"{e}; {e2}"
      read_only = False
  fresh_proc = False
  if pidns:
    try:
      libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
      fresh_proc = True
    except OSError as e:
      notes["pidns"] = f"a fresh /proc was refused ({e}); /proc is hidden instead"
      try:
        libc.mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                   "size=4k,mode=0555")
      except OSError as e2:
        notes["pidns"] = f"a fresh /proc was refused ({e}) and /proc could not be hidden ({e2})"
  size = int(cfg["tmp_bytes"])
  interp = _interpreter_paths()
  fresh = []
  for d in ("/tmp", "/var/tmp", "/dev/shm"):
    if not os.path.isdir(d) or os.path.islink(d):
      continue
    if any(_under(d, p) for p in interp):  # e.g. an interpreter whose prefix is /tmp itself
      notes[d] = "is the interpreter's own tree: left read-only instead of a fresh tmpfs"
      continue
    d_size = size if d == "/tmp" else min(size, 16 << 20)
    # An interpreter living here (a virtualenv under /tmp, ...) is bound back, read-only,
    # into the fresh tmpfs: the program sees it and nothing else of the host's directory.
    keep = _minimal(p for p in interp if _under(p, d))
    try:
      binds = _cover(libc, d, keep, f"size={d_size},nr_inodes=16384,mode=1777")
      for p in binds:
        _read_only_tree(libc, p)
      fresh.append(d)
    except OSError as e:
      notes[d] = str(e)
  program_path = cfg["program_path"]
  if any(_under(program_path, d) for d in fresh):  # a private copy: __file__ and tracebacks
    os.makedirs(os.path.dirname(program_path), 0o755, exist_ok=True)
    with open(program_path, "wb") as f:
      f.write(source)
  os.makedirs(workdir, 0o755, exist_ok=True)
  libc.mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV,
             f"size={size},nr_inodes=16384,mode=0700,uid={owner},gid={owner}")
  return read_only, fresh_proc


def _set_rlimits(rlimits):
  import resource  # pylint: disable=import-outside-toplevel
  for res, soft, hard in rlimits:
    try:
      resource.setrlimit(res, (soft, hard))
    except (ValueError, OSError):
      try:  # our hard limit is above the current one: lower the soft limit only
        cur = resource.getrlimit(res)[1]
        resource.setrlimit(res, (soft if cur == resource.RLIM_INFINITY else min(soft, cur), cur))
      except (ValueError, OSError):
        pass


def _network_hook():
  local = {1}  # AF_UNIX (importing socket here would cost every run a few ms)
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


def _launcher(ctl, p1):
  """P0 after the fork: relays the parent's SIGTERM to P1 and waits for it."""

  def kill_namespace(signum, frame):
    del signum, frame
    try:
      os.kill(p1, signal.SIGKILL)
    except OSError:
      pass

  signal.signal(signal.SIGTERM, kill_namespace)
  ctl.send(launcher=p1)
  os.closerange(3, ctl.fd)
  os.closerange(ctl.fd + 1, 1 << 16)
  while True:
    try:
      _, status = os.waitpid(p1, 0)
      break
    except ChildProcessError:
      status = None
      break
  ctl.send(init=status)
  os._exit(0)  # pylint: disable=protected-access


def _init_wait(ctl, p2, libc, userns):
  """P1 after forking the program: reaps until the program ends, then exits (which kills
  whatever is left in the namespace)."""
  os.closerange(3, ctl.fd)
  os.closerange(ctl.fd + 1, 1 << 16)
  if userns:
    try:
      libc.drop_capabilities()
    except OSError:
      pass
  while True:
    try:
      pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
      ctl.send(status=None)
      break
    if pid == p2:
      ctl.send(status=status)
      break
  os._exit(0)  # pylint: disable=protected-access


def _place_fds(done_fd, data_fd, ctl_fd):
  """Leaves 0-2, the result file on fd 3 (if any), the completion pipe and the control pipe;
  closes the rest. Returns the new (done_fd, ctl_fd)."""
  if data_fd >= 0:
    moved = []
    for fd in (done_fd, ctl_fd):
      if fd == 3:  # fd 3 is wanted for the result file: move this one out of the way
        new = os.dup(fd)
        os.close(fd)
        fd = new
      moved.append(fd)
    done_fd, ctl_fd = moved
    if data_fd != 3:
      os.dup2(data_fd, 3, inheritable=True)
      os.close(data_fd)
    os.set_inheritable(3, True)
  keep = sorted({0, 1, 2, done_fd, ctl_fd} | ({3} if data_fd >= 0 else set()))
  for lo, hi in zip(keep, keep[1:] + [1 << 16]):
    os.closerange(lo + 1, hi)
  return done_fd, ctl_fd


def setup(cfg):
  """Everything up to running the program; returns (source, done) in the program's process."""
  ctl = _Ctl(cfg["ctl_fd"])
  source = _read_all(cfg["program_fd"])
  secret = _read_all(cfg["secret_fd"])
  done_fd, data_fd = cfg["done_fd"], cfg["data_fd"]
  applied, notes = [], {}
  libc = None
  flags = 0
  if cfg["unshare"]:
    try:
      libc = _Libc()
    except OSError as e:
      notes["namespaces"] = f"no libc: {e}"
    errors = []
    for cand in (cfg["unshare"] if libc else []):
      try:
        libc.unshare(cand)
        flags = cand
        break
      except OSError as e:
        errors.append(f"{cand:#x}: {e.strerror}")
    if errors:
      notes["unshare"] = "; ".join(errors)
  userns = bool(flags & CLONE_NEWUSER)
  if userns:
    try:
      uid, gid = cfg["outer_ids"]
      for name, text in (("setgroups", "deny"), ("uid_map", f"65534 {uid} 1"),
                         ("gid_map", f"65534 {gid} 1")):
        with open(f"/proc/self/{name}", "w", encoding="ascii") as f:
          f.write(text)
    except OSError as e:
      notes["userns"] = f"could not map ids: {e}"
  pidns = bool(flags & CLONE_NEWPID)
  if pidns:
    p1 = os.fork()
    if p1:
      _launcher(ctl, p1)
    try:  # P1, pid 1 of the new namespace
      libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
      libc.prctl(PR_SET_DUMPABLE, 0)
    except OSError as e:
      notes["init"] = str(e)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGPIPE, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
      signal.signal(sig, signal.SIG_IGN)
  drop_uid = cfg["drop_uid"] if os.geteuid() == 0 and not userns else None
  owner = drop_uid if drop_uid is not None else os.getuid()
  read_only = fresh_proc = False
  if flags & CLONE_NEWNS:
    try:
      read_only, fresh_proc = _build_view(libc, cfg, source, pidns, owner, notes)
    except OSError as e:
      notes["mntns-ro"] = str(e)
  if pidns:
    p2 = os.fork()
    if p2:
      _init_wait(ctl, p2, libc, userns)
    for sig in (signal.SIGINT, signal.SIGPIPE):  # the program gets Python's defaults back
      signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
      signal.signal(sig, signal.SIG_DFL)
  # P2 (or P0 without a pid namespace): the program's process.
  _set_rlimits(cfg["rlimits"])
  if drop_uid is not None:
    needed = _interpreter_paths()
    blocked = [p for p in needed if not _reachable(p, drop_uid)]
    if blocked:
      notes["uid"] = (f"not dropped: uid {drop_uid} cannot reach {blocked[0]} "
                      "(no mount namespace to make it reachable)")
    else:
      try:
        if libc is None:
          libc = _Libc()
        for cap in range(64):
          if libc.lib.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
        os.setgroups([])
        os.setresgid(drop_uid, drop_uid, drop_uid)
        os.setresuid(drop_uid, drop_uid, drop_uid)
        applied.append("uid")
      except OSError as e:
        notes["uid"] = f"not dropped: {e}"
  if userns:
    try:
      libc.drop_capabilities()
      if "userns" not in notes:
        applied.append("userns")
    except OSError as e:
      notes["userns"] = f"capabilities kept: {e}"
  if libc is not None:
    try:
      libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError as e:
      notes["no_new_privs"] = str(e)
  if pidns:
    applied.append("pidns")
  if flags & CLONE_NEWNET:
    applied.append("netns")
  if read_only:
    applied.append("mntns-ro")
  if flags & CLONE_NEWIPC:
    applied.append("ipcns")
  if pidns and not fresh_proc and "pidns" not in notes:
    notes["pidns"] = "no fresh /proc (no mount namespace): the caller's processes are visible"
  os.chdir(cfg["workdir"])
  done_fd, ctl.fd = _place_fds(done_fd, data_fd, ctl.fd)
  if not cfg["network"]:
    _network_hook()
  ctl.send(iso=applied, notes=notes)
  ctl.close()
  write, getpid, pid = os.write, os.getpid, os.getpid()

  def done():
    if getpid() == pid:  # not from a forked child that fell through
      write(done_fd, secret)

  return source.decode("utf-8", "surrogateescape"), done


class _SourceLoader:
  """Gives linecache (tracebacks) the program's source: its file does not exist."""

  def __init__(self, source):
    self._source = source

  def get_source(self, name):
    del name
    return self._source


def main():
  cfg = eval(sys.argv[1], {"__builtins__": {}})  # pylint: disable=eval-used  (a literal)
  try:
    source, done = setup(cfg)
  except BaseException as e:  # pylint: disable=broad-except
    _Ctl(cfg["ctl_fd"]).send(fatal=f"{type(e).__name__}: {e}")
    os._exit(125)  # pylint: disable=protected-access
  path = cfg["program_path"]
  code = compile(source, path, "exec")  # a SyntaxError here is the program's failure
  sys.argv = [path]
  module = type(sys)("__main__")
  module.__file__ = path
  module.__builtins__ = __builtins__
  module.__loader__ = _SourceLoader(source)  # tracebacks show the program's lines
  sys.modules["__main__"] = module  # the program gets a clean namespace of its own
  exec(code, module.__dict__)  # pylint: disable=exec-used
  done()  # reached only when the program returned normally


if __name__ == "__main__":
  main()
