"""ReCode-style robustness: seeded prompt perturbations and robust pass@k.

Four families, each a set of semantics-preserving rewrites of a problem's
prompt (the model sees the perturbed prompt; the tests are unchanged except
where a rename must follow):

* ``func_name`` -- rename the entry point (camelCase/snake_case, PascalCase,
  synonym of a word, prefix, suffix, character typo, vowel-dropping
  abbreviation). Every code reference in the prompt, the canonical solution
  (recursion) and the tests is renamed, as are identifier-looking mentions in
  the docstring; the returned problem's ``entry_point`` is the new name.
* ``format`` -- layout only: docstring re-indented / dedented / tab-indented,
  blank lines inserted, trailing whitespace, the signature split after ``(``,
  docstring quotes switched between ``\"\"\"`` and ``'''``.
* ``syntax`` -- code rewrites that keep the prompt valid and the problem
  solvable: rename one or all parameters (throughout the function, the
  canonical solution and the docstring's prose), drop type annotations,
  ``typing.List[...]`` -> ``list[...]``, switch quotes of string literals in
  the docstring's examples.
* ``docstring`` -- paraphrase the prose lines of the docstring: synonym
  substitution, case changes, keyboard typos, extra spaces, contractions.
  Doctest examples, lines that look like code, quoted text and every word that
  is an identifier anywhere in the problem are never touched.

``perturb(problem, family, seed)`` is deterministic: the rewrite is chosen
from a per-problem order of the family's rewrites (seed ``s`` takes the
``s``-th, so different seeds give different rewrites as long as there are
enough) and its random choices come from ``random.Random`` keyed by
``(family, task_id, seed)``. Each result is checked: the prompt must parse,
``prompt + canonical_solution`` must compile, and the entry function must
still be there; a rewrite that fails is skipped for the next one, and a
problem no rewrite applies to comes back unchanged (``variant`` says so).

Metrics (``robust_metrics``): nominal pass@k; robust pass@k, where a sample
index counts as correct only if it is correct under every seed (worst of
``s``); the robust drop (relative, ReCode's definition, and absolute);
``robust_relative`` (the share of problem/sample pairs whose outcome changes
under some seed) and ``attack_success`` (the share of nominally correct ones
that some seed breaks).
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
from typing import Any, Callable, Iterable, Sequence

from proxyjax.eval import codegen
from proxyjax.eval import passk
from proxyjax.eval import sandbox

Problem = codegen.Problem

FAMILIES = ("func_name", "format", "syntax", "docstring")
DEFAULT_NUM_SEEDS = 5

_RESERVED = (set(keyword.kwlist) | set(getattr(keyword, "softkwlist", ())) | set(dir(builtins))
             | {"check", "candidate", "METADATA"})

# ---------------------------------------------------------------------------
# Source positions.


def _line_starts(text: str) -> list[int]:
  return [0] + [m.end() for m in re.finditer("\n", text)]


def _offset(text: str, starts: list[int], lineno: int, col_bytes: int) -> int:
  """ast (1-based line, UTF-8 byte column) -> character offset into ``text``."""
  line_start = starts[lineno - 1]
  line_end = starts[lineno] if lineno < len(starts) else len(text)
  line = text[line_start:line_end]
  return line_start + len(line.encode("utf-8")[:col_bytes].decode("utf-8", "ignore"))


@dataclasses.dataclass
class _Parsed:
  """Where things are in a prompt (character offsets)."""
  tree: ast.Module
  fn: ast.FunctionDef | None  # the entry function (None for MBPP docstring prompts)
  def_start: int  # start of the entry's ``def`` line (0 without one)
  doc: tuple[int, int] | None  # the docstring literal, quotes included
  body_indent: str


def _parse(problem: Problem) -> _Parsed | None:
  prompt = problem.prompt
  try:
    tree = ast.parse(prompt)
  except SyntaxError:
    return None
  starts = _line_starts(prompt)
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
    doc = (_offset(prompt, starts, v.lineno, v.col_offset),
           _offset(prompt, starts, v.end_lineno, v.end_col_offset))
    line_start = starts[v.lineno - 1]
    indent = prompt[line_start:doc[0]]
    if indent.strip():
      indent = "    "
  def_start = starts[fn.lineno - 1] if fn is not None else 0
  return _Parsed(tree, fn, def_start, doc, indent)


def _split_literal(lit: str) -> tuple[str, str, str]:
  """A string literal's source -> (prefix + opening quotes, body, closing quotes)."""
  m = re.match(r"([rRuUbBfF]*)(\"\"\"|'''|\"|')", lit)
  if not m:
    raise ValueError("not a string literal")
  q = m.group(2)
  return lit[:m.end()], lit[m.end():len(lit) - len(q)], q


