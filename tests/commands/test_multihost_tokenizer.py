"""The run's tokenizer on two processes (``jax.distributed`` on 127.0.0.1): process 0
trains it once into WORKDIR/tokenizer.json, process 1 waits at the barrier and reads that
file; neither trains into a per-host cache; a second start trains nothing."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SCRIPT = r"""
import hashlib, json, sys, time
import jax
i, port, workdir, corpus, cache = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=i, initialization_timeout=60)
from helpers import small_config
from proxyjax.data import pipeline, tokenizer_training
trained = []
original = tokenizer_training.train_tokenizer
def counting(*a, **k):
  trained.append(1)
  if i == 0:
    time.sleep(1.0)  # process 1 must wait for the file, not find it by luck
  return original(*a, **k)
tokenizer_training.train_tokenizer = counting
c = small_config()
c.data.sources, c.data.validation_fraction = f"files:{corpus}", 0.25
c.data.view, c.data.tokenizer_vocab_size = "tokenizer", 300
c.data.tokenizer_cache_dir = f"{cache}/p{i}"
out = pipeline.run_tokenizer(c, workdir)
path = out.data.tokenizer_path
with open(path, "rb") as f:
  sha = hashlib.sha256(f.read()).hexdigest()
vocab = pipeline.build_vocab(out).size
print("RESULT " + json.dumps({"i": i, "trained": len(trained), "path": path, "sha": sha,
                              "vocab": vocab}), flush=True)
"""

CORPUS_FILES = ("textwrap.py", "functools.py", "difflib.py", "string.py", "copy.py",
                "bisect.py", "heapq.py", "shlex.py")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two(workdir, corpus, cache):
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
             PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "tests"), ROOT]))
  procs = [subprocess.Popen([sys.executable, "-c", _SCRIPT, str(i), str(port), workdir,
                             corpus, cache], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  results = {}
  try:
    for p in procs:
      out, _ = p.communicate(timeout=240)
      assert p.returncode == 0, out[-3000:]
      line = [x for x in out.splitlines() if x.startswith("RESULT ")][-1]
      r = json.loads(line[len("RESULT "):])
      results[r["i"]] = r
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return results


def test_two_processes_share_the_run_tokenizer_trained_once(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  stdlib = sysconfig.get_paths()["stdlib"]
  for name in CORPUS_FILES:
    shutil.copy(os.path.join(stdlib, name), corpus / name)
  workdir, cache = str(tmp_path / "run"), str(tmp_path / "cache")
  first = _run_two(workdir, str(corpus), cache)
  assert first[0]["trained"] == 1 and first[1]["trained"] == 0  # process 0 only
  target = os.path.join(workdir, "tokenizer.json")
  assert first[0]["path"] == first[1]["path"] == target
  with open(target, "rb") as f:
    sha = hashlib.sha256(f.read()).hexdigest()
  assert first[0]["sha"] == first[1]["sha"] == sha  # both read the run's file
  assert first[0]["vocab"] == first[1]["vocab"] > 300
  assert not os.path.exists(cache) or not any(  # no per-host copy trained
      n.endswith(".json") for _, _, files in os.walk(cache) for n in files)
  again = _run_two(workdir, str(corpus), cache)  # a resumed run: nobody trains
  assert again[0]["trained"] == again[1]["trained"] == 0
  assert again[0]["sha"] == again[1]["sha"] == sha
