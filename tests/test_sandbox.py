"""The sandbox kills what it starts, contains what it writes, and blocks the network."""

import os
import socket
import tempfile
import textwrap
import time

import pytest

from proxyjax.eval import sandbox


def _alive(pid: int) -> bool:
  """True for a running process (zombies awaiting their reaper count as dead)."""
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      state = f.read().rsplit(b")", 1)[1].split()[0]
  except (OSError, IndexError):
    return False
  return state not in (b"Z", b"X")


def _pids(stdout: str) -> list[int]:
  return [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("PID ")]


def test_passing_and_failing_programs():
  ok = sandbox.run("print('hello')", sandbox.Limits(timeout_s=5))
  assert ok.status == sandbox.PASSED and ok.passed and ok.stdout == "hello\n"
  bad = sandbox.run("assert 1 + 1 == 3", sandbox.Limits(timeout_s=5))
  assert bad.status == sandbox.FAILED and "AssertionError" in bad.reason
  assert "AssertionError" in bad.stderr
  syntax = sandbox.run("def f(:\n  pass", sandbox.Limits(timeout_s=5))
  assert syntax.status == sandbox.FAILED and "SyntaxError" in syntax.reason
  exited = sandbox.run("import sys; sys.exit(3)", sandbox.Limits(timeout_s=5))
  assert exited.status == sandbox.FAILED and exited.returncode == 3


def test_infinite_loop_is_killed_within_the_limit():
  t0 = time.monotonic()
  r = sandbox.run("while True:\n  pass\n", sandbox.Limits(timeout_s=1.0))
  assert r.status == sandbox.TIMEOUT
  assert r.elapsed_s < 2.5 and time.monotonic() - t0 < 4.0


def test_sleeping_program_is_killed_within_the_limit():
  r = sandbox.run("import time\ntime.sleep(60)\n", sandbox.Limits(timeout_s=1.0))
  assert r.status == sandbox.TIMEOUT and r.elapsed_s < 2.5


def test_cpu_time_limit():
  r = sandbox.run("while True:\n  pass\n", sandbox.Limits(timeout_s=10.0, cpu_s=1))
  assert r.status == sandbox.TIMEOUT and r.reason == "CPU time limit" and r.elapsed_s < 4.0


_FORKER = textwrap.dedent("""
    import os, subprocess, sys, time
    def spawn(escape):
      pid = os.fork()
      if pid == 0:
        if escape:
          os.setsid()  # leaves the process group
        time.sleep(60)
        os._exit(0)
      print("PID", pid, flush=True)
    for i in range(4):
      spawn(escape=(i == 3))
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print("PID", p.pid, flush=True)
    grandchild = os.fork()
    if grandchild == 0:  # a child that forks again, then exits: an orphaned grandchild
      inner = os.fork()
      if inner == 0:
        time.sleep(60)
        os._exit(0)
      print("PID", inner, flush=True)
      os._exit(0)
    os.waitpid(grandchild, 0)
    """)


@pytest.mark.parametrize("hang", [False, True])
def test_forked_children_do_not_survive(hang):
  program = _FORKER + ("time.sleep(60)\n" if hang else "print('done')\n")
  r = sandbox.run(program, sandbox.Limits(timeout_s=3.0))
  assert r.status == (sandbox.TIMEOUT if hang else sandbox.PASSED), r
  pids = _pids(r.stdout)
  assert len(pids) == 6, r.stdout
  deadline = time.monotonic() + 2.0
  while any(_alive(p) for p in pids) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not [p for p in pids if _alive(p)]


def test_fork_loop_leaves_no_survivors():
  """Children keep being forked (at a bounded rate) until the wall-time kill."""
  program = textwrap.dedent("""
      import os, time
      while True:
        pid = os.fork()
        if pid == 0:
          if os.getpid() % 3 == 0:
            os.setsid()
          time.sleep(60)
          os._exit(0)
        print("PID", pid, flush=True)
        time.sleep(0.02)
      """)
  r = sandbox.run(program, sandbox.Limits(timeout_s=1.5))
  assert r.status == sandbox.TIMEOUT
  pids = _pids(r.stdout)
  assert len(pids) > 10
  deadline = time.monotonic() + 2.0
  while any(_alive(p) for p in pids) and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not [p for p in pids if _alive(p)]


