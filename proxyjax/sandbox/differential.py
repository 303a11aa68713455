"""Pass/fail decided outside the candidate's process: record, run, replay.

A check program that runs the candidate and its tests in one process lets
the candidate forge the verdict: return an object whose ``__eq__`` is always
True, walk ``sys._getframe().f_back`` to whatever proves completion, install
a ``sys.excepthook`` that hides a failed assert, or find that proof with
``gc``. Here the candidate's process only ever computes *values*; every
decision is taken elsewhere, by the problem's own tests:

1. **Record** (trusted code, sandboxed): run the problem's tests against the
   *canonical* solution through a recording wrapper and keep the arguments of
   every call the tests make to the entry point (as plain values,
   ``proxyjax.sandbox.values``), in order. The random module is seeded first,
   so tests that draw random inputs draw the same ones every time. Then
   replay the tests (step 3) with the canonical solution's own recorded
   values: only if they pass is the problem judged this way -- tests that
   look at anything but returned values and argument changes (printed
   output, object identity, module state) cannot be replayed faithfully.
2. **Run** (the candidate, sandboxed, one process per sample): load
   ``prompt + completion`` and call its entry point on those arguments, in
   order, writing each result -- the returned value encoded as plain data,
   or the exception's type and message, plus the arguments again if the call
   mutated them -- to a result file (fd 3). Nothing of the tests, the
   canonical solution or its outputs is in this process, or readable by it.
3. **Replay** (trusted code, sandboxed, batched): run the same tests again,
   now against a replaying wrapper that checks each call's arguments match
   the recorded ones and returns the candidate's value -- *decoded into fresh
   builtin objects* -- or raises its exception (same builtin type). The tests'
   own asserts decide, with their own tolerances and helpers (``poly`` for
   ``find_zero``, ``encode_cyclic`` ...), exactly as in the original harness.
   If a test's arguments depend on the candidate's earlier outputs and so
   differ from the recording, the candidate is run again on the arguments
   actually seen, and replayed again (up to ``MAX_ROUNDS`` runs).

Problems whose calls or canonical outputs have no plain form (objects of
classes the solution defines, generators ...) or whose canonical solution
fails its own tests cannot be replayed; ``record`` says so with the reason, and
the caller decides (``proxyjax.eval.codegen`` falls back to the in-process
check program, marked ``verdict: in-process``, with a warning).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import threading
from typing import Any, Sequence

from proxyjax.sandbox import runner as sandbox
from proxyjax.sandbox import values

MAX_ROUNDS = 4
_RECORD_CHUNK = 16
_JUDGE_CHUNK = 32
_VALUE_LINE_BYTES = 8 << 20
_CHUNK_BYTES = 16 << 20

OUTSIDE = "outside"  # Result.verdict of samples judged here


@dataclasses.dataclass(frozen=True)
class Task:
  """How one problem's tests run.

  Attributes:
    solution: trusted code defining the entry point and the helpers the tests
      use (``prompt + canonical_solution``).
    test: the test code. ``kind="check"``: it defines ``check(candidate)``,
      which is called with the entry point; ``kind="module"``: module-level
      code that calls the entry point by name.
    entry: the entry point's name.
    prompt: what the candidate's completion continues.
    limits: sandbox limits of a candidate run (its ``timeout_s`` also bounds
      each recording and each replay).
  """

  solution: str
  test: str
  entry: str
  kind: str
  prompt: str
  limits: sandbox.Limits

  def key(self) -> str:
    h = hashlib.sha256()
    for part in (self.solution, self.test, self.entry, self.kind,
                 repr(self.limits.site_packages), repr(self.limits.timeout_s)):
      h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Recording:
  """The calls the tests make with the canonical solution, or why there is none."""

  ok: bool
  calls: tuple[str, ...] = ()
  reason: str = ""


# ---------------------------------------------------------------------------
# The programs (their source is assembled here, run in sandboxes).

_COMMON = r'''
import json as _pj_json, os as _pj_os, random as _pj_random, signal as _pj_signal

class _PjTimeout(BaseException):
  pass

class _PjStop(BaseException):
  pass

def _pj_alarm(signum, frame):
  raise _PjTimeout()

_pj_signal.signal(_pj_signal.SIGALRM, _pj_alarm)

def _pj_emit(obj):
  data = (_pj_json.dumps(obj, separators=(",", ":")) + "\n").encode()
  while data:
    data = data[_pj_os.write(3, data):]

def _pj_key(args, kwargs):
  plain = to_plain((tuple(args), dict(kwargs)))
  return _pj_json.dumps(plain, separators=(",", ":")), plain

def _pj_solution(job):
  ns = {"__name__": "__main__", "__builtins__": __builtins__}
  exec(compile(job["solution"], "<solution>", "exec"), ns)
  return ns

def _pj_test(job, ns, candidate):
  test_ns = dict(ns)  # the solution's own functions keep their globals (no wrapper inside)
  test_ns[job["entry"]] = candidate
  test_ns["_pj_reference"] = ns.get(job["entry"])
  _pj_random.seed(0)
  exec(compile(job["test"], "<test>", "exec"), test_ns)
  if job["kind"] == "check":
    test_ns["check"](candidate)

def _pj_describe(e):
  try:
    text = str(e)
  except BaseException:
    text = "?"
  name = type(e).__name__
  return f"{name}: {text}"[:300] if text else name

def _pj_end():  # skip the interpreter's teardown: everything is written
  import sys
  sys.stdout.flush()
  sys.stderr.flush()
  _pj_os._exit(0)

def _pj_each(jobs, one):
  for job in jobs:
    _pj_signal.setitimer(_pj_signal.ITIMER_REAL, job["timeout"])
    try:
      out = one(job)
    except _PjTimeout:
      out = {"error": f"took longer than {job['timeout']:g}s"}
    finally:
      _pj_signal.setitimer(_pj_signal.ITIMER_REAL, 0)
    out["id"] = job["id"]
    _pj_emit(out)
'''

_RECORDER = r'''
def _pj_exc_spec(e):
  try:
    text = str(e)[:500]
  except BaseException:
    text = "?"
  return [type(e).__name__, [c.__name__ for c in type(e).__mro__], text]

def _pj_record(job):
  ns = _pj_solution(job)
  target = ns[job["entry"]]
  calls, results, problems = [], [], []

  def recorder(*args, **kwargs):
    i = len(calls)
    key, plain = _pj_key(args, kwargs)
    calls.append(key)
    if has_opaque(plain):
      problems.append(f"call {i} has arguments without a plain form: {key[:120]}")
    try:
      out = target(*args, **kwargs)
      rec = {"i": i, "v": to_plain(out)}
    except BaseException as e:
      rec = {"i": i, "e": _pj_exc_spec(e)}
      raise
    finally:
      post, _ = _pj_key(args, kwargs)
      if post != key:
        rec["post"] = _pj_json.loads(post)
      results.append(rec)
    if has_opaque(rec["v"]):
      problems.append(f"call {i} returns a value without a plain form: {repr(out)[:120]}")
    return out

  try:
    _pj_test(job, ns, recorder)
  except _PjTimeout:
    raise
  except BaseException as e:
    return {"error": "the canonical solution fails its own tests: " + _pj_describe(e)}
  if problems:
    return {"error": problems[0]}
  # The tests must also pass when they only get the recorded values back: if they look at
  # anything else (printed output, identity, global state), replaying cannot judge them.
  replayed = _pj_judge(dict(job, calls=calls, results=results))
  if not replayed.get("passed"):
    what = {k: v for k, v in replayed.items() if k != "seen"}
    return {"error": "the tests do not pass when replayed with the canonical solution's own "
                     f"values (they depend on more than returned values): {what}"[:400]}
  return {"calls": calls}
'''

_RECORDER_MAIN = r'''
_pj_each(_pj_json.loads(_PJ_JOBS), _pj_record)
_pj_end()
'''

_JUDGE = r'''
import builtins as _pj_builtins

def _pj_exception(spec, ns):
  name, mro, text = spec
  cls = ns.get(name)
  if not (isinstance(cls, type) and issubclass(cls, Exception)):
    cls = getattr(_pj_builtins, name, None)
  if not (isinstance(cls, type) and issubclass(cls, Exception)):
    base = Exception
    for b in mro:
      c = getattr(_pj_builtins, b, None)
      if isinstance(c, type) and issubclass(c, Exception):
        base = c
        break
    cls = type(name, (base,), {})
  try:
    return cls(text)
  except Exception:
    return Exception(f"{name}: {text}")

def _pj_writeback(args, kwargs, post):
  new_args, new_kwargs = post
  pairs = list(zip(args, new_args)) + [(kwargs[k], new_kwargs.get(k)) for k in kwargs]
  for old, new in pairs:
    if type(old) is not type(new):
      continue
    if type(old) in (list, bytearray):
      old[:] = new
    elif type(old) in (dict, set):
      old.clear()
      old.update(new)

def _pj_judge(job):
  ns = _pj_solution(job)
  calls, results = job["calls"], {r["i"]: r for r in job["results"]}
  state = {"flag": None, "seen": []}

  def replay(*args, **kwargs):
    if state["flag"] is not None:  # stopped before (and the tests swallowed it): stay stopped
      raise _PjStop()
    i = len(state["seen"])
    key, _ = _pj_key(args, kwargs)
    state["seen"].append(key)
    if i >= len(calls) or key != calls[i]:
      state["flag"] = {"diverged": i}
      raise _PjStop()
    rec = results.get(i)
    if rec is None:
      state["flag"] = {"missing": i}
      raise _PjStop()
    if "big" in rec:
      state["flag"] = {"big": i}
      raise _PjStop()
    try:
      if "post" in rec:
        _pj_writeback(args, kwargs, from_plain(rec["post"]))
      if "e" in rec:
        spec = rec["e"]
        if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str)
                and isinstance(spec[1], list) and isinstance(spec[2], str)):
          raise ValueError("bad exception record")
        error = _pj_exception(spec, ns)
      else:
        value = from_plain(rec["v"])
    except Exception:
      state["flag"] = {"malformed": i}
      raise _PjStop()
    if "e" in rec:
      if spec[0] in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
        state["flag"] = {"aborted": i, "exception": spec[0]}
        raise _PjStop()
      raise error
    return value

  out = {}
  try:
    _pj_test(job, ns, replay)
    out["passed"] = True
  except (_PjStop, _PjTimeout):
    if state["flag"] is None:
      raise
  except BaseException as e:
    out["failed"] = _pj_describe(e)
  if state["flag"] is not None:  # even if a test swallowed the stop
    out = dict(state["flag"])
    if "diverged" in out:
      out["seen"] = state["seen"]
  return out
'''

_JUDGE_MAIN = r'''
_pj_each(_pj_json.loads(_PJ_JOBS), _pj_judge)
_pj_end()
'''

_HARNESS = r'''
def _pj_harness(job):
  import json, os, sys, types
  def emit_line(line):
    data = line.encode() + b"\n"
    while data:
      data = data[os.write(3, data):]
  def exc(e):
    try:
      text = str(e)[:500]
    except BaseException:
      text = "?"
    try:
      mro = [c.__name__ for c in type(e).__mro__]
    except BaseException:
      mro = []
    return [type(e).__name__, mro, text]
  module = types.ModuleType("__main__")
  module.__dict__["__builtins__"] = __builtins__
  sys.modules["__main__"] = module
  try:
    exec(compile(job["source"], "<completion>", "exec"), module.__dict__)
  except BaseException as e:
    emit_line(json.dumps({"load": "error", "e": exc(e)}))
    import traceback
    traceback.print_exc()
    return
  emit_line(json.dumps({"load": "ok"}))
  entry = job["entry"]
  fn = module.__dict__.get(entry)
  limit = job["line_bytes"]
  for i, key in enumerate(job["calls"]):
    args, kwargs = from_plain(json.loads(key))
    try:
      if fn is None:
        raise NameError(f"name {entry!r} is not defined")
      rec = {"i": i, "v": to_plain(fn(*args, **kwargs))}
    except BaseException as e:
      rec = {"i": i, "e": exc(e)}
    try:
      post = json.dumps(to_plain((args, kwargs)), separators=(",", ":"))
      if post != key:
        rec["post"] = json.loads(post)
      line = json.dumps(rec, separators=(",", ":"))
    except BaseException as e:
      line = json.dumps({"i": i, "e": exc(e)})
    if len(line) > limit:
      line = json.dumps({"i": i, "big": len(line)})
    emit_line(line)
  emit_line(json.dumps({"end": len(job["calls"])}))
  try:  # skip the interpreter's teardown (the candidate's atexit handlers decide nothing)
    sys.stdout.flush()
    sys.stderr.flush()
  finally:
    os._exit(0)

_pj_harness(__import__("json").loads(_PJ_JOB))
'''


def _values_source() -> str:
  return inspect.getsource(values)


def _program(body: str, name: str, payload: Any, common: bool = True) -> str:
  data = json.dumps(payload, separators=(",", ":"))
  return "\n".join([_values_source(), _COMMON if common else "", f"{name} = {data!r}", body])


def recorder_program(jobs: Sequence[dict]) -> str:
  return _program(_JUDGE + _RECORDER + _RECORDER_MAIN, "_PJ_JOBS", list(jobs))


def judge_program(jobs: Sequence[dict]) -> str:
  return _program(_JUDGE + _JUDGE_MAIN, "_PJ_JOBS", list(jobs))


def harness_program(source: str, entry: str, calls: Sequence[str],
                    line_bytes: int = _VALUE_LINE_BYTES) -> str:
  """The candidate's program: load ``source``, call ``entry`` on each of ``calls``."""
  return _program(_HARNESS, "_PJ_JOB", {"source": source, "entry": entry, "calls": list(calls),
                                        "line_bytes": int(line_bytes)}, common=False)


