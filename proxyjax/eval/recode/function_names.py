"""Perturbation family ``func_name``: rename the entry point.

camelCase <-> snake_case, PascalCase, a synonym of one word, a prefix, a
suffix, a character typo, a vowel-dropping abbreviation. Every code reference
in the prompt, the canonical solution (recursion) and the tests is renamed,
as are identifier-looking mentions in the docstring; the problem's
``entry_point`` becomes the new name.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Callable

from proxyjax.eval.recode import doctext, source

Problem = source.Problem

FAMILY = "func_name"

_SYNONYMS = {
    "get": "fetch", "find": "search", "count": "tally", "check": "verify", "sum": "total",
    "total": "sum", "sort": "order", "sorted": "ordered", "max": "maximum", "min": "minimum",
    "maximum": "max", "minimum": "min", "num": "number", "number": "num", "numbers": "nums",
    "string": "text", "strings": "texts", "str": "text", "list": "array", "make": "build",
    "remove": "delete", "filter": "select", "split": "divide", "largest": "biggest",
    "smallest": "tiniest", "longest": "lengthiest", "word": "token", "words": "tokens",
    "char": "character", "chars": "characters", "len": "length", "length": "size",
    "add": "plus", "below": "under", "above": "over", "digits": "figures", "digit": "figure",
    "common": "shared", "unique": "distinct", "strange": "odd", "closest": "nearest",
    "correct": "valid", "valid": "correct", "fix": "repair", "all": "every", "parse": "read",
    "separate": "split", "similar": "alike", "compare": "contrast", "move": "shift",
    "encode": "encipher", "decode": "decipher", "first": "initial", "last": "final",
    "product": "prod", "even": "paired", "triangle": "trigon", "area": "surface",
    "vowels": "vowel_chars", "prime": "primal", "elements": "items", "element": "item",
    "close": "near", "has": "contains", "is": "check_is", "string_xor": "xor_strings",
}
_PREFIXES = ("get_", "compute_", "calc_", "do_", "func_", "my_", "solve_")
_SUFFIXES = ("_fn", "_func", "_impl", "_v2", "_helper", "_result")

# A rule: (old name, rng) -> a new name, or None when it does not apply.
Rule = Callable[[str, random.Random], "str | None"]


def _parts(name: str) -> list[str]:
  if "_" in name.strip("_"):
    return [p for p in name.split("_") if p]
  return [p.lower() for p in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)] or [name]


def _camel(name: str, rng: random.Random) -> str | None:
  del rng
  parts = _parts(name)
  if "_" in name.strip("_"):
    return parts[0].lower() + "".join(p[:1].upper() + p[1:] for p in parts[1:])
  if any(c.isupper() for c in name[1:]):
    return "_".join(parts)
  return None


def _pascal(name: str, rng: random.Random) -> str | None:
  del rng
  return "".join(p[:1].upper() + p[1:] for p in _parts(name))


def _synonym(name: str, rng: random.Random) -> str | None:
  if name in _SYNONYMS:
    return _SYNONYMS[name]
  parts = name.split("_")
  idx = [i for i, p in enumerate(parts) if p.lower() in _SYNONYMS]
  if not idx:
    return None
  i = rng.choice(idx)
  parts[i] = doctext.match_case(parts[i], _SYNONYMS[parts[i].lower()])
  return "_".join(parts)


def _prefix(name: str, rng: random.Random) -> str | None:
  return rng.choice(_PREFIXES) + name


def _suffix(name: str, rng: random.Random) -> str | None:
  return name + rng.choice(_SUFFIXES)


def _typo(name: str, rng: random.Random) -> str | None:
  spots = [i for i in range(1, len(name) - 2) if name[i].isalpha() and name[i + 1].isalpha()
           and name[i] != name[i + 1]]
  if not spots:
    return None
  i = rng.choice(spots)
  if rng.random() < 0.5:
    return name[:i] + name[i + 1] + name[i] + name[i + 2:]  # swap two letters
  c = name[i].lower()
  sub = rng.choice(doctext.KEYBOARD.get(c, c))
  return name[:i] + doctext.match_case(name[i], sub) + name[i + 1:]  # a neighbouring key


def _abbrev(name: str, rng: random.Random) -> str | None:
  del rng
  parts = name.split("_")
  longest = max(range(len(parts)), key=lambda i: len(parts[i]))
  p = parts[longest]
  if len(p) < 5:
    return None
  parts[longest] = p[0] + re.sub(r"[aeiouAEIOU]", "", p[1:])
  return "_".join(parts)


def rename_entry(problem: Problem, new: str) -> Problem:
  """``problem`` with its entry point renamed to ``new`` everywhere."""
  old = problem.entry_point
  p = dataclasses.replace(source.rename_everywhere(problem, old, new), entry_point=new)
  identifier_like = "_" in old or any(c.isupper() for c in old)
  call_only = "" if identifier_like else r"(?=\s*\()"  # "median" the word stays
  pattern = re.compile(rf"(?<![\w\\]){re.escape(old)}(?!\w)" + call_only)
  return doctext.rewrite_doc(p, lambda body: pattern.sub(new, body))


def _rule_op(rule: Rule) -> source.Op:
  def op(p, parsed, rng):
    del parsed
    new = rule(p.entry_point, rng)
    if not new or new == p.entry_point or not source.fresh(new, p):
      return None
    return rename_entry(p, new)
  return op


OPS: dict[str, source.Op] = {
    name: _rule_op(rule) for name, rule in (
        ("camel", _camel), ("pascal", _pascal), ("synonym", _synonym), ("prefix", _prefix),
        ("suffix", _suffix), ("typo", _typo), ("abbrev", _abbrev))}
