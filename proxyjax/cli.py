"""One-line errors for the command-line entry points.

``run(main)`` replaces ``absl.app.run(main)``: a bad flag, an unknown config
field, a config file that is missing or fails to load, and every
``proxyjax.errors.UserError`` raised by ``main`` (``ConfigError`` included)
print one line on stderr,

    proxyjax: error: config has no field 'no_such_field' (in --config.no_such_field=1)

and exit with status 2, without a traceback. ``--verbose`` prints the
traceback first. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys
import traceback
from typing import Any, Callable, NoReturn, Sequence

from absl import app, flags

from proxyjax.errors import UserError

EXIT_USER_ERROR = 2

_VERBOSE = flags.DEFINE_bool("verbose", False,
                             "Show the traceback of an error (bad flags, config, workdir) "
                             "instead of only its one-line message.")

_CONFIG_FLAG = "config"


def no_positional(argv: Sequence[str]) -> None:
  """Refuses arguments left after absl parsed the flags (``argv[0]`` is the program)."""
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])} "
                    "(flags take the form --name=value)")


def one_line(message: str) -> str:
  """A message on one line: its lines joined, blank ones dropped."""
  return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def verbose(argv: Sequence[str] | None = None) -> bool:
  """``--verbose``, also before (or when) the flags parse."""
  if flags.FLAGS.is_parsed():
    return _VERBOSE.value
  value = False
  for arg in argv if argv is not None else sys.argv:
    if arg in ("--verbose", "-verbose"):
      value = True
    elif arg in ("--noverbose", "-noverbose"):
      value = False
    elif arg.startswith(("--verbose=", "-verbose=")):
      value = arg.split("=", 1)[1].lower() in ("1", "true", "t", "yes", "y")
  return value


def fail(message: str, error: BaseException | None = None, *, prog: str = "proxyjax",
         argv: Sequence[str] | None = None) -> NoReturn:
  """Prints ``<prog>: error: <message>`` (the traceback first with --verbose); exits 2."""
  if error is not None and verbose(argv):
    traceback.print_exception(error)
  sys.stdout.flush()
  print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


# ---------------------------------------------------------------------------
# Flag parsing.


def _config_arg(argv: Sequence[str]) -> tuple[str, str] | None:
  """(the argument as typed, its value) of ``--config``, the last one given."""
  found = None
  for i, arg in enumerate(argv):
    m = re.match(rf"^--?{_CONFIG_FLAG}(=(.*))?$", arg)
    if m and m.group(1) is not None:
      found = (arg, m.group(2))
    elif m and i + 1 < len(argv):
      found = (f"{arg} {argv[i + 1]}", argv[i + 1])
  return found


def _overrides(argv: Sequence[str]) -> list[tuple[str, str]]:
  """(the argument as typed, the field path) of each ``--config.<path>[=value]``."""
  out = []
  for arg in argv:
    m = re.match(rf"^--?(no)?{_CONFIG_FLAG}\.([^=]+)", arg)
    if m:
      out.append((arg, m.group(2)))
  return out


def _load_config_file(spec: str) -> Any:
  """``get_config(*args)`` of ``path[:args]``, as config_flags loads it."""
  path, *args = spec.split(":", 1)
  module_spec = importlib.util.spec_from_file_location("proxyjax_cli_config", path)
  if module_spec is None or module_spec.loader is None:
    raise ImportError(f"not a Python file: {path}")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(*args)


def _config_load_error(argv: Sequence[str]) -> tuple[str | None, Any]:
  """(a one-line message if ``--config`` cannot be loaded, else None; the config)."""
  found = _config_arg(argv)
  if found is None:
    return None, None
  typed, spec = found
  path = spec.split(":", 1)[0]
  if not path:
    return f"{typed}: no config file given", None
  if not os.path.exists(path):
    return f"config file {path!r} not found (in {typed})", None
  if os.path.isdir(path):
    return f"config file {path!r} is a directory (in {typed})", None
  try:
    return None, _load_config_file(spec)
  except Exception as e:  # pylint: disable=broad-except
    where = ""  # SyntaxError names its line itself
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
             if os.path.abspath(f.filename) == os.path.abspath(path)]
    if lines and not isinstance(e, SyntaxError):
      where = f" (line {lines[-1]})"
    return (f"cannot load config file {path!r} (in {typed}): "
            f"{type(e).__name__}: {one_line(e) or '(no message)'}{where}"), None


def _leaf_paths(config, prefix: str = "") -> list[str]:
  out = []
  for k in config.keys():
    v = config[k]
    path = f"{prefix}{k}"
    out.append(path)
    if hasattr(v, "keys") and callable(v.keys):
      out.extend(_leaf_paths(v, path + "."))
  return out


def unknown_field(config, path: str) -> str | None:
  """A message if ``path`` (``a.b.c``, ``a.b[0]``) names no field of ``config``, else None."""
  node = config
  parts = re.sub(r"\[[^\]]*\]", "", path).split(".")
  for i, part in enumerate(parts):
    keys = list(node.keys()) if hasattr(node, "keys") and callable(node.keys) else None
    if keys is None or part not in keys:
      seen = ".".join(parts[:i + 1])
      if keys is None:
        return f"config field {'.'.join(parts[:i])!r} has no sub-field {part!r}"
      hint = ""
      same_name = [p for p in _leaf_paths(config) if p.split(".")[-1] == part]
      close = difflib.get_close_matches(part, keys, n=1)
      if same_name:
        hint = f"; did you mean {same_name[0]!r}?"
      elif close:
        hint = f"; did you mean {'.'.join(parts[:i] + close)!r}?"
      return f"config has no field {seen!r}{hint}"
    node = node[part]
  return None


def describe_flag_error(error: BaseException, argv: Sequence[str]) -> str:
  """One line for an exception raised while parsing ``argv``: names the config
  file or the field when one is to blame, else the flag error itself."""
  message, config = _config_load_error(argv)
  if message:
    return message
  if config is not None:
    for typed, path in _overrides(argv):
      problem = unknown_field(config, path)
      if problem:
        return f"{problem} (in {typed})"
  if isinstance(error, flags.Error):
    text = str(error)
    # config_flags puts a whole traceback in the message of a failing get_config().
    if "Traceback (most recent call last)" in text:
      last = [line for line in text.splitlines() if line.strip()][-1]
      return f"{text.splitlines()[0]} {last.strip()}"
    return one_line(text)
  return f"{type(error).__name__}: {one_line(error) or '(no message)'}"


def parse_flags(argv: Sequence[str], *, prog: str = "proxyjax") -> list[str]:
  """``flags.FLAGS(argv)``, every failure one line (``fail``)."""
  try:
    rest = flags.FLAGS(list(argv))
  except Exception as e:  # pylint: disable=broad-except
    fail(describe_flag_error(e, argv), e, prog=prog, argv=argv)
  # config_flags defers a file that fails to load until its value is used.
  if _CONFIG_FLAG in flags.FLAGS and flags.FLAGS[_CONFIG_FLAG].value is not None:
    try:  # a config that failed to load raises on any attribute
      getattr(flags.FLAGS[_CONFIG_FLAG].value, "keys", None)
    except Exception as e:  # pylint: disable=broad-except
      message, _ = _config_load_error(argv)
      fail(message or f"cannot load the config: {one_line(e)}", e, prog=prog, argv=argv)
  return rest


def run(main: Callable[[list[str]], Any], *, prog: str = "proxyjax") -> None:
  """``absl.app.run(main)`` with one-line errors (see the module docstring)."""
  try:
    app.run(main, flags_parser=lambda argv: parse_flags(argv, prog=prog))
  except UserError as e:
    fail(str(e), e, prog=prog)
