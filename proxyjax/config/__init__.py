"""The config: schema (``base_config``), presets, validation and the run's recorded config.

    from proxyjax import config as config_lib
    c = config_lib.tiny_config()
    config_lib.validate(c)

* ``schema`` -- ``base_config()``: every field with a one-line comment (imports
  nothing from proxyjax);
* ``presets`` -- ``tiny_config``, ``ladder_config``, ``LADDER``, ``SIZES``, ``load_config``;
* ``validation`` -- ``validate`` and its parts; it checks names against the views,
  data, model and eval registries, so it sits above them and is loaded on first use
  (``config_lib.validate``), never by importing this package;
* ``proxyjax.rundir`` -- ``WORKDIR/config.json`` (``write_run_config``, ``load_run_config``).
"""

from __future__ import annotations

import importlib
from typing import Any

from proxyjax.config.presets import LADDER
from proxyjax.config.presets import SIZES
from proxyjax.config.presets import ladder_config
from proxyjax.config.presets import load_config
from proxyjax.config.presets import tiny_config
from proxyjax.config.schema import base_config
from proxyjax.rundir import RUN_CONFIG_FILE
from proxyjax.rundir import load_run_config
from proxyjax.rundir import write_run_config

_VALIDATION = ("validate", "validate_data", "validate_eval", "validate_numbers", "DTYPES")

__all__ = ["LADDER", "SIZES", "RUN_CONFIG_FILE", "base_config", "ladder_config", "load_config",
           "load_run_config", "tiny_config", "write_run_config", *_VALIDATION]


def __getattr__(name: str) -> Any:
  """``validate`` & co. from ``proxyjax.config.validation``, imported on first use."""
  if name in _VALIDATION:
    return getattr(importlib.import_module("proxyjax.config.validation"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
