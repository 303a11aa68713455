r"""Hugging Face Llama export of a trained run, and the way back.

    python -m proxyjax.export --workdir=RUN --out=DIR [--step=N] [--dtype=bfloat16] \
        [--max_shard_size=5GB] [--overwrite] [--verify]
    python -m proxyjax.export --from_hf=DIR --out=WORKDIR [--config=CONFIG] [--verify]

The first writes a checkpoint that ``transformers.AutoModelForCausalLM.from_pretrained(DIR)``
and ``AutoTokenizer.from_pretrained(DIR)`` load without custom code (config, generation
config, safetensors weights sharded above ``--max_shard_size``, a byte-level tokenizer,
the look-ahead heads in ``lookahead_heads.safetensors`` and a README.md; see
``proxyjax.hf.llama_export``). ``--verify`` then compares the export's logits on a fixed
prompt with proxyjax's: with transformers when it and torch are installed, else with a
NumPy Llama forward over the written files; it prints the max abs difference and fails
above the tolerance.

The second (``--from_hf``) builds the proxyjax parameters of such a checkpoint and saves
them as an Orbax checkpoint in the run directory ``--out`` (``config.json`` +
``checkpoints/<step>``) that ``proxyjax.train.load.load_params`` and ``--mode=eval``
read; the model's shape comes from ``DIR/proxyjax.json`` or ``--config`` (see
``proxyjax.hf.llama_import``). ``--verify`` compares the imported run's logits with the
NumPy Llama forward of DIR.

``--workdir`` may be a ``gs://`` run and the export's ``--out`` a ``gs://`` or ``s3://``
URL (staged locally, then uploaded; ``proxyjax.paths``).

Bad input (no checkpoint, no such ``--step``, a non-empty ``--out`` without
``--overwrite``, a model Llama cannot express, an HF directory that is not Llama or has
other sizes): one line, exit status 2.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import flags, logging
from ml_collections import config_flags

from proxyjax import cli
from proxyjax.errors import UserError
from proxyjax.hf import paths


def _define_flags():
  """Defines the CLI flags (only when run as a program)."""
  flags.DEFINE_string("workdir", None, "The training run to export.")
  flags.DEFINE_string("out", None, "Export: the Hugging Face directory to write; with "
                      "--from_hf: the proxyjax run directory to create.")
  flags.DEFINE_integer("step", None, "The checkpoint step to export (default: the newest); "
                       "with --from_hf: the step to save (default: the exported step, else 0).")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Weight dtype of the export.")
  flags.DEFINE_string("max_shard_size", "5GB", "Largest weight file (5GB, 500MB, 2GiB, bytes).")
  flags.DEFINE_bool("overwrite", False, "Write into a non-empty --out.")
  flags.DEFINE_bool("verify", False, "Compare the result's logits with proxyjax's.")
  flags.DEFINE_string("from_hf", None, "Import this Hugging Face Llama directory instead.")
  config_flags.DEFINE_config_file("config", None, "With --from_hf: the proxyjax config of the "
                                  "model (default: DIR/proxyjax.json).", lock_config=True)


def _say(line: str) -> None:
  print(f"export: {line}", file=sys.stderr, flush=True)


def _verify_line(v) -> str:
  verdict = "ok" if v.ok else "FAILED"
  return (f"verify ({v.backend}): max abs logit difference {v.max_abs_diff:.3g} "
          f"(max |logit| {v.max_abs_logit:.3g}, tolerance {v.tolerance:g} x max(1, max |logit|)) "
          f"{verdict}")


def run_export(f) -> None:
  # pylint: disable=g-import-not-at-top
  from proxyjax.hf import llama_export, verify
  if not f.workdir:
    raise UserError("--workdir is required (or --from_hf to import)")
  result = llama_export.export(f.workdir, f.out, step=f.step, dtype=f.dtype,
                               max_shard_size=f.max_shard_size, overwrite=f.overwrite, log=_say)
  _say(f"exported step {result.step} of {f.workdir} to {f.out}: {', '.join(result.files)}")
  if f.verify:
    v = verify.verify(result)
    if v.note:
      _say(v.note)
    _say(_verify_line(v))
    if not v.ok:
      raise UserError(f"--verify: the export's logits differ from proxyjax's by "
                      f"{v.max_abs_diff:.3g} (above the tolerance)")


def run_import(f) -> None:
  # pylint: disable=g-import-not-at-top
  import numpy as np

  from proxyjax.hf import llama_export, llama_import, verify
  from proxyjax.train import load as load_lib
  if f.workdir:
    raise UserError("--workdir is for export; with --from_hf the run directory is --out")
  config = flags.FLAGS["config"].value
  llama_import.import_hf(f.from_hf, f.out, config=config, overwrite=f.overwrite, step=f.step,
                         log=_say)
  if f.verify:
    loaded = load_lib.load_params(f.out)
    ids = verify.prompt_ids()
    ref = llama_export.proxyjax_logits(loaded, ids)
    got = verify.numpy_logits(f.from_hf, ids)[:, :ref.shape[1]]
    v = verify.VerifyResult("numpy", float(np.max(np.abs(got - ref))),
                            float(np.max(np.abs(ref))), verify.tolerance(f.from_hf))
    _say(_verify_line(v))
    if not v.ok:
      raise UserError(f"--verify: the imported run's logits differ from {f.from_hf}'s by "
                      f"{v.max_abs_diff:.3g} (above the tolerance)")


def main(argv: Sequence[str]) -> None:
  cli.no_positional(argv)
  f = flags.FLAGS
  if not f.out:
    raise UserError("--out is required")
  if f.config is not None and not f.from_hf:
    raise UserError("--config is only for --from_hf (an export takes the run's recorded config)")
  if f.from_hf:  # bad --out: one line before JAX is imported
    paths.check_import_out(f.out, f.overwrite, f.from_hf)
  else:
    paths.check_export_out(f.out, f.overwrite)
  logging.set_verbosity(logging.WARNING)
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  if f.from_hf:
    run_import(f)
  else:
    run_export(f)


if __name__ == "__main__":
  _define_flags()
  cli.run(main, prog="proxyjax.export")  # bad flags, UserError: one line (--verbose)
