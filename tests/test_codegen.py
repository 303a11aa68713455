"""Code benchmarks: loading, post-processing, check programs, pass@k, canonical solutions."""

import gzip
import json
import math

import pytest

from proxyjax.eval import codegen
from proxyjax.eval import passk
from proxyjax.eval import sandbox

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


def test_all_canonical_solutions_pass(humaneval):
  """Every canonical solution scores pass@1 = 1 through the same path as samples."""
  out = codegen.evaluate_canonical(humaneval, ks=(1,), limits=LIMITS)
  failures = [(r["task_id"], r["first_failure"]) for r in out["per_problem"] if r["c"] != 1]
  assert not failures
  assert out["pass@1"] == 1.0 and out["num_problems"] == 164


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
  assert "before the program finished" in row["first_failure"]
