"""The ablation runner at ci scale: two arms of ``views`` (deflate, gzip), the second
preempted mid-arm, then finished by the command line; an uninterrupted reference.

One run is shared by the tests of this module (module-scoped fixtures). deflate and
gzip have the same model (256-symbol alphabets), so with a module-local persistent
compilation cache the train step, validation and translation compile once.
"""

import json
import os
import subprocess
import sys

import pytest

from proxyjax import ablation, report
from proxyjax.ablation import catalog, probe, runner, scales
from proxyjax.ablation import workdir as workdir_lib
from proxyjax.data import pipeline
from proxyjax.errors import UserError
from proxyjax.train import metrics

ARMS = "deflate,gzip"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  """A module-local persistent compilation cache (also for the CLI subprocess)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  old = {n: getattr(jax.config, n) for n in names}
  if old["jax_compilation_cache_dir"]:  # configured by someone else: leave it alone
    yield old["jax_compilation_cache_dir"]
    return
  path = str(tmp_path_factory.mktemp("xla_cache"))
  compilation_cache.reset_cache()
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  try:
    yield path
  finally:
    for n, v in old.items():
      jax.config.update(n, v)
    compilation_cache.reset_cache()


def _cli(args, cache=None):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  return subprocess.run([sys.executable, "-m", "proxyjax.ablate", *args], capture_output=True,
                        text=True, env=env, cwd=ROOT, timeout=600)


def _mtimes(path):
  return {f: os.stat(os.path.join(path, f)).st_mtime_ns
          for f in ("metrics.jsonl", "eval/bpb.json", "arm.json")}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, _compilation_cache):
  """W after: deflate done, gzip preempted at step 6; then the CLI finishing it."""
  w = str(tmp_path_factory.mktemp("ablation") / "views")
  lines = []
  with pytest.raises(ablation.Interrupted, match="'gzip' stopped at step 6 of 12"):
    ablation.run("views", scale="ci", workdir=w, arms=ARMS, preempt_at=("gzip", 6),
                 log=lines.append)
  done_dir = os.path.join(w, "arms", "deflate")
  partial_dir = os.path.join(w, "arms", "gzip")
  before = {
      "done": _mtimes(done_dir),
      "partial_status": json.load(open(os.path.join(partial_dir, "arm.json")))["status"],
      "partial_steps": sorted(int(s) for s in os.listdir(os.path.join(partial_dir,
                                                                      "checkpoints"))
                              if s.isdigit()),
  }
  proc = _cli(["--ablation=views", "--scale=ci", f"--workdir={w}", f"--arms={ARMS}"],
              _compilation_cache)
  return w, before, proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory, resumed):
  """The gzip arm trained without interruption (in another W)."""
  del resumed  # after it: the compilation cache holds its steps
  w = str(tmp_path_factory.mktemp("ablation") / "reference")
  return ablation.run("views", scale="ci", workdir=w, arms="gzip", log=lambda s: None)


def _report(w):
  with open(os.path.join(w, "report.json")) as f:
    return json.load(f)


def test_cli_writes_the_report(resumed):
  w, _, proc = resumed
  assert proc.returncode == 0, proc.stderr[-3000:]
  data = _report(w)
  rows = {r["name"]: r for r in data["rows"]}
  assert list(rows) == ["deflate", "gzip"]
  assert data["scale"] == "ci" and data["budget"] == "steps:12"
  assert data["skipped"] == {}
  for name, r in rows.items():
    assert r["steps"] == r["planned_steps"] == 12, name
    assert 1.0 < r["eval_raw_bpb"] < 12.0, name  # finite, about 8 bits for a fresh model
    assert r["total_utf8_bytes"] > 1000 and r["total_train_flops"] > 1e8, name
    assert r["wall_s"] > 0 and r["attention"] == "xla", name
    assert 0.05 < r["compressed_share"] < 1.0, name
    assert 0.0 <= r["translation_byte_accuracy"] <= 1.0, name
  # Matched FLOPs: at the smaller total, where that arm's value is its last validation.
  matched = {m["axis"]: m["at"] for m in data["matched"]}
  least = min(rows.values(), key=lambda r: r["total_train_flops"])
  assert matched["train_flops"] == least["total_train_flops"]
  assert least["bpb_at_matched_train_flops"] == pytest.approx(least["last_validation_raw_bpb"])
  assert set(data["plots"]) == {"utf8_bytes", "train_flops", "wall_time"}
  for png in data["plots"].values():
    with open(os.path.join(w, png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  md = open(os.path.join(w, "report.md")).read()
  assert proc.stdout.endswith(md)  # the CLI prints the report last
  assert "| deflate | " in md and "| gzip | " in md and "bpb_vs_train_flops.png" in md


def test_resume_skips_finished_arms_and_continues_the_partial_one(resumed):
  w, before, proc = resumed
  assert before["partial_status"] == "planned"
  assert max(before["partial_steps"]) == 6
  assert _mtimes(os.path.join(w, "arms", "deflate")) == before["done"]  # not retrained
  assert "arm deflate: done earlier, skipped" in proc.stderr
  assert "steps 6->12" in proc.stderr + proc.stdout  # resumed from the checkpoint
  run = report.load_run(os.path.join(w, "arms", "gzip"))
  assert list(run.steps) == list(range(1, 13))
  state = json.load(open(os.path.join(w, "state.json")))
  assert state["arms"] == {"deflate": "done", "gzip": "done"}


def test_resumed_arm_equals_an_uninterrupted_one(resumed, reference):
  w, _, _ = resumed
  got = {r["name"]: r for r in _report(w)["rows"]}["gzip"]
  want = reference.rows[0]
  assert want["name"] == "gzip"
  assert got["eval_raw_bpb"] == pytest.approx(want["eval_raw_bpb"], abs=1e-6)
  assert got["translation_byte_accuracy"] == want["translation_byte_accuracy"]
  for key in ("steps", "total_utf8_bytes", "total_train_flops", "total_symbols",
              "total_compressed_symbols"):
    assert got[key] == want[key], key
  assert reference.plots["utf8_bytes"].endswith("bpb_vs_utf8_bytes.png")
  assert reference.markdown == open(reference.report_md).read()


def test_probe_flops_are_the_trainers(resumed):
  """The probe counts parameters as the trainer does: its FLOPs on the arm's own first
  batches equal the trainer's logged total; a probe phase uses the same formula."""
  w, _, _ = resumed
  arm = {a.name: a for a in ablation.ABLATIONS["views"].arms}["deflate"]
  c = runner.arm_config("ci", w, arm)
  scales.finalize(c, "ci", 12)
  model_cfg, n_dense = probe.dense_params(c)
  it = pipeline.make_iterator(c, "train", process_index=0, process_count=1)
  flops = 0
  for _ in range(3):
    seg = next(it)["segment_ids"]
    flops += metrics.train_flops(model_cfg, n_dense, int((seg > 0).sum()),
                                 metrics.visible_pairs(seg, model_cfg.window))
  run = report.load_run(os.path.join(w, "arms", "deflate"))
  assert run.steps[2] == 3 and run.totals["total_train_flops"][2] == flops
  phase = probe.probe_phase(c, 0.9, "sentinel", model_cfg=model_cfg, n_dense=n_dense,
                            min_batches=2, max_batches=2)
  assert phase.symbols_per_step == 8 * 128  # concat packing: no padding
  assert phase.flops_per_step == pytest.approx(
      6 * n_dense * 1024 + 12 * 4 * 16 * 1 * phase.pairs_per_step)  # 6 N S + 12 H E L P
  assert 1.5 < phase.bytes_per_id < 6  # DEFLATE at rate 0.9: several bytes per id


