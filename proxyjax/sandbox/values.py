"""Plain Python values across a process boundary, as tagged JSON.

Used by ``proxyjax.sandbox.differential``: the candidate's process encodes what
its function returned, the judging process decodes it into *fresh builtin
objects* -- so nothing the candidate defined (an ``__eq__`` that is always
True, a ``__bool__``, a ``__del__``) ever reaches the code that decides.

Encoded (exactly, types kept): ``None``, ``bool``, ``int`` (any size),
``float`` (``nan``/``inf`` included), ``complex``, ``str``, ``bytes``,
``bytearray``, ``list``, ``tuple``, ``dict`` (insertion order), ``set`` and
``frozenset`` (sorted by encoding, so equal sets encode equally), ``range``.
Instances of subclasses of these become the base type's value (read through
the base type's own methods, not the subclass's overrides); numpy scalars
become their ``.item()``. Anything else -- objects of other classes, cycles,
nesting deeper than ``MAX_DEPTH`` -- becomes an ``Opaque`` stand-in that
equals nothing but itself and refuses truth testing, so a check on it fails.

This module is standard library only and self-contained: its source is also
sent into sandboxes.
"""

import base64
import json
import math

MAX_DEPTH = 100

_CONTAINERS = (list, tuple, dict, set, frozenset)


class Opaque:
  """Stands for a value without a plain form; equal only to itself."""

  __slots__ = ("type_name", "text")

  def __init__(self, type_name, text=""):
    self.type_name = type_name
    self.text = text

  def __eq__(self, other):
    return self is other

  def __ne__(self, other):
    return self is not other

  __hash__ = object.__hash__

  def __bool__(self):
    raise TypeError(f"the candidate returned a {self.type_name}, which has no plain value "
                    "to check")

  def __repr__(self):
    return f"<unverifiable {self.type_name}: {self.text}>"


