"""Pins the packed rows the pipeline feeds the model (the inspect CLI's rows).

The sha256 of the first two packed batches of fixed configs is recorded in
``tests/fixtures/data_pin.json``; a refactor of the data path (sources, views,
mixing, packing) must leave it unchanged. The synthetic case builds its corpus
(a file tree, JSON-lines and ArrayRecord shards) from a fixed seed, so it is the
same on every machine; the stdlib case (``configs/tiny.py``'s corpus) depends on
the interpreter's standard library and is skipped on another Python version.

Regenerate (only when a change is *meant* to alter the rows)::

    python tests/data/test_data_pin.py --write
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import tempfile

import pytest

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "data_pin.json")
NUM_BATCHES = 2
SEQ_LEN = 128
# (case name, view, split) of the synthetic mixed corpus.
SYNTHETIC_CASES = (("mixed_deflate_train", "deflate", "train"),
                   ("mixed_raw_validation", "raw", "validation"),
                   ("mixed_halfbyte_train", "halfbyte", "train"))


def _write_corpus(root: str) -> str:
  """A deterministic corpus of three storage kinds; returns its sources spec."""
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=g-import-not-at-top
  rng = random.Random(1234)
  words = ["def", "return", "x", "y", "(", ")", ":", "for", "in", "range", "if", "else",
           "print", "'héllo'", "日本", "=", "+", "1", "2", "\n", "  "]

  def doc(n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n)) + "\n"

  tree = os.path.join(root, "tree")
  for i in range(40):
    sub = os.path.join(tree, f"pkg{i % 3}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"m{i:02d}.py"), "w", encoding="utf-8") as f:
      f.write(doc(rng.randint(5, 120)))
  jsonl = os.path.join(root, "jsonl")
  os.makedirs(jsonl)
  for j in range(2):
    with open(os.path.join(jsonl, f"part{j}.jsonl"), "w", encoding="utf-8") as f:
      for _ in range(30):
        f.write(json.dumps({"text": doc(rng.randint(5, 80))}) + "\n")
  shards = os.path.join(root, "shards")
  os.makedirs(shards)
  for s in range(2):
    writer = ArrayRecordWriter(os.path.join(shards, f"s-{s:05d}.array_record"), "group_size:1")
    for _ in range(25):
      writer.write(json.dumps({"content": doc(rng.randint(5, 80))}).encode())
    writer.close()
  return (f"files:{tree}@2;jsonl:{jsonl}/*.jsonl;"
          f"arrayrecord:{shards}/s-*.array_record@0.5")


def _rows_digest(config, split: str) -> str:
  from proxyjax.data import pipeline  # pylint: disable=g-import-not-at-top
  it = pipeline.make_iterator(config, split, process_index=0, process_count=1)
  h = hashlib.sha256()
  try:
    for _ in range(NUM_BATCHES):
      batch = pipeline.next_batch(it)
      for k in ("inputs", "targets", "segment_ids", "positions"):
        h.update(k.encode())
        h.update(batch[k].astype("<i8").tobytes())
  finally:
    if hasattr(it, "close"):
      it.close()
  return h.hexdigest()


def _tiny(view: str):
  from proxyjax.config import tiny_config  # pylint: disable=g-import-not-at-top
  c = tiny_config()
  c.seq_len = SEQ_LEN
  c.data.view = view
  return c


def _stdlib_digest() -> str:
  return _rows_digest(_tiny("deflate"), "train")


def _synthetic_digests() -> dict[str, str]:
  out = {}
  with tempfile.TemporaryDirectory() as root:
    spec = _write_corpus(root)
    for name, view, split in SYNTHETIC_CASES:
      c = _tiny(view)
      c.data.sources = spec
      c.data.validation_fraction = 0.2
      c.data.num_epochs = 1 if split == "validation" else -1
      out[name] = _rows_digest(c, split)
  return out


def _load() -> dict:
  with open(FIXTURE, encoding="utf-8") as f:
    return json.load(f)


def test_synthetic_rows_pinned():
  assert _synthetic_digests() == _load()["synthetic"]


def test_tiny_stdlib_rows_pinned():
  pinned = _load()["stdlib"]
  if pinned["python"] != sys.version.split()[0]:
    pytest.skip(f"pinned on Python {pinned['python']}, this is {sys.version.split()[0]}")
  assert _stdlib_digest() == pinned["sha256"]


if __name__ == "__main__":
  if sys.argv[1:] != ["--write"]:
    sys.exit(__doc__)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
  data = {"stdlib": {"python": sys.version.split()[0], "sha256": _stdlib_digest()},
          "synthetic": _synthetic_digests()}
  with open(FIXTURE, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=1, sort_keys=True)
    f.write("\n")
  print(json.dumps(data, indent=1))
