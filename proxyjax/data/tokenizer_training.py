"""Byte-level BPE tokenizer training on the train split of document sources.

Used by the data pipeline (``data.view=tokenizer`` without ``data.tokenizer_path``)
and by ``python -m proxyjax.tools.train_tokenizer`` (the command line).

Documents are read in source order (the byte budget is shared between the
sources in proportion to their weights; budget a source leaves unused passes to
the next one) until ``max_bytes``. Documents with a read error, empty
documents and documents longer than ``max_document_bytes`` (the pipeline's
``data.max_document_bytes``; counted as ``too_large``) are skipped; invalid
UTF-8 is decoded with replacement characters for training only. A progress line
(documents, bytes, skips) is printed every few seconds with ``progress``. The
tokenizer is GPT-2-style byte-level BPE without a prefix space, so
``decode(encode(text).ids) == text`` for any text.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from typing import Any, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from proxyjax.data import sources as sources_lib

_SAMPLE_BYTES = 1 << 20  # held-out text used for bytes/token and round trips
DEFAULT_MAX_DOCUMENT_BYTES = 1 << 24  # as data.max_document_bytes
PROGRESS_S = 5.0  # seconds between progress lines


class NoTrainingDocumentsError(ValueError):
  """Every document of the train split was skipped."""


def build_tokenizer():
  """An untrained byte-level BPE tokenizer (no prefix space)."""
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  return tokenizer


def _budgets(weights: Sequence[float], max_bytes: int) -> list[float]:
  total = sum(weights)
  return [max_bytes * w / total for w in weights]


class _Progress:
  """Prints a line every ``PROGRESS_S`` seconds (when enabled) and at the end."""

  def __init__(self, enabled: bool, stats: dict[str, Any], max_bytes: int):
    self.enabled = enabled
    self.stats = stats
    self.max_bytes = max_bytes
    self.start = self.last = time.monotonic()

  def line(self) -> str:
    s = self.stats
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(s["skipped"].items())) or "none"
    return (f"tokenizer: {s['documents']} documents, {s['bytes'] / 1e6:.1f} of "
            f"{self.max_bytes / 1e6:.1f} MB read in {time.monotonic() - self.start:.0f} s "
            f"(skipped: {skipped})")

  def tick(self) -> None:
    if self.enabled and time.monotonic() - self.last >= PROGRESS_S:
      self.last = time.monotonic()
      print(self.line(), file=sys.stderr, flush=True)


def _iter_texts(weighted: Sequence[tuple[Any, float]], max_bytes: int,
                stats: dict[str, Any],
                max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
                progress: _Progress | None = None) -> Iterator[str]:
  """Yields training texts, updating ``stats`` as it goes."""
  carry = 0.0
  for (source, _), budget in zip(weighted,
                                 _budgets([w for _, w in weighted], max_bytes)):
    budget += carry
    used = 0
    for i in range(len(source)):
      if progress is not None:
        progress.tick()
      if used >= budget or stats["bytes"] >= max_bytes:
        break
      doc = source[i]
      if doc["error"] is not None:
        stats["skipped"][doc["error"]] += 1
        continue
      if not doc["text"]:
        stats["skipped"]["empty"] += 1
        continue
      if len(doc["text"]) > max_document_bytes:
        stats["skipped"]["too_large"] += 1
        continue
      text = doc["text"]
      try:
        decoded = text.decode("utf-8")
      except UnicodeDecodeError:
        stats["invalid_utf8"] += 1
        decoded = text.decode("utf-8", errors="replace")
      used += len(text)
      stats["bytes"] += len(text)
      stats["documents"] += 1
      yield decoded
    carry = max(0.0, budget - used)


def _sample_texts(weighted: Sequence[tuple[Any, float]],
                  limit: int = _SAMPLE_BYTES) -> list[str]:
  """Up to about ``limit`` bytes of valid UTF-8, non-empty documents of at most
  ``limit`` bytes each, round robin."""
  texts, total = [], 0
  cursors = [(source, iter(range(len(source)))) for source, _ in weighted]
  while cursors and total < limit:
    live = []
    for source, it in cursors:
      i = next(it, None)
      if i is None:
        continue
      live.append((source, it))
      doc = source[i]
      if doc["error"] is not None or not doc["text"] or len(doc["text"]) > limit:
        continue
      try:
        texts.append(doc["text"].decode("utf-8"))
      except UnicodeDecodeError:
        continue
      total += len(doc["text"])
    cursors = live
  return texts


def _evaluate(path: str, texts: Sequence[str]) -> dict[str, Any]:
  """Bytes per token and exact round trips of the saved tokenizer on texts."""
  tokenizer = Tokenizer.from_file(path)
  n_bytes = n_tokens = failures = 0
  for text in texts:
    ids = tokenizer.encode(text).ids
    n_bytes += len(text.encode("utf-8"))
    n_tokens += len(ids)
    failures += tokenizer.decode(ids) != text
  return {
      "sample_documents": len(texts),
      "sample_bytes": n_bytes,
      "bytes_per_token": n_bytes / n_tokens if n_tokens else float("nan"),
      "roundtrip_failures": failures,
  }


def train_tokenizer(sources: str, vocab_size: int, out: str,
                    max_bytes: int = 32 << 20, min_frequency: int = 2,
                    validation_fraction: float = 0.01, *, text_field: str = "",
                    record_format: str = "json", tfds_data_dir: str = "",
                    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
                    progress: bool = False,
                    options: sources_lib.SourceOptions | None = None) -> dict[str, Any]:
  """Trains a byte-level BPE on the sources' train split and saves it to ``out``.

  Args:
    sources: a sources spec string (see ``proxyjax.data.sources``).
    vocab_size: the target vocabulary size (including the 256 byte symbols).
    out: the tokenizer JSON path to write.
    max_bytes: the most document bytes to train on.
    min_frequency: the minimum pair count for a merge.
    validation_fraction: the hashed validation fraction (the held-out part is
      used to measure bytes/token and check round trips).
    text_field: JSON / TFDS text field (default ``text``, else ``content``).
    record_format: ArrayRecord record format, ``json`` or ``bytes``.
    tfds_data_dir: TFDS data directory.
    max_document_bytes: longer documents are skipped (``too_large``).
    progress: print a progress line to stderr every few seconds.
    options: how to read the sources; when given, it replaces
      ``validation_fraction``, ``text_field``, ``record_format`` and
      ``tfds_data_dir``.

  Returns:
    A summary dict (documents, skipped reasons, bytes, seconds, vocab size,
    bytes per token and round-trip failures on a held-out sample).
  """
  if vocab_size <= 256:
    raise ValueError(f"vocab_size must exceed 256 (the byte alphabet), got "
                     f"{vocab_size}")
  if max_bytes <= 0:
    raise ValueError(f"max_bytes must be positive, got {max_bytes}")
  start = time.perf_counter()
  if options is None:
    options = sources_lib.SourceOptions(
        validation_fraction=validation_fraction, text_field=text_field,
        record_format=record_format, tfds_data_dir=tfds_data_dir)
  train = sources_lib.make_sources(sources, split="train", options=options)
  stats = {"documents": 0, "bytes": 0, "invalid_utf8": 0,
           "skipped": collections.Counter()}
  tokenizer = build_tokenizer()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
      show_progress=False)
  ticker = _Progress(progress, stats, max_bytes)
  tokenizer.train_from_iterator(
      _iter_texts(train, max_bytes, stats, max_document_bytes, ticker), trainer=trainer)
  if progress:
    print(ticker.line() + "; merging", file=sys.stderr, flush=True)
  if not stats["documents"]:
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(stats["skipped"].items())) or "none"
    raise NoTrainingDocumentsError(f"no usable training documents in {sources!r} "
                                   f"(skipped: {skipped})")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tokenizer.save(out)
  seconds = time.perf_counter() - start
  held_out = _held_out(sources, options) or train
  summary = {
      "sources": sources,
      "out": out,
      "documents": stats["documents"],
      "skipped": dict(stats["skipped"]),
      "invalid_utf8": stats["invalid_utf8"],
      "bytes": stats["bytes"],
      "seconds": seconds,
      "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
      "sample_split": "validation" if held_out is not train else "train",
  }
  summary.update(_evaluate(out, _sample_texts(held_out)))
  return summary


def _held_out(sources: str, options: sources_lib.SourceOptions):
  """The validation sources, or None when there are no validation documents."""
  if options.validation_fraction <= 0:
    return None
  try:
    held_out = sources_lib.make_sources(sources, split="validation", options=options)
  except Exception:  # pylint: disable=broad-except  (e.g. tfds without split)
    return None
  return held_out if any(len(s) for s, _ in held_out) else None


def format_summary(summary: dict[str, Any]) -> str:
  skipped = ", ".join(f"{k}={v}" for k, v in sorted(summary["skipped"].items()))
  return "\n".join([
      f"tokenizer written to {summary['out']}",
      f"  sources:          {summary['sources']}",
      f"  documents used:   {summary['documents']} "
      f"({summary['invalid_utf8']} with invalid UTF-8, replaced)",
      f"  skipped:          {skipped or 'none'}",
      f"  training bytes:   {summary['bytes']}",
      f"  time:             {summary['seconds']:.2f} s",
      f"  vocab size:       {summary['vocab_size']}",
      f"  bytes/token:      {summary['bytes_per_token']:.3f} on "
      f"{summary['sample_documents']} {summary['sample_split']} documents "
      f"({summary['sample_bytes']} bytes)",
      f"  round trips:      {summary['roundtrip_failures']} failures",
  ])
