r"""Prepares a corpus once, so that training starts in O(shards) whatever its size.

    python -m proxyjax.data.prepare --sources='jsonl:/data/*.jsonl' --out=DIR \
        [--validation_fraction=0.01] [--text_field=] [--docs_per_shard=50000] \
        [--num_workers=1] [--max_document_bytes=0]

then train with ``--config.data.sources=prepared:DIR`` (same ``validation_fraction`` and
``text_field``: the source refuses others, naming the field).

The train/validation split is decided here, by the sources' own rule: the documents of
``make_source(spec, split="train")`` go to ``DIR/train-NNNNN.array_record``, those of
``split="validation"`` to ``DIR/validation-NNNNN.array_record``, in the sources' order, so
training on ``prepared:DIR`` reads exactly the documents (bytes and keys) of the split it
was made from. A spec of several entries is concatenated in spec order (each record then
also names its source); weights are not applied: to mix with weights, prepare each entry
into its own directory and train on ``prepared:A@w;prepared:B@v``.

Each record is a JSON object ``{"text", "key"}`` (the source's key, so documents stay
traceable; :func:`proxyjax.data.sources.prepared.encode_record`). Documents the source
reports as unreadable (its ``error``) and, with ``--max_document_bytes``, longer ones
(``too_long``) are skipped; ``DIR/manifest.json`` accounts for every document read, per
split and per shard (documents, text bytes, file bytes, skips by reason), with the inputs,
the split rule and how it was created.

Shard ``k`` of a split holds that split's input documents ``[k*docs_per_shard,
(k+1)*docs_per_shard)`` minus the skipped ones, so the output does not depend on
``--num_workers`` (worker processes, each building the sources from the spec, write whole
shards). Resumable after ``kill -9``: a shard is written under a temporary name and
renamed, then its ``_progress/<shard>.json`` records it as finished; a rerun writes only
the unfinished shards; ``manifest.json`` is written last. Rerunning with other inputs into
the same ``DIR`` is refused, naming what differs. ``--out`` may be ``gs://`` / ``s3://``:
shards are written locally (ArrayRecord writes local files) and uploaded.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import uuid
from typing import Any

from absl import flags
from array_record.python import array_record_module

from proxyjax import cli, paths
from proxyjax.data import sources as sources_lib
from proxyjax.data.sources import prepared
from proxyjax.errors import UserError

PROGRESS_DIR = "_progress"
INPUTS_FILE = "inputs.json"
TOO_LONG = "too_long"
SPLIT_RULE = ("the sources' own rule at prepare time: make_source(spec, split='train') -> "
              "train-*.array_record, split='validation' -> validation-*.array_record (files, "
              "jsonl, arrayrecord: sha256(key) < validation_fraction is validation; tfds: the "
              "dataset's splits)")
RECORD_DOC = ("ArrayRecord (group_size:1), one compact JSON object per document: "
              "{\"text\": raw bytes as UTF-8 with surrogateescape, \"key\": the source's key"
              "[, \"source\": its source's name when the spec has several entries]}")


@dataclasses.dataclass(frozen=True)
class Options:
  """What to prepare (the flags of ``python -m proxyjax.data.prepare``)."""
  sources: str
  out: str
  validation_fraction: float = 0.01
  text_field: str = ""
  docs_per_shard: int = 50_000
  num_workers: int = 1
  max_document_bytes: int = 0  # 0 = no limit
  record_format: str = "json"  # how arrayrecord: inputs are read
  tfds_data_dir: str = ""
  progress: bool = True

  def source_options(self) -> sources_lib.SourceOptions:
    return sources_lib.SourceOptions(
        validation_fraction=self.validation_fraction, text_field=self.text_field,
        record_format=self.record_format, tfds_data_dir=self.tfds_data_dir)

  def inputs(self) -> dict[str, Any]:
    """What decides the output (a rerun into the same directory must match it)."""
    return {"sources": self.sources, "validation_fraction": self.validation_fraction,
            "text_field": self.text_field, "docs_per_shard": self.docs_per_shard,
            "max_document_bytes": self.max_document_bytes,
            "record_format": self.record_format, "tfds_data_dir": self.tfds_data_dir}


@dataclasses.dataclass(frozen=True)
class _Unit:
  """One shard to write: input documents [start, stop) of ``split``."""
  split: str
  index: int
  start: int
  stop: int

  @property
  def file(self) -> str:
    return prepared.shard_name(self.split, self.index)


def check_options(o: Options) -> None:
  if not o.sources:
    raise UserError("--sources is required (a data.sources spec, e.g. 'jsonl:/data/*.jsonl')")
  if not o.out:
    raise UserError("--out is required (the directory to write, local or gs:// / s3://)")
  if o.docs_per_shard < 1:
    raise UserError(f"--docs_per_shard must be >= 1, got {o.docs_per_shard}")
  if o.num_workers < 1:
    raise UserError(f"--num_workers must be >= 1, got {o.num_workers}")
  if o.max_document_bytes < 0:
    raise UserError(f"--max_document_bytes must be >= 0 (0 = no limit), got "
                    f"{o.max_document_bytes}")
  if not 0.0 <= o.validation_fraction < 1.0:
    raise UserError(f"--validation_fraction must be in [0, 1), got {o.validation_fraction}")


# ---------------------------------------------------------------------------
# The sources, built once per process.

_SOURCES: dict[tuple, list[tuple[Any, str]]] = {}


def _split_sources(o: Options, split: str) -> list[tuple[Any, str]]:
  """[(source of ``split``, its name)] per spec entry, cached per process."""
  key = (o.sources, split, o.source_options())
  if key not in _SOURCES:
    built = sources_lib.make_sources(o.sources, split=split, options=o.source_options())
    _SOURCES[key] = [(s, str(getattr(s, "name", f"source{i}"))) for i, (s, _) in
                     enumerate(built)]
  return _SOURCES[key]


def _plan(o: Options) -> dict[str, Any]:
  """Input documents per split and per spec entry."""
  entries = sources_lib.parse_sources(o.sources)
  plan: dict[str, Any] = {"sources": [], "splits": {}}
  per_split = {s: _split_sources(o, s) for s in prepared.PREPARED_SPLITS}
  for i, entry in enumerate(entries):
    plan["sources"].append({"name": per_split["train"][i][1], "weight": entry.weight,
                            **{s: len(per_split[s][i][0]) for s in prepared.PREPARED_SPLITS}})
  for s in prepared.PREPARED_SPLITS:
    plan["splits"][s] = sum(len(src) for src, _ in per_split[s])
  return plan


def _units(o: Options, plan: dict[str, Any]) -> list[_Unit]:
  units = []
  for s in prepared.PREPARED_SPLITS:
    n = plan["splits"][s]
    for k, start in enumerate(range(0, n, o.docs_per_shard)):
      units.append(_Unit(s, k, start, min(n, start + o.docs_per_shard)))
  return units


# ---------------------------------------------------------------------------
# Writing one shard (in this process or a worker).


def write_unit(o: Options, unit: _Unit) -> dict[str, Any]:
  """Writes one shard (temporary name, then renamed or uploaded), then its progress
  record; returns that record."""
  srcs = _split_sources(o, unit.split)
  several = len(srcs) > 1
  final = paths.join(o.out, unit.file)
  remote = paths.is_remote(o.out)
  staging = tempfile.mkdtemp(prefix="proxyjax-prepare-") if remote else ""
  local_final = os.path.join(staging, unit.file) if remote else paths.local_path(final)
  tmp = f"{local_final}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  documents = text_bytes = 0
  skipped: dict[str, int] = {}
  try:
    writer = array_record_module.ArrayRecordWriter(tmp, prepared.WRITER_OPTIONS)
    try:
      for i in range(unit.start, unit.stop):
        src, name, j = _locate(srcs, i)
        doc = src[j]
        text = doc["text"]
        reason = doc.get("error")
        if reason is None and o.max_document_bytes and len(text) > o.max_document_bytes:
          reason = TOO_LONG
        if reason is not None:
          skipped[reason] = skipped.get(reason, 0) + 1
          continue
        extra = {"source": name} if several else {}
        writer.write(prepared.encode_record(text, doc["key"], **extra))
        documents += 1
        text_bytes += len(text)
    finally:
      writer.close()
    file_bytes = os.path.getsize(tmp)
    if remote:
      with open(tmp, "rb") as src_f, paths.open_file(final, "wb") as dst_f:
        shutil.copyfileobj(src_f, dst_f, 8 << 20)
    else:
      os.replace(tmp, local_final)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
    if staging:
      shutil.rmtree(staging, ignore_errors=True)
  record = {"file": unit.file, "split": unit.split, "index": unit.index,
            "input_range": [unit.start, unit.stop], "documents": documents,
            "bytes": text_bytes, "file_bytes": file_bytes, "skipped": skipped}
  paths.write_text(_progress_path(o.out, unit.file), json.dumps(record, sort_keys=True))
  return record


def _locate(srcs: list[tuple[Any, str]], i: int) -> tuple[Any, str, int]:
  """(source, its name, index in it) of document ``i`` of the concatenated sources."""
  for src, name in srcs:
    if i < len(src):
      return src, name, i
    i -= len(src)
  raise IndexError(i)


def _progress_path(out: str, file: str) -> str:
  return paths.join(out, PROGRESS_DIR, file[:-len(".array_record")] + ".json")


_WORKER_OPTIONS: Options | None = None


def _init_worker(o: Options) -> None:
  global _WORKER_OPTIONS  # pylint: disable=global-statement
  _WORKER_OPTIONS = o


def _worker_write(unit: _Unit) -> dict[str, Any]:
  assert _WORKER_OPTIONS is not None
  return write_unit(_WORKER_OPTIONS, unit)


# ---------------------------------------------------------------------------
# The run.


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  return [f"{k} {old.get(k)!r} there, {new.get(k)!r} here"
          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _refuse(path: str, diffs: list[str], out: str) -> None:
  raise UserError(f"{path} was prepared from other inputs ({'; '.join(diffs)}): use another "
                  f"--out, or delete {out} to prepare it again")


def _check_out(out: str) -> None:
  """A remote --out must name an existing bucket (fsspec would create one); a local one
  is created once the sources are known to be readable."""
  if not paths.is_remote(out):
    return
  bucket = out.split("://", 1)[1].split("/", 1)[0]
  root = f"{paths.scheme(out)}://{bucket}"
  if not paths.exists(root):
    raise paths.StorageError(f"{out}: bucket {root} does not exist (create it first; "
                             "check the name and credentials)")


def _log(o: Options, message: str) -> None:
  if o.progress:
    print(f"proxyjax.data.prepare: {message}", file=sys.stderr, flush=True)


def run(o: Options) -> dict[str, Any]:
  """Prepares ``o.out`` (resuming an unfinished preparation); returns the manifest."""
  check_options(o)
  started = time.time()
  _SOURCES.clear()  # built afresh per run (the files may have changed since the last one)
  _check_out(o.out)
  manifest_path = paths.join(o.out, prepared.MANIFEST)
  if paths.exists(manifest_path):
    manifest = json.loads(paths.read_text(manifest_path))
    diffs = _differences(manifest.get("inputs", {}), o.inputs())
    if diffs:
      _refuse(manifest_path, diffs, o.out)
    _log(o, f"{o.out} is already prepared ({manifest_path})")
    return manifest
  inputs_path = paths.join(o.out, PROGRESS_DIR, INPUTS_FILE)
  old = json.loads(paths.read_text(inputs_path)) if paths.exists(inputs_path) else None
  if old is not None:  # an unfinished preparation: it must be the same one
    old_plan = old.pop("plan", {})
    if diffs := _differences(old, o.inputs()):
      _refuse(inputs_path, diffs, o.out)
  plan = _plan(o)  # ConfigError (one line) for a glob matching nothing, a missing bucket...
  if old is not None and old_plan != plan:
    _refuse(inputs_path, [f"input documents per split {old_plan.get('splits')} there, "
                          f"{plan['splits']} here (the sources changed)"], o.out)
  if old is None:
    paths.makedirs(paths.join(o.out, PROGRESS_DIR))
    paths.write_text(inputs_path, json.dumps({**o.inputs(), "plan": plan}, indent=1,
                                             sort_keys=True))
  _remove_stale_temporaries(o.out)
  units = _units(o, plan)
  done = _done_records(o.out)
  pending = [u for u in units if u.file not in done]
  _log(o, f"{plan['splits']['train']} train + {plan['splits']['validation']} validation "
       f"documents in {len(units)} shards; {len(units) - len(pending)} already written, "
       f"{len(pending)} to write with {o.num_workers} process(es)")
  for n, record in enumerate(_write_all(o, pending), 1):
    done[record["file"]] = record
    if n == len(pending) or n % max(1, len(pending) // 20) == 0:
      _log(o, f"{n}/{len(pending)} shards written")
  manifest = _manifest(o, plan, units, done, time.time() - started)
  paths.write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
  return manifest


def _write_all(o: Options, pending: list[_Unit]):
  if o.num_workers <= 1 or len(pending) <= 1:
    for unit in pending:
      yield write_unit(o, unit)
    return
  ctx = multiprocessing.get_context("spawn")  # fork after grain/jax threads is unsafe
  with ctx.Pool(min(o.num_workers, len(pending)), initializer=_init_worker,
                initargs=(o,)) as pool:
    yield from pool.imap_unordered(_worker_write, pending)


def _remove_stale_temporaries(out: str) -> None:
  if paths.is_remote(out):  # remote shards are uploaded whole: no partial objects
    return
  local = paths.local_path(out)
  for name in os.listdir(local):
    if ".array_record.tmp-" in name:
      os.remove(os.path.join(local, name))


def _done_records(out: str) -> dict[str, dict[str, Any]]:
  """The progress records of the finished shards whose file exists."""
  progress = paths.join(out, PROGRESS_DIR)
  try:
    names = paths.listdir(progress)
  except FileNotFoundError:
    return {}
  existing = set(paths.listdir(out))
  done = {}
  for name in names:
    if name == INPUTS_FILE or not name.endswith(".json"):
      continue
    try:
      record = json.loads(paths.read_text(paths.join(progress, name)))
    except (ValueError, FileNotFoundError):
      continue
    if record.get("file") in existing:
      done[record["file"]] = record
  return done


def _manifest(o: Options, plan: dict[str, Any], units: list[_Unit],
              done: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
  splits = {}
  for s in prepared.PREPARED_SPLITS:
    shards, first, skipped, text_bytes = [], 0, {}, 0
    for u in units:
      if u.split != s:
        continue
      r = done[u.file]
      shards.append({"file": u.file, "first_document": first, "documents": r["documents"],
                     "bytes": r["bytes"], "file_bytes": r["file_bytes"],
                     "input_range": r["input_range"], "skipped": r["skipped"]})
      first += r["documents"]
      text_bytes += r["bytes"]
      for reason, n in r["skipped"].items():
        skipped[reason] = skipped.get(reason, 0) + n
    splits[s] = {"read": plan["splits"][s], "documents": first, "bytes": text_bytes,
                 "skipped": dict(sorted(skipped.items())), "shards": shards}
    assert first + sum(skipped.values()) == plan["splits"][s], (s, first, skipped)
  return {
      "format": prepared.FORMAT,
      "id": uuid.uuid4().hex,
      "inputs": o.inputs(),
      "options": {"validation_fraction": o.validation_fraction, "text_field": o.text_field},
      "split_rule": SPLIT_RULE,
      "record": RECORD_DOC,
      "sources": plan["sources"],
      "splits": splits,
      "created": {
          "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "host": socket.gethostname(), "python": platform.python_version(),
          "num_workers": o.num_workers, "seconds_last_run": round(seconds, 3)},
  }


def main(argv) -> None:
  cli.no_positional(argv)
  f = flags.FLAGS
  manifest = run(Options(
      sources=f.sources, out=f.out, validation_fraction=f.validation_fraction,
      text_field=f.text_field, docs_per_shard=f.docs_per_shard, num_workers=f.num_workers,
      max_document_bytes=f.max_document_bytes, record_format=f.record_format,
      tfds_data_dir=f.tfds_data_dir, progress=f.progress))
  parts = []
  for s in prepared.PREPARED_SPLITS:
    d = manifest["splits"][s]
    skipped = ", ".join(f"{k} {v}" for k, v in d["skipped"].items()) or "none"
    parts.append(f"{s} {d['documents']} documents ({d['bytes']} bytes) in "
                 f"{len(d['shards'])} shards, skipped: {skipped}")
  print(f"proxyjax.data.prepare: {'; '.join(parts)}; "
        f"{paths.join(f.out, prepared.MANIFEST)}", file=sys.stderr)


def _define_flags() -> None:
  flags.DEFINE_string("sources", None, "A data.sources spec (e.g. 'jsonl:/data/*.jsonl').")
  flags.DEFINE_string("out", None, "Directory to write (local, gs:// or s3://).")
  flags.DEFINE_float("validation_fraction", 0.01, "Hashed fraction in validation "
                     "(as config.data.validation_fraction).")
  flags.DEFINE_string("text_field", "", "JSON/TFDS field of the text (default text, "
                      "else content).")
  flags.DEFINE_integer("docs_per_shard", 50_000, "Input documents per shard.")
  flags.DEFINE_integer("num_workers", 1, "Processes writing shards in parallel.")
  flags.DEFINE_integer("max_document_bytes", 0, "Skip longer documents (0 = no limit).")
  flags.DEFINE_enum("record_format", "json", list(sources_lib.RECORD_FORMATS),
                    "How arrayrecord: inputs are read.")
  flags.DEFINE_string("tfds_data_dir", "", "TFDS data directory of tfds: inputs.")
  flags.DEFINE_bool("progress", True, "Progress lines on stderr.")


if __name__ == "__main__":
  _define_flags()
  cli.run(main, prog="proxyjax.data.prepare")
