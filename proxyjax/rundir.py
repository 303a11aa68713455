"""A run directory (``WORKDIR``): its layout and the config a training run recorded there.

    WORKDIR/config.json      the run's full config (rewritten at every start of training)
    WORKDIR/tokenizer.json   the run's auto-trained tokenizer (tokenizer views without
                             ``data.tokenizer_path``): trained once by process 0, read by
                             every process and every later command on the run
    WORKDIR/checkpoints/     Orbax steps (``proxyjax.train.checkpoint``); each step's
                             ``meta`` item also records the config and the vocabulary
    WORKDIR/metrics.jsonl    one JSON line per log step (``proxyjax.train.metrics``)
    WORKDIR/tensorboard/     TensorBoard event files
    WORKDIR/eval/            ``--mode=eval`` results

WORKDIR may be a local path or an object-store URL (``gs://bucket/run``, ``s3://...``):
every file of it is read and written through ``proxyjax.paths``.

Low in the layers: imports nothing from proxyjax but ``errors``, ``paths`` and ``vocab``.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections

from proxyjax import paths
from proxyjax import vocab as vocab_lib
from proxyjax.errors import UserError

RUN_CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD = "tensorboard"
VOCAB_KEY = "vocab"  # the key of the vocabulary layout in a checkpoint's meta


class NoCheckpointError(UserError, FileNotFoundError):
  """A run directory without the checkpoint (or the step) asked for."""


def checkpoint_dir(workdir: str) -> str:
  return paths.join(workdir, CHECKPOINTS)


def tokenizer_file(workdir: str) -> str:
  """``WORKDIR/tokenizer.json``: where a run keeps its auto-trained tokenizer."""
  return paths.join(workdir, TOKENIZER_FILE)


def eval_dir(workdir: str) -> str:
  return paths.join(workdir, EVAL)


def write_run_config(c: ml_collections.ConfigDict, workdir: str) -> None:
  """``WORKDIR/config.json``: a training run's full config (what the neural view,
  the loader and notebooks rebuild its model from); rewritten atomically (one object
  upload on object storage)."""
  paths.write_text(paths.join(workdir, RUN_CONFIG_FILE),
                   c.to_json_best_effort(indent=1, sort_keys=True))


def load_run_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config that a training run in ``workdir`` wrote, or None."""
  try:
    return ml_collections.ConfigDict(json.loads(paths.read_text(
        paths.join(workdir, RUN_CONFIG_FILE))))
  except FileNotFoundError:
    return None


def vocab_record(vocab: vocab_lib.Vocab) -> dict[str, Any]:
  """The vocabulary layout as recorded in a checkpoint's meta (plain JSON)."""
  return {"compressed_alphabet": int(vocab.compressed_alphabet),
          "separate_embedding": bool(vocab.separate_embedding),
          "literal_bytes": bool(vocab.literal_bytes), "size": int(vocab.size)}


def vocab_from_record(record: dict[str, Any] | None) -> vocab_lib.Vocab | None:
  """The ``Vocab`` of ``vocab_record`` (None for checkpoints written before it)."""
  if not record:
    return None
  return vocab_lib.Vocab(int(record["compressed_alphabet"]), bool(record["separate_embedding"]),
                         bool(record["literal_bytes"]))
