r"""Compressor analysis (paper Fig. 4 and 6): stability, collisions, compression ratio.

    python -m proxyjax.eval.compressor_analysis --views=raw,deflate,gzip,halfbyte \
        --num_docs=200 --out=DIR [--tokenizer_path=tok.json]

writes ``DIR/compressors.json`` and ``DIR/compressors.png`` (the figure:
``proxyjax.eval.compressor_plot``). The ``--mode=eval`` task is ``compressors``.

For each view, over a seeded sample of documents (capped at ``max_doc_bytes``,
cut at a character boundary):

* **Stability** -- take a window of ``window_chars`` characters at a seeded
  offset, delete a random 10% of its characters (code points), compress both
  and report the normalised Levenshtein distance between the two symbol
  sequences, ``edit distance / max(len)`` (0 = the output barely moves, 1 =
  unrelated). A stable compressor maps small input edits to small output edits.
* **Collisions** -- how many distinct input byte chunks each compressed symbol
  stands for. The chunk of one output symbol is the *smallest contiguous span
  of input bytes whose encoding includes any bit of that symbol*:

  - ``raw``: the byte itself (never a collision);
  - ``halfbyte`` / ``doublebit`` / ``bit``: the byte the symbol is part of (a
    nibble is shared by 16 bytes per position);
  - ``doublebyte``: the two bytes (odd input padded with 0x00, as the view does);
  - ``tokenizer``: the token's bytes, aligned exactly when the tokens'
    bytes concatenate to the document (byte-level BPE: every token always
    stands for the same bytes, so no collisions); otherwise the characters
    the tokenizer's offsets say it covers (a normalising tokenizer can map
    different text to one token);
  - ``token_bytes``: the token's span, for each of its bytes;
  - ``deflate``: the stream is re-inflated with bit positions recorded; a
    literal code covers its byte, a length/distance code the whole copied
    span, and an output byte covers the union of the codes its 8 bits overlap
    (contiguous, since codes are in output order). Bytes made only of block
    headers, Huffman tables, end-of-block codes or padding cover no input:
    their chunk is empty (reported as ``overhead_fraction``);
  - ``gzip``: as ``deflate`` for the payload; the 10 header bytes are
    overhead (empty chunk); the 8 trailer bytes (CRC32, ISIZE) depend on the
    whole document, so their chunk is the whole document.

  Reported: distinct symbols seen, mean distinct chunks per symbol (over
  symbols and over occurrences), the share of symbols with more than one
  chunk (``collision_rate``), the maximum, and ``H(chunk | symbol)`` in bits:
  how much a symbol leaves unsaid about the bytes it came from.
* **Compression** -- UTF-8 bytes per symbol, symbols per byte, and bits per
  byte at ``log2(alphabet)`` bits per symbol.

``neural`` needs ``neural_dir`` (a trained compressor; else it is skipped).
Its collisions are counted per **window symbol sequence**: the ``T/N``
symbols of one equal-information window are one unit whose chunk is the bytes
the window codes (a literal is its byte). Since a window's model context
restarts at its first byte (``proxyjax.views.neural.coder``), a window's symbols
are a function of its bytes alone, so a sequence that stands for more than one
chunk is a true collision (the previous coder conditioned each window on the
whole document before it: the same symbols meant different bytes in different
places). ``tokenizer`` and ``token_bytes`` need ``tokenizer_path``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from typing import Any, Sequence

import numpy as np
from absl import app, flags

from proxyjax import paths
from proxyjax import views as views_lib
from proxyjax.data import sources as sources_lib
from proxyjax.eval import compressor_plot
from proxyjax.neural import codec
from proxyjax.views.base import NotAligned

DEFAULT_VIEWS = ("raw", "deflate", "gzip", "halfbyte")


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
  """What to analyse and how.

  Attributes:
    views: view names (``proxyjax.views.VIEW_NAMES``).
    num_docs: documents sampled (fewer if the source has fewer).
    seed: seeds the document sample, the windows and the deletions.
    deletion_fraction: share of characters deleted for stability.
    window_chars: characters per stability window (Levenshtein is quadratic).
    max_doc_bytes: documents are cut to this many bytes (0 = whole documents).
    tokenizer_path: tokenizer JSON for the tokenizer views.
    neural_dir: compressor shards / run directory for the neural view.
    sources: a sources spec (``proxyjax.data.sources``), default the stdlib.
    split: ``all``, ``train`` or ``validation``.
    validation_fraction: the hashed validation share of the sources.
    text_field: JSON / TFDS field holding the text ('' = ``text``, else ``content``).
    record_format: ArrayRecord records: ``json`` objects or raw ``bytes``.
    tfds_data_dir: data_dir for tfds sources ('' = the TFDS default).
  """

  views: tuple[str, ...] = DEFAULT_VIEWS
  num_docs: int = 200
  seed: int = 0
  deletion_fraction: float = 0.1
  window_chars: int = 1000
  max_doc_bytes: int = 32768
  tokenizer_path: str = ""
  neural_dir: str = ""
  sources: str = "stdlib"
  split: str = "all"
  validation_fraction: float = 0.01
  text_field: str = ""
  record_format: str = "json"
  tfds_data_dir: str = ""


# ---------------------------------------------------------------------------
# Levenshtein distance on integer sequences.


def _levenshtein_numpy(a: np.ndarray, b: np.ndarray) -> int:
  """Row-by-row DP; insertions in a row are a running minimum (vectorised)."""
  if len(a) > len(b):
    a, b = b, a
  n, m = len(a), len(b)
  if n == 0:
    return m
  idx = np.arange(m + 1, dtype=np.int64)
  prev = idx.copy()
  cur = np.empty(m + 1, dtype=np.int64)
  for i in range(1, n + 1):
    cur[0] = i
    np.minimum(prev[1:] + 1, prev[:-1] + (b != a[i - 1]), out=cur[1:])
    cur -= idx
    np.minimum.accumulate(cur, out=cur)
    cur += idx
    prev, cur = cur, prev
  return int(prev[m])


def levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
  """Edit distance (insert, delete, substitute; cost 1) between two int sequences.

  Uses ``rapidfuzz`` when installed (bit-parallel, C++), else NumPy.
  """
  a = np.asarray(a, dtype=np.int64).ravel()
  b = np.asarray(b, dtype=np.int64).ravel()
  try:
    from rapidfuzz.distance import Levenshtein  # pylint: disable=g-import-not-at-top
  except ImportError:
    return _levenshtein_numpy(a, b)
  return int(Levenshtein.distance(a.tolist(), b.tolist()))


def normalized_levenshtein(a: Sequence[int], b: Sequence[int]) -> float:
  longest = max(len(a), len(b))
  return levenshtein(a, b) / longest if longest else 0.0


def delete_characters(text: str, fraction: float, rng: np.random.Generator) -> str:
  """``text`` without ``round(fraction * len)`` characters chosen uniformly."""
  k = int(round(fraction * len(text)))
  if k <= 0:
    return text
  drop = set(rng.choice(len(text), size=k, replace=False).tolist())
  return "".join(ch for i, ch in enumerate(text) if i not in drop)


# ---------------------------------------------------------------------------
# Symbol -> input byte span: each view's ``symbol_spans``.


def symbol_spans(view, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
  """(symbols, span starts, span ends, bytes the spans index into) for one document.

  ``view.symbol_spans`` (``proxyjax.views.View``) with ``view.span_bytes``: the
  document itself, or the padded document for ``doublebyte``. Raises
  ``NotAligned`` for views without a mapping.
  """
  spans = getattr(view, "symbol_spans", None)
  if spans is None:
    name = getattr(view, "name", type(view).__name__)
    raise NotAligned(f"view {name!r}: no mapping from symbols to input bytes")
  symbols, starts, ends = spans(data)
  return symbols, starts, ends, view.span_bytes(data)


def _chunk_keys(data: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
  """A 64-bit key per span identifying its bytes (exact up to 7 bytes, else hashed)."""
  buf = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
  lengths = (ends - starts).astype(np.int64)
  keys = np.zeros(len(starts), dtype=np.uint64)
  short = lengths <= 7
  for i in range(7):
    sel = short & (lengths > i)
    keys[sel] |= buf[starts[sel] + i] << np.uint64(8 * i)
  keys[short] |= lengths[short].astype(np.uint64) << np.uint64(56)
  for j in np.flatnonzero(~short):
    h = hash(data[starts[j]:ends[j]]) & ((1 << 56) - 1)
    keys[j] = np.uint64(h | (0xFF << 56))
  return keys


def window_units(symbols: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 symbols_per_window: int, symbol_bits: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Neural streams: each window's ``T/N`` symbols (>= 256) as one unit.

  Returns ``(units int64, starts, ends)``: a literal keeps its byte value (< 256); a
  window becomes ``256 + v`` (``v`` its T-bit value; hashed to 62 bits when T > 62),
  with the window's span. With one symbol per window the units are the symbols.
  """
  symbols = np.asarray(symbols, np.int64)
  if symbols_per_window <= 1 or symbols.size == 0:
    return symbols, np.asarray(starts), np.asarray(ends)
  firsts, s = [], 0
  is_lit = symbols < 256
  while s < symbols.size:
    firsts.append(s)
    s += 1 if is_lit[s] else symbols_per_window
  firsts = np.asarray(firsts)
  units = symbols[firsts].copy()
  for i in np.flatnonzero(~is_lit[firsts]):
    digits = (symbols[firsts[i]:firsts[i] + symbols_per_window] - 256).tolist()
    v = 0
    for d in digits:
      v = (v << symbol_bits) | d
    units[i] = 256 + (v if symbols_per_window * symbol_bits <= 62 else hash(v) & ((1 << 62) - 1))
  return units, np.asarray(starts)[firsts], np.asarray(ends)[firsts]