def _lines(data: bytes) -> list[dict]:
  out = []
  for line in data.split(b"\n"):
    if not line.strip():
      continue
    try:
      obj = json.loads(line, parse_constant=values._reject)  # pylint: disable=protected-access
    except (ValueError, RecursionError):
      continue
    if isinstance(obj, dict):
      out.append(obj)
  return out


def _trusted_limits(limits: sandbox.Limits, n_jobs: int) -> sandbox.Limits:
  return dataclasses.replace(limits, timeout_s=limits.timeout_s * n_jobs + 10.0,
                             cpu_s=None, output_bytes=4 << 10)


def _groups(indices: list[int], sizes: list[int], max_jobs: int, max_bytes: int):
  """Consecutive groups of at most ``max_jobs`` jobs and (unless alone) ``max_bytes``."""
  group, total = [], 0
  for j in indices:
    if group and (len(group) >= max_jobs or total + sizes[j] > max_bytes):
      yield group
      group, total = [], 0
    group.append(j)
    total += sizes[j]
  if group:
    yield group


def _run_batched(make_program, jobs: list[dict], limits: list[sandbox.Limits], chunk: int,
                 workers: int | None, python: str | None) -> dict[int, dict]:
  """Runs trusted per-job programs in chunks; jobs a dead chunk left undone rerun alone."""
  out: dict[int, dict] = {}
  sizes = [len(json.dumps(j)) for j in jobs]
  pending = list(range(len(jobs)))
  for size in (chunk, 1):
    if not pending:
      break
    groups = list(_groups(pending, sizes, size, _CHUNK_BYTES))
    programs = [make_program([jobs[j] for j in g]) for g in groups]
    lims = [_trusted_limits(limits[g[0]], len(g)) for g in groups]
    data_bytes = max((lim.file_bytes for lim in lims), default=1)
    results = sandbox.run_many(programs, lims, workers=workers, python=python,
                               data_bytes=data_bytes)
    pending = []
    for g, r in zip(groups, results):
      got = {}
      for msg in _lines(r.data):
        if isinstance(msg.get("id"), int):
          got.setdefault(msg["id"], msg)
      for j in g:
        if j in got:
          out[j] = got[j]
        elif len(g) > 1:
          pending.append(j)
        else:
          out[j] = {"crashed": f"{r.status}: {r.reason}"[:300]}
  return out


