"""The compressor LM behind the neural view: checkpoint loading and a float64 forward.

Two kinds of rows (``proxyjax.views.neural.coder`` has the rules):

* **Window rows** (the coder and the decoder): ``[BOS, <raw>, w[0:q]]`` for a
  window ``w`` -- the model's context restarts at the window's first byte;
  the table for ``w[q]`` is read at row position ``1 + q``. Rows of
  ``window_context`` ids (``window_row_ids``), PAD after the window's bytes,
  ``window_batch_rows`` rows per call.
* **Entropy rows** (the encoder's segmentation only): the predictive entropy
  of byte ``i`` of a document comes from one model row ``[BOS, <raw>, doc[s :
  s+W]]`` (``W = context - 2`` bytes, PAD-filled past the end), read at row
  position ``1 + i - s``; row 0 starts at ``s = 0`` and serves bytes ``0..W``,
  row ``j >= 1`` starts at ``s = j * S`` (``S`` = the stride) and serves bytes
  ``W + 1 + (j-1) S .. W + j S``. So every byte is conditioned on at least
  ``W + 1 - S`` preceding bytes of its document (all of them near the start).
  Only the integer entropy and a fragility flag per position leave the device.

**Precision.** The compressor is trained in float32/bfloat16 like any model,
but coding runs its forward in **float64** (``_logits64``: the training
``proxyjax.model.transformer`` itself with ``accum_dtype`` and the compute
dtype set to float64, ``float64_config``; a test pins it to the float32 forward) with the
parameters cast to float64 on the chosen device, 64-bit types enabled only
inside these calls (``x64()``, thread-local), never for the training process.
Quantisation (``quantize.device_tables``) runs in the same call, so only
uint16 tables and a fragility flag per position leave the device. Attention is
causal and rows attend only within themselves, so a byte's table does not
depend on which other rows share the call, its row slot, the batch size, or
the bytes after it in its row (the decoder fills those with PAD) -- up to
float64 rounding (~1e-13 relative), which ``quantize.FRAGILE_MARGIN`` absorbs:
**(differs: the paper's coder has no such margin; here tables are bit-identical
across batch sizes and machines whenever the float64 noise stays below 5e-9
logits, and positions that cannot be guaranteed are flagged and left literal)**.
float64 is native on CPUs and NVIDIA GPUs (H100: 67 TFLOP/s FP64 tensor cores);
TPUs emulate it (slow).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from proxyjax import parallel
from proxyjax import vocab as vocab_lib
from proxyjax.errors import ConfigError
from proxyjax.model import transformer
from proxyjax.train import load as load_lib
from proxyjax.views.neural import quantize
from proxyjax.views.neural.settings import Settings

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


def window_row_ids(chunk: bytes, settings: Settings) -> np.ndarray:
  """``[BOS, <raw>, chunk]`` PAD-filled to ``window_context`` ids (a window's row)."""
  if len(chunk) > settings.window_bytes:
    raise ValueError(f"a window row holds at most {settings.window_bytes} bytes")
  ids = np.zeros(settings.window_context, np.int32)
  ids[:2] = PREFIX
  ids[2:2 + len(chunk)] = vocab_lib.bytes_to_ids(chunk)
  return ids


def check_compressor_config(config: ml_collections.ConfigDict) -> None:
  if config.data.view != "raw":
    raise ConfigError("data.view", "the neural compressor is a raw-byte LM: set "
                      f"data.view='raw' (got {config.data.view!r})")
  if config.model.num_pred_heads != 1:
    raise ConfigError("model.num_pred_heads", "the compressor uses one prediction head")


def x64():
  """A context manager enabling 64-bit types in this thread only.

  ``jax.enable_x64`` (a config context manager since jax 0.8); older jax has
  ``jax.experimental.enable_x64``.
  """
  enable = getattr(jax, "enable_x64", None)
  if enable is not None:
    return enable(True)
  from jax.experimental import enable_x64  # pylint: disable=g-import-not-at-top
  return enable_x64()


def default_device(process_index: int = 0) -> jax.Device:
  """This process's accelerator: ``jax.local_devices()[process_index % count]``.

  With one compress process per GPU, process ``i`` takes local device ``i``
  (or the only visible one when ``CUDA_VISIBLE_DEVICES`` gives each process
  its own GPU, which also keeps JAX from preallocating memory on the others).
  """
  devices = jax.local_devices()
  return devices[process_index % len(devices)]


class ByteModel:
  """Integer next-byte tables from a compressor checkpoint, one fixed shape per call.

  Args:
    model_cfg: the compressor's ``transformer.ModelConfig``.
    params: its parameters (a pure dict, as trained: float32).
    settings: the coder settings (context, batch_rows, prob_bits).
    step: the checkpoint step (metadata).
    device: where the float64 forward runs (default: ``default_device()``).
  """

  def __init__(self, model_cfg: transformer.ModelConfig, params, settings: Settings,
               step: int = 0, device: jax.Device | None = None):
    self.model_cfg = model_cfg
    self.settings = settings
    self.step = step
    self.device = device if device is not None else default_device()
    self.host_params = jax.tree_util.tree_map(np.asarray, jax.device_get(params))
    self._fingerprint = None
    with x64():
      self.params64 = jax.device_put(
          jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), self.host_params),
          self.device)

  @classmethod
  def restore(cls, config: ml_collections.ConfigDict, workdir: str,
              settings: Settings | None = None,
              device: jax.Device | None = None) -> "ByteModel":
    """The newest checkpoint of a compressor run (``WORKDIR/checkpoints``)."""
    check_compressor_config(config)
    settings = settings or Settings.from_config(config)
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
      raise FileNotFoundError(f"no compressor checkpoints in {directory}: train one with "
                              "`python -m proxyjax.main --config=configs/compressor.py "
                              f"--workdir={workdir}`")
    mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
    loaded = load_lib.load_params(workdir, mesh=mesh, config=config)
    return cls(loaded.model_cfg, loaded.params, settings, step=loaded.step, device=device)

  @classmethod
  def init(cls, config: ml_collections.ConfigDict, seed: int = 0,
           settings: Settings | None = None,
           device: jax.Device | None = None) -> "ByteModel":
    """A randomly initialised compressor (tests)."""
    check_compressor_config(config)
    model_cfg = transformer.ModelConfig.from_config(config, vocab_lib.Vocab(0))
    return cls(model_cfg, transformer.init_params(model_cfg, seed),
               settings or Settings.from_config(config), device=device)

  @property
  def fingerprint(self) -> str:
    """sha256 over the (float32) parameters (the decoder must use the same ones)."""
    if self._fingerprint is None:
      h = hashlib.sha256()
      leaves = jax.tree_util.tree_flatten_with_path(self.host_params)[0]
      for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(leaf).tobytes())
      self._fingerprint = h.hexdigest()
    return self._fingerprint

  def _check_rows(self, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.int32)
    st = self.settings
    shapes = ((st.batch_rows, st.context), (st.window_batch_rows, st.window_context))
    if rows.shape not in shapes:
      raise ValueError(f"rows must have shape {shapes[0]} (entropy rows) or {shapes[1]} "
                       f"(window rows), got {rows.shape}")
    return rows

  def tables_async(self, rows: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """Dispatches ``[R, L]`` ids (entropy or window rows); returns device arrays
    ``(uint16 tables [R, L - 1, 256], bool fragile [R, L - 1])``.

    Entry ``q`` of a row starting at byte ``s`` is the table for byte ``s + q``
    given the row's bytes before it (read at row position ``1 + q``).
    """
    rows = self._check_rows(rows)
    with x64():
      return _tables64(self.params64, jax.device_put(rows, self.device),
                       cfg=self.model_cfg, prob_bits=self.settings.prob_bits)

  def entropy_async(self, rows: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """``tables_async`` reduced on the device to ``(int64 entropy units [R, L - 1],
    bool fragile [R, L - 1])`` (``quantize.entropy_units``)."""
    rows = self._check_rows(rows)
    with x64():
      return _entropy64(self.params64, jax.device_put(rows, self.device),
                        cfg=self.model_cfg, prob_bits=self.settings.prob_bits)

  def logits(self, rows: np.ndarray) -> np.ndarray:
    """float64 byte logits ``[R, context, 256]`` (synchronous; tests and tools)."""
    rows = self._check_rows(rows)
    with x64():
      return np.asarray(_logits64_jit(self.params64, jax.device_put(rows, self.device),
                                      cfg=self.model_cfg))


def float64_config(cfg: transformer.ModelConfig) -> transformer.ModelConfig:
  """The compressor's model config for coding: the training transformer computing and
  accumulating in float64, dense XLA attention, layers unrolled, no remat."""
  return dataclasses.replace(cfg, dtype=jnp.float64, param_dtype=jnp.float64,
                             accum_dtype=jnp.float64, attention="xla", remat="none",
                             scan_layers=False)


@functools.lru_cache(maxsize=None)
def _graphdef(cfg: transformer.ModelConfig):
  return transformer.abstract_model(cfg)[0]


def _logits64(params, ids, cfg: transformer.ModelConfig):
  """float64 byte logits ``[B, T, 256]`` of ``transformer.Transformer`` (one
  segment per row, positions 0..T-1) under ``float64_config`` (call with 64-bit
  types enabled and float64 parameters)."""
  cfg64 = float64_config(cfg)
  model = nnx.merge(_graphdef(cfg64), params)
  b, t = ids.shape
  # Host positions: the RoPE tables are host (numpy) constants.
  positions = np.broadcast_to(np.arange(t, dtype=np.int32), (b, t))
  h = model(ids, jnp.ones((b, t), jnp.int32), positions)
  # Head 0 occupies the first vocab_size columns; bytes are ids 64..319.
  return model.head_logits(h, vocab_lib.BYTE_OFFSET, vocab_lib.RAW_VOCAB_SIZE)


_logits64_jit = jax.jit(_logits64, static_argnames=("cfg",))


@functools.partial(jax.jit, static_argnames=("cfg", "prob_bits"))
def _tables64(params, ids, *, cfg, prob_bits):
  logits = _logits64(params, ids, cfg)
  return quantize.device_tables(logits[:, 1:], prob_bits)


@functools.partial(jax.jit, static_argnames=("cfg", "prob_bits"))
def _entropy64(params, ids, *, cfg, prob_bits):
  tables, fragile = _tables64(params, ids, cfg=cfg, prob_bits=prob_bits)
  return quantize.device_entropy(tables, prob_bits), fragile
