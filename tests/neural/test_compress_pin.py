"""Pins the compress CLI's output: the records of every shard, bit for bit.

``tests/fixtures/compress_pin.json`` holds the sha256 of each shard's records and
the totals of ``summary.json`` for the tiny compressor of ``tests/conftest.py``
(trained by the training loop) on fixed stdlib excerpts, recorded before the
compress driver was split into parts. Regenerate (only for an intended change)
with ``PROXYJAX_REGEN_PINS=1 pytest tests/neural/test_compress_pin.py``.
"""

import hashlib
import json
import os
import sysconfig

import helpers

from proxyjax import compress
from proxyjax.views.neural import shards as shards_lib

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "compress_pin.json")
STDLIB = sysconfig.get_paths()["stdlib"]
FILES = ["json/__init__.py", "textwrap.py", "functools.py", "email/utils.py", "difflib.py"]


def _inputs(directory) -> None:
  for i, name in enumerate(FILES):
    with open(os.path.join(STDLIB, name), "rb") as f:
      (directory / f"doc{i}.py").write_bytes(f.read()[:300 + 70 * i])
  (directory / "latin1.txt").write_bytes("caf\xe9 \xff".encode("latin-1") * 7)
  (directory / "empty.txt").write_bytes(b"")


def test_compress_records_bit_identical(neural_compressor_run, tmp_path):
  helpers.require_exact_pins("the compressed shards' hashes (a compressor trained here)")
  config, workdir = neural_compressor_run
  inputs, output = tmp_path / "in", tmp_path / "out"
  inputs.mkdir()
  _inputs(inputs)
  summary = compress.run(config, workdir, compress.Options(
      input=f"files:{inputs}/*", output=str(output), docs_per_shard=3, progress_bar=False))
  meta = shards_lib.read_metadata(str(output))
  shards = []
  for s in range(meta["num_shards"]):
    records = shards_lib.read_shard(os.path.join(str(output), shards_lib.shard_name(
        s, meta["num_shards"])))
    h = hashlib.sha256()
    for r in records:  # the record bytes, with the (temporary) input directory named INPUT
      r = r.replace(str(inputs).encode(), b"INPUT")
      h.update(len(r).to_bytes(8, "little") + r)
    shards.append({"records": len(records), "sha256": h.hexdigest()})
  got = {"shards": shards, "totals": summary["totals"], "fingerprint": meta["model"]["fingerprint"]}
  if os.environ.get("PROXYJAX_REGEN_PINS"):
    with open(FIXTURE, "w") as f:
      json.dump(got, f, indent=1, sort_keys=True)
      f.write("\n")
  with open(FIXTURE) as f:
    want = json.load(f)
  assert got == want
