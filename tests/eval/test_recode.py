"""ReCode-style perturbations keep problems valid and solvable; robust metrics."""

import ast
import re

import pytest

from proxyjax.eval import codegen, recode, sandbox
from proxyjax.eval.recode import engine

FAST = sandbox.Limits(timeout_s=10.0, site_packages=False)
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def humaneval():
  return codegen.load_humaneval()


@pytest.fixture(scope="module")
def perturbed(humaneval):
  """{(family, seed): [perturbed problems]} for every problem."""
  return {(f, s): [recode.perturb(p, f, s) for p in humaneval]
          for f in recode.FAMILIES for s in SEEDS}


def test_every_perturbed_prompt_parses(humaneval, perturbed):
  for (family, seed), problems in perturbed.items():
    for orig, p in zip(humaneval, problems):
      tree = ast.parse(p.prompt)
      names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
      assert p.entry_point in names, (family, seed, p.task_id)
      assert p.task_id == orig.task_id
      assert p.variant.startswith(f"{family}:") and p.variant.endswith(f":{seed}")
      assert ":none:" not in p.variant, (family, seed, p.task_id)  # every problem is perturbed
      assert p.prompt != orig.prompt


def test_perturbations_are_deterministic(humaneval, perturbed):
  engine._APPLICABLE_CACHE.clear()  # recompute from scratch
  for (family, seed), problems in perturbed.items():
    again = [recode.perturb(p, family, seed) for p in humaneval]
    assert again == problems, (family, seed)


def test_seeds_give_different_variants(humaneval):
  for family in recode.FAMILIES:
    counts = [len({recode.perturb(p, family, s).prompt for s in range(5)})
              for p in humaneval[::4]]
    assert sum(counts) / len(counts) >= (3.0 if family == "syntax" else 4.5), family
    assert min(counts) >= 1


def _check_canonical(problems):
  out = codegen.evaluate_canonical(problems, limits=FAST)
  failures = [(p.variant, p.task_id, r["first_failure"])
              for p, r in zip(problems, out["per_problem"]) if r["c"] != 1]
  assert not failures


def test_canonical_solutions_pass_on_perturbed_prompts(perturbed):
  """A subset by default (every 8th problem); the full run is marked slow."""
  _check_canonical([p for ps in perturbed.values() for p in ps[::8]])


@pytest.mark.slow
def test_canonical_solutions_pass_on_all_perturbed_prompts(perturbed):
  _check_canonical([p for ps in perturbed.values() for p in ps])


def _first(problem, family, rewrite):
  for seed in range(20):
    p = recode.perturb(problem, family, seed)
    if p.variant.split(":")[1] == rewrite:
      return p
  raise AssertionError(f"{problem.task_id}: no {family}:{rewrite} in 20 seeds")


def test_function_rename_follows_through(humaneval):
  by_id = {p.task_id: p for p in humaneval}
  fib = recode.perturb(by_id["HumanEval/55"], "func_name", 0)  # recursive solution
  assert fib.entry_point != "fib"
  assert not re.search(r"\bfib\b", fib.prompt + fib.canonical_solution)
  assert fib.canonical_solution.count(fib.entry_point) == 2
  assert f">>> {fib.entry_point}(10)" in fib.prompt
  third = recode.perturb(by_id["HumanEval/33"], "func_name", 0)  # the test names it
  assert not re.search(r"\bsort_third\b", third.test) and third.entry_point in third.test
  program = codegen.check_program(third, third.canonical_solution)
  assert program.rstrip().endswith(f"check({third.entry_point})")


def test_docstring_paraphrases_leave_examples_and_identifiers_alone(humaneval):
  for p in humaneval:
    for seed in range(3):
      q = recode.perturb(p, "docstring", seed)
      doc_lines = [ln.strip() for ln in p.prompt.splitlines() if ln.strip().startswith(">>>")]
      new_lines = [ln.strip() for ln in q.prompt.splitlines() if ln.strip().startswith(">>>")]
      assert doc_lines == new_lines, p.task_id
      assert _without_strings(p.prompt) == _without_strings(q.prompt), p.task_id


def _without_strings(source):
  """The AST dump with every string constant blanked (docstrings included)."""
  tree = ast.parse(source)
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
      node.value = ""
  return ast.dump(tree)


