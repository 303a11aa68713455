"""Settings of the neural compressor (SPEC §6) and its default training config.

The compressor is a small raw-byte LM trained with the normal training loop;
its config carries one extra section, ``compressor``, read by
:meth:`Settings.from_config`. Every field of that section changes the symbols
produced, so the shards record them (``neural.json``) and a decoder must use
the same values (``batch_rows`` excepted) and the same checkpoint.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from proxyjax import config as config_lib
from proxyjax.errors import ConfigError

SECTION = "compressor"


@dataclasses.dataclass(frozen=True)
class Settings:
  """How bytes become neural symbols.

  Attributes:
    symbol_bits: N, bits per packed symbol (alphabet 256 literals + 2^N).
    window_bits: T, bits per equal-information window (a multiple of N).
    prob_bits: precision of the integer frequency tables (sum 2^prob_bits,
      every byte >= 1).
    literal_threshold: a byte stays literal where the mean model cost over
      ``entropy_window`` bytes centred on it exceeds this many bits per byte
      (inf: code everything; <= 0: everything literal).
    entropy_window: bytes in the running mean of the segmentation.
    min_literal_run: literal runs shorter than this are coded instead.
    context: model input length in ids (``[BOS, <raw>]`` + up to
      ``context - 2`` bytes of the document).
    stride: new bytes predicted per model row after the first row
      (0 = half of ``context - 2``).
    batch_rows: rows per model call (the compiled batch shape). The only field
      that does not change the symbols (float64 tables with fragility flags:
      ``proxyjax.views.neural.quantize``); raise it on an accelerator (e.g. 256).
  """

  symbol_bits: int = 16
  window_bits: int = 16
  prob_bits: int = 16
  literal_threshold: float = 8.0
  entropy_window: int = 16
  min_literal_run: int = 8
  context: int = 256
  stride: int = 0
  batch_rows: int = 16

  def __post_init__(self):
    n, t = self.symbol_bits, self.window_bits
    if not 1 <= n <= 24:
      raise ConfigError(f"{SECTION}.symbol_bits", f"must be in [1, 24], got {n}")
    if t < n or t % n:
      raise ConfigError(f"{SECTION}.window_bits", f"must be a positive multiple of "
                        f"symbol_bits={n}, got {t}")
    if not 9 <= self.prob_bits <= 16:
      raise ConfigError(f"{SECTION}.prob_bits", f"must be in [9, 16], got {self.prob_bits}")
    if math.isnan(self.literal_threshold):
      raise ConfigError(f"{SECTION}.literal_threshold", "must be a number")
    if self.entropy_window < 1:
      raise ConfigError(f"{SECTION}.entropy_window", "must be >= 1")
    if self.min_literal_run < 1:
      raise ConfigError(f"{SECTION}.min_literal_run", "must be >= 1")
    if self.context < 4:
      raise ConfigError(f"{SECTION}.context", f"must be >= 4, got {self.context}")
    if not 0 <= self.stride <= self.row_bytes:
      raise ConfigError(f"{SECTION}.stride", f"must be in [0, context - 2 = "
                        f"{self.row_bytes}], got {self.stride}")
    if self.batch_rows < 1:
      raise ConfigError(f"{SECTION}.batch_rows", "must be >= 1")

  @property
  def row_bytes(self) -> int:
    """W: document bytes per model row."""
    return self.context - 2

  @property
  def row_stride(self) -> int:
    """S: bytes by which consecutive rows advance (new predictions per row)."""
    return self.stride or max(self.row_bytes // 2, 1)

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
    unknown = sorted(set(section) - fields)
    if unknown:
      raise ConfigError(f"{SECTION}.{unknown[0]}", f"unknown field; known: {sorted(fields)}")
    kwargs = {k: section[k] for k in fields if k in section}
    if "literal_threshold" in kwargs:
      kwargs["literal_threshold"] = float(kwargs["literal_threshold"])
    settings = cls(**kwargs)
    if settings.context > config.seq_len:
      raise ConfigError(f"{SECTION}.context", f"{settings.context} exceeds the length the "
                        f"compressor was trained on (seq_len={config.seq_len})")
    return settings

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


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
  s.literal_threshold = defaults.literal_threshold  # Bits/byte above which spans stay literal.
  s.entropy_window = defaults.entropy_window  # Bytes in the segmentation's running mean.
  s.min_literal_run = defaults.min_literal_run  # Shorter literal runs are coded.
  s.context = defaults.context  # Model input ids per row (<= seq_len).
  s.stride = defaults.stride  # New bytes per row after the first (0 = half a row).
  s.batch_rows = defaults.batch_rows  # Rows per model call (fixed compiled shape; symbols do not depend on it).
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
