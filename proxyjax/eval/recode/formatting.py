"""Perturbation family ``format``: layout only.

The docstring re-indented, dedented or tab-indented, blank lines inserted,
trailing whitespace, the signature split after ``(``, the docstring's quotes
switched between ``\"\"\"`` and ``'''``.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Callable

from proxyjax.eval.recode import doctext, source

FAMILY = "format"


def _doc_lines_op(fn: Callable[[list[str], random.Random], list[str] | None]) -> source.Op:
  """A rewrite of the docstring body's continuation lines (string content only)."""
  def make_edit(p, rng):
    del p
    def edit(body):
      lines = body.split("\n")
      if len(lines) < 2:
        return body
      new = fn(lines[1:], rng)
      return body if new is None else "\n".join([lines[0]] + new)
    return edit
  return doctext.body_op(make_edit)


def _reindent(lines, rng):
  extra = " " * rng.choice((1, 2, 3, 4, 6))
  return [(extra + ln) if ln.strip() or i == len(lines) - 1 else ln for i, ln in enumerate(lines)]


def _dedent(lines, rng):
  del rng
  widths = [len(ln) - len(ln.lstrip(" ")) for ln in lines if ln.strip()]
  cut = min(widths) if widths else 0
  if cut == 0:
    return None
  return [ln[cut:] if ln[:cut].strip() == "" else ln.lstrip(" ") for ln in lines]


def _tabs(lines, rng):
  del rng
  out = []
  for ln in lines:
    m = re.match(r"^( {4})+", ln)
    out.append("\t" * (len(m.group(0)) // 4) + ln[m.end():] if m else ln)
  return out if out != lines else None


def _blank_lines(p, parsed, rng):
  places = []
  prompt = p.prompt
  lit = doctext.doc_literal(p, parsed)
  if parsed.fn is not None:
    places.append(parsed.def_start)  # before the def line
    header_end = prompt.find("\n", parsed.def_start)
    if lit is not None:
      header_end = prompt.rfind("\n", 0, lit.start)
    if header_end >= 0:
      places.append(header_end + 1)  # between the signature and the docstring
  if lit is not None:
    first_nl = lit.body.find("\n")
    if first_nl >= 0:
      places.append(lit.start + len(lit.head) + first_nl + 1)  # inside the docstring, after line 1
  if not places:
    return None
  chosen = sorted(set(rng.sample(places, k=rng.randint(1, len(places)))), reverse=True)
  for at in chosen:
    prompt = prompt[:at] + "\n" + prompt[at:]
  return dataclasses.replace(p, prompt=prompt)


def _trailing_ws(p, parsed, rng):
  del parsed
  lines = p.prompt.split("\n")
  idx = [i for i, ln in enumerate(lines[:-1]) if ln.strip() and not ln.rstrip().endswith("\\")]
  if not idx:
    return None
  chosen = set(rng.sample(idx, k=max(1, len(idx) // rng.choice((2, 3, 4)))))
  pad = rng.choice((" ", "  ", "   ", "\t"))
  return dataclasses.replace(p, prompt="\n".join(ln + pad if i in chosen else ln
                                                 for i, ln in enumerate(lines)))


def _split_signature(p, parsed, rng):
  del rng
  fn = parsed.fn
  if fn is None or not source.all_args(fn):
    return None
  prompt = p.prompt
  at = source.Offsets(prompt).start(fn)
  m = re.compile(rf"def\s+{re.escape(fn.name)}\s*\(").match(prompt, at)
  if not m:
    return None
  indent = prompt[parsed.def_start:at]
  return dataclasses.replace(p, prompt=prompt[:m.end()] + "\n" + indent + parsed.body_indent * 2
                             + prompt[m.end():])


def _doc_quotes(p, parsed, rng):
  del rng
  lit = doctext.doc_literal(p, parsed)
  if lit is None or lit.tail not in ('"""', "'''"):
    return None
  new_q = "'''" if lit.tail == '"""' else '"""'
  body = lit.body
  if new_q[0] in body[-1:] or new_q in body or "\\" in body[-1:]:
    return None
  head = lit.head[:-3] + new_q
  return dataclasses.replace(p, prompt=p.prompt[:lit.start] + head + body + new_q
                             + p.prompt[lit.end:])


OPS: dict[str, source.Op] = {
    "doc_indent": _doc_lines_op(_reindent), "doc_dedent": _doc_lines_op(_dedent),
    "doc_tabs": _doc_lines_op(_tabs), "blank_lines": _blank_lines, "trailing_ws": _trailing_ws,
    "split_signature": _split_signature, "doc_quotes": _doc_quotes}
