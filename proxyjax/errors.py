"""Errors shared across proxyjax."""


class UserError(Exception):
  """A problem with what a person typed or with the state of their run (bad config,
  missing checkpoint, ...) whose message is complete in itself: the command-line
  entry points print it as one line, without a traceback (``--verbose`` shows it).
  Subclass it (alongside a builtin type where callers catch that) for such errors."""


def first_line(error: BaseException, limit: int = 240) -> str:
  """``'<Type>: <first line of the message>'``, the message cut at ``limit`` characters."""
  text = (str(error).strip().splitlines() or [""])[0]
  return f"{type(error).__name__}: {text[:limit]}"


class ConfigError(UserError, ValueError):
  """A configuration value is invalid. The message names the offending field."""

  def __init__(self, field: str, message: str | None = None):
    if message is None:  # re-raised with one argument (ml_collections' config loader does)
      self.field = None
      super().__init__(field)
      return
    self.field = field
    super().__init__(f"config field '{field}': {message}")