def _float(x):
  if math.isfinite(x):
    return x
  return {"F": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


def _opaque(x, why=""):
  try:
    name = f"{type(x).__module__}.{type(x).__qualname__}"
  except Exception:  # pylint: disable=broad-except
    name = "object"
  text = why
  if not text:
    try:
      text = repr(x)[:200]
    except BaseException:  # pylint: disable=broad-except
      text = "?"
  return {"O": [name, str(text)[:200]]}


def to_plain(x, depth=0, active=None):
  """``x`` as a JSON-ready structure (see the module doc)."""
  t = type(x)
  if x is None or t is bool or t is str:
    return x
  if t is int:
    return x if -(1 << 53) < x < (1 << 53) else {"I": hex(x)}
  if t is float:
    return _float(x)
  if depth >= MAX_DEPTH:
    return _opaque(x, "nested too deeply")
  if active is None:
    active = set()
  if t in _CONTAINERS:
    if id(x) in active:
      return _opaque(x, "a cycle")
    active.add(id(x))
    try:
      if t is list:
        return {"L": [to_plain(v, depth + 1, active) for v in x]}
      if t is tuple:
        return {"T": [to_plain(v, depth + 1, active) for v in x]}
      if t is dict:
        return {"D": [[to_plain(k, depth + 1, active), to_plain(v, depth + 1, active)]
                      for k, v in x.items()]}
      items = [to_plain(v, depth + 1, active) for v in x]
      items.sort(key=lambda v: json.dumps(v, sort_keys=True))
      return {"S" if t is set else "Z": items}
    finally:
      active.discard(id(x))
  if t is complex:
    return {"C": [_float(x.real), _float(x.imag)]}
  if t is bytes:
    return {"B": base64.b64encode(x).decode("ascii")}
  if t is bytearray:
    return {"A": base64.b64encode(bytes(x)).decode("ascii")}
  if t is range:
    return {"R": [x.start, x.stop, x.step]}
  return _subclass_value(x, depth, active)


def _subclass_value(x, depth, active):
  """Subclasses of plain types through the base type's methods; numpy scalars; else opaque."""
  try:
    if isinstance(x, bool):
      return bool(int.__int__(x))
    if isinstance(x, int):
      return to_plain(int.__int__(x), depth + 1, active)
    if isinstance(x, float):
      return to_plain(float.__float__(x), depth + 1, active)
    if isinstance(x, str):
      return to_plain(str.__str__(x), depth + 1, active)
    if isinstance(x, bytes):
      return to_plain(bytes.__bytes__(x) if hasattr(bytes, "__bytes__") else bytes(memoryview(x)),
                      depth + 1, active)
    for base in (list, tuple, set, frozenset):
      if isinstance(x, base):
        return to_plain(base(base.__iter__(x)), depth + 1, active)
    if isinstance(x, dict):
      return to_plain(dict(dict.items(x)), depth + 1, active)
    if isinstance(x, complex):
      return to_plain(complex(complex.__complex__(x)) if hasattr(complex, "__complex__")
                      else complex(x.real, x.imag), depth + 1, active)
    if type(x).__module__ == "numpy" and hasattr(x, "item") and getattr(x, "shape", None) == ():
      v = x.item()
      if type(v).__module__ != "numpy":
        return to_plain(v, depth + 1, active)
  except BaseException:  # pylint: disable=broad-except
    return _opaque(x, "unreadable")
  return _opaque(x)


def has_opaque(plain):
  """True if an encoded structure holds an ``Opaque`` anywhere."""
  stack = [plain]
  while stack:
    v = stack.pop()
    if isinstance(v, list):
      stack.extend(v)
    elif isinstance(v, dict):
      if "O" in v:
        return True
      stack.extend(v.values())
  return False


def from_plain(p, depth=0):
  """A fresh builtin object from ``to_plain``'s output; ValueError if malformed."""
  if p is None or isinstance(p, (bool, str)):
    return p
  if type(p) is int:
    return p
  if type(p) is float:
    return p
  if depth >= MAX_DEPTH + 2:
    raise ValueError("nested too deeply")
  if not isinstance(p, dict) or len(p) != 1:
    raise ValueError(f"not an encoded value: {str(p)[:80]}")
  (tag, v), = p.items()
  if tag == "L":
    return [from_plain(i, depth + 1) for i in _list(v)]
  if tag == "T":
    return tuple(from_plain(i, depth + 1) for i in _list(v))
  if tag == "D":
    out = {}
    for pair in _list(v):
      if not isinstance(pair, list) or len(pair) != 2:
        raise ValueError("bad dict item")
      out[from_plain(pair[0], depth + 1)] = from_plain(pair[1], depth + 1)
    return out
  if tag == "S":
    return {from_plain(i, depth + 1) for i in _list(v)}
  if tag == "Z":
    return frozenset(from_plain(i, depth + 1) for i in _list(v))
  if tag == "I":
    return int(_str(v), 16)
  if tag == "F":
    if v not in ("nan", "inf", "-inf"):
      raise ValueError("bad float")
    return float(v)
  if tag == "C":
    re_, im = _list(v)
    return complex(_num(from_plain(re_, depth + 1)), _num(from_plain(im, depth + 1)))
  if tag == "B":
    return base64.b64decode(_str(v), validate=True)
  if tag == "A":
    return bytearray(base64.b64decode(_str(v), validate=True))
  if tag == "R":
    a, b, c = (_int(i) for i in _list(v))
    return range(a, b, c)
  if tag == "O":
    name, text = _list(v)
    return Opaque(_str(name), _str(text))
  raise ValueError(f"unknown tag {tag!r}")


def _list(v):
  if not isinstance(v, list):
    raise ValueError("expected a list")
  return v


def _str(v):
  if not isinstance(v, str):
    raise ValueError("expected a string")
  return v


def _int(v):
  if type(v) is not int:
    raise ValueError("expected an int")
  return v


def _num(v):
  if type(v) not in (int, float):
    raise ValueError("expected a number")
  return v


def dumps(x):
  """``x`` encoded as a compact JSON string (equal values give equal strings)."""
  return json.dumps(to_plain(x), separators=(",", ":"), allow_nan=False)


def loads(text):
  """The value of ``dumps`` output (strict JSON: no NaN literals)."""
  return from_plain(json.loads(text, parse_constant=_reject))


def _reject(name):
  raise ValueError(f"non-standard JSON constant {name}")
