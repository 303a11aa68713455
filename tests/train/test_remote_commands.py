"""The commands around a run on object storage, against real emulators on 127.0.0.1
(tests/objectstore.py): the resume's process-count check, the compressor analysis,
``proxyjax.sample`` and ``proxyjax.export`` with a ``gs://`` workdir (or output).

The run: a short ``trainer.train`` into a GCS bucket (checkpoint at step 2), shared by
the module.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import small_config

from proxyjax import distributed, paths, rundir, trainer
from proxyjax.errors import UserError
from proxyjax.eval import compressor_analysis, sampling
from proxyjax.hf import llama_export, verify
from proxyjax.hf import safetensors_io as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = b"def f(x):\n    return "


@pytest.fixture(scope="module")
def gcs_run(gcs_server):
  """A gs:// workdir with one checkpoint (step 2) of a real, short training run."""
  workdir = gcs_server.new_bucket() + "/run"
  trainer.train(small_config(num_steps=2, checkpoint_every=2, log_every=2), workdir)
  return workdir


def _copy_local(workdir, dst):
  """The bucket's run, file by file, as a local directory."""
  prefix = workdir.rstrip("/") + "/"
  for f in paths.walk_files(workdir):
    local = os.path.join(dst, f[len(prefix):])
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with open(local, "wb") as out:
      out.write(paths.read_bytes(f))
  return str(dst)


# --- 1. the resume's process-count check (proxyjax.distributed) ---------------------------


def test_process_count_check_reads_a_gcs_checkpoint(gcs_run):
  ckpts = rundir.checkpoint_dir(gcs_run)
  assert paths.exists(paths.join(ckpts, "2", "data", "process_0-of-1.json"))
  assert distributed.checkpoint_process_count(ckpts) == (2, 1)
  distributed.check_resume(ckpts, 1)  # the same process count: resumes
  with pytest.raises(distributed.ResumeProcessCountError,
                     match=r"checkpoint at step 2 in gs://.* written by 1 process\(es\) but "
                           r"this run has 2") as info:
    distributed.check_resume(ckpts, 2)
  assert "\n" not in str(info.value)
  missing = paths.join(paths.dirname(gcs_run), "never-written", "checkpoints")
  assert distributed.checkpoint_process_count(missing) is None  # a new run: nothing to check
  distributed.check_resume(missing, 2)


# --- 2. the compressor analysis (proxyjax.eval.compressor_analysis) -----------------------


def test_compressor_analysis_writes_into_the_bucket(object_store):
  out = object_store.new_bucket() + "/analysis"
  cfg = compressor_analysis.AnalysisConfig(views=("raw", "deflate"), num_docs=3,
                                           max_doc_bytes=2048, window_chars=200)
  summary = compressor_analysis.run(cfg, out)
  saved = json.loads(paths.read_text(paths.join(out, "compressors.json")))
  assert saved == json.loads(json.dumps(summary))  # the summary, as JSON
  assert saved["views"].keys() == {"raw", "deflate"} and saved["num_docs"] == 3
  png = paths.read_bytes(paths.join(out, "compressors.png"))
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
  assert paths.listdir(out) == ["compressors.json", "compressors.png"]


