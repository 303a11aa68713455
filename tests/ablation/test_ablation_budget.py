"""Budgets: parsing, and steps from a probe, pinned on hand-computed examples; every
catalog arm gives a valid config at every scale (no training)."""

import math

import pytest

from proxyjax import ablation
from proxyjax.ablation import budget, catalog, runner, scales, workdir
from proxyjax.errors import UserError
from proxyjax.eval import validation


def test_parse_budget():
  assert budget.parse_budget("steps:200") == budget.Budget("steps", 200)
  assert budget.parse_budget("utf8_bytes:20M").amount == 20e6
  assert budget.parse_budget("train_flops:3e13").amount == 3e13
  assert str(budget.parse_budget("utf8_bytes:1.5k")) == "utf8_bytes:1500"
  for bad, match in (("steps", "KIND:AMOUNT"), ("tokens:5", "KIND one of"),
                     ("steps:x", "not a number"), ("steps:2.5", "whole number"),
                     ("utf8_bytes:0", "positive")):
    with pytest.raises(UserError, match=match):
      budget.parse_budget(bad)


def _phase(bytes_per_id, flops, symbols=1000.0):
  return budget.Phase(rate=0.5, mode="sentinel", batches=4, documents=50,
                      symbols_per_step=symbols, pairs_per_step=0.0, bytes_per_id=bytes_per_id,
                      flops_per_step=flops)


def test_steps_without_warmup():
  # 1000 symbols x 2 bytes/id = 2000 bytes and 1e9 FLOPs per step.
  p = budget.Probe(n_dense=1, steady=_phase(2.0, 1e9))
  assert budget.steps_for(budget.Budget("utf8_bytes", 10_000), p) == 5
  assert budget.steps_for(budget.Budget("utf8_bytes", 10_001), p) == 6
  assert budget.steps_for(budget.Budget("train_flops", 3e9), p) == 3
  assert budget.steps_for(budget.Budget("steps", 7), None) == 7


def test_steps_with_mixing_warmup():
  # Warm-up of 2 steps from 1 byte/id (and 1e9 FLOPs) to 2 bytes/id (2e9), then steady
  # 2 bytes/id (3e9). Step 0: 1000 B; step 1: ids/byte = (1/1 + 1/2) / 2 = 0.75 ->
  # 1333.3 B; then 2000 B a step: totals 1000, 2333.3, 4333.3, 6333.3, 8333.3, ...
  p = budget.Probe(n_dense=1, start=_phase(1.0, 1e9), warm_end=_phase(2.0, 2e9),
                   steady=_phase(2.0, 3e9))
  warmup = lambda n: 2  # noqa: E731
  per_step = budget.per_step(p, "utf8_bytes", 5, 2)
  assert per_step == pytest.approx([1000, 4000 / 3, 2000, 2000, 2000])
  assert budget.steps_for(budget.Budget("utf8_bytes", 8333), p, warmup) == 5
  assert budget.steps_for(budget.Budget("utf8_bytes", 8334), p, warmup) == 6
  # FLOPs: 1e9, 1.5e9, then 3e9 a step: 5.5e9 after 3 steps.
  assert budget.steps_for(budget.Budget("train_flops", 5.5e9), p, warmup) == 3
  assert budget.steps_for(budget.Budget("train_flops", 5.6e9), p, warmup) == 4
  totals = budget.predicted_totals(p, 3, 2)
  assert totals["train_flops"] == pytest.approx(5.5e9)
  assert totals["utf8_bytes"] == pytest.approx(1000 + 4000 / 3 + 2000)


def test_warmup_follows_the_steps():
  # The warm-up is a fraction of the steps: a budget needing steps past the warm-up
  # of the first guess is still met (the search re-derives the warm-up for each n).
  p = budget.Probe(n_dense=1, start=_phase(0.5, 1e9), warm_end=_phase(2.0, 1e9),
                   steady=_phase(2.0, 1e9))
  warmup = lambda n: round(0.3 * n)  # noqa: E731
  n = budget.steps_for(budget.Budget("utf8_bytes", 1e6), p, warmup)
  assert budget.per_step(p, "utf8_bytes", n, warmup(n)).sum() >= 1e6
  assert budget.per_step(p, "utf8_bytes", n - 1, warmup(n - 1)).sum() < 1e6