def test_cleanup_of_one_run_spares_the_others():
  hanging = _FORKER + "time.sleep(60)\n"
  calm = "import time\ntime.sleep(1.5)\nprint('still here')\n"
  results = sandbox.run_many([hanging, calm, calm],
                             [sandbox.Limits(timeout_s=0.8), sandbox.Limits(timeout_s=5.0),
                              sandbox.Limits(timeout_s=5.0)], workers=3)
  assert results[0].status == sandbox.TIMEOUT
  assert [r.stdout for r in results[1:]] == ["still here\n"] * 2


def test_memory_hog_fails_without_harming_the_caller():
  r = sandbox.run("x = bytearray(10 * 1024 ** 3)\nprint('allocated')\n",
                  sandbox.Limits(timeout_s=5.0, memory_bytes=1 << 30))
  assert r.status == sandbox.FAILED and "MemoryError" in r.reason
  assert "allocated" not in r.stdout
  growing = sandbox.run("chunks = []\nwhile True:\n  chunks.append(bytearray(16 << 20))\n",
                        sandbox.Limits(timeout_s=5.0, memory_bytes=256 << 20))
  assert growing.status == sandbox.FAILED and "MemoryError" in growing.reason
  mine = bytearray(64 << 20)  # the test process is unaffected
  assert len(mine) == 64 << 20


_CONNECT = textwrap.dedent("""
    import socket, sys
    try:
      s = socket.create_connection(("127.0.0.1", {port}), timeout=1.0)
      s.sendall(b"hello")
      print("CONNECTED")
    except OSError as e:
      print("BLOCKED", type(e).__name__)
    try:
      import _socket
      raw = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
      raw.settimeout(1.0)
      raw.connect(("127.0.0.1", {port}))
      print("CONNECTED-RAW")
    except OSError as e:
      print("BLOCKED-RAW", type(e).__name__)
    """)


@pytest.fixture
def listener():
  server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  server.bind(("127.0.0.1", 0))
  server.listen(8)
  server.setblocking(False)
  yield server
  server.close()


def _accepted(server) -> int:
  n = 0
  while True:
    try:
      conn, _ = server.accept()
      conn.close()
      n += 1
    except BlockingIOError:
      return n


def test_network_is_blocked(listener):
  port = listener.getsockname()[1]
  r = sandbox.run(_CONNECT.format(port=port), sandbox.Limits(timeout_s=5.0))
  assert "CONNECTED" not in r.stdout.replace("BLOCKED", "")
  assert "BLOCKED" in r.stdout and "BLOCKED-RAW" in r.stdout
  assert _accepted(listener) == 0


def test_network_allowed_when_asked(listener):
  """Positive control: the same program does connect with network=True."""
  port = listener.getsockname()[1]
  r = sandbox.run(_CONNECT.format(port=port), sandbox.Limits(timeout_s=5.0, network=True))
  assert "CONNECTED\n" in r.stdout
  assert _accepted(listener) >= 1


def test_network_namespace_has_only_loopback():
  if not sandbox.isolation()["network_namespace"]:
    pytest.skip("no network namespaces on this machine (audit hook only)")
  r = sandbox.run("import socket\nprint(sorted(n for _, n in socket.if_nameindex()))\n",
                  sandbox.Limits(timeout_s=5.0))
  assert r.passed and r.stdout.strip() == "['lo']"


