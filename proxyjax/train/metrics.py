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

Exposure (``Exposure``): running totals from the start of the run, written with every
metric line as ``total_<name>`` (and the log window's share as ``<name>``):
  train_flops         sum over steps of 6 * N * symbols + 12 * H * E * n_layers * pairs
                      (``train_flops``: the formula above, exact integers, global batch);
  symbols             non-PAD input positions trained (global batch);
  utf8_bytes          UTF-8 bytes of the documents the data stream used (each document
                      once, also when it appears as both halves of a pair);
  raw_bytes           UTF-8 bytes shown as raw views;
  compressed_symbols  symbols of compressed views (sentinels, BOS and EOS excluded).
The last three are the data pipeline's counters (``proxyjax.data.stats``: ``doc_bytes``,
``bytes:raw``, ``symbols:compressed``), counted whole when the packer takes a document
(so they run ahead of the symbols trained by the documents in flight, and grow in steps
when documents are long compared with a batch), summed over this process's data shard
and multiplied by the number of equal data shards. They live in the checkpointed
iterator state; the totals themselves are saved in each
checkpoint's ``meta`` (``Exposure.record``), so a resumed run continues them exactly
(and a 'fresh_data' resume adds the new stream's counters to the saved totals).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any

import numpy as np

from proxyjax import paths, rundir

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


def train_flops(model_cfg, n_dense_params: int, tokens: int, pairs: int) -> int:
  """``step_flops`` as an exact integer: 6 N per symbol + 12 H E L per visible pair."""
  attn = 12 * model_cfg.n_heads * model_cfg.head_dim * model_cfg.n_layers * int(pairs)
  return 6 * int(n_dense_params) * int(tokens) + attn


EXPOSURE = ("train_flops", "utf8_bytes", "symbols", "raw_bytes", "compressed_symbols")
# Exposure totals read from the data pipeline's counters (proxyjax.data.stats).
STREAM_COUNTERS = {"utf8_bytes": "doc_bytes", "raw_bytes": "bytes:raw",
                   "compressed_symbols": "symbols:compressed"}
META_KEY = "exposure"


class Exposure:
  """Running exposure totals of a training run (see the module docstring).

  ``add_step`` adds one step's FLOPs and symbols (from its batch); ``sync`` folds in
  the data stream's counters (read at log and save steps: they only grow between
  reads, so the totals are the same whenever they are read). ``record`` is what a
  checkpoint's meta keeps; ``restore`` continues from it.
  """

  def __init__(self, shards: int = 1):
    self.shards = int(shards)
    self.totals = {k: 0 for k in EXPOSURE}
    self._stream = {k: 0 for k in STREAM_COUNTERS}  # counters already in the totals
    self._window_start = dict(self.totals)

  def add_step(self, flops: int, symbols: int) -> None:
    self.totals["train_flops"] += int(flops)
    self.totals["symbols"] += int(symbols)

  def sync(self, stats: dict[str, Any]) -> None:
    """Adds the growth of the stream counters since the last sync (or restore)."""
    for name, key in STREAM_COUNTERS.items():
      now = int(stats.get(key, 0))
      self.totals[name] += (now - self._stream[name]) * self.shards
      self._stream[name] = now

  def record(self) -> dict[str, Any]:
    return {"totals": dict(self.totals), "stream": dict(self._stream), "shards": self.shards}

  def restore(self, recorded: dict[str, Any] | None, stream_restored: bool) -> bool:
    """Continues from a checkpoint's ``record()``; False if it has none (totals then
    count from this step, the stream counters from the stream's start).

    ``stream_restored``: the data iterator resumed where the checkpoint left it, so its
    counters continue from the recorded ones; otherwise ('fresh_data') the stream starts
    afresh from zero counters, all of them new exposure.
    """
    if recorded:
      self.totals = {k: int(recorded["totals"].get(k, 0)) for k in EXPOSURE}
      self._stream = {k: int(recorded["stream"].get(k, 0)) if stream_restored else 0
                      for k in STREAM_COUNTERS}
    self.start_window()
    return bool(recorded)

  def start_window(self) -> None:
    self._window_start = dict(self.totals)

  def scalars(self) -> dict[str, int]:
    """``total_<name>`` and the window's ``<name>`` (totals since ``start_window``)."""
    out = {}
    for k in EXPOSURE:
      out[k] = self.totals[k] - self._window_start[k]
      out["total_" + k] = self.totals[k]
    return out


class MetricWriter:
  """Appends one JSON object per log step to ``WORKDIR/metrics.jsonl`` and mirrors scalars
  to TensorBoard (tensorboardX, ``WORKDIR/tensorboard``) when available. Only process 0
  writes.

  A local WORKDIR is appended to in place. Object storage (``gs://``, ``s3://``) cannot
  append, so a remote WORKDIR is mirrored: the writer keeps ``metrics.jsonl`` in a local
  temporary directory (starting from the bucket's copy, so a resumed run continues the
  same file), writes TensorBoard events there too, and at every ``write`` (one per log
  step or validation) uploads the whole ``metrics.jsonl`` and every event file that grew
  since the last upload; ``close`` uploads once more and removes the local copy. Each
  upload is one object write (atomic): a reader sees the file as of a log step, never a
  torn line; a crash loses at most the lines since the last log step. The upload of
  ``metrics.jsonl`` grows with the run (about 1 kB a line: 10 MB after 10k log steps).
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    self._remote = paths.is_remote(workdir)
    self._workdir = workdir
    self._local = workdir
    self._uploaded: dict[str, int] = {}  # local event file -> size at its last upload
    if not enabled:
      return
    paths.makedirs(workdir, exist_ok=True)
    if self._remote:
      self._local = tempfile.mkdtemp(prefix="proxyjax-metrics-")
      try:
        existing = paths.read_bytes(paths.join(workdir, rundir.METRICS_FILE))
      except FileNotFoundError:
        existing = b""
      if existing and not existing.endswith(b"\n"):
        existing += b"\n"
      with open(os.path.join(self._local, rundir.METRICS_FILE), "wb") as f:
        f.write(existing)
    self._jsonl = open(os.path.join(self._local, rundir.METRICS_FILE), "a", encoding="utf-8")
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      # A remote run's event files are uploaded by name: a suffix keeps a resumed run
      # (same second, same host) from overwriting the previous run's file.
      suffix = f".{uuid.uuid4().hex[:8]}" if self._remote else ""
      self._tb = SummaryWriter(os.path.join(self._local, rundir.TENSORBOARD),
                               filename_suffix=suffix)
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
    self._sync()

  def _sync(self) -> None:
    """Uploads ``metrics.jsonl`` and the grown event files (a remote WORKDIR only)."""
    if not self._remote:
      return
    with open(os.path.join(self._local, rundir.METRICS_FILE), "rb") as f:
      paths.write_bytes(paths.join(self._workdir, rundir.METRICS_FILE), f.read())
    if self._tb is None:
      return
    self._tb.flush()
    tb_local = os.path.join(self._local, rundir.TENSORBOARD)
    for name in sorted(os.listdir(tb_local)) if os.path.isdir(tb_local) else []:
      local = os.path.join(tb_local, name)
      n = os.path.getsize(local) if os.path.isfile(local) else None
      if n is None or self._uploaded.get(local) == n:
        continue
      with open(local, "rb") as f:
        paths.write_bytes(paths.join(self._workdir, rundir.TENSORBOARD, name), f.read())
      self._uploaded[local] = n

  def close(self) -> None:
    try:
      if self.enabled:
        self._jsonl.flush()
        self._sync()  # flushes TensorBoard's events first
      if self._tb is not None:
        self._tb.close()
      if self._jsonl is not None:
        self._jsonl.close()
    finally:
      if self._remote and self.enabled:
        shutil.rmtree(self._local, ignore_errors=True)
      self._jsonl = self._tb = None
      self.enabled = False