def test_another_scale_or_budget_in_the_same_workdir_is_refused(resumed):
  w, _, _ = resumed
  with pytest.raises(ablation.WorkdirMismatch, match="scale 'cpu'"):
    ablation.run("views", scale="cpu", workdir=w, arms=ARMS)
  with pytest.raises(ablation.WorkdirMismatch, match="budget 'steps:5'"):
    ablation.run("views", scale="ci", workdir=w, budget="steps:5")
  with pytest.raises(ablation.WorkdirMismatch, match="started with seed=0, this run asks for "
                     "seed=1"):
    ablation.run("views", scale="ci", workdir=w, arms=ARMS, seed=1)
  proc = _cli(["--ablation=mixing", "--scale=ci", f"--workdir={w}"])
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
  assert "holds the 'views' ablation" in proc.stderr


def test_seed_reaches_every_arm_and_is_recorded(tmp_path):
  """``seed`` sets each arm's config.seed; W records it (a W from before the option
  counts as seed 0); a bad seed is one line."""
  req = workdir_lib.preflight("mixing", "ci", str(tmp_path / "w"), seed=3)
  assert req.options.seed == 3 and req.state()["options"]["seed"] == 3
  arm = req.arms[0]
  a = runner._Arm(arm, req.workdir, "ci", req.budget, lambda s: None, req.options.seed)
  c = a.config()
  assert c.seed == 3 and c.data.view == "tokenizer"
  assert runner._Arm(arm, str(tmp_path / "w0"), "ci", req.budget, lambda s: None).config().seed == 0
  old = tmp_path / "old"
  old.mkdir()
  legacy = {"ablation": "mixing", "scale": "ci", "budget": req.budget_str,
            "options": {"view": "tokenizer", "neural_dir": ""}}  # written before seeds existed
  (old / workdir_lib.STATE_FILE).write_text(json.dumps(legacy))
  workdir_lib.preflight("mixing", "ci", str(old))  # seed 0: the same run
  with pytest.raises(ablation.WorkdirMismatch, match="seed=0, this run asks for seed=2"):
    workdir_lib.preflight("mixing", "ci", str(old), seed=2)
  with pytest.raises(UserError, match="--seed must be an integer >= 0"):
    workdir_lib.preflight("mixing", "ci", str(tmp_path / "w"), seed=-1)
  proc = _cli(["--ablation=mixing", "--scale=ci", f"--workdir={old}", "--seed=2"])
  assert proc.returncode == 2 and "seed=2" in proc.stderr