# ---------------------------------------------------------------------------
# Record.

_cache: dict[str, Recording] = {}
_cache_lock = threading.Lock()


def record(tasks: Sequence[Task], *, workers: int | None = None,
           python: str | None = None) -> list[Recording]:
  """The recorded calls of each task (cached per task and process)."""
  keys = [t.key() for t in tasks]
  with _cache_lock:
    todo = [i for i, k in enumerate(keys) if k not in _cache]
  todo = list({keys[i]: i for i in todo}.values())  # one run per distinct task
  if todo:
    jobs = [{"id": n, "solution": tasks[i].solution, "test": tasks[i].test,
             "entry": tasks[i].entry, "kind": tasks[i].kind,
             "timeout": float(tasks[i].limits.timeout_s)} for n, i in enumerate(todo)]
    got = _run_batched(recorder_program, jobs, [tasks[i].limits for i in todo], _RECORD_CHUNK,
                       workers, python)
    with _cache_lock:
      for n, i in enumerate(todo):
        msg = got.get(n, {})
        if isinstance(msg.get("calls"), list) and all(isinstance(c, str) for c in msg["calls"]):
          rec = Recording(True, tuple(msg["calls"]))
        else:
          why = msg.get("error") or msg.get("crashed") or "no recording came back"
          rec = Recording(False, (), f"recording: {why}")
        _cache[keys[i]] = rec
  with _cache_lock:
    return [_cache[k] for k in keys]


