r"""Trains a byte-level BPE tokenizer on the train split of document sources.

    python -m proxyjax.tools.train_tokenizer --sources=stdlib \
        --vocab_size=4096 --out=tokenizer.json

The command line of ``proxyjax.data.tokenizer_training`` (what is read, skipped and
reported is described there).
"""

from __future__ import annotations

from typing import Sequence

from absl import app, flags

from proxyjax.data import sources as sources_lib
from proxyjax.data.tokenizer_training import (
  DEFAULT_MAX_DOCUMENT_BYTES,
  NoTrainingDocumentsError,
  build_tokenizer,
  format_summary,
  train_tokenizer,
)

__all__ = ["DEFAULT_MAX_DOCUMENT_BYTES", "NoTrainingDocumentsError", "build_tokenizer",
           "format_summary", "train_tokenizer", "main"]


def _define_flags():
  """Defines the CLI flags (only when run as a program)."""
  flags.DEFINE_string("sources", "stdlib", "Sources spec, e.g. 'stdlib' or "
                      "'files:/repo@2;jsonl:/data/*.jsonl'.")
  flags.DEFINE_integer("vocab_size", 4096, "Target vocabulary size.")
  flags.DEFINE_string("out", None, "Output tokenizer JSON path.")
  flags.DEFINE_integer("max_bytes", 32 << 20, "Most training bytes to read.")
  flags.DEFINE_float("validation_fraction", 0.01,
                     "Hashed validation fraction (held out from training).")
  flags.DEFINE_integer("min_frequency", 2, "Minimum pair count for a merge.")
  flags.DEFINE_string("text_field", "", "JSON/TFDS text field (default: "
                      "'text', else 'content').")
  flags.DEFINE_enum("record_format", "json", ["json", "bytes"],
                    "ArrayRecord record format.")
  flags.DEFINE_string("tfds_data_dir", "", "TFDS data directory.")
  flags.DEFINE_integer("max_document_bytes", DEFAULT_MAX_DOCUMENT_BYTES,
                       "Longer documents are skipped (as data.max_document_bytes).")
  flags.DEFINE_bool("progress", True, "Print a progress line every few seconds.")
  flags.mark_flag_as_required("out")
  return flags.FLAGS


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  summary = train_tokenizer(
      f.sources, f.vocab_size, f.out, max_bytes=f.max_bytes,
      min_frequency=f.min_frequency, max_document_bytes=f.max_document_bytes,
      progress=f.progress, options=sources_lib.SourceOptions(
          validation_fraction=f.validation_fraction, text_field=f.text_field,
          record_format=f.record_format, tfds_data_dir=f.tfds_data_dir))
  print(format_summary(summary), flush=True)
  if summary["roundtrip_failures"]:
    raise SystemExit("the tokenizer does not round-trip its sample exactly")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
