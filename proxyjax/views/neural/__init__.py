"""The neural view (docs/method.md §2/§6): arithmetic coding under a small byte LM.

Symbols: 0..255 are literal bytes (spans the compressor leaves uncoded),
``256 + v`` are packed N-bit pieces of T-bit equal-information windows
(``proxyjax.views.neural.coder``); alphabet ``256 + 2^N``, ``literal_bytes=True``.
Each window depends on its own bytes only: the model's context restarts at its
first byte, so a window decodes from its symbols alone.

Training normally reads the symbols precomputed by ``python -m
proxyjax.compress`` from ArrayRecord shards (documents carry them as
``doc["neural"]``); ``encode`` here runs the compressor itself, one document at
a time (slow: for tests and small jobs), and ``decode`` inverts it (checking
a shard record's CRC32 when given one). ``symbol_spans`` gives the byte span
each symbol covers (collision statistics). The compressor loads lazily on
first use and is not pickled (Grain workers that only see precomputed symbols
never load it). Symbols are the same whatever ``batch_rows`` or device the
compressor runs with (``proxyjax.views.neural.quantize``).

This package holds everything of the neural view that needs no model: ``settings``
(T, N, precision, entropy segmentation, contexts; the compressor's training config),
``quantize`` (float64 logits -> integer frequency tables), ``coder`` (segmentation,
equal-information windows, N-bit packing, decoder) and ``shards`` (the ArrayRecord
shard format, numpy only). The compressor model is ``proxyjax.neural``, above the
model and training layers; importing ``proxyjax.neural.codec`` registers how a view
loads it (``set_compressor_loader``).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ml_collections
import numpy as np

from proxyjax import config as config_lib
from proxyjax.views import base
from proxyjax.views.neural import shards as shards_lib
from proxyjax.views.neural.settings import Settings, compressor_config

# (config, workdir, settings) -> a NeuralCompressor. The compressor is a
# model, which sits above the views, so the view does not import it: importing
# ``proxyjax.neural.codec`` registers its ``load_compressor`` here.
_LOADER: Callable[..., Any] | None = None


def set_compressor_loader(loader: Callable[..., Any]) -> None:
  """Sets how a ``NeuralView`` loads the compressor of a run (``proxyjax.neural.codec``)."""
  global _LOADER
  _LOADER = loader


def _check_format(meta: dict, directory: str) -> None:
  """ValueError (with the command that rewrites them) for shards of another format."""
  if meta.get("format") != shards_lib.FORMAT:
    raise ValueError(f"neural view: {directory} holds shards of format "
                     f"{meta.get('format')!r}, this proxyjax reads {shards_lib.FORMAT!r} "
                     "(windows that restart the model's context, entropy segments, "
                     "float64 tables, CRC32, a checksum over each record's text and "
                     f"symbols): {shards_lib.RECOMPRESS_HINT}")


def check_same_settings(a: Settings, a_dir: str, b: Settings, b_dir: str) -> None:
  """ValueError naming both directories and every coding field in which they differ."""
  diff = a.coding_differences(b)
  if diff:
    fields = "; ".join(f"compressor.{k}: {va!r} in {a_dir} vs {vb!r} in {b_dir}"
                       for k, (va, vb) in sorted(diff.items()))
    raise ValueError(f"neural view: the compressor settings of {a_dir} and {b_dir} do not "
                     f"match ({fields}); the symbols of one cannot be read with the other: "
                     "point data.neural_dir at the shards' own directory, or recompress")


class NeuralView(base.View):
  """bytes <-> neural symbols with one compressor checkpoint.

  Args:
    neural_dir: a shards directory (its ``neural.json`` names the compressor
      run, settings and parameter fingerprint) or a compressor run directory
      (``WORKDIR/checkpoints``).
    config: the compressor's config (default: the one recorded in the shards,
      else the run's ``config.json``, else ``configs/compressor.py``'s).
    compressor: an already-built ``NeuralCompressor`` (tests).
  """

  name = "neural"
  literal_bytes = True
  lossless = True

  @classmethod
  def from_config(cls, options: base.ViewOptions) -> "NeuralView":
    if not options.neural_dir:
      raise NotImplementedError(
          "the 'neural' view needs a trained compressor: train one with "
          "configs/compressor.py, write shards with `python -m proxyjax.compress "
          "--config=configs/compressor.py --workdir=RUN --input=SOURCES --output=SHARDS`, "
          "then train with data.view='neural', data.neural_dir=SHARDS (or the compressor "
          "run directory) and data.sources='arrayrecord:SHARDS/*.array_record'")
    return cls(options.neural_dir)

  def __init__(self, neural_dir: str = "", config: ml_collections.ConfigDict | None = None,
               *, compressor=None):
    self.neural_dir = neural_dir
    self._fingerprint = None
    self._compressor = compressor
    self._loader = _LOADER  # a module-level function: pickled by reference (Grain workers)
    meta = shards_lib.read_metadata(neural_dir) if neural_dir else None
    if compressor is not None:
      self.workdir = ""
      self.config = config
      self.settings = compressor.settings
    elif meta is not None:
      _check_format(meta, neural_dir)
      self.workdir = meta["model"]["workdir"]
      self.config = config or ml_collections.ConfigDict(meta["config"])
      self.settings = Settings(**meta["settings"])
      self._fingerprint = meta["model"]["fingerprint"]
      self._check_run_settings(neural_dir)
    elif neural_dir and os.path.isdir(os.path.join(neural_dir, "checkpoints")):
      self.workdir = neural_dir
      self.config = config or config_lib.load_run_config(neural_dir) or compressor_config()
      self.settings = Settings.from_config(self.config)
    else:
      raise FileNotFoundError(
          f"neural view: {neural_dir!r} is neither a shards directory (no "
          f"{shards_lib.METADATA}) nor a compressor run (no checkpoints/)")
    self.alphabet_size = self.settings.alphabet_size

  def _check_run_settings(self, shards_dir: str) -> None:
    """Refuses shards whose compressor run now records other coding settings.

    The shards' ``neural.json`` holds the settings they were written with; if the
    compressor run's own ``config.json`` has since changed (or the run directory
    was reused for another compressor), decoding or re-encoding with either set
    would not reproduce the shards' symbols.
    """
    run_config = config_lib.load_run_config(self.workdir) if os.path.isdir(self.workdir) else None
    if run_config is None or not run_config.get("compressor"):
      return
    try:
      run_settings = Settings.from_config(run_config)
    except Exception as e:  # noqa: BLE001 - reported with both directories
      raise ValueError(f"the shards in {shards_dir} were written by the compressor run "
                       f"{self.workdir}, whose config.json no longer gives usable settings "
                       f"({e})") from e
    check_same_settings(self.settings, shards_dir, run_settings, self.workdir)

  def check_shards(self, shards_dir: str) -> None:
    """Raises ValueError if the shards in ``shards_dir`` were not written with this
    view's compressor run and coding settings (naming both)."""
    meta = shards_lib.read_metadata(shards_dir)
    if meta is None:
      return
    where = self.neural_dir or "this view"
    _check_format(meta, shards_dir)
    check_same_settings(Settings(**meta["settings"]), shards_dir, self.settings, where)
    run = meta.get("model", {}).get("workdir", "")
    if self.workdir and run and os.path.realpath(run) != os.path.realpath(self.workdir):
      raise ValueError(f"the shards in {shards_dir} were written by the compressor run {run}, "
                       f"but data.neural_dir={where} uses the compressor run {self.workdir}")

  @property
  def compressor(self):
    """The ``NeuralCompressor`` (loaded on first use)."""
    if self._compressor is None:
      loader = self._loader or _LOADER
      if loader is None:
        raise ValueError("no compressor loader: import proxyjax.neural.codec (it registers "
                         "the one that restores a compressor run)")
      compressor = loader(self.config, self.workdir, self.settings)
      model = compressor.model
      if self._fingerprint is not None and model.fingerprint != self._fingerprint:
        raise ValueError(f"the compressor in {self.workdir} (step {model.step}) is not the one "
                         f"that wrote the shards in {self.neural_dir}")
      self._compressor = compressor
    return self._compressor

  def encode(self, data: bytes) -> np.ndarray:
    try:
      compressor = self.compressor
    except (FileNotFoundError, ValueError) as e:
      raise base.ViewError(f"neural view: no usable compressor ({e})") from e
    return base.as_symbols(compressor.encode([bytes(data)])[0])

  def decode(self, symbols: np.ndarray, crc32: int | None = None) -> bytes:
    """Symbols -> bytes; with ``crc32`` (a shard record's ``crc32``) a decode that
    does not reproduce the original raises ``coder.DecodeMismatchError``."""
    return self.compressor.decode([np.asarray(symbols)],
                                  crc32s=None if crc32 is None else [crc32])[0]

  def symbol_spans(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(symbols, starts, ends)``: the byte span ``[start, end)`` each symbol covers
    (a literal its byte; each symbol of a window the window's coded bytes;
    ``proxyjax.views.neural.coder.symbol_spans``). The symbols equal ``encode(data)``."""
    try:
      compressor = self.compressor
    except (FileNotFoundError, ValueError) as e:
      raise base.ViewError(f"neural view: no usable compressor ({e})") from e
    symbols, starts, ends = next(compressor.symbol_spans([bytes(data)]))
    return base.as_symbols(symbols), starts, ends

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_compressor"] = None
    return state
