"""A run directory (``WORKDIR``): its layout and the config a training run recorded there.

    WORKDIR/config.json      the run's full config (rewritten at every start of training)
    WORKDIR/checkpoints/     Orbax steps (``proxyjax.train.checkpoint``); each step's
                             ``meta`` item also records the config and the vocabulary
    WORKDIR/eval/            ``--mode=eval`` results

Low in the layers: imports nothing from proxyjax but ``errors`` and ``vocab``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from proxyjax import vocab as vocab_lib
from proxyjax.errors import UserError

RUN_CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
VOCAB_KEY = "vocab"  # the key of the vocabulary layout in a checkpoint's meta


class NoCheckpointError(UserError, FileNotFoundError):
  """A run directory without the checkpoint (or the step) asked for."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINTS)


def write_run_config(c: ml_collections.ConfigDict, workdir: str) -> None:
  """``WORKDIR/config.json``: a training run's full config (what the neural view,
  the loader and notebooks rebuild its model from); rewritten atomically."""
  tmp = os.path.join(workdir, f".{RUN_CONFIG_FILE}.tmp")
  with open(tmp, "w") as f:
    f.write(c.to_json_best_effort(indent=1, sort_keys=True))
  os.replace(tmp, os.path.join(workdir, RUN_CONFIG_FILE))


def load_run_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config that a training run in ``workdir`` wrote, or None."""
  try:
    with open(os.path.join(workdir, RUN_CONFIG_FILE)) as f:
      return ml_collections.ConfigDict(json.load(f))
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