def _window_shape(view) -> tuple[int, int]:
  """(symbols per window, bits per symbol) of a neural view, else (1, 0)."""
  settings = getattr(view, "settings", None)
  if getattr(view, "name", "") != "neural" or settings is None:
    return 1, 0
  return int(settings.symbols_per_window), int(settings.symbol_bits)


def collision_stats(symbols: np.ndarray, keys: np.ndarray, empty: np.ndarray) -> dict[str, float]:
  """Distinct chunks per symbol from aligned (symbol, chunk key) pairs."""
  symbols = np.asarray(symbols, dtype=np.int64)
  n = symbols.size
  if n == 0:
    return {}
  order = np.lexsort((keys, symbols))
  s, k = symbols[order], keys[order]
  first_of_pair = np.ones(n, dtype=bool)
  first_of_pair[1:] = (s[1:] != s[:-1]) | (k[1:] != k[:-1])
  pair_starts = np.flatnonzero(first_of_pair)
  pair_counts = np.diff(np.append(pair_starts, n)).astype(np.float64)
  pair_syms = s[pair_starts]
  first_of_sym = np.ones(len(pair_syms), dtype=bool)
  first_of_sym[1:] = pair_syms[1:] != pair_syms[:-1]
  sym_of_pair = np.cumsum(first_of_sym) - 1
  chunks_per_symbol = np.bincount(sym_of_pair)
  sym_counts = np.bincount(sym_of_pair, weights=pair_counts)
  p_pair = pair_counts / n
  p_chunk_given_sym = pair_counts / sym_counts[sym_of_pair]
  cond_entropy = float(-np.sum(p_pair * np.log2(p_chunk_given_sym)))
  return {
      "distinct_symbols": int(len(chunks_per_symbol)),
      "mean_chunks_per_symbol": float(chunks_per_symbol.mean()),
      "occurrence_weighted_chunks_per_symbol": float(np.sum(chunks_per_symbol * sym_counts) / n),
      "collision_rate": float(np.mean(chunks_per_symbol > 1)),
      "max_chunks_per_symbol": int(chunks_per_symbol.max()),
      "conditional_entropy_bits": max(cond_entropy, 0.0) + 0.0,
      "overhead_fraction": float(np.mean(empty)),
  }


