"""Bits per byte through the raw interface (docs/method.md §7), plus per-view diagnostics.

Raw BPB: documents become ``[BOS, <raw>, bytes..., </raw>, EOS]`` and are
concatenated into one stream, cut into windows of ``context_len`` inputs that
advance by ``stride``; inside a window the document mask and position resets
apply. Only the *new* targets of each window count (each target scored once,
with up to ``context_len - stride`` ids of left context), only raw-byte targets
(ids 64..319), head 0. BPB = sum NLL / ln 2 / UTF-8 bytes (one byte target
per byte).

Per-view BPB: the same with documents in a compressed view, formatted as the
run was trained: ``[BOS, <comp>, symbols..., </comp>, EOS]``, or ``[BOS,
symbols..., EOS]`` for a run trained in vanilla mode (``sentinels=False``, e.g.
the tokens baseline), counting compressed-symbol targets: bits per UTF-8 byte of
the document (comparable with byte models' raw BPB) and bits per symbol.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from proxyjax import parallel
from proxyjax import vocab as vocab_lib
from proxyjax.data import packing
from proxyjax.train import loss as loss_lib

LN2 = math.log(2.0)


def windows(stream: np.ndarray, context_len: int, stride: int):
  """Yields (inputs, targets, count_mask) per window; the last one is PAD-padded."""
  if not 0 < stride <= context_len:
    raise ValueError("need 0 < stride <= context_len")
  n = stream.shape[0]
  scored_until = 0  # targets stream[1:scored_until+1] already counted
  start = 0
  while scored_until < n - 1:
    ids = stream[start:start + context_len + 1]
    inputs = np.zeros(context_len, np.int32)
    targets = np.zeros(context_len, np.int32)
    inputs[:min(context_len, ids.shape[0])] = ids[:context_len]
    targets[:ids.shape[0] - 1] = ids[1:]
    t_abs = start + np.arange(context_len)  # target t predicts stream[t_abs + 1]
    count = (t_abs >= scored_until) & (t_abs < n - 1)
    yield inputs, targets, count
    scored_until = start + min(context_len, ids.shape[0] - 1)
    start += stride


def _batches(stream, context_len, stride, batch_size, doc_mask=True):
  rows = []
  for inputs, targets, count in windows(stream, context_len, stride):
    num_real = int(np.sum(inputs != vocab_lib.PAD)) if inputs[-1] == vocab_lib.PAD else context_len
    seg, pos = packing.segments_and_positions(inputs, num_real, doc_mask)
    rows.append((inputs, targets, count, seg, pos))
    if len(rows) == batch_size:
      yield _stack(rows, batch_size)
      rows = []
  if rows:
    yield _stack(rows, batch_size)


def _stack(rows, batch_size):
  out = {k: np.stack([r[i] for r in rows]) for i, k in
         enumerate(("inputs", "targets", "count", "segment_ids", "positions"))}
  pad = batch_size - len(rows)
  if pad:
    out = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in out.items()}
  return out


@functools.partial(jax.jit, static_argnames=("graphdef", "sharding"))
def _nll(graphdef, params, inputs, targets, segment_ids, positions, sharding=None):
  with parallel.traced_sharding(sharding):  # activations sharded like training
    model = nnx.merge(graphdef, params)
    h = model(inputs, segment_ids, positions)
    nll, _ = loss_lib.per_position_nll(model, h, targets[..., None], model.cfg.logits_chunk)
  return nll[..., 0]


def score_stream(graphdef, params, stream: np.ndarray, context_len: int, stride: int,
                 batch_size: int, target_range: tuple[int, int],
                 sharding=None) -> tuple[float, int]:
  """Sum of NLL (nats) and count over counted targets with ids in ``target_range``.

  ``sharding``: ``parallel.static_sharding(mesh, rules)`` (None: no constraints)."""
  total, count = 0.0, 0
  lo, hi = target_range
  for b in _batches(stream, context_len, stride, batch_size):
    nll = np.asarray(_nll(graphdef, params, jnp.asarray(b["inputs"]), jnp.asarray(b["targets"]),
                          jnp.asarray(b["segment_ids"]), jnp.asarray(b["positions"]),
                          sharding=sharding))
    mask = b["count"] & (b["targets"] >= lo) & (b["targets"] < hi)
    total += float(np.sum(np.where(mask, nll, 0.0), dtype=np.float64))
    count += int(mask.sum())
  return total, count


def raw_stream(docs: Iterable[bytes], vocab: vocab_lib.Vocab) -> tuple[np.ndarray, int]:
  parts, nbytes = [], 0
  for d in docs:
    if d:
      parts.append(vocab.document(vocab.raw_body(d)))
      nbytes += len(d)
  return (np.concatenate(parts) if parts else np.zeros(0, np.int32)), nbytes


def raw_bpb(graphdef, params, docs: Sequence[bytes], *, context_len: int, stride: int,
            batch_size: int = 8, sharding=None) -> dict:
  stream, nbytes = raw_stream(docs, vocab_lib.Vocab(0))
  total, count = score_stream(graphdef, params, stream, context_len, stride, batch_size,
                              (vocab_lib.BYTE_OFFSET, vocab_lib.RAW_VOCAB_SIZE), sharding)
  if count != nbytes:
    raise AssertionError(f"scored {count} byte targets for {nbytes} bytes")
  return {"raw_bpb": total / LN2 / max(nbytes, 1), "bytes": nbytes, "documents": len(docs),
          "context_len": context_len, "stride": stride}


def view_bpb(graphdef, params, docs: Sequence[bytes], view, vocab: vocab_lib.Vocab, *,
             context_len: int, stride: int, batch_size: int = 8, sharding=None,
             sentinels: bool = True) -> dict:
  """How well the model models a compressed view, per UTF-8 byte and per symbol.

  ``sentinels=False``: documents without ``<comp>``/``</comp>`` (vanilla-mode runs).
  Documents the view refuses are skipped (``skipped_documents``)."""
  parts, nbytes, nsym, skipped = [], 0, 0, 0
  for d in docs:
    if not d:
      continue
    try:
      sym = view.encode(d)
    except Exception:  # pylint: disable=broad-except
      skipped += 1
      continue
    body = vocab.compressed_body(sym) if sentinels else vocab.symbols_to_ids(sym)
    parts.append(vocab.document(body))
    nbytes += len(d)
    nsym += int(sym.size)
  if not parts:
    return {}
  stream = np.concatenate(parts)
  lo = vocab.compressed_offset
  total, count = score_stream(graphdef, params, stream, context_len, stride, batch_size,
                              (lo, vocab.num_ids), sharding)
  return {"view": view.name, "bits_per_byte": total / LN2 / max(nbytes, 1),
          "bits_per_symbol": total / LN2 / max(count, 1), "symbols": count,
          "bytes": nbytes, "bytes_per_symbol": nbytes / max(nsym, 1),
          "documents": len(parts), "skipped_documents": skipped, "sentinels": sentinels}
