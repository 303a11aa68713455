"""--mode=eval: restore the latest checkpoint, run tasks, write DIR/eval/*.json."""

import copy
import json
import math
import os
import subprocess
import sys

import pytest
from helpers import model_config, small_config

from proxyjax import parallel, trainer
from proxyjax.data import pipeline
from proxyjax.errors import ConfigError
from proxyjax.eval import bpb as bpb_lib
from proxyjax.eval import codegen, generate, recode, validation
from proxyjax.eval import run as eval_run
from proxyjax.model import transformer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAMILIES = set(recode.FAMILIES)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 4-step run with checkpoints at 2 and 4 and raw-BPB evals every 2 steps."""
  workdir = tmp_path_factory.mktemp("run")
  c = small_config(num_steps=4, checkpoint_every=2, eval_every=2, log_every=2)
  c.eval.max_docs = 3
  trainer.train(c, str(workdir))
  return c, workdir


def test_training_logs_eval_raw_bpb(trained):
  _, workdir = trained
  lines = [json.loads(l) for l in open(workdir / "metrics.jsonl") if l.strip()]
  evals = {r["step"]: r["eval/raw_bpb"] for r in lines if "eval/raw_bpb" in r}
  assert sorted(evals) == [2, 4]
  assert all(math.isfinite(v) and 0.5 < v < 12 for v in evals.values())
  assert all(r.get("eval/documents") == 3 for r in lines if "eval/raw_bpb" in r)


def test_evaluate_latest_checkpoint(trained, tmp_path, monkeypatch):
  c, workdir = trained
  c = copy.deepcopy(c)
  c.eval.tasks = "bpb,view_bpb"
  meshes = []
  real_make_mesh = parallel.make_mesh
  monkeypatch.setattr(parallel, "make_mesh",
                      lambda *a, **kw: meshes.append(kw) or real_make_mesh(*a, **kw))
  results = eval_run.evaluate(c, str(workdir))
  assert meshes and meshes[0].get("dcn_shape") == tuple(c.mesh.dcn_shape)
  assert results["bpb"]["step"] == 4
  with open(workdir / "eval" / "bpb.json") as f:
    saved = json.load(f)
  assert saved["raw_bpb"] == pytest.approx(results["bpb"]["raw_bpb"])
  assert 0.5 < saved["raw_bpb"] < 10 and saved["documents"] == 3
  assert "corpus_raw_bpb" not in saved
  view = json.load(open(workdir / "eval" / "view_bpb.json"))
  assert view["view"] == "deflate" and view["bits_per_symbol"] > 0
  assert view["bytes_per_symbol"] > 1.5  # deflate compresses code

  # A user corpus adds its own numbers; the validation split's stay as they were.
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  texts = [b"def add(a, b):\n    return a + b\n", b"print('hello, world')\n"]
  for i, t in enumerate(texts):
    (corpus / f"doc{i}.py").write_bytes(t)
  c.eval.corpus = f"files:{corpus}"
  c.eval.tasks = "bpb"
  both = eval_run.evaluate(c, str(workdir))["bpb"]
  assert both["raw_bpb"] == pytest.approx(saved["raw_bpb"]) and both["documents"] == 3
  assert both["corpus_documents"] == 2 and both["corpus_bytes"] == sum(map(len, texts))
  assert 0.5 < both["corpus_raw_bpb"] < 12 and both["corpus_raw_bpb"] != both["raw_bpb"]
  assert json.load(open(workdir / "eval" / "bpb.json"))["corpus"] == c.eval.corpus


def test_max_docs_zero_means_all():
  c = small_config()
  c.eval.max_docs = 0
  every = eval_run.eval_documents(c)
  c.eval.max_docs = 2
  assert len(eval_run.eval_documents(c)) == 2
  c.eval.max_docs = len(every) + 50
  assert len(every) > 2 and len(eval_run.eval_documents(c)) == len(every)


def test_max_document_bytes_skips_and_counts():
  c = small_config()
  c.eval.max_docs = 0
  every = eval_run.eval_documents(c)
  limit = sorted(map(len, every))[len(every) // 2]
  c.eval.max_document_bytes = limit
  kept, skipped = eval_run.read_eval_documents(c)
  assert kept == [d for d in every if len(d) <= limit]
  assert skipped == len(every) - len(kept) > 0


def test_unknown_task_and_missing_checkpoint(tmp_path):
  c = small_config()
  c.eval.tasks = "bpb,nope"
  with pytest.raises(ConfigError, match="eval.tasks"):
    eval_run.evaluate(c, str(tmp_path))
  c.eval.tasks = "bpb"
  with pytest.raises(FileNotFoundError):
    eval_run.evaluate(c, str(tmp_path))


@pytest.mark.parametrize("field,value,match", [
    ("eval.train_tasks", "bpb,humaneva", "eval.train_tasks"),
    ("eval.tasks", "mbpp", "eval.mbpp_path"),
    ("eval.tasks", "humaneval_plus", "eval.humaneval_plus_path"),
    ("eval.pass_k", "1,5", "eval.pass_k"),
    ("eval.pass_k", "1,x", "eval.pass_k"),
    ("eval.top_p", 0.0, "eval.top_p"),
    ("eval.temperature", -0.5, "eval.temperature"),
    ("eval.max_docs", -1, "eval.max_docs"),
    ("eval.n_samples", 0, "eval.n_samples"),
    ("eval.stride", 65, "eval.stride"),
    ("eval.draft_len", -1, "eval.draft_len"),
    ("eval.compressor_views", "raw,nope", "eval.compressor_views"),
    ("eval.recode_families", "format,typos", "eval.recode_families"),
    ("eval.recode_benchmark", "humaneval_plus", "eval.recode_benchmark"),
    ("eval.corpus", "ftp:somewhere", "eval.corpus"),
])
def test_bad_eval_config_fails_at_start(tmp_path, field, value, match):
  c = small_config(**{field: value})
  with pytest.raises(ConfigError, match=match):
    validation.validate(c)
  with pytest.raises(ConfigError, match=match):  # training refuses before its first step
    trainer.train(c, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()


def test_speculative_generation_config():
  c = small_config(**{"eval.speculative": True, "eval.draft_len": 3})
  validation.validate(c)
  cfg = eval_run.sampling_config(c)
  assert cfg.speculative and cfg.draft_len == 3 and cfg.temperature == 0.0
  c.eval.temperature = 0.5  # speculative sampling
  validation.validate(c)
  assert eval_run.sampling_config(c).temperature == 0.5
  c.eval.draft_len = -1
  with pytest.raises(ConfigError, match="eval.draft_len"):
    validation.validate(c)
  assert not eval_run.sampling_config(small_config()).speculative


def test_benchmark_paths_must_exist(tmp_path):
  c = small_config(**{"eval.tasks": "bpb,mbpp_plus",
                      "eval.mbpp_plus_path": str(tmp_path / "missing.jsonl")})
  with pytest.raises(ConfigError, match="eval.mbpp_plus_path.*no such file"):
    validation.validate(c)
  c = small_config(**{"eval.tasks": "recode", "eval.recode_benchmark": "mbpp"})
  with pytest.raises(ConfigError, match="eval.mbpp_path"):
    validation.validate(c)
  validation.validate(small_config(**{"eval.tasks": "bpb,humaneval,recode,compressors"}))


# ---------------------------------------------------------------------------
# Code tasks with a stand-in for the model (the decoding itself is tested in
# test_generate.py and, end to end, by the CLI test below).


def _fake_generate(answers, calls, junk="\n\ndef junk():\n    return 1 / 0\n\nprint(junk())\n"):
  """generate.generate stand-in: answers[prompt] per sample, plus junk the stops must cut."""

  def fake(graphdef, params, prompts, cfg, batch_size=8, mesh=None, rules=None, *,
           interface=generate.RAW, context_len=None):
    del graphdef, params, mesh, rules
    calls.append({"prompts": len(prompts), "cfg": cfg, "batch_size": batch_size,
                  "interface": interface, "context_len": context_len})
    out = []
    for p in prompts:
      row = answers(p.decode("utf-8"))
      row = row if isinstance(row, list) else [row] * cfg.n
      assert len(row) == cfg.n
      out.append([codegen.truncate_completion(a + junk, cfg.stop_strings) for a in row])
    return out

  return fake


def test_humaneval_task_with_known_completions(tmp_path, monkeypatch):
  c = small_config(**{"eval.num_problems": 2, "eval.n_samples": 2, "eval.pass_k": "1,2",
                      "eval.max_new_tokens": 40, "eval.temperature": 0.2})
  validation.validate(c)
  problems = codegen.load_humaneval()[:2]
  canonical = {p.prompt: p.canonical_solution for p in problems}
  calls = []
  monkeypatch.setattr(generate, "generate", _fake_generate(
      lambda prompt: [canonical[prompt], "    return None\n"], calls))
  ctx = eval_run.Context(c, None, None, 7, out_dir=str(tmp_path))
  res = eval_run.run_tasks(ctx, ["humaneval"], str(tmp_path))["humaneval"]
  cfg = calls[0]["cfg"]
  assert calls[0]["interface"] is generate.RAW and calls[0]["context_len"] == c.seq_len
  assert cfg.stop_strings == codegen.HUMANEVAL_STOP_STRINGS and cfg.n == 2
  assert cfg.max_new_tokens == 40 and cfg.temperature == 0.2 and cfg.top_p == c.eval.top_p
  saved = json.load(open(tmp_path / "humaneval.json"))
  assert saved == json.loads(json.dumps(res))
  assert saved["step"] == 7 and saved["num_problems"] == 2 and saved["num_samples"] == 2
  assert saved["pass@1"] == pytest.approx(0.5) and saved["pass@2"] == pytest.approx(1.0)
  assert [r["task_id"] for r in saved["per_problem"]] == ["HumanEval/0", "HumanEval/1"]
  assert [r["c"] for r in saved["per_problem"]] == [1, 1]
  for row, p in zip(saved["per_problem"], problems):
    assert row["statuses"] == ["passed", "failed"]
    assert "junk" not in row["completions"][0]  # stop strings applied
    assert row["completions"][0].rstrip() == p.canonical_solution.rstrip()


_MBPP = {"task_id": 11, "text": "Write a function that returns the square of a number.",
         "code": "def square(x):\r\n  return x * x", "test_list": [
             "assert square(3) == 9", "assert square(-2) == 4"], "test_setup_code": ""}
_MBPP_PLUS = {"task_id": "Mbpp/12",
              "prompt": '"""\nWrite a function to add one.\nassert add_one(1) == 2\n"""\n',
              "code": "def add_one(x):\n  return x + 1\n", "entry_point": "add_one",
              "test_list": ["assert add_one(1) == 2"], "base_input": [[1], [2]],
              "plus_input": [[-1], [10 ** 20]], "atol": 0}


def test_mbpp_tasks_from_local_files(tmp_path, monkeypatch):
  mbpp = tmp_path / "mbpp.jsonl"
  mbpp.write_text(json.dumps(_MBPP) + "\n")
  plus = tmp_path / "mbpp_plus.jsonl"
  plus.write_text(json.dumps(_MBPP_PLUS) + "\n")
  c = small_config(**{"eval.tasks": "mbpp,mbpp_plus", "eval.mbpp_path": str(mbpp),
                      "eval.mbpp_plus_path": str(plus)})
  validation.validate(c)
  problems = codegen.load_problems(str(mbpp)) + codegen.load_problems(str(plus))
  canonical = {p.prompt: p.canonical_solution for p in problems}
  calls = []
  # MBPP stops keep whole functions ("\ndef " is not a stop): the junk survives a "\ndef ".
  monkeypatch.setattr(generate, "generate", _fake_generate(
      lambda prompt: canonical[prompt], calls, junk="\ndef helper():\n  return 0\n# end\n"))
  ctx = eval_run.Context(c, None, None, 3)
  res = eval_run.run_tasks(ctx, ["mbpp", "mbpp_plus"], None)
  assert all(call["cfg"].stop_strings == codegen.MBPP_STOP_STRINGS for call in calls)
  assert res["mbpp"]["pass@1"] == 1.0 and res["mbpp"]["suite"] == "base"
  assert res["mbpp_plus"]["pass@1"] == 1.0 and res["mbpp_plus"]["suite"] == "plus"
  assert "def helper" in res["mbpp"]["per_problem"][0]["completions"][0]
  assert "# end" not in res["mbpp"]["per_problem"][0]["completions"][0]
  # A plus-only bug: right on the base inputs, wrong on a plus input.
  monkeypatch.setattr(generate, "generate", _fake_generate(
      lambda prompt: ("def add_one(x):\n  return x + 1 if x >= 0 else x\n"
                      if "add one" in prompt else canonical[prompt]), []))
  ctx = eval_run.Context(c, None, None, 3)
  res = eval_run.run_tasks(ctx, ["mbpp_plus"], None)
  assert res["mbpp_plus"]["pass@1"] == 0.0


def test_recode_task_with_known_completions(tmp_path, monkeypatch):
  c = small_config(**{"eval.tasks": "recode", "eval.num_problems": 2, "eval.recode_seeds": 2})
  validation.validate(c)
  problems = codegen.load_humaneval()[:2]
  nominal = {p.prompt: p.canonical_solution for p in problems}
  everything = dict(nominal)
  for family in recode.FAMILIES:
    for suite in recode.perturbed_suite(problems, family, 2):
      everything.update({p.prompt: p.canonical_solution for p in suite})
  calls = []
  monkeypatch.setattr(generate, "generate", _fake_generate(lambda p: everything[p], calls))
  res = eval_run.run_tasks(eval_run.Context(c, None, None, 5), ["recode"], None)["recode"]
  assert len(calls) == 1 and calls[0]["prompts"] == len(everything)  # one batched decode
  assert res["num_problems"] == 2 and res["num_seeds"] == 2 and res["nominal_pass@1"] == 1.0
  assert set(res["families"]) == FAMILIES
  for m in res["families"].values():
    assert m["robust_pass@1"] == 1.0 and m["robust_drop_pass@1"] == 0.0
  # Right on the original prompts only: every family breaks every problem.
  monkeypatch.setattr(generate, "generate", _fake_generate(
      lambda p: nominal.get(p, "    return None\n"), []))
  res = eval_run.run_tasks(eval_run.Context(c, None, None, 5), ["recode"], None)["recode"]
  assert res["nominal_pass@1"] == 1.0
  for m in res["families"].values():
    assert m["robust_pass@1"] == 0.0 and m["robust_drop_pass@1"] == 1.0
    assert m["attack_success"] == 1.0


def test_default_max_new_tokens_is_2048():
  assert small_config().eval.max_new_tokens == 2048
  assert eval_run.sampling_config(small_config()).max_new_tokens == 2048


# ---------------------------------------------------------------------------
# A tokenizer-trained baseline, through its own interface.


def _tokens_config(tokenizer_path, **overrides):
  return small_config(**{"data.view": "tokenizer", "data.tokenizer_path": tokenizer_path,
                         "data.schedule.enabled": False, "data.rate": 1.0,
                         "data.mode": "vanilla", **overrides})


def test_tokens_baseline_bpb_through_its_interface(tokenizer_path):
  c = _tokens_config(tokenizer_path, **{"model.n_layers": 1})
  validation.validate(c)
  vocab = pipeline.build_vocab(c)
  mcfg = model_config(c)
  graphdef, _ = transformer.abstract_model(mcfg)
  params = transformer.init_params(mcfg, 0)
  ctx = eval_run.Context(c, graphdef, params, 1)
  assert ctx.interface == "tokens" and not ctx.sentinels
  docs = [b"def f(x):\n    return x * 2\n", "print('é')\n".encode()]
  ctx._docs = docs  # pylint: disable=protected-access
  res = eval_run.run_tasks(ctx, ["bpb", "view_bpb"], None)
  view = pipeline.build_view(c)
  direct = bpb_lib.view_bpb(graphdef, params, docs, view, vocab, context_len=c.seq_len,
                            stride=c.seq_len, batch_size=c.eval.batch_size, sentinels=False)
  assert res["bpb"]["interface"] == "tokens" and res["bpb"]["documents"] == 2
  assert res["bpb"]["raw_bpb"] == pytest.approx(direct["bits_per_byte"])  # per UTF-8 byte
  assert res["bpb"]["bytes"] == sum(map(len, docs))
  assert res["view_bpb"]["sentinels"] is False
  assert res["view_bpb"]["bits_per_byte"] == pytest.approx(direct["bits_per_byte"])


def test_tokens_baseline_generates_through_its_tokenizer(tokenizer_path, monkeypatch):
  c = _tokens_config(tokenizer_path, **{"eval.num_problems": 1})
  calls = []
  monkeypatch.setattr(generate, "generate", _fake_generate(lambda p: "    return 0\n", calls))
  eval_run.run_tasks(eval_run.Context(c, None, None, 1), ["humaneval"], None)
  iface = calls[0]["interface"]
  assert iface.name == "tokens" and iface.prefix == (1,)  # [BOS, ids...]: vanilla mode
  assert iface.end_ids == (2,) and calls[0]["context_len"] == c.seq_len
  text = b"def f(x):\n"
  assert iface.decode(iface.encode(text)[1:].tolist()) == text


# ---------------------------------------------------------------------------
# The CLI, end to end on a freshly trained tiny checkpoint.

_SMALL = ["--config.seq_len=64", "--config.model.n_layers=1", "--config.model.d_model=64",
          "--config.model.d_ff=128", "--config.num_steps=2", "--config.eval_every=0",
          "--config.progress_bar=False", "--config.eval.max_docs=2"]


def _cli(workdir, *extra):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "proxyjax.main", "--config=configs/tiny.py",
         f"--workdir={workdir}", *_SMALL, *extra]
  res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                       check=False)
  assert res.returncode == 0, res.stderr[-3000:]
  return res


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cli")
  _cli(workdir)
  return workdir


def test_main_eval_mode_cli(cli_run):
  _cli(cli_run, "--mode=eval", "--eval.tasks=bpb")
  saved = json.load(open(cli_run / "eval" / "bpb.json"))
  assert saved["step"] == 2 and saved["documents"] == 2 and saved["raw_bpb"] > 0
  assert not (cli_run / "eval" / "view_bpb.json").exists()  # --eval.tasks replaced the default


@pytest.mark.slow  # CI time: test_main_eval_mode_cli runs the same CLI
def test_issue_command_cli(cli_run):
  """The issue's command: bpb, humaneval, recode, compressors on the latest checkpoint."""
  res = _cli(cli_run, "--mode=eval", "--eval.tasks=bpb,humaneval,recode,compressors",
             "--config.eval.num_problems=2", "--config.eval.n_samples=2",
             "--config.eval.max_new_tokens=8", "--config.eval.temperature=0.8",
             "--config.eval.pass_k=1,2", "--config.eval.recode_seeds=2",
             "--config.eval.compressor_docs=4")
  out = cli_run / "eval"
  for task in ("bpb", "humaneval", "recode", "compressors"):
    assert f"eval {task} @ step 2" in res.stderr
  bpb = json.load(open(out / "bpb.json"))
  assert bpb["step"] == 2 and bpb["documents"] == 2 and 1.0 < bpb["raw_bpb"] < 12.0

  he = json.load(open(out / "humaneval.json"))
  assert he["task"] == "humaneval" and he["step"] == 2 and he["suite"] == "base"
  assert he["num_problems"] == 2 and he["num_samples"] == 2
  assert len(he["per_problem"]) == 2 and he["sampling"]["max_new_tokens"] == 8
  for k in ("pass@1", "pass@2"):
    assert 0.0 <= he[k] <= 1.0
  assert sum(he["status_counts"].values()) == 4
  for row in he["per_problem"]:
    assert row["n"] == 2 and 0 <= row["c"] <= 2 and len(row["completions"]) == 2
    assert all(len(t) <= 2 * 8 for t in row["completions"])  # max_new_tokens bytes, re-indented
    assert set(row["statuses"]) <= {"passed", "failed", "timeout"}

  rc = json.load(open(out / "recode.json"))
  assert rc["num_problems"] == 2 and rc["num_seeds"] == 2 and set(rc["families"]) == FAMILIES
  assert 0.0 <= rc["nominal_pass@1"] <= 1.0
  for m in rc["families"].values():
    assert 0.0 <= m["robust_pass@2"] <= m["nominal_pass@2"] <= 1.0
    assert len(m["per_seed_pass@1"]) == 2

  comp = json.load(open(out / "compressors.json"))
  assert comp["num_docs"] == 4 and set(comp["views"]) == {"raw", "deflate", "gzip", "halfbyte"}
  v = comp["views"]
  for name, view in v.items():
    assert view["compression"]["bytes_per_symbol"] > 0, name
    assert 0.0 <= view["stability"]["mean"] <= 1.0, name
    assert "mean_chunks_per_symbol" in view["collisions"], name
  assert v["raw"]["compression"]["bytes_per_symbol"] == 1.0
  assert v["deflate"]["compression"]["bytes_per_symbol"] > 1.5
  assert v["halfbyte"]["compression"]["bytes_per_symbol"] == 0.5
  assert v["raw"]["collisions"]["collision_rate"] == 0.0
  assert v["halfbyte"]["collisions"]["collision_rate"] > 0.5
  assert v["raw"]["stability"]["mean"] < v["deflate"]["stability"]["mean"]
  png = (out / "compressors.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