# ---------------------------------------------------------------------------
# The analysis.


def sample_documents(cfg: AnalysisConfig) -> list[bytes]:
  """A seeded sample of readable, non-empty, valid-UTF-8 documents, capped in size."""
  docs: list[bytes] = []
  rng = np.random.default_rng(cfg.seed)
  for source, _ in sources_lib.make_sources(cfg.sources, split=cfg.split,
                                            validation_fraction=cfg.validation_fraction,
                                            text_field=cfg.text_field,
                                            record_format=cfg.record_format,
                                            tfds_data_dir=cfg.tfds_data_dir):
    for i in rng.permutation(len(source)):
      if len(docs) >= cfg.num_docs:
        break
      doc = source[int(i)]
      text = doc["text"]
      if doc["error"] is not None or not text:
        continue
      try:
        decoded = text.decode("utf-8")
      except UnicodeDecodeError:
        continue
      if cfg.max_doc_bytes and len(text) > cfg.max_doc_bytes:
        text = text[:cfg.max_doc_bytes].decode("utf-8", "ignore").encode("utf-8")
        decoded = text.decode("utf-8")
      if decoded:
        docs.append(text)
  return docs[:cfg.num_docs]


def _build_views(cfg: AnalysisConfig) -> tuple[dict[str, Any], dict[str, str]]:
  built, skipped = {}, {}
  options = views_lib.ViewOptions(tokenizer_path=cfg.tokenizer_path, neural_dir=cfg.neural_dir)
  for name in cfg.views:
    if name not in views_lib.VIEW_NAMES:
      raise ValueError(f"unknown view {name!r}; known: {', '.join(views_lib.VIEW_NAMES)}")
    if name == "neural" and not cfg.neural_dir:
      skipped[name] = "needs --neural_dir (a trained compressor)"
      continue
    if name == "neural":
      codec.register()  # the view restores the compressor of a run through the codec
    if name in views_lib.NEEDS_TOKENIZER and not cfg.tokenizer_path:
      skipped[name] = "needs --tokenizer_path"
      continue
    built[name] = views_lib.build(name, options)
  return built, skipped


