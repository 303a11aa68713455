"""Perturbation family ``docstring``: paraphrase the prose lines of the docstring.

Synonym substitution, case changes, keyboard typos, extra spaces,
contractions. Doctest examples, lines that look like code, quoted text and
every word that is an identifier anywhere in the problem are never touched.
"""

from __future__ import annotations

import keyword
import random
import re
from typing import Callable

from proxyjax.eval.recode import doctext, source

Problem = source.Problem

FAMILY = "docstring"

_SYNONYMS = {
    "given": "provided", "provided": "given", "return": "output", "returns": "outputs",
    "find": "determine", "determine": "find", "check": "verify", "checks": "verifies",
    "write": "create", "create": "construct", "takes": "accepts", "take": "accept",
    "contains": "includes", "contain": "include", "containing": "including", "each": "every",
    "whether": "if", "also": "additionally", "only": "solely", "should": "must",
    "example": "instance", "examples": "instances", "note": "remark", "otherwise": "else",
    "largest": "biggest", "biggest": "largest", "greatest": "largest", "function": "routine",
    "compute": "calculate", "calculate": "compute", "get": "obtain", "make": "produce",
    "task": "job", "assume": "suppose", "always": "invariably", "entire": "whole",
    "whole": "entire", "begin": "start", "begins": "starts", "start": "begin", "starts": "begins",
    "big": "large", "large": "big", "small": "little", "similar": "alike", "same": "identical",
    "appears": "occurs", "appear": "occur", "occurs": "appears", "occur": "appear",
    "means": "signifies", "consider": "regard", "imagine": "picture", "want": "wish",
    "need": "have", "maximum": "largest", "minimum": "smallest", "after": "following",
    "separated": "delimited", "input": "argument", "specified": "given",
}
_CONTRACTIONS = (("do not", "don't"), ("does not", "doesn't"), ("is not", "isn't"),
                 ("are not", "aren't"), ("cannot", "can't"), ("it is", "it's"),
                 ("you are", "you're"), ("will not", "won't"), ("should not", "shouldn't"),
                 ("there is", "there's"), ("that is", "that's"), ("we are", "we're"),
                 ("has not", "hasn't"), ("have not", "haven't"))

Word = tuple[int, int, str]  # (start, end, word) in the docstring body


def _protected_words(problem: Problem) -> set[str]:
  """Identifiers of the problem's code (keywords other than True/False/None are
  English words in prose and stay editable)."""
  names = source.code_names(problem) - set(keyword.kwlist)
  return names | {problem.entry_point, "True", "False", "None"}


def _words_op(fn: Callable[[list[Word], random.Random], list[Word]]) -> source.Op:
  """A rewrite that edits words of the prose: ``fn(words, rng)`` -> (start, end, new) edits."""
  def make_edit(p, rng):
    protected = _protected_words(p)

    def edit(body):
      words = doctext.prose_words(body, protected)
      return source.replace_spans(body, fn(words, rng)) if words else body

    return edit
  return doctext.body_op(make_edit)


def _pick(rng: random.Random, items: list, most: int) -> list:
  if not items:
    return []
  return rng.sample(items, k=rng.randint(1, min(most, len(items))))


def _synonyms(words, rng):
  cands = [w for w in words if w[2].lower() in _SYNONYMS]
  return [(a, b, doctext.match_case(w, _SYNONYMS[w.lower()])) for a, b, w in _pick(rng, cands, 4)]


def _case(words, rng):
  cands = [w for w in words if len(w[2]) > 1]
  out = []
  for a, b, w in _pick(rng, cands, 3):
    style = rng.choice(("upper", "title", "lower"))
    new = w.upper() if style == "upper" else (w.capitalize() if style == "title" else w.lower())
    if new == w:
      new = w.swapcase()
    out.append((a, b, new))
  return out


def _typos(words, rng):
  cands = [w for w in words if len(w[2]) >= 4]
  out = []
  for a, b, w in _pick(rng, cands, 2):
    i = rng.randrange(1, len(w) - 1)
    c = w[i].lower()
    typo = doctext.match_case(w[i], rng.choice(doctext.KEYBOARD.get(c, c)))
    out.append((a, b, w[:i] + typo + w[i + 1:]))
  return out


def _spaces(words, rng):
  return [(a, a, " ") for a, _, _ in _pick(rng, words[1:], 3)]


def _contractions(p, parsed, rng):
  del rng
  lit = doctext.doc_literal(p, parsed)
  if lit is None:
    return None

  def edit(body):
    text = doctext.prose_text(body)
    expand = any(re.search(rf"\b{re.escape(short)}\b", text, re.I) for _, short in _CONTRACTIONS)
    if not expand and "'" in lit.tail:
      return body

    def rewrite(line, spans):
      for long, short in _CONTRACTIONS:
        src, dst = (short, long) if expand else (long, short)

        def sub(mt, dst=dst):
          if doctext.inside(spans, mt.start()):
            return mt.group(0)
          return doctext.match_case(mt.group(0), dst)

        line = re.sub(rf"(?<![\w']){re.escape(src)}(?![\w'])", sub, line, flags=re.I)
      return line

    return doctext.map_prose_lines(body, rewrite)

  return doctext.with_doc_body(p, parsed, edit)


OPS: dict[str, source.Op] = {
    "synonyms": _words_op(_synonyms), "case": _words_op(_case), "typos": _words_op(_typos),
    "spaces": _words_op(_spaces), "contractions": _contractions}
