"""In-context translation accuracy (paper Fig. 11): compressed symbols -> raw bytes.

For each held-out document (cut to ``max_bytes`` at a UTF-8 boundary) the model is
given ``[BOS, <comp>, symbols..., </comp>, <raw>]`` in the configured view (the
training id layout) and greedy-decodes raw bytes until ``</raw>`` (or EOS, or
``len(document) + 1`` ids). Reported per view:

* ``exact_match``: share of documents whose decoded bytes equal the document;
* ``byte_accuracy``: bytes decoded correctly at their position, over all the
  documents' bytes (a missing byte counts wrong; bytes past the document's end
  make the document inexact but take no correct byte away).

Documents the view cannot encode (e.g. invalid UTF-8 for a tokenizer) are skipped
and counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from proxyjax import vocab as vocab_lib
from proxyjax.eval import generate

# Decoding: the raw interface (ids < 320, ends at </raw> or EOS); a prompt cut to the
# context keeps [BOS, <comp>].
INTERFACE = dataclasses.replace(generate.RAW, prefix=(vocab_lib.BOS, vocab_lib.COMP_OPEN))


def cut_utf8(data: bytes, max_bytes: int) -> bytes:
  """The longest prefix of ``data`` of at most ``max_bytes`` bytes that does not end
  inside a UTF-8 sequence (bytes that are not UTF-8 at all are cut anywhere)."""
  if len(data) <= max_bytes:
    return data
  end = max_bytes
  # data[end] is the first byte left out: while it continues a UTF-8 sequence (10xxxxxx),
  # that sequence would be split, so cut before it (at most 3 bytes back).
  while end > 0 and max_bytes - end < 3 and (data[end] & 0xC0) == 0x80:
    end -= 1
  return data[:end]


def prompt_ids(symbols: np.ndarray, vocab: vocab_lib.Vocab) -> np.ndarray:
  """``[BOS, <comp>, symbols..., </comp>, <raw>]`` in the id layout ``vocab``."""
  return np.concatenate([[vocab_lib.BOS], vocab.compressed_body(symbols),
                         [vocab_lib.RAW_OPEN]]).astype(np.int32)


def score(expected: bytes, got: bytes) -> tuple[bool, int]:
  """(exact match, bytes of ``expected`` decoded right at their position)."""
  n = min(len(expected), len(got))
  a = np.frombuffer(expected[:n], np.uint8)
  b = np.frombuffer(got[:n], np.uint8)
  return expected == got, int(np.sum(a == b))


def translate(graphdef, params, docs: Sequence[bytes], view, vocab: vocab_lib.Vocab, *,
              max_bytes: int, batch_size: int = 8, mesh=None, rules=None,
              context_len: int | None = None, seed: int = 0) -> dict[str, Any]:
  """Exact-match rate and byte accuracy of ``view`` -> raw on ``docs`` (see the module doc)."""
  targets, prompts, skipped = [], [], 0
  for d in docs:
    text = cut_utf8(d, max_bytes)
    if not text:
      continue
    try:
      symbols = view.encode(text)
    except Exception:  # pylint: disable=broad-except  (the view refuses the document)
      skipped += 1
      continue
    targets.append(text)
    prompts.append(prompt_ids(symbols, vocab))
  out: dict[str, Any] = {"view": view.name, "documents": len(targets),
                         "skipped_documents": skipped, "max_bytes": max_bytes}
  if not targets:
    return out
  cfg = generate.SamplingConfig(max_new_tokens=max(len(t) for t in targets) + 1,
                                temperature=0.0, n=1, seed=seed)
  rows = generate.generate_ids(graphdef, params, prompts, cfg, interface=INTERFACE,
                               batch_size=batch_size, mesh=mesh, rules=rules,
                               context_len=context_len)
  exact = correct = 0
  per_doc = []
  for text, sample in zip(targets, rows):
    got = INTERFACE.decode(np.asarray(sample[0]).tolist())
    ok, right = score(text, got)
    exact += ok
    correct += right
    per_doc.append({"bytes": len(text), "correct_bytes": right, "exact": ok})
  nbytes = sum(len(t) for t in targets)
  out.update({"exact_match": exact / len(targets), "byte_accuracy": correct / max(nbytes, 1),
              "bytes": nbytes, "symbols": int(sum(len(p) - 4 for p in prompts)),
              "per_document": per_doc})
  return out