def test_compressor_analysis_cli_out_on_gcs(gcs_server):
  out = gcs_server.new_bucket() + "/cli"
  r = subprocess.run([sys.executable, "-m", "proxyjax.eval.compressor_analysis",
                      "--views=raw,gzip", "--num_docs=2", "--max_doc_bytes=2048",
                      "--window_chars=200", f"--out={out}"],
                     cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"wrote {out}/compressors.json" in r.stdout
  assert json.loads(paths.read_text(paths.join(out, "compressors.json")))["num_docs"] == 2
  assert paths.size(paths.join(out, "compressors.png")) > 1000


# --- 3. sample and export (proxyjax.sample, proxyjax.export) on a gs:// run ---------------


def _sample(workdir, **kw):
  out, err = io.BytesIO(), io.StringIO()
  stats = sampling.run(sampling.Options(workdir=workdir, prompt=PROMPT, max_new_tokens=12,
                                        **kw), out, err)
  return out.getvalue(), err.getvalue(), stats


def test_sample_from_a_gcs_run_matches_a_local_copy(gcs_run, tmp_path):
  remote_text, remote_err, stats = _sample(gcs_run)
  assert stats["ids"] > 0 and "step 2" in remote_err
  local_text, _, _ = _sample(_copy_local(gcs_run, tmp_path / "run"))
  assert remote_text == local_text  # greedy: the same parameters give the same bytes
  with pytest.raises(UserError, match=r"no checkpoint at step 5 .*steps: 2"):
    _sample(gcs_run, step=5)


def test_sample_command_line_on_a_gcs_run(gcs_run):
  prompt_file = paths.join(paths.dirname(gcs_run), "prompt.py")
  paths.write_bytes(prompt_file, PROMPT)
  expected, _, _ = _sample(gcs_run)
  r = subprocess.run([sys.executable, "-m", "proxyjax.sample", f"--workdir={gcs_run}",
                      f"--prompt_file={prompt_file}", "--max_new_tokens=12"],
                     cwd=ROOT, capture_output=True, timeout=240, check=False)
  assert r.returncode == 0, r.stderr.decode()[-2000:]
  assert r.stdout == expected and b"bytes/s" in r.stderr and b"step 2" in r.stderr


def _file_bytes(directory):
  if paths.is_remote(directory):
    return {n: paths.read_bytes(paths.join(directory, n)) for n in paths.listdir(directory)}
  return {n: paths.read_bytes(os.path.join(directory, n)) for n in sorted(os.listdir(directory))}


def test_export_of_a_gcs_run_to_local_and_to_a_bucket(gcs_run, object_store, tmp_path):
  local = str(tmp_path / "hf")
  res = llama_export.export(gcs_run, local, max_shard_size="100KB", log=lambda _: None)
  assert res.step == 2 and len([f for f in res.files if st.SHARD_PATTERN.match(f)]) > 1
  record = json.loads(paths.read_text(os.path.join(local, llama_export.PROXYJAX_FILE)))
  assert record["workdir"] == gcs_run  # recorded as given
  assert verify.verify(res, backend="numpy").ok

  out = object_store.new_bucket() + "/hf"
  remote = llama_export.export(gcs_run, out, max_shard_size="100KB", log=lambda _: None)
  assert remote.out == out and remote.files == res.files
  assert _file_bytes(out) == _file_bytes(local)  # the same files, uploaded
  v = verify.verify(remote, backend="numpy")  # reads the bucket's files back
  assert v.ok and v.max_abs_diff == verify.verify(res, backend="numpy").max_abs_diff

  with pytest.raises(UserError, match=r"is not empty: .*--overwrite"):
    llama_export.export(gcs_run, out, log=lambda _: None)
  again = llama_export.export(gcs_run, out, overwrite=True, log=lambda _: None)  # one file now
  assert st.SINGLE_FILE in again.files
  assert not [n for n in paths.listdir(out) if st.SHARD_PATTERN.match(n) or n == st.INDEX_FILE]
  assert sorted(paths.listdir(out)) == sorted(again.files)
  with pytest.raises(UserError, match="is a run directory"):
    llama_export.export(gcs_run, gcs_run, log=lambda _: None)


def test_export_command_line_gcs_to_gcs_with_verify(gcs_run, gcs_server):
  out = gcs_server.new_bucket() + "/hf"
  r = subprocess.run([sys.executable, "-m", "proxyjax.export", f"--workdir={gcs_run}",
                      f"--out={out}", "--verify"],
                     cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"exported step 2 of {gcs_run} to {out}" in r.stderr and " ok" in r.stderr
  config = json.loads(paths.read_text(paths.join(out, llama_export.CONFIG_FILE)))
  assert config["architectures"] == ["LlamaForCausalLM"]
  data = paths.read_bytes(paths.join(out, st.SINGLE_FILE))  # the uploaded weights' header
  n = int(np.frombuffer(data[:8], "<u8")[0])
  assert "model.embed_tokens.weight" in json.loads(data[8:8 + n])