# ---------------------------------------------------------------------------
# Run and replay.


@dataclasses.dataclass
class _Sample:
  task: int
  completion: str
  calls: tuple[str, ...]
  result: sandbox.Result | None = None  # the candidate's run
  outcome: dict | None = None  # parsed result file
  final: sandbox.Result | None = None


def _parse_run(r: sandbox.Result) -> dict:
  load, results, end = None, [], False
  seen = set()
  for msg in _lines(r.data):
    if load is None and "load" in msg:
      load = msg
    elif isinstance(msg.get("i"), int) and msg["i"] not in seen:
      if any(k in msg for k in ("v", "e", "big")):
        seen.add(msg["i"])
        results.append(msg)
    elif "end" in msg:
      end = True
  return {"load": load, "results": results, "end": end}


def _final(s: _Sample, status: str, reason: str) -> sandbox.Result:
  r = s.result
  return dataclasses.replace(r, status=status, reason=reason[:300], data=b"", verdict=OUTSIDE)


def _settle_before_judging(s: _Sample) -> bool:
  """Decides samples the judge is not needed for; True if decided."""
  r, load = s.result, s.outcome["load"]
  if r.status == sandbox.ERROR:
    s.final = _final(s, sandbox.ERROR, r.reason)
  elif load is None:
    status = sandbox.TIMEOUT if r.status == sandbox.TIMEOUT else sandbox.FAILED
    s.final = _final(s, status, r.reason or "the program ended while loading")
  elif load.get("load") != "ok":
    e = load.get("e") or ["Error", [], ""]
    text = f"{e[0]}: {e[2]}" if len(e) > 2 and e[2] else str(e[0])
    s.final = _final(s, sandbox.FAILED, text)
  return s.final is not None