@functools.lru_cache(maxsize=4096)
def _compiles(source: str) -> bool:
  try:
    compile(source, "<perturbed>", "exec")
  except (SyntaxError, ValueError):
    return False
  return True


def _valid(problem: Problem) -> bool:
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


def _words_in(problem: Problem) -> set[str]:
  texts = [problem.prompt, problem.canonical_solution, problem.test, problem.test_setup,
           *problem.test_list]
  return set(re.findall(r"[A-Za-z_]\w*", "\n".join(texts)))


def _code_names(problem: Problem) -> set[str]:
  """Every NAME token of the problem's code (identifiers, keywords)."""
  names = set()
  for text in (problem.prompt + problem.canonical_solution, problem.test, problem.test_setup,
               *problem.test_list):
    try:
      names.update(_name_tokens(text))
    except (tokenize.TokenError, IndentationError, SyntaxError):
      names.update(re.findall(r"[A-Za-z_]\w*", text))
  return names


def _fresh(name: str, problem: Problem) -> bool:
  return (name.isidentifier() and not keyword.iskeyword(name) and name not in _RESERVED
          and name not in _words_in(problem))


# ---------------------------------------------------------------------------
# Token-level renaming.


@functools.lru_cache(maxsize=1024)
def _name_tokens(source: str) -> dict[str, tuple[int, ...]]:
  """Character offsets of every NAME token that is not an attribute, by name."""
  starts = _line_starts(source)
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


def _rename_tokens(source: str, old: str, new: str, start: int = 0) -> str:
  """Renames NAME tokens ``old`` at offsets >= ``start`` (attributes are left alone)."""
  for off in reversed([o for o in _name_tokens(source).get(old, ()) if o >= start]):
    source = source[:off] + new + source[off + len(old):]
  return source


def _rename_program(prompt: str, solution: str, old: str, new: str,
                    start: int = 0) -> tuple[str, str]:
  """Renames in ``prompt + solution`` (tokenized together) and splits them back."""
  joined = prompt + solution
  in_prompt = [o for o in _name_tokens(joined).get(old, ()) if start <= o < len(prompt)]
  renamed = _rename_tokens(joined, old, new, start)
  cut = len(prompt) + len(in_prompt) * (len(new) - len(old))
  return renamed[:cut], renamed[cut:]


def _rename_everywhere(problem: Problem, old: str, new: str, start: int = 0) -> Problem:
  prompt, solution = _rename_program(problem.prompt, problem.canonical_solution, old, new, start)
  test = _rename_tokens(problem.test, old, new) if problem.test else problem.test
  setup = _rename_tokens(problem.test_setup, old, new) if problem.test_setup else ""
  test_list = tuple(_rename_tokens(t, old, new) for t in problem.test_list)
  return dataclasses.replace(problem, prompt=prompt, canonical_solution=solution, test=test,
                             test_setup=setup, test_list=test_list)


# ---------------------------------------------------------------------------
# Docstring lines: prose vs. examples.

_CODE_LINE = re.compile(r"(==|=>|->|➞|→|>>>|[\[\]{}=|]|\w\(|^\s*\.\.\.)")


def _prose_mask(lines: Sequence[str]) -> list[bool]:
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


def _protected_spans(line: str) -> list[tuple[int, int]]:
  """Quoted text in a prose line: 'x', "x", `x`."""
  spans = []
  for m in re.finditer(r"(?<![\w])(['\"`])(.*?)\1(?!\w)", line):
    spans.append((m.start(), m.end()))
  return spans


_WORD = re.compile(r"(?<![\w\\'\"`.])([A-Za-z]+)(?![\w'\"`(])")


def _prose_words(body: str, protected: set[str]) -> list[tuple[int, int, str]]:
  """(start, end, word) of editable words in the prose lines of a docstring body."""
  out = []
  pos = 0
  lines = body.split("\n")
  for line, prose in zip(lines, _prose_mask(lines)):
    if prose:
      spans = _protected_spans(line)
      for m in _WORD.finditer(line):
        a, b = m.span(1)
        if any(s <= a < e for s, e in spans) or m.group(1) in protected:
          continue
        out.append((pos + a, pos + b, m.group(1)))
    pos += len(line) + 1
  return out


