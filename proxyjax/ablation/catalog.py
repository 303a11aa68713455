"""The built-in ablations: named lists of arms (config overrides) and default budgets.

An arm is a name and the config fields it changes on top of the scale's base config
(``proxyjax.ablation.scales``); an ablation is its arms, a budget per scale and a
description. ``compressors`` trains nothing: it runs the compressor analysis.
Arm names are short and stable: they name the arm's directory (``W/arms/<arm>``) and
its row in the report.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Any, Callable

from proxyjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Options:
  """Ablation-level choices.

  Attributes:
    view: the proxy view of the ``mixing`` ablation (every arm uses it).
    neural_dir: shards of ``python -m proxyjax.compress`` (the ``neural`` arm; the
      arm is skipped without them).
    seed: ``config.seed`` of every arm (data order, view draws, initialization). The
      same ablation with another seed, in another W, measures run-to-run spread.
    sources: ``data.sources`` of every arm ('' = the scale's corpus; the ``pod`` scale,
      built on the ladder configs, has none and needs one).
  """
  view: str = "tokenizer"
  neural_dir: str = ""
  seed: int = 0
  sources: str = ""


@dataclasses.dataclass(frozen=True)
class Arm:
  """One training run of an ablation.

  Attributes:
    name: short and stable (directory and table row).
    description: one line for the report.
    overrides: dotted config fields and their values, on top of the scale's config.
    skip: why the arm cannot run ('' = it runs).
  """
  name: str
  description: str
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  skip: str = ""


@dataclasses.dataclass(frozen=True)
class Ablation:
  """A named list of arms with a default budget per scale.

  Attributes:
    name: the ablation's name (``ABLATIONS`` key).
    description: what it compares.
    make_arms: ``Options`` -> the arms, in report order.
    budgets: scale -> default budget (``KIND:AMOUNT``, ``proxyjax.ablation.budget``).
    kind: ``train`` (arms are training runs) or ``compressors`` (analysis only).
  """
  name: str
  description: str
  make_arms: Callable[[Options], tuple[Arm, ...]]
  budgets: dict[str, str]
  kind: str = "train"

  @property
  def arms(self) -> tuple[Arm, ...]:
    """The arms with the default options."""
    return self.make_arms(Options())

  @property
  def arm_names(self) -> tuple[str, ...]:
    return tuple(a.name for a in self.arms)


# Default budgets: the same steps for every arm, so every arm trains on the same
# number of symbols (and close to the same FLOPs); a bytes or FLOP budget is a flag away.
_TRAIN_BUDGETS = {"ci": "steps:12", "cpu": "steps:400", "colab_gpu": "steps:2000",
                  "colab_tpu": "steps:3000", "pod": "steps:50000"}

_BYTES = {"data.view": "raw", "data.schedule.enabled": False, "data.rate": 0.0,
          "model.num_raw_pred_heads": 0, "model.num_pred_heads": 8}


def _bytes_arm() -> Arm:
  return Arm("bytes", "raw UTF-8 bytes only, 8 prediction heads (configs/bytes.py)",
             dict(_BYTES))


def _bytes_one_head_arm() -> Arm:
  return Arm("bytes_1head", "raw UTF-8 bytes only, one prediction head (the proxy arms' "
             "model; the 8 heads of `bytes` cost a small model capacity)",
             {**_BYTES, "model.num_pred_heads": 1})


def _neural_arm(neural_dir: str) -> Arm:
  desc = "neural arithmetic-coding view (proxy, sentinels, translation warm-up)"
  if not neural_dir:
    return Arm("neural", desc, {"data.view": "neural"},
               skip="no --neural_dir=SHARDS given (shards of `python -m proxyjax.compress`)")
  over: dict[str, Any] = {"data.view": "neural", "data.neural_dir": neural_dir}
  shards = os.path.join(neural_dir, "*.array_record")
  if glob.glob(shards):  # train on the precomputed symbols of the shards
    over["data.sources"] = f"arrayrecord:{shards}"
  return Arm("neural", desc, over)


def _views(o: Options) -> tuple[Arm, ...]:
  proxy = "proxy: {} view, sentinels, translation warm-up"
  return (
      _bytes_arm(),
      _bytes_one_head_arm(),
      Arm("tokens", "tokenizer ids only, no sentinels (configs/tokens.py), evaluated "
          "through its tokenizer", {"data.view": "tokenizer", "data.schedule.enabled": False,
                                    "data.rate": 1.0, "data.mode": "vanilla",
                                    "model.num_raw_pred_heads": 0}),
      Arm("tokenizer", proxy.format("BPE token-id"), {"data.view": "tokenizer"}),
      Arm("token_bytes", proxy.format("token ids as bytes"), {"data.view": "token_bytes"}),
      Arm("token_bytes_gray", proxy.format("Gray-coded token-bytes"),
          {"data.view": "token_bytes", "data.gray_code": True}),
      Arm("deflate", proxy.format("raw DEFLATE"), {"data.view": "deflate"}),
      Arm("gzip", proxy.format("gzip"), {"data.view": "gzip"}),
      _neural_arm(o.neural_dir),
  )


def _mixing(o: Options) -> tuple[Arm, ...]:
  v = {"data.view": o.view}
  vanilla = {f"data.schedule.{k}_mode": "vanilla" for k in ("initial", "steady", "final")}
  return (
      Arm("sentinel", f"the proxy recipe ({o.view}): sentinels, translation warm-up", dict(v)),
      Arm("vanilla", "no sentinels around views (mode vanilla throughout)",
          {**v, "data.mode": "vanilla", **vanilla}),
      Arm("no_warmup", "no translation warm-up: peak rate in sentinel mode from step 0",
          {**v, "data.schedule.enabled": False, "data.rate": 0.9, "data.mode": "sentinel"}),
      Arm("parallel", "warm-up on parallel pairs instead of translation pairs",
          {**v, "data.schedule.initial_mode": "parallel_raw_compressed"}),
      Arm("no_doc_mask", "no document mask (plain causal rows)", {**v, "data.doc_mask": False}),
      Arm("rate_0.5", "compressed rate 0.5 instead of 0.9",
          {**v, "data.rate": 0.5, "data.schedule.peak_rate": 0.5,
           "data.schedule.final_rate": 0.5}),
  )


def _granularity(o: Options) -> tuple[Arm, ...]:
  del o
  what = {"halfbyte": "4-bit symbols (two per byte)", "doublebit": "2-bit symbols",
          "bit": "1-bit symbols", "doublebyte": "16-bit symbols (two bytes each)"}
  return (_bytes_arm(),) + tuple(
      Arm(name, f"proxy: re-coded {desc}", {"data.view": name}) for name, desc in what.items())


COMPRESSOR_VIEWS = ("raw", "deflate", "gzip", "tokenizer", "token_bytes", "halfbyte",
                    "doublebit", "bit", "doublebyte")


def _compressors(o: Options) -> tuple[Arm, ...]:
  arms = [Arm(name, f"compressor analysis of the {name} view", {"data.view": name})
          for name in COMPRESSOR_VIEWS]
  neural = _neural_arm(o.neural_dir)
  arms.append(dataclasses.replace(neural, description="compressor analysis of the neural view"))
  return tuple(arms)


ABLATIONS: dict[str, Ablation] = {
    "views": Ablation(
        "views", "Which compressed view to train on: the raw-bytes and tokens-only "
        "baselines against proxy training on each view.", _views, dict(_TRAIN_BUDGETS)),
    "mixing": Ablation(
        "mixing", "How raw and compressed views are mixed (one proxy view for all arms): "
        "sentinels, warm-up, pair kind, document mask, compressed rate.", _mixing,
        dict(_TRAIN_BUDGETS)),
    "granularity": Ablation(
        "granularity", "Symbol granularity: re-coded bytes as 1, 2, 4 or 16 bits per "
        "symbol, against raw bytes.", _granularity, dict(_TRAIN_BUDGETS)),
    "compressors": Ablation(
        "compressors", "No training: compression ratio, stability and collisions of each "
        "view (paper Fig. 4 and 6).", _compressors, {}, kind="compressors"),
}


def get(name: str) -> Ablation:
  if name not in ABLATIONS:
    raise UserError(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
  return ABLATIONS[name]


def select_arms(ablation: Ablation, options: Options,
                names: list[str] | tuple[str, ...] | None) -> tuple[Arm, ...]:
  """The arms named (all when ``names`` is empty), in the ablation's order."""
  arms = ablation.make_arms(options)
  if not names:
    return arms
  known = [a.name for a in arms]
  unknown = [n for n in names if n not in known]
  if unknown:
    raise UserError(f"ablation {ablation.name!r} has no arm {unknown[0]!r}; its arms: "
                    f"{', '.join(known)}")
  return tuple(a for a in arms if a.name in names)
