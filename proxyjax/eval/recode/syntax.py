"""Perturbation family ``syntax``: code rewrites that keep the problem solvable.

Rename one or all parameters (throughout the function, the canonical solution
and the docstring's prose), drop type annotations, ``typing.List[...]`` ->
``list[...]``, switch the quotes of string literals in the docstring's
examples.
"""

from __future__ import annotations

import ast
import dataclasses
import random
import re

from proxyjax.eval.recode import doctext, source

Problem = source.Problem

FAMILY = "syntax"

_PARAM_SYNONYMS = {
    "numbers": "nums", "nums": "numbers", "string": "text", "strings": "texts", "text": "content",
    "txt": "text", "s": "text", "lst": "items", "l": "values", "arr": "array", "array": "arr",
    "n": "num", "x": "value", "y": "other", "a": "first", "b": "second", "c": "third",
    "k": "count", "word": "term", "words": "terms", "grid": "matrix", "num": "number",
    "number": "num", "values": "vals", "value": "val", "lst1": "first_list",
    "lst2": "second_list", "threshold": "limit", "delimeter": "separator", "substring": "pattern",
    "prefix": "start", "sentence": "phrase", "operations": "ops", "interval1": "first_interval",
    "interval2": "second_interval", "planet1": "first_planet", "planet2": "second_planet",
    "date": "date_text", "capacity": "bucket_size", "base": "radix", "h": "height",
    "w": "width", "m": "upper", "q": "items", "message": "msg", "paren_string": "parens",
    "music_string": "notes", "file_name": "filename", "class_name": "cls_name",
    "extensions": "exts", "game": "scores", "guess": "guesses", "decimal": "value",
    "xs": "coeffs", "d": "mapping", "dict": "mapping", "st": "text",
}
_PARAM_PATTERNS = ("{}_value", "input_{}", "the_{}", "{}_arg", "{}_in", "my_{}")
_GENERICS = {"List": "list", "Tuple": "tuple", "Dict": "dict", "Set": "set",
             "FrozenSet": "frozenset", "Type": "type"}
_QUOTED = re.compile(r"(['\"])([^'\"\n]*)\1")

# ---------------------------------------------------------------------------
# Parameter renaming.


def _renamable_params(problem: Problem, parsed: source.Parsed) -> list[str]:
  fn = parsed.fn
  if fn is None:
    return []
  params = [x.arg for x in source.all_args(fn)]
  try:
    full = ast.parse(problem.prompt + problem.canonical_solution)
    tests = [ast.parse(t) for t in (problem.test, problem.test_setup, *problem.test_list) if t]
  except SyntaxError:
    return []
  bad = set()
  for tree in [full, *tests]:
    for node in ast.walk(tree):
      if isinstance(node, ast.keyword) and node.arg:
        bad.add(node.arg)
      if isinstance(node, ast.Name) and node.id in ("locals", "vars", "eval", "exec", "globals"):
        return []
  for node in ast.walk(full):
    if isinstance(node, ast.JoinedStr):
      bad.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
  # Names of the prompt's code before the entry function (helpers, globals).
  before = set(source.IDENTIFIER.findall(problem.prompt[:parsed.def_start]))
  return [p for p in params if p not in bad and p not in before]


def _new_param_name(old: str, problem: Problem, rng: random.Random, taken: set[str]) -> str | None:
  options = []
  if old in _PARAM_SYNONYMS:
    options.append(_PARAM_SYNONYMS[old])
  options += [pat.format(old) for pat in rng.sample(_PARAM_PATTERNS, len(_PARAM_PATTERNS))]
  if rng.random() < 0.5:
    options = options[1:] + options[:1]
  for name in options:
    if name not in taken and source.fresh(name, problem):
      return name
  return None