def test_syntax_rewrites(humaneval):
  p = humaneval[0]  # has_close_elements(numbers: List[float], threshold: float) -> bool
  plain = _first(p, "syntax", "strip_annotations")
  assert "def has_close_elements(numbers, threshold):" in plain.prompt
  renamed = _first(p, "syntax", "rename_param")
  fn = next(n for n in ast.parse(renamed.prompt).body if isinstance(n, ast.FunctionDef))
  orig = {"numbers", "threshold"}
  assert {a.arg for a in fn.args.args} != orig and len({a.arg for a in fn.args.args} & orig) == 1
  assert renamed.canonical_solution != p.canonical_solution


def test_format_rewrites_change_only_layout(humaneval):
  for p in humaneval[:40]:
    for seed in range(5):
      q = recode.perturb(p, "format", seed)
      a, b = ast.parse(p.prompt), ast.parse(q.prompt)
      code = lambda t: [ast.dump(n) for n in t.body if not isinstance(n, ast.FunctionDef)]
      assert code(a) == code(b)
      fa = [n for n in a.body if isinstance(n, ast.FunctionDef)][-1]
      fb = [n for n in b.body if isinstance(n, ast.FunctionDef)][-1]
      assert ast.dump(fa.args) == ast.dump(fb.args) and fa.name == fb.name
      words = lambda s: re.findall(r"\S+", ast.get_docstring(s, clean=False) or "")
      assert words(fa) == words(fb) or "'''" in q.prompt or '"""' in q.prompt


def test_mbpp_style_problem_rename():
  p = codegen.problem_from_record({
      "task_id": 7, "text": "Write a function to add one to every item of a list.",
      "code": "def add_one_all(xs):\n  return [x + 1 for x in xs]\n",
      "test_list": ["assert add_one_all([1, 2]) == [2, 3]", "assert add_one_all([]) == []"]})
  q = recode.perturb(p, "func_name", 0)
  assert q.entry_point != "add_one_all"
  assert all(q.entry_point in t for t in q.test_list) and q.entry_point in q.prompt
  out = codegen.evaluate_canonical([p, q], limits=FAST)
  assert out["pass@1"] == 1.0


def test_robust_metrics_by_hand():
  nominal = [[True], [True], [False]]
  perturbed = [[[True], [False]], [[True], [True]], [[True], [False]]]
  m = recode.robust_metrics(nominal, perturbed)
  assert m["nominal_pass@1"] == pytest.approx(2 / 3)
  assert m["robust_pass@1"] == pytest.approx(1 / 3)
  assert m["robust_drop_abs_pass@1"] == pytest.approx(1 / 3)
  assert m["robust_drop_pass@1"] == pytest.approx(0.5)
  assert m["robust_relative"] == pytest.approx(2 / 3)
  assert m["attack_success"] == pytest.approx(0.5)
  # Several samples: a sample index is robust only if it passes under every seed.
  m = recode.robust_metrics([[True, True, False, False]],
                            [[[True, False, True, False], [True, True, False, False]]],
                            ks=(1, 2))
  assert m["nominal_pass@1"] == pytest.approx(0.5)
  assert m["robust_pass@1"] == pytest.approx(0.25)
  assert m["robust_pass@2"] == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)


def test_evaluate_robustness_end_to_end(humaneval):
  problems = humaneval[:3]

  def solid(ps):
    return [[p.canonical_solution] for p in ps]

  def brittle(ps):  # right only on the original prompts
    return [[p.canonical_solution if not p.variant else "    return None\n"] for p in ps]

  kw = dict(families=("func_name", "docstring"), num_seeds=2, limits=FAST)
  good = recode.evaluate_robustness(problems, solid, **kw)
  assert good["nominal_pass@1"] == 1.0
  for fam in ("func_name", "docstring"):
    assert good["families"][fam]["robust_pass@1"] == 1.0
    assert good["families"][fam]["robust_drop_pass@1"] == 0.0
  bad = recode.evaluate_robustness(problems, brittle, **kw)
  assert bad["nominal_pass@1"] == 1.0
  assert bad["families"]["func_name"]["robust_pass@1"] == 0.0
  assert bad["families"]["func_name"]["robust_drop_pass@1"] == 1.0
  assert bad["families"]["docstring"]["attack_success"] == 1.0