def test_unknown_ablation_or_arm_is_one_line(tmp_path):
  with pytest.raises(UserError, match="unknown ablation 'nope'"):
    ablation.run("nope", scale="ci", workdir=str(tmp_path))
  with pytest.raises(UserError, match="has no arm 'zzz'"):
    ablation.run("views", scale="ci", workdir=str(tmp_path), arms="bytes,zzz")
  for args, match in ((["--ablation=nope"], "unknown ablation 'nope'"),
                      (["--ablation=views", "--arms=bytes,zzz"], "no arm 'zzz'"),
                      (["--ablation=views", "--budget=flops:5"], "KIND one of")):
    proc = _cli([*args, "--scale=ci", f"--workdir={tmp_path}/w"])
    assert proc.returncode == 2, args
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("proxyjax.ablate: error: "), proc.stderr
    assert match in lines[0]
  assert not os.path.exists(tmp_path / "w")  # nothing written for a bad request
  listing = _cli(["--list"])
  assert listing.returncode == 0 and "token_bytes_gray" in listing.stdout
  assert "jax" not in listing.stderr.lower()  # listing needs no JAX (nor its warnings)
  assert catalog.get("views").name == "views"


@pytest.mark.slow  # an arm trained into each object store (~40 s)
def test_ablation_workdir_in_a_bucket(object_store, _compilation_cache):
  """W on gs:// / s3://: the arm's run (checkpoints included), its eval, the state file
  and the report (Markdown, JSON, plots) land in the bucket; a second call resumes from
  it and retrains nothing."""
  from proxyjax import paths  # pylint: disable=g-import-not-at-top
  w = object_store.new_bucket() + "/ablations/views"
  result = ablation.run("views", scale="ci", workdir=w, arms="deflate", log=lambda s: None)
  arm = paths.join(w, "arms", "deflate")
  assert json.loads(paths.read_text(paths.join(arm, "arm.json")))["status"] == "done"
  assert paths.exists(paths.join(arm, "eval", "bpb.json"))
  assert [int(json.loads(x)["step"]) for x in paths.read_text(paths.join(arm, "metrics.jsonl"))
          .splitlines() if x.strip()][-1] == 12
  steps = [n for n in paths.listdir(paths.join(arm, "checkpoints")) if n.isdigit()]
  assert steps and all(paths.exists(paths.join(arm, "checkpoints", n, "commit_success.txt"))
                       for n in steps)
  data = json.loads(paths.read_text(paths.join(w, "report.json")))
  assert [r["name"] for r in data["rows"]] == ["deflate"]
  assert "deflate" in paths.read_text(paths.join(w, "report.md"))
  for name in data["plots"].values():
    assert paths.read_bytes(paths.join(w, name))[:8] == b"\x89PNG\r\n\x1a\n"
  stamp = paths.read_text(paths.join(arm, "metrics.jsonl"))
  again = ablation.run("views", scale="ci", workdir=w, arms="deflate", log=lambda s: None)
  assert paths.read_text(paths.join(arm, "metrics.jsonl")) == stamp  # not retrained
  assert again.rows == result.rows and again.report_md == paths.join(w, "report.md")
  assert set(result.plots.values()) == {paths.join(w, n) for n in data["plots"].values()}
