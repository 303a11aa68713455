"""Throughput accounting (FLOPs, MFU) and metric writers (JSONL + TensorBoard).

FLOPs per step (training, forward + backward = 3x forward):
  dense:      6 * N * tokens, N = parameters touched per token (all but the
              embedding table, which is a gather) including the output heads;
  attention:  12 * H * E * n_layers * sum over rows of the *visible* (query, key)
              pairs, i.e. sum over documents of l (l + 1) / 2 with the causal
              document mask (window-limited when a window is set). Masked-out
              pairs are not useful work and are not counted, so MFU is honest
              for packed rows of short documents.
MFU = achieved FLOP/s per device / peak dense bf16 FLOP/s per device.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

# Dense bf16 peak FLOP/s per device (vendor spec sheets, no sparsity).
PEAK_FLOPS = {
    "h100": 989e12, "h200": 989e12, "h800": 989e12, "gh200": 989e12, "b200": 2250e12,
    "a100": 312e12, "a800": 312e12, "l40s": 362e12,
    "tpu v6": 918e12, "tpu v5p": 459e12, "tpu v5": 197e12, "tpu v4": 275e12,
}


def peak_flops(device) -> float | None:
  kind = getattr(device, "device_kind", "").lower()
  for key in sorted(PEAK_FLOPS, key=len, reverse=True):
    if key in kind:
      return PEAK_FLOPS[key]
  return None


def visible_pairs(segment_ids: np.ndarray, window: int | None = None) -> int:
  """Causal same-document (query, key) pairs in a batch of packed rows."""
  total = 0
  for row in np.asarray(segment_ids):
    _, lengths = np.unique(row[row > 0], return_counts=True)
    lengths = lengths.astype(np.int64)
    if window:
      w = np.minimum(lengths, window)
      total += int(np.sum(w * (w + 1) // 2 + (lengths - w) * w))
    else:
      total += int(np.sum(lengths * (lengths + 1) // 2))
  return total


def progress_postfix(metrics: dict[str, Any]) -> dict[str, str]:
  """The progress bar's loss and raw bits per byte for a log window; "–" for the
  BPB of a window without raw-byte targets (all compressed), never a fake 0.000."""
  bpb = metrics.get("raw_bpb")
  return {"loss": f"{metrics['loss']:.3f}", "bpb": "–" if bpb is None else f"{bpb:.3f}"}


def step_flops(model_cfg, n_dense_params: int, tokens: int, pairs: int) -> float:
  attn = 12.0 * model_cfg.n_heads * model_cfg.head_dim * model_cfg.n_layers * pairs
  return 6.0 * n_dense_params * tokens + attn


class MetricWriter:
  """Appends one JSON object per log step to ``metrics.jsonl`` and mirrors scalars to
  TensorBoard (tensorboardX) when available. Only process 0 writes."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    except ImportError:
      self._tb = None

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
             for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in clean.items():
        if isinstance(v, float) and np.isfinite(v):
          self._tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
