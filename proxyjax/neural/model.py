"""The compressor LM behind the neural view: checkpoint loading and fixed-shape forward.

Context rule (the same for the encoder and the decoder): the table for byte
``i`` of a document comes from one model *row* ``[BOS, <raw>, doc[s : s+W]]``
(``W = context - 2`` bytes, PAD-filled past the end), read at row position
``1 + i - s``; row 0 starts at ``s = 0`` and serves bytes ``0..W``, row
``j >= 1`` starts at ``s = j * S`` (``S`` = the stride) and serves bytes
``W + 1 + (j-1) S .. W + j S``. So every byte is conditioned on at least
``W + 1 - S`` preceding bytes of its document (all of them near the start),
and position ``n`` (after the last byte) is served like a byte.

Every call has the compiled shape ``[batch_rows, context]``, attention is
causal, and the rows attend only within themselves, so a byte's table does
not depend on which other rows share the call, on its row slot, or on the
bytes after it in its row (the decoder fills those with PAD). Tests check
this empirically (same symbols from different batch compositions); it is not
guaranteed across XLA versions or hardware.
"""

from __future__ import annotations

import functools
import hashlib
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from proxyjax import parallel
from proxyjax import vocab as vocab_lib
from proxyjax.errors import ConfigError
from proxyjax.model import transformer
from proxyjax.neural import quantize
from proxyjax.neural.settings import Settings

PREFIX = (vocab_lib.BOS, vocab_lib.RAW_OPEN)


def row_of(i: int, settings: Settings) -> int:
  """The row serving position ``i``."""
  w, s = settings.row_bytes, settings.row_stride
  return 0 if i <= w else 1 + (i - w - 1) // s


def row_start(j: int, settings: Settings) -> int:
  return j * settings.row_stride


def row_span(j: int, settings: Settings) -> tuple[int, int]:
  """Positions ``[a, e)`` served by row ``j`` (before clipping to the document)."""
  w, s = settings.row_bytes, settings.row_stride
  if j == 0:
    return 0, w + 1
  return w + 1 + (j - 1) * s, w + 1 + j * s


def num_rows(num_positions: int, settings: Settings) -> int:
  """Rows needed to serve positions ``0 .. num_positions - 1``."""
  return row_of(num_positions - 1, settings) + 1 if num_positions else 0


def row_ids(data: bytes, j: int, settings: Settings, end: int | None = None) -> np.ndarray:
  """The ids of row ``j`` of a document (bytes up to ``end`` only; PAD after)."""
  start = row_start(j, settings)
  stop = start + settings.row_bytes
  if end is not None:
    stop = min(stop, end)
  chunk = data[start:stop]
  ids = np.zeros(settings.context, np.int32)
  ids[:2] = PREFIX
  ids[2:2 + len(chunk)] = vocab_lib.bytes_to_ids(chunk)
  return ids


def check_compressor_config(config: ml_collections.ConfigDict) -> None:
  if config.data.view != "raw":
    raise ConfigError("data.view", "the neural compressor is a raw-byte LM: set "
                      f"data.view='raw' (got {config.data.view!r})")
  if config.model.num_pred_heads != 1:
    raise ConfigError("model.num_pred_heads", "the compressor uses one prediction head")


class ByteModel:
  """Next-byte logits from a compressor checkpoint, one fixed shape per call."""

  def __init__(self, graphdef, params, settings: Settings, step: int = 0):
    self.graphdef = graphdef
    self.settings = settings
    self.step = step
    self._device = jax.devices()[0]
    self.params = jax.device_put(params, self._device)
    self._fingerprint = None
    c = settings.context
    self._segments = jnp.ones((settings.batch_rows, c), jnp.int32)
    self._positions = jnp.broadcast_to(jnp.arange(c, dtype=jnp.int32),
                                       (settings.batch_rows, c))

  @classmethod
  def restore(cls, config: ml_collections.ConfigDict, workdir: str,
              settings: Settings | None = None) -> "ByteModel":
    """The newest checkpoint of a compressor run (``WORKDIR/checkpoints``)."""
    from proxyjax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
    from proxyjax.train import step as step_lib  # pylint: disable=g-import-not-at-top
    check_compressor_config(config)
    settings = settings or Settings.from_config(config)
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"no compressor checkpoints in {directory}: train one with "
                              "`python -m proxyjax.main --config=configs/compressor.py "
                              f"--workdir={workdir}`")
    mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
    model_cfg = transformer.ModelConfig.from_config(config, vocab_lib.Vocab(0))
    setup = step_lib.build(config, model_cfg, mesh)
    ckpt = ckpt_lib.Checkpointer(directory, keep=config.keep_checkpoints, async_save=False)
    try:
      restored = ckpt.restore(ckpt_lib.abstract_with_shardings(
          setup.abstract_state, setup.state_shardings), None)
    finally:
      ckpt.close()
    if restored is None:
      raise FileNotFoundError(f"no readable compressor checkpoint in {directory}")
    step, state, _ = restored
    return cls(setup.graphdef, state["params"], settings, step=int(step))

  @classmethod
  def init(cls, config: ml_collections.ConfigDict, seed: int = 0,
           settings: Settings | None = None) -> "ByteModel":
    """A randomly initialised compressor (tests)."""
    check_compressor_config(config)
    model_cfg = transformer.ModelConfig.from_config(config, vocab_lib.Vocab(0))
    graphdef, _ = transformer.abstract_model(model_cfg)
    return cls(graphdef, transformer.init_params(model_cfg, seed),
               settings or Settings.from_config(config))

  @property
  def fingerprint(self) -> str:
    """sha256 over the parameters (the decoder must use the same ones)."""
    if self._fingerprint is None:
      h = hashlib.sha256()
      leaves = jax.tree_util.tree_flatten_with_path(self.params)[0]
      for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
      self._fingerprint = h.hexdigest()
    return self._fingerprint

  def logits_async(self, rows: np.ndarray) -> jax.Array:
    """Dispatches ``[batch_rows, context]`` ids; fp32 byte logits ``[R, C, 256]``."""
    rows = np.asarray(rows, np.int32)
    if rows.shape != (self.settings.batch_rows, self.settings.context):
      raise ValueError(f"rows must have shape {(self.settings.batch_rows, self.settings.context)}, "
                       f"got {rows.shape}")
    return _forward(self.graphdef, self.params, jax.device_put(rows, self._device),
                    self._segments, self._positions)

  def tables(self, rows: np.ndarray) -> np.ndarray:
    """Integer frequency tables ``[R, C, 256]`` for ``rows`` (synchronous)."""
    return quantize.frequencies(np.asarray(self.logits_async(rows)), self.settings.prob_bits)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _forward(graphdef, params, ids, segment_ids, positions):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  model = nnx.merge(graphdef, params)
  h = model(ids, segment_ids, positions)
  logits = model.logits(h)[:, :, 0, vocab_lib.BYTE_OFFSET:vocab_lib.RAW_VOCAB_SIZE]
  return logits.astype(jnp.float32)
