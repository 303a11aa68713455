"""Settings of the neural compressor (docs/method.md §6) and its default training config.

The compressor is a small raw-byte LM trained with the normal training loop;
its config carries one extra section, ``compressor``, read by
:meth:`Settings.from_config`. Every field of that section changes the symbols
produced, so the shards record them (``neural.json``) and a decoder must use
the same values (``batch_rows`` and ``cache_entries`` excepted) and the same checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from proxyjax import config as config_lib
from proxyjax.errors import ConfigError

SECTION = "compressor"

# Fields of compressor runs trained before shard format 4 (windows that restart
# the model's context, entropy segmentation). Their meaning is gone, so a run
# that records them is refused rather than silently coded with other rules.
REMOVED_FIELDS = ("entropy_window", "min_literal_run")

# Settings that do not change the symbols (a decoder may use other values).
FREE_FIELDS = ("batch_rows", "cache_entries")


@dataclasses.dataclass(frozen=True)
class Settings:
  """How bytes become neural symbols (``proxyjax.views.neural.coder`` has the rules).

  Attributes:
    symbol_bits: N, bits per packed symbol (alphabet 256 literals + 2^N).
    window_bits: T, bits per equal-information window (a multiple of N).
    prob_bits: precision of the integer frequency tables (sum 2^prob_bits,
      every byte >= 1).
    entropy_threshold: global segmentation threshold: a segment starts at byte
      t where the model's predictive entropy h_t (bits, in [0, 8]) exceeds it
      (8: never).
    entropy_jump: monotonicity threshold: a segment starts at byte t where
      ``h_t - h_{t-1}`` exceeds it (8: never).
    literal_threshold: a segment stays literal where its mean entropy exceeds
      this many bits per byte (8: never; 0: every segment with any entropy).
    context: entropy pass: model input length in ids (``[BOS, <raw>]`` + up to
      ``context - 2`` bytes of the document before each byte).
    stride: entropy pass: new bytes predicted per model row after the first
      row (0 = half of ``context - 2``).
    window_context: ids per window row (``[BOS, <raw>]`` + the window's bytes):
      a window codes at most ``window_context - 2`` bytes, with no bytes before it.
    batch_rows: entropy rows per model call (the compiled batch shape; window
      calls take ``window_batch_rows`` rows of the same total size). Does not
      change the symbols (float64 tables with fragility flags:
      ``proxyjax.views.neural.quantize``); raise it on an accelerator (e.g. 256).
    cache_entries: coded segments kept in the encoder's cache (same bytes, same
      model -> same symbols; 0 = no cache). Does not change the symbols.
  """

  symbol_bits: int = 16
  window_bits: int = 16
  prob_bits: int = 16
  entropy_threshold: float = 6.0
  entropy_jump: float = 2.0
  literal_threshold: float = 7.0
  context: int = 256
  stride: int = 0
  window_context: int = 32
  batch_rows: int = 16
  cache_entries: int = 1 << 16

  def __post_init__(self):
    n, t = self.symbol_bits, self.window_bits
    if not 1 <= n <= 24:
      raise ConfigError(f"{SECTION}.symbol_bits", f"must be in [1, 24], got {n}")
    if t < n or t % n:
      raise ConfigError(f"{SECTION}.window_bits", f"must be a positive multiple of "
                        f"symbol_bits={n}, got {t}")
    if not 9 <= self.prob_bits <= 16:
      raise ConfigError(f"{SECTION}.prob_bits", f"must be in [9, 16], got {self.prob_bits}")
    for name in ("entropy_threshold", "entropy_jump", "literal_threshold"):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or not 0.0 <= value <= 8.0:
        raise ConfigError(f"{SECTION}.{name}", f"must be a number of bits in [0, 8], got {value!r}")
    if self.context < 4:
      raise ConfigError(f"{SECTION}.context", f"must be >= 4, got {self.context}")
    if not 0 <= self.stride <= self.row_bytes:
      raise ConfigError(f"{SECTION}.stride", f"must be in [0, context - 2 = "
                        f"{self.row_bytes}], got {self.stride}")
    if not 3 <= self.window_context <= 4096:
      raise ConfigError(f"{SECTION}.window_context", f"must be in [3, 4096], got "
                        f"{self.window_context}")
    if self.batch_rows < 1:
      raise ConfigError(f"{SECTION}.batch_rows", "must be >= 1")
    if self.cache_entries < 0:
      raise ConfigError(f"{SECTION}.cache_entries", "must be >= 0")

  @property
  def row_bytes(self) -> int:
    """W: document bytes per model row."""
    return self.context - 2

  @property
  def row_stride(self) -> int:
    """S: bytes by which consecutive rows advance (new predictions per row)."""
    return self.stride or max(self.row_bytes // 2, 1)

  @property
  def window_bytes(self) -> int:
    """The most bytes one window codes (``window_context - 2``)."""
    return self.window_context - 2

  @property
  def window_batch_rows(self) -> int:
    """Window rows per model call: as many ids per call as an entropy call."""
    return self.batch_rows * max(1, self.context // self.window_context)

  @property
  def alphabet_size(self) -> int:
    return 256 + (1 << self.symbol_bits)

  @property
  def symbols_per_window(self) -> int:
    return self.window_bits // self.symbol_bits

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Settings":
    """Reads ``config.compressor`` (missing fields keep their defaults)."""
    section = config.get(SECTION) or {}
    fields = {f.name for f in dataclasses.fields(cls)}
    removed = sorted(set(section) & set(REMOVED_FIELDS))
    if removed:
      names = ", ".join(f"{SECTION}.{k}" for k in removed)
      raise ConfigError(f"{SECTION}.{removed[0]}",
                        f"this compressor run predates shard format 4 and records {names} "
                        "(removed: windows now restart the model's context and segments follow "
                        "the predictive entropy, fields entropy_threshold / entropy_jump / "
                        "literal_threshold / window_context); delete those keys from the "
                        "run's config.json to code with the new rules, or retrain with "
                        "configs/compressor.py")
    unknown = sorted(set(section) - fields)
    if unknown:
      raise ConfigError(f"{SECTION}.{unknown[0]}", f"unknown field; known: {sorted(fields)}")
    kwargs = {k: section[k] for k in fields if k in section}
    for name in ("entropy_threshold", "entropy_jump", "literal_threshold"):
      if name in kwargs and isinstance(kwargs[name], (int, float)):
        kwargs[name] = float(kwargs[name])
    settings = cls(**kwargs)
    if settings.window_context > config.seq_len:
      raise ConfigError(f"{SECTION}.window_context", f"{settings.window_context} exceeds the "
                        f"length the compressor was trained on (seq_len={config.seq_len})")
    if settings.context > config.seq_len:
      raise ConfigError(f"{SECTION}.context", f"{settings.context} exceeds the length the "
                        f"compressor was trained on (seq_len={config.seq_len})")
    return settings

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def coding_differences(self, other: "Settings") -> dict[str, tuple[Any, Any]]:
    """``{field: (self's, other's)}`` for the fields that change the symbols and differ."""
    out = {}
    for f in dataclasses.fields(self):
      if f.name not in FREE_FIELDS and getattr(self, f.name) != getattr(other, f.name):
        out[f.name] = (getattr(self, f.name), getattr(other, f.name))
    return out


COMPRESSOR_SIZES = ("tiny", "gpu")


def compressor_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """A small raw-byte LM for the neural view.

  ``tiny``: ~1.4M params, a few CPU minutes (demos, tests). ``gpu``: ~19M params
  (d 512, 6 layers, SwiGLU 1536), rows of 1024 bytes, 20k steps of 64 rows
  (~1.3B bytes), bf16 training with the default accelerator attention; the
  compressor still codes in float64 (``proxyjax.neural.byte_lm``).
  Raw bytes only (``data.view = 'raw'``, no schedule, rate 0), so every
  document is ``[BOS, <raw>, bytes..., </raw>, EOS]``, the layout the coder
  feeds it.
  """
  if size not in COMPRESSOR_SIZES:
    raise ConfigError("config", f"unknown compressor size {size!r}; known: "
                      f"{', '.join(COMPRESSOR_SIZES)}")
  c = config_lib.tiny_config()
  c.seq_len, c.batch_size = 256, 16
  c.num_steps, c.log_every, c.eval_every = 400, 20, 200
  c.checkpoint_every, c.keep_checkpoints = 200, 2
  c.data.view = "raw"
  c.data.schedule.enabled = False
  c.data.rate = 0.0
  c.data.mode = "sentinel"
  m = c.model
  m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 192, 3, 3, 0, 64, 512
  m.raw_head = False
  m.logits_chunk = 256
  c.opt.peak_lr, c.opt.warmup_steps = 3e-3, 20
  c.compressor = s = ml_collections.ConfigDict()
  defaults = Settings()
  s.symbol_bits = defaults.symbol_bits  # N: bits per packed symbol (alphabet 256 + 2^N).
  s.window_bits = defaults.window_bits  # T: bits per equal-information window (multiple of N).
  s.prob_bits = defaults.prob_bits  # Precision of the integer frequency tables.
  s.entropy_threshold = defaults.entropy_threshold  # A segment starts where h_t exceeds this (bits).
  s.entropy_jump = defaults.entropy_jump  # ... or where h_t - h_{t-1} exceeds this (bits).
  s.literal_threshold = defaults.literal_threshold  # Segments of higher mean entropy stay literal.
  s.context = defaults.context  # Entropy pass: model input ids per row (<= seq_len).
  s.stride = defaults.stride  # Entropy pass: new bytes per row after the first (0 = half a row).
  s.window_context = defaults.window_context  # Ids per window row: a window codes <= this - 2 bytes.
  s.batch_rows = defaults.batch_rows  # Rows per model call (fixed compiled shape; symbols do not depend on it).
  s.cache_entries = defaults.cache_entries  # Coded segments cached (symbols do not depend on it).
  if size == "gpu":
    base = config_lib.base_config()  # accelerator defaults: bf16, remat, auto attention, scan
    for k in ("dtype", "remat", "attention", "scan_layers"):
      m[k] = base.model[k]
    c.seq_len, c.batch_size = 1024, 64
    c.num_steps, c.log_every, c.eval_every = 20_000, 100, 2_000
    c.checkpoint_every, c.keep_checkpoints = 2_000, 3
    m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim, m.d_ff = 512, 6, 8, 0, 64, 1536
    m.logits_chunk = 1024
    c.opt.peak_lr, c.opt.warmup_steps = 1e-3, 500
    s.context = 1024
    s.batch_rows = 256  # fills an H100 with float64 rows (docs/benchmarks.md)
  return c
