r"""Sample from a trained run, streaming the continuation as it is generated.

    python -m proxyjax.sample --workdir=RUN --prompt='def fib(n):' [--max_new_tokens=256]
        [--temperature=0] [--top_p=1] [--seed=0] [--stop='\n\n,\nclass'] [--num_samples=1]
        [--step=N] [--speculative [--draft_len=K]] [--dtype=float32]
    python -m proxyjax.sample --workdir=RUN --prompt_file=prompt.py   # bytes as they are
    echo 'import os' | python -m proxyjax.sample --workdir=RUN          # stdin (or --prompt_file=-)

RUN (and ``--prompt_file``) may be local or on object storage (``gs://``).
Restores the newest checkpoint (or ``--step``) of RUN and writes the continuation
to stdout as it is decoded (UTF-8; invalid bytes as U+FFFD), then the bytes/s on
stderr. ``--temperature=0`` (the default) is greedy: exactly the completion eval
generation (``--mode=eval``) gives the prompt. ``--stop`` (repeatable, each a comma
list; ``\n``, ``\t``, ``\,`` escapes) ends a sample before the earliest stop string.
``--speculative`` drafts bytes with the model's look-ahead heads and verifies them
with head 0 in one forward: greedy, the same output in fewer forwards; with a
temperature, speculative sampling (the same distribution as plain sampling, other
draws). ``--draft_len`` caps the drafts per forward (a forward over fewer ids is cheaper). A
prompt longer than the model's context is cut from the left (a warning on stderr).
Several samples are separated by ``--- sample i/n ---`` lines. Bad input (no
checkpoint, a step that does not exist, bad flag values) prints one line and exits
with status 2. The logic is ``proxyjax.eval.sampling``.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Sequence

from absl import flags, logging

from proxyjax import cli, paths
from proxyjax.errors import UserError


def _define_flags() -> None:
  """Defines the CLI flags (only when run as a program)."""
  flags.DEFINE_string("workdir", None, "The training run's directory.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
  flags.DEFINE_string("prompt", None, "The prompt text.")
  flags.DEFINE_string("prompt_file", None, "A file with the prompt, fed as bytes ('-' = stdin).")
  flags.DEFINE_integer("max_new_tokens", 256, "New ids (bytes) per sample at most.")
  flags.DEFINE_float("temperature", 0.0, "Sampling temperature (0 = greedy).")
  flags.DEFINE_float("top_p", 1.0, "Nucleus mass when sampling, in (0, 1].")
  flags.DEFINE_integer("seed", 0, "PRNG seed.")
  flags.DEFINE_multi_string("stop", [], "Stop strings (repeatable; each a comma list).")
  flags.DEFINE_integer("num_samples", 1, "Samples to draw, one after another.")
  flags.DEFINE_bool("speculative", False, "Self-speculative decoding with the look-ahead "
                    "heads (greedy: the same output; sampling: the same distribution).")
  flags.DEFINE_integer("draft_len", 0, "With --speculative: ids drafted per forward at most "
                       "(0 = every look-ahead head).")
  flags.DEFINE_string("dtype", "", "Compute dtype ('' = the run's; float32 is faster on CPU).")


def main(argv: Sequence[str]) -> None:
  cli.no_positional(argv)
  f = flags.FLAGS
  if not f.workdir:
    raise UserError("--workdir is required (a training run's directory)")
  logging.set_verbosity(logging.WARNING)
  # JAX is imported here, not at the top: a flag error or --help should not pay for it.
  from proxyjax.eval import sampling  # pylint: disable=g-import-not-at-top
  options = sampling.Options(
      workdir=f.workdir, step=f.step, max_new_tokens=f.max_new_tokens,
      temperature=f.temperature, top_p=f.top_p, seed=f.seed,
      stop=sampling.parse_stops(f.stop), num_samples=f.num_samples,
      speculative=f.speculative, draft_len=f.draft_len, dtype=f.dtype)
  sampling.check(options)
  if f.prompt is None and f.prompt_file is None and sys.stdin.isatty():
    print("sample: reading the prompt from stdin (end it with Ctrl-D)", file=sys.stderr,
          flush=True)
  if f.prompt is None and f.prompt_file and paths.is_remote(f.prompt_file):
    prompt = paths.read_bytes(f.prompt_file)  # gs:// / s3:// (StorageError: one line)
  else:
    prompt = sampling.read_prompt(f.prompt, f.prompt_file, sys.stdin.buffer)
  sampling.run(dataclasses.replace(options, prompt=prompt), sys.stdout.buffer, sys.stderr)


if __name__ == "__main__":
  _define_flags()
  cli.run(main, prog="proxyjax.sample")  # bad flags, UserError: one line (--verbose)