def test_files_stay_in_a_temporary_home(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("PROXYJAX_TEST_SECRET", "hunter2")
  monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
  before = sorted(os.listdir(tmp_path))
  program = textwrap.dedent("""
      import os, sys
      with open("written.txt", "w") as f:
        f.write("x")
      with open(os.path.expanduser("~/in_home.txt"), "w") as f:
        f.write("y")
      print("CWD", os.getcwd())
      print("HOME", os.environ["HOME"])
      print("EXPAND", os.path.expanduser("~"))
      print("FILE", os.path.abspath("written.txt"))
      print("SECRET", os.environ.get("PROXYJAX_TEST_SECRET"))
      print("PROXY", os.environ.get("HTTPS_PROXY"))
      print("HASHSEED", sys.flags.hash_randomization)
      print("PATH0", "" in sys.path or os.getcwd() in sys.path)
      """)
  r = sandbox.run(program, sandbox.Limits(timeout_s=5.0))
  assert r.passed, r
  out = dict(line.split(" ", 1) for line in r.stdout.splitlines())
  assert out["CWD"] == out["HOME"] == out["EXPAND"]
  assert os.path.realpath(out["CWD"]).startswith(os.path.realpath(tempfile.gettempdir()))
  assert os.path.realpath(out["CWD"]) != os.path.realpath(str(tmp_path))
  assert out["FILE"].startswith(out["CWD"])
  assert out["SECRET"] == "None" and out["PROXY"] == "None"
  assert out["HASHSEED"] == "0" and out["PATH0"] == "False"
  assert sorted(os.listdir(tmp_path)) == before  # the caller's cwd is untouched
  assert not os.path.exists(out["CWD"])  # the temporary directory is gone


def test_reading_stdin_does_not_hang():
  r = sandbox.run("import sys\nprint(repr(sys.stdin.read()))\n", sandbox.Limits(timeout_s=3.0))
  assert r.passed and r.stdout.strip() == "''"
  r = sandbox.run("input()\n", sandbox.Limits(timeout_s=3.0))
  assert r.status == sandbox.FAILED and "EOFError" in r.reason and r.elapsed_s < 2.5


def test_output_is_truncated():
  r = sandbox.run("import sys\nsys.stdout.write('a' * 1_000_000 + 'END')\n",
                  sandbox.Limits(timeout_s=5.0, output_bytes=1000))
  assert r.passed and r.stdout.endswith("END") and len(r.stdout) < 1100


def test_file_size_limit():
  r = sandbox.run("open('big', 'wb').write(b'x' * (4 << 20))\n",
                  sandbox.Limits(timeout_s=5.0, file_bytes=1 << 20))
  assert r.status == sandbox.FAILED


def test_run_many_keeps_order_and_runs_in_parallel():
  programs = [f"import time\ntime.sleep(0.6)\nprint({i})" for i in range(4)]
  t0 = time.monotonic()
  results = sandbox.run_many(programs, sandbox.Limits(timeout_s=5.0), workers=4)
  elapsed = time.monotonic() - t0
  assert [r.stdout.strip() for r in results] == ["0", "1", "2", "3"]
  assert elapsed < 2.0  # serial would take >= 2.4 s
  mixed = sandbox.run_many(["print(1)", "while True: pass"],
                           [sandbox.Limits(timeout_s=5.0), sandbox.Limits(timeout_s=0.5)])
  assert [r.status for r in mixed] == [sandbox.PASSED, sandbox.TIMEOUT]


# ---------------------------------------------------------------------------
# Exit code 0 is not enough: the program must run to its end.


@pytest.mark.parametrize("early_exit", [
    "import sys; sys.exit(0)",
    "import os; os._exit(0)",
    "raise SystemExit",
    "import sys; sys.stdout.flush(); sys.exit()",
])
def test_early_exit_with_code_zero_fails(early_exit):
  program = f"{early_exit}\nassert False, 'the tests would fail here'\n"
  r = sandbox.run(program, sandbox.Limits(timeout_s=5.0))
  assert r.returncode == 0  # the interpreter did exit 0 ...
  assert r.status == sandbox.FAILED and not r.passed  # ... but never reached the end
  assert "before the program finished" in r.reason


def test_caught_system_exit_still_passes():
  """Positive control: a program that survives its own sys.exit and ends normally passes."""
  r = sandbox.run("import sys\ntry:\n  sys.exit(0)\nexcept SystemExit:\n  pass\nprint('end')\n",
                  sandbox.Limits(timeout_s=5.0))
  assert r.passed and r.stdout == "end\n"


_FORGER = textwrap.dedent("""
    import os, re, sys
    hexes = set()
    sources = [" ".join(os.environ.values()), " ".join(sys.argv)]
    for path in ("/proc/self/cmdline", "/proc/self/environ", __file__):
      try:
        sources.append(open(path, "rb").read().decode("latin-1"))
      except OSError:
        pass
    for text in sources:
      hexes.update(re.findall(r"[0-9a-f]{32}", text))
    hexes.update(["0" * 32, "deadbeef" * 4])
    fake = "".join(sorted(hexes))
    print(fake, flush=True)
    for fd in range(3, 64):  # every inherited descriptor, the completion pipe included
      for h in sorted(hexes):
        try:
          os.write(fd, h.encode())
        except OSError:
          pass
    os._exit(0)
    """)


def test_forged_completion_tokens_fail():
  r = sandbox.run(_FORGER, sandbox.Limits(timeout_s=5.0))
  assert r.returncode == 0 and len(r.stdout.strip()) >= 64  # it did print candidate tokens
  assert r.status == sandbox.FAILED and not r.passed
