r"""Shows exactly what the model will be fed.

    python -m proxyjax.data.inspect --config=configs/tiny.py --num_batches=2 \
        --out=/tmp/rows.jsonl [--stats] [--show=1] [--config.data.view=gzip]

Writes one JSON object per row with the keys ``inputs``, ``targets``,
``segment_ids`` and ``positions`` (lists of ints); ``--stats`` prints the
pipeline accounting (with a finite stream, ``unread_at_end:<source>`` counts
the documents each source still held when it ended); ``--show=K`` prints the
first K rows in readable form. Sources without a usable document fail with one
line naming ``data.sources`` and the skip counts (exit status 2).
"""

from __future__ import annotations

import json
import sys

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from proxyjax import cli
from proxyjax import vocab as vocab_lib
from proxyjax.data import pipeline
from proxyjax.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config()).",
                                          lock_config=True)
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 1, "Batches to read.")
_OUT = flags.DEFINE_string("out", None, "JSONL file for the rows ('-' = stdout).")
_STATS = flags.DEFINE_bool("stats", False, "Print the pipeline accounting.")
_SHOW = flags.DEFINE_integer("show", 0, "Print the first K rows in readable form.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "validation"], "Which split.")
_PROCESS_INDEX = flags.DEFINE_integer("process_index", 0, "Pretend to be this process.")
_PROCESS_COUNT = flags.DEFINE_integer("process_count", 1, "Pretend there are this many.")


def render(ids: np.ndarray, max_chars: int = 2000) -> str:
  """Readable form of a row: specials by name, raw bytes as text, compressed ids as ⟨id⟩."""
  out = []
  raw = bytearray()

  def flush():
    if raw:
      out.append(raw.decode("utf-8", "backslashreplace"))
      raw.clear()

  for i in np.asarray(ids).tolist():
    if vocab_lib.BYTE_OFFSET <= i < vocab_lib.RAW_VOCAB_SIZE:
      raw.append(i - vocab_lib.BYTE_OFFSET)
      continue
    flush()
    out.append(vocab_lib.SPECIAL_NAMES.get(i, f"⟨{i}⟩"))
  flush()
  text = "".join(out)
  return text if len(text) <= max_chars else text[:max_chars] + f"… (+{len(text) - max_chars} chars)"


def write_rows(batches, out) -> int:
  rows = 0
  for batch in batches:
    for r in range(batch["inputs"].shape[0]):
      out.write(json.dumps({k: batch[k][r].tolist() for k in
                            ("inputs", "targets", "segment_ids", "positions")}) + "\n")
      rows += 1
  return rows


def main(argv):
  try:
    _main(argv)
  except ConfigError as e:  # bad config or data: one line, no traceback
    sys.stdout.flush()
    print(f"proxyjax.data.inspect: error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def _main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required")
  it = pipeline.make_iterator(config, _SPLIT.value, process_index=_PROCESS_INDEX.value,
                              process_count=_PROCESS_COUNT.value)
  batches = []
  try:
    for _ in range(_NUM_BATCHES.value):
      batches.append(pipeline.next_batch(it))
  except StopIteration:
    pass
  finally:
    stats = pipeline.pipeline_stats(it)
    if hasattr(it, "close"):
      it.close()
  if _OUT.value:
    if _OUT.value == "-":
      n = write_rows(batches, sys.stdout)
    else:
      with open(_OUT.value, "w", encoding="utf-8") as f:
        n = write_rows(batches, f)
      print(f"wrote {n} rows of {config.seq_len} ids to {_OUT.value}", file=sys.stderr)
  shown = 0
  for batch in batches:
    for r in range(batch["inputs"].shape[0]):
      if shown >= _SHOW.value:
        break
      print(f"--- row {shown} ---\n{render(batch['inputs'][r])}")
      shown += 1
  if _STATS.value:
    vocab = pipeline.build_vocab(config)
    print(json.dumps({"vocab_size": vocab.size, **stats}, indent=1, sort_keys=True))


if __name__ == "__main__":
  cli.run(main, prog="proxyjax.data.inspect")  # one-line errors (--verbose: traceback)
