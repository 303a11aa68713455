"""A prompt's docstring as text: where its body is, which lines are prose, editing them.

Prose lines are the ones the perturbations may reword; doctest blocks and
code-like lines (``f(x) == y``, ``[1, 2]``, arrows) are examples and are kept,
as is quoted text inside a prose line. Also the word-level helpers the
function-name and docstring families share (case matching, keyboard typos).
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Callable, Sequence

from proxyjax.eval.recode import source

Problem = source.Problem

_CODE_LINE = re.compile(r"(==|=>|->|➞|→|>>>|[\[\]{}=|]|\w\(|^\s*\.\.\.)")
# Boundaries of an editable word: not inside an identifier, a quote, an
# escape, an attribute or a call.
_BEFORE_WORD = r"(?<![\w\\'\"`.])"
_AFTER_WORD = r"(?![\w'\"`(])"
_WORD = re.compile(_BEFORE_WORD + r"([A-Za-z]+)" + _AFTER_WORD)

# Neighbouring keys (QWERTY) for typos.
KEYBOARD = {
    "q": "wa", "w": "qes", "e": "wrd", "r": "etf", "t": "ryg", "y": "tuh", "u": "yij", "i": "uok",
    "o": "ipl", "p": "ol", "a": "qsz", "s": "adwx", "d": "sfec", "f": "dgrv", "g": "fhtb",
    "h": "gjyn", "j": "hkum", "k": "jlim", "l": "kop", "z": "asx", "x": "zcsd", "c": "xvdf",
    "v": "cbfg", "b": "vngh", "n": "bmhj", "m": "njk",
}


def match_case(template: str, word: str) -> str:
  """``word`` in the case of ``template`` (UPPER, Capitalized or as is)."""
  if template.isupper() and len(template) > 1:
    return word.upper()
  if template[:1].isupper():
    return word[:1].upper() + word[1:]
  return word


def word_pattern(word: str) -> re.Pattern:
  """``word`` as a whole prose word (the boundaries of editable words)."""
  return re.compile(_BEFORE_WORD + re.escape(word) + _AFTER_WORD)


# ---------------------------------------------------------------------------
# Prose lines.


def prose_mask(lines: Sequence[str]) -> list[bool]:
  """True for lines of plain prose; doctest blocks and code-like lines are False."""
  out = []
  in_doctest = False
  for line in lines:
    s = line.strip()
    if not s:
      in_doctest = False
      out.append(False)
    elif s.startswith(">>>"):
      in_doctest = True
      out.append(False)
    elif in_doctest or _CODE_LINE.search(s):
      out.append(False)
    else:
      out.append(True)
  return out


def protected_spans(line: str) -> list[tuple[int, int]]:
  """Quoted text in a prose line: 'x', "x", `x`."""
  return [(m.start(), m.end()) for m in re.finditer(r"(?<![\w])(['\"`])(.*?)\1(?!\w)", line)]


def inside(spans: Sequence[tuple[int, int]], at: int) -> bool:
  return any(s <= at < e for s, e in spans)


def prose_text(body: str) -> str:
  """The prose lines of a docstring body, joined."""
  lines = body.split("\n")
  return "\n".join(ln for ln, prose in zip(lines, prose_mask(lines)) if prose)


def map_prose_lines(body: str, fn: Callable[[str, list[tuple[int, int]]], str]) -> str:
  """``fn(line, quoted_spans)`` on every prose line of a docstring body; others kept."""
  lines = body.split("\n")
  return "\n".join(fn(line, protected_spans(line)) if prose else line
                   for line, prose in zip(lines, prose_mask(lines)))


def prose_words(body: str, protected: set[str]) -> list[tuple[int, int, str]]:
  """(start, end, word) of editable words in the prose lines of a docstring body."""
  out = []
  pos = 0
  lines = body.split("\n")
  for line, prose in zip(lines, prose_mask(lines)):
    if prose:
      spans = protected_spans(line)
      for m in _WORD.finditer(line):
        a, b = m.span(1)
        if inside(spans, a) or m.group(1) in protected:
          continue
        out.append((pos + a, pos + b, m.group(1)))
    pos += len(line) + 1
  return out


def prose_sub(body: str, pattern: re.Pattern, repl: str) -> str:
  """``pattern`` -> ``repl`` in the prose lines of a docstring body, outside quotes."""
  def sub(line, spans):
    edits = [(m.start(), m.end(), repl) for m in pattern.finditer(line)
             if not inside(spans, m.start())]
    return source.replace_spans(line, edits)
  return map_prose_lines(body, sub)


# ---------------------------------------------------------------------------
# The docstring literal of a prompt.


@dataclasses.dataclass(frozen=True)
class DocLiteral:
  """The docstring literal: its character span in the prompt and its parts."""
  start: int
  end: int
  head: str  # prefix + opening quotes
  body: str
  tail: str  # closing quotes


def doc_literal(problem: Problem, parsed: source.Parsed) -> DocLiteral | None:
  if parsed.doc is None:
    return None
  a, b = parsed.doc
  return DocLiteral(a, b, *source.split_literal(problem.prompt[a:b]))


def with_doc_body(problem: Problem, parsed: source.Parsed,
                  fn: Callable[[str], str]) -> Problem | None:
  """Applies ``fn`` to the docstring body (between the quotes); None if nothing changes."""
  lit = doc_literal(problem, parsed)
  if lit is None:
    return None
  new_body = fn(lit.body)
  if new_body == lit.body:
    return None
  prompt = problem.prompt
  return dataclasses.replace(problem, prompt=prompt[:lit.start] + lit.head + new_body + lit.tail
                             + prompt[lit.end:])


def rewrite_doc(problem: Problem, fn: Callable[[str], str]) -> Problem:
  """Re-parses ``problem`` and applies ``fn`` to its docstring body, if it has one."""
  parsed = source.parse(problem)
  if parsed is None:
    return problem
  return with_doc_body(problem, parsed, fn) or problem


def body_op(make_edit: Callable[[Problem, random.Random], Callable[[str], str]]) -> source.Op:
  """A rewrite that edits the docstring body with ``make_edit(problem, rng)``."""
  def op(p, parsed, rng):
    return with_doc_body(p, parsed, make_edit(p, rng))
  return op
