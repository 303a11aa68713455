"""Source helpers of the ReCode perturbations (no randomness here).

Positions (ast line/UTF-8 column -> character offsets), where the entry
function and its docstring are in a prompt, whether a perturbed problem is
still valid, and token-level renaming through prompt, solution and tests.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import io
import keyword
import random
import re
import tokenize
from typing import Callable, Iterable

from proxyjax.eval import codegen

Problem = codegen.Problem

RESERVED = (set(keyword.kwlist) | set(getattr(keyword, "softkwlist", ())) | set(dir(builtins))
            | {"check", "candidate", "METADATA"})
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")

# ---------------------------------------------------------------------------
# Positions.


def line_starts(text: str) -> list[int]:
  return [0] + [m.end() for m in re.finditer("\n", text)]


class Offsets:
  """ast positions (1-based line, UTF-8 byte column) -> character offsets into ``text``."""

  def __init__(self, text: str):
    self.text = text
    self.starts = line_starts(text)

  def at(self, lineno: int, col_bytes: int) -> int:
    line_start = self.starts[lineno - 1]
    line_end = self.starts[lineno] if lineno < len(self.starts) else len(self.text)
    line = self.text[line_start:line_end]
    return line_start + len(line.encode("utf-8")[:col_bytes].decode("utf-8", "ignore"))

  def start(self, node: ast.AST) -> int:
    return self.at(node.lineno, node.col_offset)

  def end(self, node: ast.AST) -> int:
    return self.at(node.end_lineno, node.end_col_offset)

  def line_start(self, lineno: int) -> int:
    return self.starts[lineno - 1]


def all_args(fn: ast.FunctionDef) -> list[ast.arg]:
  """Every parameter of ``fn`` in signature order (``*args``, ``**kwargs`` last)."""
  a = fn.args
  return a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x is not None]


# ---------------------------------------------------------------------------
# Parsing a prompt.


@dataclasses.dataclass
class Parsed:
  """Where things are in a prompt (character offsets)."""
  tree: ast.Module
  fn: ast.FunctionDef | None  # the entry function (None for MBPP docstring prompts)
  def_start: int  # start of the entry's ``def`` line (0 without one)
  doc: tuple[int, int] | None  # the docstring literal, quotes included
  body_indent: str


# A rewrite: (problem, its parsed prompt, a seeded rng) -> the rewritten problem,
# or None when it does not apply.
Op = Callable[[Problem, Parsed, random.Random], "Problem | None"]


def parse(problem: Problem) -> Parsed | None:
  prompt = problem.prompt
  try:
    tree = ast.parse(prompt)
  except SyntaxError:
    return None
  pos = Offsets(prompt)
  fn = None
  for node in tree.body:
    if isinstance(node, ast.FunctionDef) and node.name == problem.entry_point:
      fn = node
  body = fn.body if fn is not None else tree.body
  doc_node = next((s for s in body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                   and isinstance(s.value.value, str)), None)
  doc = None
  indent = "    "
  if doc_node is not None:
    v = doc_node.value
    doc = (pos.start(v), pos.end(v))
    indent = prompt[pos.line_start(v.lineno):doc[0]]
    if indent.strip():
      indent = "    "
  def_start = pos.line_start(fn.lineno) if fn is not None else 0
  return Parsed(tree, fn, def_start, doc, indent)


def split_literal(lit: str) -> tuple[str, str, str]:
  """A string literal's source -> (prefix + opening quotes, body, closing quotes)."""
  m = re.match(r"([rRuUbBfF]*)(\"\"\"|'''|\"|')", lit)
  if not m:
    raise ValueError("not a string literal")
  q = m.group(2)
  return lit[:m.end()], lit[m.end():len(lit) - len(q)], q


# ---------------------------------------------------------------------------
# Validity and names.


@functools.lru_cache(maxsize=4096)
def _compiles(source: str) -> bool:
  try:
    compile(source, "<perturbed>", "exec")
  except (SyntaxError, ValueError):
    return False
  return True


