"""Which interface a model is evaluated through: raw bytes or its tokenizer (``eval.interface``).

A model is evaluated the way it was trained (docs/method.md §7, "baselines through their own
interface"):

* ``raw``: documents ``[BOS, <raw>, bytes..., </raw>, EOS]``, prompts ``[BOS, <raw>, bytes]``,
  decoding restricted to ids < 320. Every model that saw raw bytes.
* ``tokens``: documents and prompts in the tokenizer view, formatted as the run was
  trained: ``[BOS, ids..., EOS]`` in vanilla mode (configs/tokens.py), ``[BOS, <comp>,
  ids..., </comp>, EOS]`` otherwise; completions are decoded back to text with the
  tokenizer; BPB is per UTF-8 byte, so it compares with byte models.

``eval.interface = ''`` (the default) takes it from the training config: ``tokens`` when the
run trained on the tokenizer view with every document compressed (no raw bytes ever), else
``raw``. Asking for ``tokens`` from a model without a tokenizer view (a byte-only model), or
for ``raw`` from a model that never saw raw bytes, is a ConfigError naming the field.
"""

from __future__ import annotations

import ml_collections

from proxyjax.errors import ConfigError

INTERFACES = ("raw", "tokens")
TOKENIZER_VIEW = "tokenizer"


def _rates(d: ml_collections.ConfigDict) -> tuple[float, ...]:
  if d.schedule.enabled:
    return tuple(float(d.schedule[k]) for k in ("initial_rate", "peak_rate", "final_rate"))
  return (float(d.rate),)


def byte_only(d: ml_collections.ConfigDict) -> bool:
  """The data section never feeds a compressed view (raw view, or rate 0 throughout)."""
  return d.view == "raw" or all(r <= 0.0 for r in _rates(d))


def compressed_only(d: ml_collections.ConfigDict) -> bool:
  """Every document is compressed (rate 1 throughout): the model never sees raw bytes."""
  return d.view != "raw" and all(r >= 1.0 for r in _rates(d))


def final_mode(d: ml_collections.ConfigDict) -> str:
  """The mixing mode the run trains in at its end (the schedule's last phase, or data.mode)."""
  s = d.schedule
  if not s.enabled:
    return d.mode
  return s.steady_mode if s.steady_steps < 0 else s.final_mode


def trained_sentinels(d: ml_collections.ConfigDict) -> bool:
  """Whether single-view documents carried sentinels when the run was trained."""
  return final_mode(d) != "vanilla"


def resolve(requested: str, d: ml_collections.ConfigDict) -> str:
  """The interface (``raw`` or ``tokens``) for ``eval.interface = requested`` and the
  training config's data section ``d``; ConfigError naming ``eval.interface`` on a mismatch."""
  if requested not in ("",) + INTERFACES:
    raise ConfigError("eval.interface", f"must be '', 'raw' or 'tokens', got {requested!r}")
  tokens_only = d.view == TOKENIZER_VIEW and compressed_only(d)
  if not requested:
    return "tokens" if tokens_only else "raw"
  if requested == "tokens":
    if byte_only(d):
      raise ConfigError("eval.interface", "'tokens' evaluates through the training tokenizer, "
                        f"but this is a byte-only model (data.view={d.view!r}, rate "
                        f"{max(_rates(d))}): use eval.interface=raw (or '')")
    if d.view != TOKENIZER_VIEW:
      raise ConfigError("eval.interface", "'tokens' evaluates through the training tokenizer, "
                        f"but this model trained on data.view={d.view!r}, not 'tokenizer': "
                        "use eval.interface=raw (or '')")
  if requested == "raw" and compressed_only(d):
    hint = "eval.interface=tokens (or '')" if d.view == TOKENIZER_VIEW else "the view_bpb task"
    raise ConfigError("eval.interface", "'raw' feeds raw bytes, but this model never saw any "
                      f"(data.view={d.view!r}, every document compressed): use {hint}")
  return requested