def _summary(values: Sequence[float]) -> dict[str, float]:
  v = np.asarray(values, dtype=np.float64)
  if v.size == 0:
    return {"n": 0}
  return {"mean": float(v.mean()), "median": float(np.median(v)), "std": float(v.std()),
          "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90)),
          "n": int(v.size)}


def analyze_view(view, docs: Sequence[bytes], cfg: AnalysisConfig) -> dict[str, Any]:
  """Stability, collisions and compression of one view over ``docs``."""
  total_bytes = total_symbols = 0
  stability, failed = [], 0
  sym_parts, key_parts, empty_parts = [], [], []
  collisions_na = ""
  for d, data in enumerate(docs):
    try:
      symbols = view.encode(data)
    except views_lib.ViewError:
      failed += 1
      continue
    total_bytes += len(data)
    total_symbols += len(symbols)
    # Stability on a window of the document.
    rng = np.random.default_rng([cfg.seed, d])
    text = data.decode("utf-8")
    if len(text) > cfg.window_chars:
      start = int(rng.integers(0, len(text) - cfg.window_chars + 1))
      text = text[start:start + cfg.window_chars]
    edited = delete_characters(text, cfg.deletion_fraction, rng)
    try:
      a = view.encode(text.encode("utf-8"))
      b = view.encode(edited.encode("utf-8"))
      stability.append(normalized_levenshtein(a, b))
    except views_lib.ViewError:
      pass
    # Collisions on the whole (capped) document.
    if not collisions_na:
      try:
        syms, starts, ends, base = symbol_spans(view, data)
      except NotAligned as e:
        collisions_na = str(e)
        continue
      spw, bits = _window_shape(view)
      if spw > 1:  # a window's symbol sequence is the unit (module docstring)
        syms, starts, ends = window_units(syms, starts, ends, spw, bits)
      sym_parts.append(np.asarray(syms, dtype=np.int64))
      key_parts.append(_chunk_keys(base, starts, ends))
      empty_parts.append(ends <= starts)
  bits_per_symbol = math.log2(view.alphabet_size)
  out: dict[str, Any] = {
      "alphabet_size": int(view.alphabet_size),
      "documents": len(docs) - failed,
      "view_failures": failed,
      "compression": {
          "total_bytes": total_bytes, "total_symbols": total_symbols,
          "bytes_per_symbol": total_bytes / total_symbols if total_symbols else float("nan"),
          "symbols_per_byte": total_symbols / total_bytes if total_bytes else float("nan"),
          "bits_per_symbol": bits_per_symbol,
          "bits_per_byte": (total_symbols * bits_per_symbol / total_bytes
                            if total_bytes else float("nan")),
      },
      "stability": _summary(stability),
  }
  if collisions_na:
    out["collisions"] = {"status": "n/a", "reason": collisions_na}
  elif sym_parts:
    out["collisions"] = collision_stats(np.concatenate(sym_parts), np.concatenate(key_parts),
                                        np.concatenate(empty_parts))
    if getattr(view, "name", "") == "neural":
      out["collisions"]["unit"] = "window symbol sequence"
  else:
    out["collisions"] = {"status": "n/a", "reason": "no documents"}
  return out


def analyze(cfg: AnalysisConfig, docs: Sequence[bytes] | None = None) -> dict[str, Any]:
  """The JSON summary for every configured view."""
  if docs is None:
    docs = sample_documents(cfg)
  built, skipped = _build_views(cfg)
  return {
      "config": dataclasses.asdict(cfg),
      "num_docs": len(docs),
      "doc_bytes": int(sum(len(d) for d in docs)),
      "views": {name: analyze_view(view, docs, cfg) for name, view in built.items()},
      "skipped": skipped,
  }


