r"""Data-pipeline start-up vs corpus size: JSON lines ("before") vs a prepared directory
("after", ``python -m proxyjax.data.prepare``).

    python benchmarks/data_startup.py [--sizes=100000,1000000,10000000] \
        [--cache_dir=/tmp/proxyjax_startup_bench] [--before_timeout_s=120] [--json_out=FILE]

For each size it generates (once, cached in ``--cache_dir``) a corpus of small documents
(~100 bytes) in 100 JSON-lines files and prepares it (``--docs_per_shard=50000``: 200
shards at 10^7), then measures, each case in a fresh subprocess, the time from
``build_dataset`` to the first batch and the peak RSS (``VmHWM``) of the main process and
of each Grain worker (at the first batch), for process_count 1 and 4 (``process_index=0``)
and 0 or 2 Grain workers. A "before" case that runs past ``--before_timeout_s`` is
reported as skipped. Config: raw view, 4 rows of 1024 ids, shuffled, repeated forever,
validation_fraction 0.01, the train split (``--kinds=after_noshuffle``: not shuffled, to
separate the shuffle's cost from the source's; the shuffle is O(1) in memory since issue 22).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app, flags

_SIZES = flags.DEFINE_list("sizes", ["100000", "1000000", "10000000"], "Corpus sizes (documents).")
_CACHE = flags.DEFINE_string("cache_dir", "/tmp/proxyjax_startup_bench", "Generated corpora.")
_BEFORE_TIMEOUT = flags.DEFINE_float("before_timeout_s", 120.0,
                                     "Skip a 'before' (jsonl) case running longer.")
_AFTER_TIMEOUT = flags.DEFINE_float("after_timeout_s", 300.0, "Limit of a 'prepared' case.")
_WORKERS = flags.DEFINE_list("num_workers", ["0", "2"], "Grain worker counts.")
_PROCESSES = flags.DEFINE_list("process_counts", ["1", "4"], "Simulated process counts.")
_PREPARE_WORKERS = flags.DEFINE_integer("prepare_workers", 2, "prepare --num_workers.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Append results as JSON lines here.")
_KINDS = flags.DEFINE_list("kinds", ["before", "after"], "Cases: before (jsonl), after "
                          "(prepared), after_noshuffle (prepared, data.shuffle=False: the "
                          "shuffle left out).")
_CASE = flags.DEFINE_string("case", None, "Internal: run one measurement (JSON) and exit.")
_STEADY = flags.DEFINE_integer("steady_batches", 300, "Batches read after the first one "
                               "before the 'steady' peak RSS is taken (0: skip).")

FILES = 100
DOCS_PER_SHARD = 50_000
VALIDATION_FRACTION = 0.01
_WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
          "incididunt ut labore et dolore magna aliqua").split()


def _corpus(n: int) -> tuple[str, str, dict]:
  """(jsonl spec, prepared dir, generation info), generating what is missing."""
  root = os.path.join(_CACHE.value, f"n{n}")
  jsonl_dir, prep_dir = os.path.join(root, "jsonl"), os.path.join(root, "prepared")
  info_path = os.path.join(root, "info.json")
  info = json.load(open(info_path)) if os.path.exists(info_path) else {}
  if not info.get("jsonl_done"):
    os.makedirs(jsonl_dir, exist_ok=True)
    t = time.perf_counter()
    per_file = -(-n // FILES)
    for f in range(FILES):
      lo, hi = f * per_file, min(n, (f + 1) * per_file)
      lines = []
      for i in range(lo, hi):
        words = " ".join(_WORDS[(i * 7 + k * 3) % len(_WORDS)] for k in range(10 + i % 6))
        lines.append(json.dumps({"text": f"doc {i}: {words}"}))
      with open(os.path.join(jsonl_dir, f"part{f:03d}.jsonl"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    info.update(jsonl_done=True, jsonl_s=round(time.perf_counter() - t, 1),
                jsonl_bytes=sum(os.path.getsize(os.path.join(jsonl_dir, x))
                                for x in os.listdir(jsonl_dir)))
    json.dump(info, open(info_path, "w"))
  spec = f"jsonl:{jsonl_dir}/*.jsonl"
  if not os.path.exists(os.path.join(prep_dir, "manifest.json")):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "proxyjax.data.prepare", f"--sources={spec}",
                    f"--out={prep_dir}", f"--validation_fraction={VALIDATION_FRACTION}",
                    f"--docs_per_shard={DOCS_PER_SHARD}",
                    f"--num_workers={_PREPARE_WORKERS.value}"], check=True)
    info.update(prepare_s=round(time.perf_counter() - t, 1),
                prepare_workers=_PREPARE_WORKERS.value)
    json.dump(info, open(info_path, "w"))
  return spec, prep_dir, info


def _vm_hwm_mb(pid: int | str = "self") -> float:
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _run_case(case: dict) -> dict:
  """One measurement in this (fresh) process."""
  import psutil  # pylint: disable=g-import-not-at-top

  from proxyjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from proxyjax.data import pipeline  # pylint: disable=g-import-not-at-top
  rss_imports = _vm_hwm_mb()
  c = config_lib.base_config()
  c.seq_len, c.batch_size = 1024, 4 * case["process_count"]
  c.data.view = "raw"
  c.data.sources = case["sources"]
  c.data.validation_fraction = VALIDATION_FRACTION
  c.data.num_workers = case["num_workers"]
  c.data.shuffle = case.get("shuffle", True)
  t0 = time.perf_counter()
  it = pipeline.make_iterator(c, "train", process_index=0, process_count=case["process_count"])
  t1 = time.perf_counter()
  next(it)
  t2 = time.perf_counter()

  def worker_hwm():
    out = []
    for p in psutil.Process().children(recursive=True):
      try:
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
          out.append(_vm_hwm_mb(p.pid))
      except (OSError, psutil.Error):
        pass
    return out

  first_workers, first_main = worker_hwm(), _vm_hwm_mb()
  out = {"build_s": t1 - t0, "first_batch_s": t2 - t0, "rss_imports_mb": rss_imports,
         "rss_main_mb": first_main,
         "rss_max_worker_mb": max(first_workers) if first_workers else None,
         "workers_seen": len(first_workers),
         "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
  steady = int(case.get("steady_batches", 0))
  if steady:  # the peak after reading on (open shard readers accumulate, buffers fill)
    for _ in range(steady):
      next(it)
    later = worker_hwm()
    out.update(steady_batches=steady, steady_s=time.perf_counter() - t2,
               rss_main_steady_mb=_vm_hwm_mb(),
               rss_max_worker_steady_mb=max(later) if later else None)
  return out


def _measure(case: dict, timeout: float) -> dict:
  argv = [sys.executable, os.path.abspath(__file__), f"--case={json.dumps(case)}"]
  t = time.perf_counter()
  try:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {**case, "skipped": f"> {timeout:g} s"}
  wall = time.perf_counter() - t
  lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
  if r.returncode or not lines:
    return {**case, "skipped": f"failed (rc {r.returncode}): {r.stderr.strip()[-500:]}"}
  return {**case, **json.loads(lines[-1]), "process_wall_s": wall}


def _fmt(x, spec=".2f"):
  return "-" if x is None else format(x, spec)


def main(argv):
  del argv
  if _CASE.value:
    print(json.dumps(_run_case(json.loads(_CASE.value))), flush=True)
    os._exit(0)  # pylint: disable=protected-access  (skip Grain worker teardown)
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
              if line.startswith("model name")), platform.processor())
  print(f"machine: {cpu}, {os.cpu_count()} cores, python {platform.python_version()}",
        file=sys.stderr)
  rows = []
  for n in (int(s) for s in _SIZES.value):
    spec, prep_dir, info = _corpus(n)
    print(f"n={n}: {info}", file=sys.stderr, flush=True)
    kinds = {"before": ("before (jsonl)", spec, _BEFORE_TIMEOUT.value, True),
             "after": ("after (prepared)", f"prepared:{prep_dir}", _AFTER_TIMEOUT.value, True),
             "after_noshuffle": ("after (prepared, no shuffle)", f"prepared:{prep_dir}",
                                 _AFTER_TIMEOUT.value, False)}
    for kind, sources, timeout, shuffle in (kinds[k] for k in _KINDS.value):
      for pc in (int(x) for x in _PROCESSES.value):
        for nw in (int(x) for x in _WORKERS.value):
          case = {"docs": n, "kind": kind, "sources": sources, "process_count": pc,
                  "num_workers": nw, "shuffle": shuffle, "steady_batches": _STEADY.value}
          row = _measure(case, timeout)
          row["prepare_s"] = info.get("prepare_s")
          rows.append(row)
          print(json.dumps(row), flush=True)
          if _JSON_OUT.value:
            with open(_JSON_OUT.value, "a", encoding="utf-8") as f:
              f.write(json.dumps(row) + "\n")
  print("\n| documents | sources | processes | workers | first batch (s) | "
        "main peak RSS (MB) | worker peak RSS (MB) | after N batches: main / worker (MB) |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    if "skipped" in r:
      print(f"| {r['docs']:,} | {r['kind']} | {r['process_count']} | {r['num_workers']} | "
            f"skipped ({r['skipped'][:60]}) | - | - | - |")
      continue
    print(f"| {r['docs']:,} | {r['kind']} | {r['process_count']} | {r['num_workers']} | "
          f"{r['first_batch_s']:.2f} | {r['rss_main_mb']:.0f} | "
          f"{_fmt(r['rss_max_worker_mb'], '.0f')} | "
          f"{_fmt(r.get('rss_main_steady_mb'), '.0f')} / "
          f"{_fmt(r.get('rss_max_worker_steady_mb'), '.0f')} |")


if __name__ == "__main__":
  app.run(main)