def _settle_after_judging(s: _Sample, verdict: dict) -> bool:
  """Decides a sample from the judge's verdict; False if it must run again (diverged)."""
  r = s.result
  if verdict.get("passed"):
    if r.status == sandbox.TIMEOUT:
      s.final = _final(s, sandbox.TIMEOUT, r.reason)
    elif r.returncode not in (0, None):
      s.final = _final(s, sandbox.FAILED, f"the tests passed, then: {r.reason}")
    else:
      s.final = _final(s, sandbox.PASSED, "")
  elif "failed" in verdict:
    s.final = _final(s, sandbox.FAILED, str(verdict["failed"]))
  elif "missing" in verdict:
    i = verdict["missing"]
    if r.status == sandbox.TIMEOUT:
      s.final = _final(s, sandbox.TIMEOUT, r.reason)
    else:
      why = r.reason or f"exit code {r.returncode}"
      s.final = _final(s, sandbox.FAILED, f"the program ended during call #{i} ({why})")
  elif "aborted" in verdict:
    s.final = _final(s, sandbox.FAILED,
                     f"the candidate raised {verdict.get('exception')} in call #{verdict['aborted']}")
  elif "big" in verdict:
    s.final = _final(s, sandbox.FAILED, f"the output of call #{verdict['big']} is too large "
                                        "to check")
  elif "diverged" in verdict:
    seen = verdict.get("seen")
    if (isinstance(seen, list) and all(isinstance(k, str) for k in seen)
        and seen != list(s.calls)):
      s.calls = tuple(seen)  # run again on the calls the tests actually make
      return False
    s.final = _final(s, sandbox.FAILED, "the tests' calls diverged from the recording")
  elif "malformed" in verdict:
    s.final = _final(s, sandbox.FAILED, f"the result of call #{verdict['malformed']} is "
                                        "malformed")
  elif "error" in verdict:
    s.final = _final(s, sandbox.FAILED, f"checking the outputs {verdict['error']}")
  else:
    why = verdict.get("crashed", "no verdict came back")
    s.final = _final(s, sandbox.ERROR, f"the judge failed: {why}")
  return True