def run(cfg: AnalysisConfig, out_dir: str) -> dict[str, Any]:
  """Analyses, then writes ``compressors.json`` and ``compressors.png`` to ``out_dir``
  (a local directory or a ``gs://`` / ``s3://`` URL)."""
  summary = analyze(cfg)
  paths.makedirs(out_dir)  # local, gs:// or s3:// (proxyjax.paths)
  paths.write_text(paths.join(out_dir, "compressors.json"), json.dumps(summary, indent=1))
  png = io.BytesIO()  # rendered in memory, then one upload (or an atomic local write)
  compressor_plot.plot(summary, png)
  paths.write_bytes(paths.join(out_dir, "compressors.png"), png.getvalue())
  return summary


def format_summary(summary: dict[str, Any]) -> str:
  lines = [f"{summary['num_docs']} documents, {summary['doc_bytes']} bytes",
           f"{'view':<12} {'bytes/sym':>9} {'bits/byte':>9} {'stability':>9} "
           f"{'chunks/sym':>10} {'H(chunk|sym)':>12}"]
  for name, v in summary["views"].items():
    c = v["collisions"]
    chunks = f"{c['mean_chunks_per_symbol']:.2f}" if "mean_chunks_per_symbol" in c else "n/a"
    ent = f"{c['conditional_entropy_bits']:.2f}" if "conditional_entropy_bits" in c else "n/a"
    lines.append(f"{name:<12} {v['compression']['bytes_per_symbol']:>9.3f} "
                 f"{v['compression']['bits_per_byte']:>9.3f} "
                 f"{v['stability'].get('mean', float('nan')):>9.3f} {chunks:>10} {ent:>12}")
  for name, reason in summary["skipped"].items():
    lines.append(f"{name:<12} skipped: {reason}")
  return "\n".join(lines)


def _define_flags():
  """Defines the CLI flags (only when run as a program)."""
  d = AnalysisConfig()
  flags.DEFINE_list("views", list(d.views), "Views to analyse.")
  flags.DEFINE_integer("num_docs", d.num_docs, "Documents sampled.")
  flags.DEFINE_integer("seed", d.seed, "Seed of the sample, windows and deletions.")
  flags.DEFINE_float("deletion_fraction", d.deletion_fraction, "Characters deleted.")
  flags.DEFINE_integer("window_chars", d.window_chars, "Characters per stability window.")
  flags.DEFINE_integer("max_doc_bytes", d.max_doc_bytes, "Cut documents to this size (0 = off).")
  flags.DEFINE_string("tokenizer_path", "", "Tokenizer JSON for the tokenizer views.")
  flags.DEFINE_string("neural_dir", "", "Compressor shards/run directory for the neural view.")
  flags.DEFINE_string("sources", d.sources, "Sources spec (default: the stdlib).")
  flags.DEFINE_enum("split", d.split, ["all", "train", "validation"], "Which split.")
  flags.DEFINE_float("validation_fraction", d.validation_fraction, "Hashed validation share.")
  flags.DEFINE_string("text_field", d.text_field, "JSON/TFDS text field ('' = text, else content).")
  flags.DEFINE_enum("record_format", d.record_format, ["json", "bytes"], "ArrayRecord records.")
  flags.DEFINE_string("tfds_data_dir", d.tfds_data_dir, "TFDS data_dir ('' = default).")
  flags.DEFINE_string("out", None, "Output directory (local, gs:// or s3://).")
  flags.mark_flag_as_required("out")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  cfg = AnalysisConfig(views=tuple(f.views), num_docs=f.num_docs, seed=f.seed,
                       deletion_fraction=f.deletion_fraction, window_chars=f.window_chars,
                       max_doc_bytes=f.max_doc_bytes, tokenizer_path=f.tokenizer_path,
                       neural_dir=f.neural_dir,
                       sources=f.sources, split=f.split,
                       validation_fraction=f.validation_fraction, text_field=f.text_field,
                       record_format=f.record_format, tfds_data_dir=f.tfds_data_dir)
  summary = run(cfg, f.out)
  print(format_summary(summary), flush=True)
  print(f"wrote {paths.join(f.out, 'compressors.json')} and compressors.png", flush=True)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
