"""Ablations: named lists of training arms run one after another, then one comparison.

    from proxyjax import ablation
    ablation.ABLATIONS        # name -> Ablation (arms, default budget per scale, description)
    ablation.SCALES           # ('ci', 'cpu', 'colab_gpu', 'colab_tpu', 'pod')
    ablation.detect_scale()   # 'colab_tpu' | 'colab_gpu' | 'cpu'
    rt = ablation.notebook_runtime("quickstart")   # a notebook's scale, workdir, backend
    result = ablation.run("views", scale="ci", workdir=W, budget=None, arms=None,
                          neural_dir="", log=print)
    result.markdown, result.report_md, result.report_json, result.plots, result.rows

The command line is ``python -m proxyjax.ablate`` (docs/ablations.md).

* ``catalog`` -- ``Arm``, ``Ablation``, ``ABLATIONS``: views, mixing, granularity,
  compressors;
* ``scales`` -- the base config of each scale, ``finalize`` (fields that follow the
  steps), ``detect_scale``;
* ``budget`` -- ``steps:N`` / ``utf8_bytes:N`` / ``train_flops:N`` and the probe that
  turns the last two into steps;
* ``runner`` -- ``run``: arms, resume, state of W;
* ``report`` -- rows, W/report.md, W/report.json, plots (``Result``);
* ``notebook`` -- ``notebook_runtime``: what a colabs/ notebook settles first.
"""

import importlib

from proxyjax.ablation.catalog import ABLATIONS, Ablation, Arm, Options
from proxyjax.ablation.notebook import Runtime, notebook_runtime
from proxyjax.ablation.scales import SCALES, detect_scale

# The runner imports the training stack (JAX, Flax, Orbax: seconds); it is loaded on
# first use, so that listing the ablations or a flag error stays fast.
_LAZY = {"run": "runner", "Interrupted": "runner", "WorkdirMismatch": "runner",
         "Result": "report", "Budget": "budget", "KINDS": "budget", "parse_budget": "budget"}


def __getattr__(name):
  if name in _LAZY:
    module = importlib.import_module(f"proxyjax.ablation.{_LAZY[name]}")
    return getattr(module, name)
  raise AttributeError(f"module 'proxyjax.ablation' has no attribute {name!r}")


__all__ = ["ABLATIONS", "KINDS", "SCALES", "Ablation", "Arm", "Budget", "Interrupted",
           "Options", "Result", "Runtime", "WorkdirMismatch", "detect_scale", "notebook_runtime",
           "parse_budget", "run"]