def run_and_judge(tasks: Sequence[Task], recordings: Sequence[Recording],
                  completions: Sequence[Sequence[str]], *, workers: int | None = None,
                  python: str | None = None,
                  hide_paths: Sequence[str] = ()) -> list[list[sandbox.Result]]:
  """Results ``[task][sample]`` for tasks with a good recording (others get ``[]``)."""
  samples = [_Sample(t, c, recordings[t].calls)
             for t, comps in enumerate(completions) if recordings[t].ok for c in comps]
  active = list(samples)
  for round_ in range(MAX_ROUNDS):
    if not active:
      break
    programs = [harness_program(tasks[s.task].prompt + s.completion, tasks[s.task].entry,
                                s.calls) for s in active]
    lims = [tasks[s.task].limits for s in active]
    data_bytes = max(lim.file_bytes for lim in lims)
    runs = sandbox.run_many(programs, lims, workers=workers, python=python,
                            data_bytes=data_bytes, hide_paths=hide_paths)
    to_judge = []
    for s, r in zip(active, runs):
      s.result, s.outcome = r, _parse_run(r)
      if not _settle_before_judging(s):
        to_judge.append(s)
    jobs = []
    for n, s in enumerate(to_judge):
      t = tasks[s.task]
      jobs.append({"id": n, "solution": t.solution, "test": t.test, "entry": t.entry,
                   "kind": t.kind, "calls": list(s.calls), "results": s.outcome["results"],
                   "timeout": float(t.limits.timeout_s)})
    verdicts = _run_batched(judge_program, jobs, [tasks[s.task].limits for s in to_judge],
                            _JUDGE_CHUNK, workers, python)
    active = []
    for n, s in enumerate(to_judge):
      if not _settle_after_judging(s, verdicts.get(n, {})):
        if round_ + 1 < MAX_ROUNDS:
          active.append(s)
        else:
          s.final = _final(s, sandbox.FAILED,
                           f"the tests' calls depend on the candidate's outputs beyond "
                           f"{MAX_ROUNDS} runs; no verdict")
  out: list[list[sandbox.Result]] = [[] for _ in tasks]
  for s in samples:
    out[s.task].append(s.final)
  return out


__all__ = ["Task", "Recording", "MAX_ROUNDS", "OUTSIDE", "record", "run_and_judge",
           "recorder_program", "judge_program", "harness_program"]
