"""ReCode-style perturbations keep problems valid and solvable; robust metrics."""

import ast
import json
import re

import pytest
from helpers import small_config

from proxyjax.errors import ConfigError
from proxyjax.eval import codegen, generate, recode, validation
from proxyjax.eval import run as eval_run
from proxyjax.eval.recode import engine
from proxyjax.sandbox import runner as sandbox

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


# ---------------------------------------------------------------------------
# ReCode's released files (eval.recode_path).


def _released_record(problem, old, new):
  """A record in ReCode's released HumanEval format, the entry point renamed old -> new."""
  return {"task_id": problem.task_id, "prompt": problem.prompt.replace(old, new),
          "entry_point": problem.entry_point.replace(old, new),
          "canonical_solution": problem.canonical_solution.replace(old, new),
          "test": problem.test}


def write_released(root, problems):
  """A small release in ReCode's layout: func_name with seeds 0 and 1 over both problems,
  format with seed 0 over the first only; and one Hugging Face style file (fields in the
  record, no name pattern)."""
  func = root / "humaneval" / "full" / "func_name"
  fmt = root / "humaneval" / "full" / "format"
  func.mkdir(parents=True)
  fmt.mkdir(parents=True)
  for seed, suffix in ((0, "_v0"), (1, "_v1")):
    lines = [json.dumps(_released_record(p, p.entry_point, p.entry_point + suffix))
             for p in problems]
    (func / f"humaneval_FuncRenameSwapChar_s{seed}.jsonl").write_text("\n".join(lines) + "\n")
  blank = _released_record(problems[0], "\0", "\0")
  blank["prompt"] += "\n"  # a blank line after the docstring
  (fmt / "humaneval_new_line_afterdoc_s0.jsonl").write_text(json.dumps(blank) + "\n")
  hf = dict(_released_record(problems[1], "a", "a"), seed=0, perturbation_name="Identity",
            category="nlaugmenter")
  (root / "perturbed_humaneval.jsonl").write_text(json.dumps(hf) + "\n")


def test_released_files_load_in_recode_format(tmp_path, humaneval):
  problems = humaneval[:2]
  write_released(tmp_path, problems)
  released = recode.released.load(str(tmp_path))
  assert sorted(released) == [("format", "new_line_afterdoc"), ("func_name", "FuncRenameSwapChar"),
                              ("nlaugmenter", "Identity")]
  by_seed = released[("func_name", "FuncRenameSwapChar")]
  assert sorted(by_seed) == [0, 1]
  assert by_seed[1][0].entry_point == problems[0].entry_point + "_v1"
  assert by_seed[1][0].variant == "recode:func_name:FuncRenameSwapChar:1"
  assert released[("format", "new_line_afterdoc")][0][0].prompt.endswith('"""\n\n')
  assert recode.released.find_files(str(tmp_path / "humaneval" / "**" / "*.jsonl")) == sorted(
      str(p) for p in tmp_path.glob("humaneval/full/*/*.jsonl"))
  suites = recode.released.suites(released, problems)
  assert [p.task_id for p in suites[("format", "new_line_afterdoc")][0]] == [problems[0].task_id]
  assert [p.task_id for p in suites[("nlaugmenter", "Identity")][0]] == [problems[1].task_id]
  (tmp_path / "bad.jsonl").write_text(json.dumps({"task_id": "HumanEval/0"}) + "\n")
  with pytest.raises(ValueError, match="lacks prompt, entry_point, test"):
    recode.released.load(str(tmp_path / "bad.jsonl"))
  with pytest.raises(FileNotFoundError):
    recode.released.load(str(tmp_path / "nothing*.jsonl"))


def test_released_metrics_beside_nominal(tmp_path, humaneval):
  problems = humaneval[:2]
  write_released(tmp_path, problems)
  released = recode.released.load(str(tmp_path))

  def renamed_wrong_on_seed_1(ps):  # right everywhere but on seed 1's renamed prompts
    return [["    return None\n" if p.variant.endswith(":1") else p.canonical_solution]
            for p in ps]

  out = recode.released.evaluate_released(problems, released, renamed_wrong_on_seed_1,
                                          limits=FAST)
  swap = out["perturbations"]["func_name/FuncRenameSwapChar"]
  assert swap["num_problems"] == 2 and swap["num_seeds"] == 2
  assert swap["nominal_pass@1"] == 1.0 and swap["robust_pass@1"] == 0.0
  assert swap["per_seed_pass@1"] == [1.0, 0.0] and swap["attack_success"] == 1.0
  tab = out["perturbations"]["format/new_line_afterdoc"]
  assert tab["num_problems"] == 1 and tab["robust_pass@1"] == 1.0
  assert out["categories"]["func_name"] == {"perturbations": 1, "mean_nominal_pass@1": 1.0,
                                            "mean_robust_pass@1": 0.0}


def test_recode_task_reports_released_beside_ours(tmp_path, monkeypatch, humaneval):
  problems = humaneval[:2]
  write_released(tmp_path, problems)
  c = small_config(**{"eval.tasks": "recode", "eval.num_problems": 2, "eval.recode_seeds": 1,
                      "eval.recode_families": "func_name", "eval.recode_path": str(tmp_path)})
  validation.validate(c)
  prompts = []

  def fake(graphdef, params, ps, cfg, batch_size=8, mesh=None, rules=None, **kw):
    del graphdef, params, batch_size, mesh, rules, kw
    prompts.append(len(ps))
    solutions = {p.prompt: p.canonical_solution for p in problems}
    return [[solutions.get(p.decode(), "    return None\n")] * cfg.n for p in ps]

  monkeypatch.setattr(generate, "generate", fake)
  res = eval_run.run_tasks(eval_run.Context(c, None, None, 1), ["recode"], None)["recode"]
  assert len(prompts) == 1  # ours and the released prompts decoded in one batched pass
  assert res["nominal_pass@1"] == 1.0 and "func_name" in res["families"]
  released = res["released"]
  assert released["path"] == str(tmp_path)
  assert set(released["perturbations"]) == {"func_name/FuncRenameSwapChar",
                                            "format/new_line_afterdoc", "nlaugmenter/Identity"}
  # Only the unperturbed prompts are known to the stand-in: the renames all fail, the
  # identity passes.
  assert released["perturbations"]["func_name/FuncRenameSwapChar"]["robust_pass@1"] == 0.0
  assert released["perturbations"]["nlaugmenter/Identity"]["robust_pass@1"] == 1.0
  c.eval.recode_path = str(tmp_path / "missing")
  with pytest.raises(ConfigError, match="eval.recode_path"):
    validation.validate(c)