def valid(problem: Problem) -> bool:
  """The prompt parses, defines the entry point, and the canonical program compiles."""
  sources = [problem.prompt + problem.canonical_solution, *problem.test_list, problem.test]
  if not all(_compiles(src) for src in sources):
    return False
  try:
    tree = ast.parse(problem.prompt)
  except (SyntaxError, ValueError):
    return False
  has_def = any(isinstance(n, ast.FunctionDef) and n.name == problem.entry_point
                for n in tree.body)
  if not has_def:  # MBPP-style prompts: the solution defines it
    has_def = re.search(rf"^def\s+{re.escape(problem.entry_point)}\s*\(",
                        problem.canonical_solution, flags=re.M) is not None
  return has_def and problem.prompt.endswith("\n")


def _texts(problem: Problem) -> list[str]:
  """The problem's code: prompt + solution (one program), the tests."""
  return [problem.prompt + problem.canonical_solution, problem.test, problem.test_setup,
          *problem.test_list]


def code_names(problem: Problem) -> set[str]:
  """Every NAME token of the problem's code (identifiers, keywords)."""
  names = set()
  for text in _texts(problem):
    try:
      names.update(name_tokens(text))
    except (tokenize.TokenError, IndentationError, SyntaxError):
      names.update(IDENTIFIER.findall(text))
  return names


def fresh(name: str, problem: Problem) -> bool:
  """``name`` is a free identifier: not reserved, no word anywhere in the problem."""
  texts = [problem.prompt, problem.canonical_solution, problem.test, problem.test_setup,
           *problem.test_list]
  words = set(IDENTIFIER.findall("\n".join(texts)))
  return (name.isidentifier() and not keyword.iskeyword(name) and name not in RESERVED
          and name not in words)


# ---------------------------------------------------------------------------
# Token-level renaming.


@functools.lru_cache(maxsize=1024)
def name_tokens(source: str) -> dict[str, tuple[int, ...]]:
  """Character offsets of every NAME token that is not an attribute, by name."""
  starts = line_starts(source)
  found: dict[str, list[int]] = {}
  prev = None
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if (tok.type == tokenize.NAME
        and not (prev is not None and prev.type == tokenize.OP and prev.string == ".")):
      found.setdefault(tok.string, []).append(starts[tok.start[0] - 1] + tok.start[1])
    if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT,
                        tokenize.DEDENT):
      prev = tok
  return {k: tuple(v) for k, v in found.items()}


def rename_tokens(source: str, old: str, new: str, start: int = 0) -> str:
  """Renames NAME tokens ``old`` at offsets >= ``start`` (attributes are left alone)."""
  for off in reversed([o for o in name_tokens(source).get(old, ()) if o >= start]):
    source = source[:off] + new + source[off + len(old):]
  return source


def _rename_program(prompt: str, solution: str, old: str, new: str,
                    start: int = 0) -> tuple[str, str]:
  """Renames in ``prompt + solution`` (tokenized together) and splits them back."""
  joined = prompt + solution
  in_prompt = [o for o in name_tokens(joined).get(old, ()) if start <= o < len(prompt)]
  renamed = rename_tokens(joined, old, new, start)
  cut = len(prompt) + len(in_prompt) * (len(new) - len(old))
  return renamed[:cut], renamed[cut:]


def rename_everywhere(problem: Problem, old: str, new: str, start: int = 0) -> Problem:
  """Renames ``old`` in the code of prompt (from ``start``), solution and tests."""
  prompt, solution = _rename_program(problem.prompt, problem.canonical_solution, old, new, start)
  test = rename_tokens(problem.test, old, new) if problem.test else problem.test
  setup = rename_tokens(problem.test_setup, old, new) if problem.test_setup else ""
  test_list = tuple(rename_tokens(t, old, new) for t in problem.test_list)
  return dataclasses.replace(problem, prompt=prompt, canonical_solution=solution, test=test,
                             test_setup=setup, test_list=test_list)


def replace_spans(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
  """Applies ``(start, end, new)`` edits (non-overlapping) to ``text``."""
  for a, b, new in sorted(edits, reverse=True):
    text = text[:a] + new + text[b:]
  return text