def _rename_param(problem: Problem, parsed: source.Parsed, old: str, new: str) -> Problem:
  p = source.rename_everywhere(problem, old, new, start=parsed.def_start)
  # The tests call the function positionally (checked), so only the
  # function's own text changes; restore the tests to be safe.
  p = dataclasses.replace(p, test=problem.test, test_list=problem.test_list,
                          test_setup=problem.test_setup)
  # In the prose, rename only names that cannot be ordinary words (``lst1``,
  # ``paren_string``) and short ones (``l``, ``n``, ``xs``), never "a" / "I".
  if old in ("a", "i", "A", "I") or not (re.search(r"[_0-9A-Z]", old) or len(old) <= 2):
    return p
  pattern = doctext.word_pattern(old)
  return doctext.rewrite_doc(p, lambda body: doctext.prose_sub(body, pattern, new))


def _rename_one(p, parsed, rng):
  names = _renamable_params(p, parsed)
  if not names:
    return None
  old = rng.choice(names)
  new = _new_param_name(old, p, rng, set())
  return None if new is None else _rename_param(p, parsed, old, new)


def _rename_all(p, parsed, rng):
  names = _renamable_params(p, parsed)
  if len(names) < 2:
    return None
  taken: set[str] = set()
  for old in names:
    new = _new_param_name(old, p, rng, taken)
    if new is None:
      return None
    taken.add(new)
    p = _rename_param(p, source.parse(p), old, new)
  return p


# ---------------------------------------------------------------------------
# Annotations and literals.


def _edit_prompt(p, parsed, find_edits):
  """``p`` with the prompt spans ``find_edits(fn, pos)`` lists replaced (None: no edit)."""
  fn = parsed.fn
  if fn is None:
    return None
  prompt = p.prompt
  edits = find_edits(fn, source.Offsets(prompt))
  if not edits:
    return None
  return dataclasses.replace(p, prompt=source.replace_spans(prompt, edits))


def _strip_annotations(p, parsed, rng):
  del rng
  prompt = p.prompt

  def find_edits(fn, pos):
    edits = []
    for arg in source.all_args(fn):
      if arg.annotation is not None:
        edits.append((pos.start(arg) + len(arg.arg), pos.end(arg.annotation), ""))
    if fn.returns is not None:
      ret_end = pos.end(fn.returns)
      arrow = prompt.rfind("->", parsed.def_start, ret_end)
      close = prompt.rfind(")", parsed.def_start, arrow)
      if arrow < 0 or close < 0:
        return None
      edits.append((close + 1, ret_end, ""))
    return edits

  return _edit_prompt(p, parsed, find_edits)


def _builtin_generics(p, parsed, rng):
  del rng

  def find_edits(fn, pos):
    body_start = parsed.doc[0] if parsed.doc else pos.start(fn.body[0])
    edits = []
    for node in ast.walk(fn):
      if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
          and node.value.id in _GENERICS):
        at = pos.start(node.value)
        if at < body_start:
          edits.append((at, at + len(node.value.id), _GENERICS[node.value.id]))
    return edits

  return _edit_prompt(p, parsed, find_edits)


def _swap_quotes(m: re.Match) -> str:
  q, content = m.group(1), m.group(2)
  other = '"' if q == "'" else "'"
  if other in content or "\\" in content:
    return m.group(0)
  return other + content + other


def _example_quotes(p, parsed, rng):
  del rng
  lit = doctext.doc_literal(p, parsed)
  if lit is None:
    return None
  quote = lit.tail[0]

  def edit(body):
    lines = body.split("\n")
    # Blank lines are not prose and have no quotes to swap.
    new = "\n".join(line if prose else _QUOTED.sub(_swap_quotes, line)
                    for line, prose in zip(lines, doctext.prose_mask(lines)))
    if quote * 3 in new or new.endswith(quote):
      return body
    return new

  return doctext.with_doc_body(p, parsed, edit)


OPS: dict[str, source.Op] = {
    "rename_param": _rename_one, "rename_params": _rename_all,
    "strip_annotations": _strip_annotations, "builtin_generics": _builtin_generics,
    "example_quotes": _example_quotes}