def test_catalog_and_scales(tmp_path):
  assert ablation.SCALES == ("ci", "cpu", "colab_gpu", "colab_tpu", "pod")
  assert set(ablation.ABLATIONS) == {"views", "mixing", "granularity", "compressors"}
  assert ablation.ABLATIONS["views"].arm_names == (
      "bytes", "bytes_1head", "tokens", "tokenizer", "token_bytes", "token_bytes_gray", "deflate", "gzip",
      "neural")
  assert ablation.ABLATIONS["mixing"].arm_names == (
      "sentinel", "vanilla", "no_warmup", "parallel", "no_doc_mask", "rate_0.5")
  assert ablation.ABLATIONS["views"].arms[-1].skip  # neural without --neural_dir
  assert ablation.detect_scale() == "cpu"
  for abl in ablation.ABLATIONS.values():
    if abl.kind != "train":
      continue
    for scale in ablation.SCALES:
      assert budget.parse_budget(abl.budgets[scale]).kind in budget.KINDS
      for arm in abl.make_arms(catalog.Options(view="deflate")):
        if arm.skip:
          continue
        c = runner.arm_config(scale, str(tmp_path), arm)
        if scale == "pod":  # the ladder configs have no corpus: --sources gives one
          c.data.sources = "jsonl:/data/code/*.jsonl"
        scales.finalize(c, scale, 100)
        validation.validate(c)  # every arm is a valid config at every scale
        assert c.num_steps == 100 and c.eval_every >= 1 and c.checkpoint_every >= 1
  # eval tasks: translation only where a compressed view is trained with sentinels.
  views = {a.name: a for a in ablation.ABLATIONS["views"].arms}
  assert runner.eval_tasks(runner.arm_config("ci", str(tmp_path), views["bytes"])) == "bpb"
  assert runner.eval_tasks(runner.arm_config("ci", str(tmp_path), views["tokens"])) == "bpb"
  assert runner.eval_tasks(runner.arm_config("ci", str(tmp_path), views["gzip"])) == (
      "bpb,translation")
  assert math.isclose(scales.SCHEDULES["ci"].mix_warmup, 0.3)


def test_translation_fits_the_context(tmp_path):
  # A bit-view prompt holds 8 symbols per byte: at ci (128 ids) 13 bytes = 104 symbols,
  # plus sentinels and the 13-byte answer, fit; deflate keeps the scale's 24 bytes.
  for view, want in (("bit", 13), ("halfbyte", 24), ("deflate", 24)):
    c = runner.arm_config("ci", str(tmp_path), catalog.Arm(view, "", {"data.view": view}))
    runner.fit_translation(c)
    assert c.eval.translation_max_bytes == want, view


def test_notebook_helpers_arms_table_and_eval_bars(tmp_path):
  from proxyjax import ablation  # pylint: disable=g-import-not-at-top
  from proxyjax.ablation import report  # pylint: disable=g-import-not-at-top
  views = ablation.ABLATIONS["views"]
  table = report.arms_markdown(views, ablation.Options(), "cpu", None, ["bytes", "deflate"])
  lines = table.splitlines()
  assert "`steps:400`" in lines[0]
  by_arm = {line.split("|")[1].strip(" `"): line for line in lines[4:]}
  assert by_arm["bytes"].endswith("| runs |") and by_arm["deflate"].endswith("| runs |")
  assert by_arm["gzip"].endswith("| not selected |")
  assert "skipped: no --neural_dir" in by_arm["neural"]
  assert "`data.view='gzip'`" in by_arm["gzip"]
  rows = [{"name": "bytes", "eval_raw_bpb": 3.5, "compressed_share": 0.0},
          {"name": "deflate", "eval_raw_bpb": float("nan"), "compressed_share": 0.8},
          {"name": "gzip", "eval_raw_bpb": None, "compressed_share": 0.8},
          {"name": "tokenizer", "eval_raw_bpb": 3.1, "compressed_share": 0.6}]
  result = report.Result(ablation="views", scale="cpu", budget="steps:400",
                         workdir=str(tmp_path), markdown="", report_md="", report_json="",
                         plots={}, rows=rows, skipped={})
  path = tmp_path / "bars.png"
  drawn = report.plot_eval_bars(result, str(path))
  assert [r["name"] for r in drawn] == ["bytes", "tokenizer"]  # NaN / missing left out
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pod_scale_needs_sources(tmp_path):
  """The pod scale trains the ladder configs, which have no corpus: --sources gives one."""
  with pytest.raises(UserError, match="--sources="):
    workdir.preflight("views", "pod", str(tmp_path / "w"))
  req = workdir.preflight("views", "pod", str(tmp_path / "w"), sources="jsonl:/data/*.jsonl")
  assert req.options.sources == "jsonl:/data/*.jsonl"
  c = runner._Arm(req.arms[0], req.workdir, "pod", req.budget, print, 0,  # pylint: disable=protected-access
                  req.options.sources).config()
  assert c.data.sources == "jsonl:/data/*.jsonl"
