"""The config: schema (``base_config``), presets, number checks and the run's recorded config.

    from proxyjax import config as config_lib
    from proxyjax.eval import validation
    c = config_lib.tiny_config()
    validation.validate(c)

* ``schema`` -- ``base_config()``: every field with a one-line comment (imports
  nothing from proxyjax);
* ``presets`` -- ``tiny_config``, ``ladder_config``, ``LADDER``, ``SIZES``, ``load_config``;
* ``validation`` -- ``validate_numbers`` and ``validate_model`` (no registries). The
  full check, ``proxyjax.eval.validation.validate``, also checks view, mode, attention
  and eval task names against their registries, so it lives above them;
* ``proxyjax.rundir`` -- ``WORKDIR/config.json`` (``write_run_config``, ``load_run_config``).
"""

from __future__ import annotations

from proxyjax.config.presets import LADDER, SIZES, ladder_config, load_config, tiny_config
from proxyjax.config.schema import NO_CORPUS, base_config
from proxyjax.rundir import RUN_CONFIG_FILE, load_run_config, write_run_config

__all__ = ["LADDER", "NO_CORPUS", "SIZES", "RUN_CONFIG_FILE", "base_config", "ladder_config",
           "load_config", "load_run_config", "tiny_config", "write_run_config"]