def _prose_sub(body: str, pattern: re.Pattern, repl: str) -> str:
  """``pattern`` -> ``repl`` in the prose lines of a docstring body, outside quotes."""
  lines = body.split("\n")
  out = []
  for line, prose in zip(lines, _prose_mask(lines)):
    if prose:
      spans = _protected_spans(line)
      edits = [(m.start(), m.end(), repl) for m in pattern.finditer(line)
               if not any(s <= m.start() < e for s, e in spans)]
      line = _replace_spans(line, edits)
    out.append(line)
  return "\n".join(out)


def _replace_spans(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
  for a, b, new in sorted(edits, reverse=True):
    text = text[:a] + new + text[b:]
  return text


def _match_case(template: str, word: str) -> str:
  if template.isupper() and len(template) > 1:
    return word.upper()
  if template[:1].isupper():
    return word[:1].upper() + word[1:]
  return word


def _with_doc_body(problem: Problem, parsed: _Parsed, fn: Callable[[str], str]) -> Problem | None:
  """Applies ``fn`` to the docstring body (between the quotes)."""
  if parsed.doc is None:
    return None
  a, b = parsed.doc
  head, body, tail = _split_literal(problem.prompt[a:b])
  new_body = fn(body)
  if new_body == body:
    return None
  return dataclasses.replace(problem, prompt=problem.prompt[:a] + head + new_body + tail
                             + problem.prompt[b:])


# ---------------------------------------------------------------------------
# Family: function name.

_NAME_SYNONYMS = {
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
_KEYBOARD = {
    "q": "wa", "w": "qes", "e": "wrd", "r": "etf", "t": "ryg", "y": "tuh", "u": "yij", "i": "uok",
    "o": "ipl", "p": "ol", "a": "qsz", "s": "adwx", "d": "sfec", "f": "dgrv", "g": "fhtb",
    "h": "gjyn", "j": "hkum", "k": "jlim", "l": "kop", "z": "asx", "x": "zcsd", "c": "xvdf",
    "v": "cbfg", "b": "vngh", "n": "bmhj", "m": "njk",
}


def _parts(name: str) -> list[str]:
  if "_" in name.strip("_"):
    return [p for p in name.split("_") if p]
  return [p.lower() for p in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)] or [name]


def _fn_camel(name: str, rng: random.Random) -> str | None:
  del rng
  parts = _parts(name)
  if "_" in name.strip("_"):
    return parts[0].lower() + "".join(p[:1].upper() + p[1:] for p in parts[1:])
  if any(c.isupper() for c in name[1:]):
    return "_".join(parts)
  return None


def _fn_pascal(name: str, rng: random.Random) -> str | None:
  del rng
  return "".join(p[:1].upper() + p[1:] for p in _parts(name))


def _fn_synonym(name: str, rng: random.Random) -> str | None:
  if name in _NAME_SYNONYMS:
    return _NAME_SYNONYMS[name]
  parts = name.split("_")
  idx = [i for i, p in enumerate(parts) if p.lower() in _NAME_SYNONYMS]
  if not idx:
    return None
  i = rng.choice(idx)
  parts[i] = _match_case(parts[i], _NAME_SYNONYMS[parts[i].lower()])
  return "_".join(parts)


def _fn_prefix(name: str, rng: random.Random) -> str | None:
  return rng.choice(_PREFIXES) + name


def _fn_suffix(name: str, rng: random.Random) -> str | None:
  return name + rng.choice(_SUFFIXES)


def _fn_typo(name: str, rng: random.Random) -> str | None:
  spots = [i for i in range(1, len(name) - 2) if name[i].isalpha() and name[i + 1].isalpha()
           and name[i] != name[i + 1]]
  if not spots:
    return None
  i = rng.choice(spots)
  if rng.random() < 0.5:
    return name[:i] + name[i + 1] + name[i] + name[i + 2:]  # swap two letters
  c = name[i].lower()
  sub = rng.choice(_KEYBOARD.get(c, c))
  return name[:i] + _match_case(name[i], sub) + name[i + 1:]  # a neighbouring key


def _fn_abbrev(name: str, rng: random.Random) -> str | None:
  del rng
  parts = name.split("_")
  longest = max(range(len(parts)), key=lambda i: len(parts[i]))
  p = parts[longest]
  if len(p) < 5:
    return None
  parts[longest] = p[0] + re.sub(r"[aeiouAEIOU]", "", p[1:])
  return "_".join(parts)


_NAME_RULES = {"camel": _fn_camel, "pascal": _fn_pascal, "synonym": _fn_synonym,
               "prefix": _fn_prefix, "suffix": _fn_suffix, "typo": _fn_typo,
               "abbrev": _fn_abbrev}


def _rename_entry(problem: Problem, new: str) -> Problem:
  old = problem.entry_point
  p = dataclasses.replace(_rename_everywhere(problem, old, new), entry_point=new)
  parsed = _parse(p)
  identifier_like = "_" in old or any(c.isupper() for c in old)
  call_only = "" if identifier_like else r"(?=\s*\()"  # "median" the word stays
  pattern = re.compile(rf"(?<![\w\\]){re.escape(old)}(?!\w)" + call_only)
  if parsed is not None and parsed.doc is not None:
    p = _with_doc_body(p, parsed, lambda body: pattern.sub(new, body)) or p
  return p


def _func_name_ops(problem: Problem) -> dict[str, Callable[[Problem, _Parsed, random.Random],
                                                          Problem | None]]:
  def make(rule):
    def op(p, parsed, rng):
      del parsed
      new = rule(p.entry_point, rng)
      if not new or new == p.entry_point or not _fresh(new, p):
        return None
      return _rename_entry(p, new)
    return op
  return {name: make(rule) for name, rule in _NAME_RULES.items()}


# ---------------------------------------------------------------------------
# Family: format.


def _doc_lines_op(fn: Callable[[list[str], random.Random], list[str] | None]):
  """An op on the docstring body's continuation lines (string content only)."""
  def op(p, parsed, rng):
    def edit(body):
      lines = body.split("\n")
      if len(lines) < 2:
        return body
      new = fn(lines[1:], rng)
      return body if new is None else "\n".join([lines[0]] + new)
    return _with_doc_body(p, parsed, edit)
  return op


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


def _fmt_blank_lines(p, parsed, rng):
  places = []
  prompt = p.prompt
  if parsed.fn is not None:
    places.append(parsed.def_start)  # before the def line
    header_end = prompt.find("\n", _offset(prompt, _line_starts(prompt), parsed.fn.lineno, 0))
    if parsed.doc is not None:
      header_end = prompt.rfind("\n", 0, parsed.doc[0])
    if header_end >= 0:
      places.append(header_end + 1)  # between the signature and the docstring
  if parsed.doc is not None:
    a, b = parsed.doc
    head, body, _ = _split_literal(prompt[a:b])
    first_nl = body.find("\n")
    if first_nl >= 0:
      places.append(a + len(head) + first_nl + 1)  # inside the docstring, after line 1
  if not places:
    return None
  chosen = sorted(set(rng.sample(places, k=rng.randint(1, len(places)))), reverse=True)
  for at in chosen:
    prompt = prompt[:at] + "\n" + prompt[at:]
  return dataclasses.replace(p, prompt=prompt)


def _fmt_trailing_ws(p, parsed, rng):
  del parsed
  lines = p.prompt.split("\n")
  idx = [i for i, ln in enumerate(lines[:-1]) if ln.strip() and not ln.rstrip().endswith("\\")]
  if not idx:
    return None
  chosen = set(rng.sample(idx, k=max(1, len(idx) // rng.choice((2, 3, 4)))))
  pad = rng.choice((" ", "  ", "   ", "\t"))
  return dataclasses.replace(p, prompt="\n".join(ln + pad if i in chosen else ln
                                                 for i, ln in enumerate(lines)))


def _fmt_split_signature(p, parsed, rng):
  del rng
  fn = parsed.fn
  if fn is None or not (fn.args.args or fn.args.posonlyargs or fn.args.kwonlyargs
                        or fn.args.vararg or fn.args.kwarg):
    return None
  prompt = p.prompt
  at = _offset(prompt, _line_starts(prompt), fn.lineno, fn.col_offset)
  m = re.compile(rf"def\s+{re.escape(fn.name)}\s*\(").match(prompt, at)
  if not m:
    return None
  indent = prompt[parsed.def_start:at]
  return dataclasses.replace(p, prompt=prompt[:m.end()] + "\n" + indent + parsed.body_indent * 2
                             + prompt[m.end():])


def _fmt_quotes(p, parsed, rng):
  del rng
  if parsed.doc is None:
    return None
  a, b = parsed.doc
  head, body, tail = _split_literal(p.prompt[a:b])
  if tail not in ('"""', "'''"):
    return None
  new_q = "'''" if tail == '"""' else '"""'
  if new_q[0] in body[-1:] or new_q in body or "\\" in body[-1:]:
    return None
  head = head[:-3] + new_q
  return dataclasses.replace(p, prompt=p.prompt[:a] + head + body + new_q + p.prompt[b:])


def _format_ops(problem: Problem):
  del problem
  return {"doc_indent": _doc_lines_op(_reindent), "doc_dedent": _doc_lines_op(_dedent),
          "doc_tabs": _doc_lines_op(_tabs), "blank_lines": _fmt_blank_lines,
          "trailing_ws": _fmt_trailing_ws, "split_signature": _fmt_split_signature,
          "doc_quotes": _fmt_quotes}


# ---------------------------------------------------------------------------
# Family: syntax.

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


def _renamable_params(problem: Problem, parsed: _Parsed) -> list[str]:
  fn = parsed.fn
  if fn is None:
    return []
  a = fn.args
  params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
  params += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
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
  before = set(re.findall(r"[A-Za-z_]\w*", problem.prompt[:parsed.def_start]))
  return [p for p in params if p not in bad and p not in before]


def _new_param_name(old: str, problem: Problem, rng: random.Random, taken: set[str]) -> str | None:
  options = []
  if old in _PARAM_SYNONYMS:
    options.append(_PARAM_SYNONYMS[old])
  options += [pat.format(old) for pat in rng.sample(_PARAM_PATTERNS, len(_PARAM_PATTERNS))]
  if rng.random() < 0.5:
    options = options[1:] + options[:1]
  for name in options:
    if name not in taken and _fresh(name, problem):
      return name
  return None


def _rename_param(problem: Problem, parsed: _Parsed, old: str, new: str) -> Problem:
  p = _rename_everywhere(problem, old, new, start=parsed.def_start)
  # The tests call the function positionally (checked), so only the
  # function's own text changes; restore the tests to be safe.
  p = dataclasses.replace(p, test=problem.test, test_list=problem.test_list,
                          test_setup=problem.test_setup)
  # In the prose, rename only names that cannot be ordinary words (``lst1``,
  # ``paren_string``) and short ones (``l``, ``n``, ``xs``), never "a" / "I".
  if old in ("a", "i", "A", "I") or not (re.search(r"[_0-9A-Z]", old) or len(old) <= 2):
    return p
  reparsed = _parse(p)
  pattern = re.compile(rf"(?<![\w\\'\"`.]){re.escape(old)}(?![\w'\"`(])")

  def edit(body):
    return _prose_sub(body, pattern, new)

  if reparsed is not None:
    p = _with_doc_body(p, reparsed, edit) or p
  return p


def _syn_rename_one(p, parsed, rng):
  names = _renamable_params(p, parsed)
  if not names:
    return None
  old = rng.choice(names)
  new = _new_param_name(old, p, rng, set())
  return None if new is None else _rename_param(p, parsed, old, new)


def _syn_rename_all(p, parsed, rng):
  names = _renamable_params(p, parsed)
  if len(names) < 2:
    return None
  taken: set[str] = set()
  for old in names:
    new = _new_param_name(old, p, rng, taken)
    if new is None:
      return None
    taken.add(new)
    p = _rename_param(p, _parse(p), old, new)
  return p


def _syn_strip_annotations(p, parsed, rng):
  del rng
  fn = parsed.fn
  if fn is None:
    return None
  prompt = p.prompt
  starts = _line_starts(prompt)
  edits = []
  a = fn.args
  for arg in a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]:
    if arg.annotation is not None:
      name_end = _offset(prompt, starts, arg.lineno, arg.col_offset) + len(arg.arg)
      ann_end = _offset(prompt, starts, arg.annotation.end_lineno, arg.annotation.end_col_offset)
      edits.append((name_end, ann_end, ""))
  if fn.returns is not None:
    ret_end = _offset(prompt, starts, fn.returns.end_lineno, fn.returns.end_col_offset)
    arrow = prompt.rfind("->", parsed.def_start, ret_end)
    close = prompt.rfind(")", parsed.def_start, arrow)
    if arrow < 0 or close < 0:
      return None
    edits.append((close + 1, ret_end, ""))
  if not edits:
    return None
  return dataclasses.replace(p, prompt=_replace_spans(prompt, edits))


_GENERICS = {"List": "list", "Tuple": "tuple", "Dict": "dict", "Set": "set",
             "FrozenSet": "frozenset", "Type": "type"}


def _syn_builtin_generics(p, parsed, rng):
  del rng
  fn = parsed.fn
  if fn is None:
    return None
  prompt = p.prompt
  starts = _line_starts(prompt)
  body_start = (parsed.doc[0] if parsed.doc else
                _offset(prompt, starts, fn.body[0].lineno, fn.body[0].col_offset))
  edits = []
  for node in ast.walk(fn):
    if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
        and node.value.id in _GENERICS):
      at = _offset(prompt, starts, node.value.lineno, node.value.col_offset)
      if at < body_start:
        edits.append((at, at + len(node.value.id), _GENERICS[node.value.id]))
  if not edits:
    return None
  return dataclasses.replace(p, prompt=_replace_spans(prompt, edits))


def _syn_example_quotes(p, parsed, rng):
  del rng
  if parsed.doc is None:
    return None
  a, b = parsed.doc
  _, _, delim = _split_literal(p.prompt[a:b])

  def edit(body):
    lines = body.split("\n")
    prose = _prose_mask(lines)
    out = []
    for line, is_prose in zip(lines, prose):
      if is_prose or not line.strip():
        out.append(line)
        continue
      def swap(m):
        q, content = m.group(1), m.group(2)
        other = '"' if q == "'" else "'"
        if other in content or "\\" in content:
          return m.group(0)
        return other + content + other
      out.append(re.sub(r"(['\"])([^'\"\n]*)\1", swap, line))
    new = "\n".join(out)
    if delim[0] * 3 in new or new.endswith(delim[0]):
      return body
    return new

  return _with_doc_body(p, parsed, edit)


def _syntax_ops(problem: Problem):
  del problem
  return {"rename_param": _syn_rename_one, "rename_params": _syn_rename_all,
          "strip_annotations": _syn_strip_annotations,
          "builtin_generics": _syn_builtin_generics, "example_quotes": _syn_example_quotes}


# ---------------------------------------------------------------------------
# Family: docstring.

_PROSE_SYNONYMS = {
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


def _protected_words(problem: Problem) -> set[str]:
  """Identifiers of the problem's code (keywords other than True/False/None are
  English words in prose and stay editable)."""
  names = _code_names(problem) - set(keyword.kwlist)
  return names | {problem.entry_point, "True", "False", "None"}


def _doc_words_op(fn: Callable[[list[tuple[int, int, str]], random.Random],
                               list[tuple[int, int, str]]]):
  def op(p, parsed, rng):
    protected = _protected_words(p)

    def edit(body):
      words = _prose_words(body, protected)
      return _replace_spans(body, fn(words, rng)) if words else body

    return _with_doc_body(p, parsed, edit)
  return op


def _pick(rng: random.Random, items: list, most: int) -> list:
  if not items:
    return []
  return rng.sample(items, k=rng.randint(1, min(most, len(items))))


def _doc_synonyms(words, rng):
  cands = [w for w in words if w[2].lower() in _PROSE_SYNONYMS]
  return [(a, b, _match_case(w, _PROSE_SYNONYMS[w.lower()])) for a, b, w in _pick(rng, cands, 4)]


def _doc_case(words, rng):
  cands = [w for w in words if len(w[2]) > 1]
  out = []
  for a, b, w in _pick(rng, cands, 3):
    style = rng.choice(("upper", "title", "lower"))
    new = w.upper() if style == "upper" else (w.capitalize() if style == "title" else w.lower())
    if new == w:
      new = w.swapcase()
    out.append((a, b, new))
  return out


def _doc_typos(words, rng):
  cands = [w for w in words if len(w[2]) >= 4]
  out = []
  for a, b, w in _pick(rng, cands, 2):
    i = rng.randrange(1, len(w) - 1)
    c = w[i].lower()
    out.append((a, b, w[:i] + _match_case(w[i], rng.choice(_KEYBOARD.get(c, c))) + w[i + 1:]))
  return out


def _doc_spaces(words, rng):
  cands = [w for w in words[1:]]
  return [(a, a, " ") for a, _, _ in _pick(rng, cands, 3)]


def _doc_contractions(p, parsed, rng):
  del rng
  if parsed.doc is None:
    return None
  a, b = parsed.doc
  _, _, delim = _split_literal(p.prompt[a:b])

  def edit(body):
    lines = body.split("\n")
    mask = _prose_mask(lines)
    text = "\n".join(ln for ln, m in zip(lines, mask) if m)
    expand = any(re.search(rf"\b{re.escape(short)}\b", text, re.I) for _, short in _CONTRACTIONS)
    if not expand and "'" in delim:
      return body
    out = []
    for line, m in zip(lines, mask):
      if m:
        spans = _protected_spans(line)
        for long, short in _CONTRACTIONS:
          src, dst = (short, long) if expand else (long, short)
          def sub(mt, dst=dst):
            if any(s <= mt.start() < e for s, e in spans):
              return mt.group(0)
            return _match_case(mt.group(0), dst)
          line = re.sub(rf"(?<![\w']){re.escape(src)}(?![\w'])", sub, line, flags=re.I)
      out.append(line)
    return "\n".join(out)

  return _with_doc_body(p, parsed, edit)


def _docstring_ops(problem: Problem):
  del problem
  return {"synonyms": _doc_words_op(_doc_synonyms), "case": _doc_words_op(_doc_case),
          "typos": _doc_words_op(_doc_typos), "spaces": _doc_words_op(_doc_spaces),
          "contractions": _doc_contractions}


# ---------------------------------------------------------------------------
# Public API.

_FAMILY_OPS = {"func_name": _func_name_ops, "format": _format_ops, "syntax": _syntax_ops,
               "docstring": _docstring_ops}


def family_rewrites(family: str) -> tuple[str, ...]:
  """Names of a family's rewrites."""
  if family not in _FAMILY_OPS:
    raise ValueError(f"unknown perturbation family {family!r}; known: {', '.join(FAMILIES)}")
  return tuple(_FAMILY_OPS[family](Problem("", "", "")))


def perturb(problem: Problem, family: str, seed: int) -> Problem:
  """A deterministic perturbation of ``problem`` (see the module doc).

  The result keeps ``task_id``; ``entry_point`` is the new name for
  ``func_name``; ``canonical_solution`` and the tests follow renames;
  ``variant`` is ``family:rewrite:seed`` (``family:none:seed`` when no rewrite
  applies).
  """
  ops = _FAMILY_OPS[family](problem) if family in _FAMILY_OPS else None
  if ops is None:
    raise ValueError(f"unknown perturbation family {family!r}; known: {', '.join(FAMILIES)}")
  parsed = _parse(problem)
  if parsed is not None:
    order = _applicable(problem, family, parsed, ops)
    for j in range(len(order)):
      name = order[(seed + j) % len(order)]
      out = _apply(problem, family, parsed, ops[name], name, seed)
      if out is not None:
        return dataclasses.replace(out, variant=f"{family}:{name}:{seed}")
  return dataclasses.replace(problem, variant=f"{family}:none:{seed}")


def _apply(problem: Problem, family: str, parsed: _Parsed, op, name: str,
           seed: int | str) -> Problem | None:
  rng = random.Random(f"{family}|{problem.task_id}|{seed}|{name}")
  try:
    out = op(problem, parsed, rng)
  except (SyntaxError, ValueError, tokenize.TokenError, IndentationError):
    return None
  if out is None or out.prompt == problem.prompt or not _valid(out):
    return None
  return out


def _applicable(problem: Problem, family: str, parsed: _Parsed, ops) -> list[str]:
  """The family's rewrites in a per-problem order, those that apply first.

  Seed ``s`` starts at the ``s``-th, so the first seeds get distinct rewrites
  whenever enough of them apply.
  """
  key = (family, problem.task_id, problem.prompt, problem.entry_point,
         problem.canonical_solution)
  cached = _APPLICABLE_CACHE.get(key)
  if cached is not None:
    return cached
  names = sorted(ops)
  order = random.Random(f"order|{family}|{problem.task_id}").sample(names, len(names))
  works = [n for n in order if _apply(problem, family, parsed, ops[n], n, "probe") is not None]
  result = works + [n for n in order if n not in works]
  if len(_APPLICABLE_CACHE) > 4096:
    _APPLICABLE_CACHE.clear()
  _APPLICABLE_CACHE[key] = result
  return result


_APPLICABLE_CACHE: dict[tuple, list[str]] = {}


def perturbed_suite(problems: Sequence[Problem], family: str,
                    num_seeds: int = DEFAULT_NUM_SEEDS) -> list[list[Problem]]:
  """``[seed][problem]`` perturbed problems."""
  return [[perturb(p, family, s) for p in problems] for s in range(num_seeds)]


def robust_metrics(nominal: Sequence[Sequence[bool]], perturbed: Sequence[Sequence[Sequence[bool]]],
                   ks: Iterable[int] = (1,)) -> dict[str, float]:
  """ReCode metrics from correctness ``nominal[problem][sample]`` and
  ``perturbed[problem][seed][sample]``."""
  if len(nominal) != len(perturbed):
    raise ValueError("nominal and perturbed differ in their number of problems")
  ns, c_nom, c_rob = [], [], []
  changed = broken = correct = pairs = 0
  for nom, per in zip(nominal, perturbed):
    n = min([len(nom)] + [len(s) for s in per])
    ns.append(n)
    c_nom.append(sum(bool(x) for x in nom[:n]))
    worst = [all(bool(s[j]) for s in per) for j in range(n)]
    c_rob.append(sum(worst))
    for j in range(n):
      pairs += 1
      if any(bool(s[j]) != bool(nom[j]) for s in per):
        changed += 1
      if nom[j]:
        correct += 1
        if not worst[j]:
          broken += 1
  out: dict[str, float] = {}
  if not ns or min(ns) == 0:
    return out
  nominal_k = passk.mean_pass_at_k(ns, c_nom, ks)
  robust_k = passk.mean_pass_at_k(ns, c_rob, ks)
  for key, nom_v in nominal_k.items():
    rob_v = robust_k[key]
    out[f"nominal_{key}"] = nom_v
    out[f"robust_{key}"] = rob_v
    out[f"robust_drop_abs_{key}"] = nom_v - rob_v
    out[f"robust_drop_{key}"] = (nom_v - rob_v) / nom_v if nom_v > 0 else 0.0
  out["robust_relative"] = changed / pairs if pairs else 0.0
  out["attack_success"] = broken / correct if correct else 0.0
  return out


def evaluate_robustness(problems: Sequence[Problem],
                        complete: Callable[[Sequence[Problem]], Sequence[Sequence[str]]], *,
                        families: Iterable[str] = FAMILIES, num_seeds: int = DEFAULT_NUM_SEEDS,
                        ks: Iterable[int] = (1,), limits: sandbox.Limits | None = None,
                        workers: int | None = None) -> dict[str, Any]:
  """Nominal and per-family robust metrics of a completion function.

  ``complete(problems)`` returns post-processed completions per problem (it
  sees the perturbed prompts and entry points).
  """
  ks = tuple(ks)

  def correctness(ps):
    results = codegen.execute(ps, complete(ps), limits=limits, workers=workers)
    return [[r.passed for r in rs] for rs in results]

  nominal = correctness(problems)
  out: dict[str, Any] = {"num_problems": len(problems), "num_seeds": num_seeds, "families": {}}
  for family in families:
    per_seed = [correctness(ps) for ps in perturbed_suite(problems, family, num_seeds)]
    by_problem = [[per_seed[s][i] for s in range(num_seeds)] for i in range(len(problems))]
    metrics = robust_metrics(nominal, by_problem, ks)
    metrics["per_seed_pass@1"] = [
        sum(sum(x) / len(x) for x in seed if x) / max(len(seed), 1) for seed in per_seed]
    out["families"][family] = metrics
  nominal_ks = passk.mean_pass_at_k([len(x) for x in nominal], [sum(x) for x in nominal], ks)
  out.update({f"nominal_{k}": v for k, v in nominal_ks.items()})
  return out


__all__ = ["FAMILIES", "DEFAULT_NUM_SEEDS", "family_rewrites", "perturb", "perturbed_suite",
           "robust_metrics", "evaluate_robustness"]
