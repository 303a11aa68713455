"""Incremental decoding with a KV cache, through the model's interface (docs/method.md §7).

Prompts are ``[BOS, <raw>, prompt bytes...]`` (no ``</raw>``) through the raw
interface (``RAW``), or the tokenizer's ids formatted as the run was trained
(``tokens_interface``: ``[BOS, ids...]`` in vanilla mode, ``[BOS, <comp>, ids...]``
otherwise), left-padded to a common length (pad = segment 0, invisible). Prefill
and the decode steps are the model's (``proxyjax.model.decode``: the training
blocks with a KV cache); this module holds the prompt interfaces, sampling and
stop handling. Decoding is restricted to the interface's ids (raw: ids < 320,
raw bytes and specials; tokens: the tokenizer's ids, EOS and ``</comp>``); its
end ids (``</raw>`` or ``</comp>``, EOS) or a completed stop string end a sample
inside the decode loop (a batch stops when all its rows have ended), and the
host truncates at stop strings (``codegen.truncate_completion``: the earliest
occurrence of any stop string wins). ``n`` samples per prompt are decoded as
one batch. Greedy (temperature 0) or temperature + top-p sampling, seeded. Decoding
can be self-speculative (``SamplingConfig.speculative``: the look-ahead heads draft,
head 0 verifies in one forward; ``proxyjax.eval.speculative``): greedy gives the same
ids, sampling the same distribution (not the same ids: the PRNG draws differ).
``Stream`` runs the same decode loop a few ids at a time (``python -m proxyjax.sample``).

The model's context (``context_len``, the training ``seq_len``) is never
exceeded: a prompt longer than the context is cut from the left (its format
prefix, e.g. ``[BOS, <raw>]``, kept) with a warning, and a row stops once its
last token sits at the last position of the context (a warning says how many
rows stopped there before ``max_new_tokens``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from proxyjax import parallel
from proxyjax import vocab as vocab_lib
from proxyjax.eval import codegen  # stop-string truncation (one implementation, JAX-free)
from proxyjax.eval import speculative as spec_lib
from proxyjax.model import decode as decode_lib
from proxyjax.model import transformer as tf

NEG = spec_lib.NEG
# Speculative decoding: after m forwards in a row whose drafts all failed, the next
# min(2^(m-1), MAX_WAIT) ids are decoded plainly, one id a forward (a forward over the
# drafts costs more than one over one id: 1.5-2x on a CPU), then drafting resumes.
MAX_WAIT = 16


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  max_new_tokens: int = 2048  # eval.max_new_tokens (HumanEval has solutions over 512 bytes)
  temperature: float = 0.0  # 0 = greedy
  top_p: float = 1.0
  n: int = 1  # samples per prompt
  seed: int = 0
  stop_strings: tuple[str, ...] = ()
  # Draft ids with the look-ahead heads, verify them with head 0 in one forward
  # (proxyjax.eval.speculative): greedy gives plain greedy decoding's ids, sampling
  # (temperature > 0) speculative sampling, plain sampling's distribution.
  speculative: bool = False
  draft_len: int = 0  # speculative: ids drafted per forward at most (0 = every look-ahead head)


@dataclasses.dataclass(frozen=True)
class Interface:
  """How prompts become ids and generated ids become bytes.

  Attributes:
    name: ``raw`` or ``tokens``.
    prefix: the ids every prompt starts with (kept when a prompt is cut).
    allowed: the id ranges ``[lo, hi)`` the decoder may emit.
    end_ids: ids that end a sample.
    view: the tokenizer view (tokens only).
    vocab: its id layout (tokens only).
  """

  name: str = "raw"
  prefix: tuple[int, ...] = (vocab_lib.BOS, vocab_lib.RAW_OPEN)
  allowed: tuple[tuple[int, int], ...] = ((vocab_lib.EOS, vocab_lib.RAW_VOCAB_SIZE),)
  end_ids: tuple[int, ...] = (vocab_lib.EOS, vocab_lib.RAW_CLOSE)
  view: Any = None
  vocab: vocab_lib.Vocab | None = None

  def body_ids(self, data: bytes) -> np.ndarray:
    """The ids of ``data`` in this interface (no prefix)."""
    if self.name == "raw":
      return vocab_lib.bytes_to_ids(data)
    return self.vocab.symbols_to_ids(self.view.encode(data))

  def encode(self, prompt: bytes) -> np.ndarray:
    return np.concatenate([np.asarray(self.prefix, np.int32),
                           self.body_ids(prompt)]).astype(np.int32)

  def decode(self, ids: Sequence[int]) -> bytes:
    """Generated ids -> bytes, stopping at an end id or PAD; ids outside the body dropped."""
    kept = []
    lo, hi = self.allowed[-1]
    for i in ids:
      i = int(i)
      if i in self.end_ids or i == vocab_lib.PAD:
        break
      if (vocab_lib.BYTE_OFFSET if self.name == "raw" else lo) <= i < hi:
        kept.append(i)
    if self.name == "raw":
      return vocab_lib.ids_to_bytes(kept)
    if not kept:
      return b""
    return self.view.decode(self.vocab.ids_to_symbols(np.asarray(kept, np.int32)))

  def stop_ids(self, stop: str) -> tuple[int, ...]:
    """``stop`` as ids (tokens: its tokenization alone; the loop's stop is then only an
    early exit, the host's truncation at the text decides)."""
    try:
      return tuple(int(i) for i in self.body_ids(stop.encode("utf-8")))
    except Exception:  # pylint: disable=broad-except  (a stop the tokenizer cannot encode)
      return ()


RAW = Interface()


def tokens_interface(view, vocab: vocab_lib.Vocab, sentinels: bool) -> Interface:
  """The tokenizer interface: ``[BOS, (<comp>,) ids...]``, decoding the view's ids, EOS and
  (with sentinels) ``</comp>``; completions decoded with the tokenizer."""
  lo, hi = vocab.compressed_offset, vocab.num_ids
  if sentinels:
    return Interface("tokens", (vocab_lib.BOS, vocab_lib.COMP_OPEN),
                     ((vocab_lib.EOS, vocab_lib.EOS + 1),
                      (vocab_lib.COMP_CLOSE, vocab_lib.COMP_CLOSE + 1), (lo, hi)),
                     (vocab_lib.EOS, vocab_lib.COMP_CLOSE), view, vocab)
  return Interface("tokens", (vocab_lib.BOS,), ((vocab_lib.EOS, vocab_lib.EOS + 1), (lo, hi)),
                   (vocab_lib.EOS,), view, vocab)


def restricted_logits(model: tf.Transformer, h_BxD, allowed: tuple[tuple[int, int], ...]):
  """Head-0 logits restricted to the id ranges ``allowed``."""
  return spec_lib.restrict(model.logits(h_BxD[:, None])[:, 0, 0], allowed)


def raw_logits(model: tf.Transformer, h_BxD):
  """Head-0 logits restricted to ids < 320 (raw bytes and specials), PAD/BOS excluded."""
  return restricted_logits(model, h_BxD, RAW.allowed)


def filtered_logits(logits_xV, temperature: float, top_p: float):
  """The logits sampling draws from (temperature > 0): scaled by 1 / temperature, the
  ids outside the top-p nucleus set to NEG (over the last axis)."""
  logits = logits_xV / temperature
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    cum = jnp.cumsum(probs, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (always at least one id).
    cutoff_idx = jnp.sum(cum - probs < top_p, axis=-1) - 1
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_idx[..., None], axis=-1)
    logits = jnp.where(logits < cutoff, NEG, logits)
  return logits


def sample(logits_BxV, key, temperature: float, top_p: float):
  if temperature <= 0.0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, filtered_logits(logits_BxV, temperature, top_p),
                                axis=-1).astype(jnp.int32)


def _ends_with(out_BxN, step, stop: tuple[int, ...]):
  """Whether the tokens written up to ``step`` (inclusive) end with ``stop``."""
  n = len(stop)
  start = jnp.maximum(step + 1 - n, 0)
  tail = jax.lax.dynamic_slice_in_dim(out_BxN, start, n, axis=1)
  return (step + 1 >= n) & jnp.all(tail == jnp.asarray(stop, jnp.int32)[None], axis=1)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new", "temperature", "top_p",
                                             "stops", "allowed", "ends", "sharding",
                                             "speculative"))
def _generate(graphdef, params, tokens, valid, key, *, max_new, temperature, top_p,
              stops=(), limits=None, allowed=RAW.allowed, ends=RAW.end_ids, sharding=None,
              speculative=0):
  """``limits``: new tokens per row (None: ``max_new``); ``sharding``:
  ``parallel.static_sharding(mesh, rules)`` or None; ``speculative``: ids drafted per
  forward by self-speculative decoding (``proxyjax.eval.speculative``; 0 = plain
  decoding, see ``num_speculative_drafts``)."""
  with parallel.traced_sharding(sharding):
    return _decode(graphdef, params, tokens, valid, key, max_new, temperature, top_p, stops,
                   limits, allowed, ends, speculative)


def _decode(graphdef, params, tokens, valid, key, max_new, temperature, top_p, stops, limits,
            allowed, ends, speculative=0):
  model = nnx.merge(graphdef, params)
  state = _start(model, tokens, valid, key, limits, max_new, 1 + speculative)
  state = _advance(model, state, max_new, max_new=max_new, temperature=temperature,
                   top_p=top_p, stops=stops, allowed=allowed, ends=ends, speculative=speculative)
  return state["out"][:, :max_new]


def num_speculative_drafts(model_cfg: tf.ModelConfig, cfg: SamplingConfig,
                           interface: Interface = RAW) -> int:
  """Ids drafted per forward under ``cfg`` (0: plain decoding, one id per forward)."""
  if not cfg.speculative:
    return 0
  n = spec_lib.num_drafts(model_cfg, interface.allowed)
  return min(n, cfg.draft_len) if cfg.draft_len > 0 else n


def _start(model: tf.Transformer, tokens, valid, key, limits, max_new: int, block: int) -> dict:
  """The decode loop's state after the prompts' prefill.

  ``step``: ids written per row; ``h``: the hidden state that predicts the next id;
  ``out``: the ids (``block - 1`` spare columns: a speculative step may write past
  ``max_new``); ``done``: rows that ended; ``forwards``: model forwards after prefill,
  ``drafting`` those over drafts; ``misses``/``wait``: drafting forwards in a row whose
  drafts all failed, plain steps left before drafting again; ``pending``: when
  ``has_pending``, each row's next id, drawn by speculative sampling's last check
  (written by the next step instead of a fresh sample).
  """
  b, t = tokens.shape
  spare = block - 1
  h, cache = decode_lib.prefill(model, tokens, valid, t + max_new + spare)
  if limits is None:
    limits = jnp.full((b,), max_new, jnp.int32)
  return {"step": jnp.int32(0), "h": h, "cache": cache,
          "out": jnp.zeros((b, max_new + spare), jnp.int32), "done": jnp.zeros((b,), bool),
          "key": key, "limits": limits, "forwards": jnp.int32(0),
          "drafting": jnp.int32(0), "misses": jnp.int32(0), "wait": jnp.int32(0),
          "pending": jnp.zeros((b,), jnp.int32), "has_pending": jnp.bool_(False)}


def _advance(model: tf.Transformer, state: dict, until, *, max_new: int, temperature: float,
             top_p: float, stops, allowed, ends, speculative: int) -> dict:
  """Decodes until every row has ended or ``until`` (traced; at most ``max_new``) ids are
  written per row; a speculative step may write a few more (its accepted ids)."""
  plain = functools.partial(_step, model, temperature=temperature, top_p=top_p, stops=stops,
                            allowed=allowed, ends=ends)

  def running(s):
    return (s["step"] < jnp.minimum(until, max_new)) & ~jnp.all(s["done"])

  if not speculative:
    return jax.lax.while_loop(running, plain, state)
  drafting = functools.partial(_speculative_step, model, n_drafts=speculative,
                               temperature=temperature, top_p=top_p, stops=stops,
                               allowed=allowed, ends=ends)

  def body(s):  # after drafts failed, a few plain steps (cheaper forwards), then drafts
    s = jax.lax.while_loop(lambda s: running(s) & (s["wait"] > 0), plain, s)
    return jax.lax.cond(running(s), drafting, lambda s: s, s)

  return jax.lax.while_loop(running, body, state)


def _step(model: tf.Transformer, s: dict, *, temperature, top_p, stops, allowed, ends) -> dict:
  """One id per row: sampled from head 0 (or the pending one), written, fed to the model."""
  step, done = s["step"], s["done"]
  key, sub = jax.random.split(s["key"])
  tok = sample(restricted_logits(model, s["h"], allowed), sub, temperature, top_p)
  tok = jnp.where(s["has_pending"], s["pending"], tok)
  tok = jnp.where(done, vocab_lib.PAD, tok)
  out = s["out"].at[:, step].set(tok)
  for end in ends:
    done = done | (tok == end)
  done = done | (step + 1 >= s["limits"])  # the row's context is full
  for stop in stops:  # a stop string just completed: that sample is finished
    done = done | _ends_with(out, step, stop)
  h, cache = decode_lib.decode_step(model, s["cache"], tok)
  return {**s, "step": step + 1, "h": h, "cache": cache, "out": out, "done": done, "key": key,
          "forwards": s["forwards"] + 1, "wait": s["wait"] - 1, "has_pending": jnp.bool_(False)}


def _speculative_step(model: tf.Transformer, s: dict, *, n_drafts: int, temperature: float,
                      top_p: float, stops, allowed, ends) -> dict:
  """Head 0's next id and the look-ahead heads' drafts after it, fed in one forward;
  every row writes the ids up to the first draft some running row's head 0 rejects
  (``e`` ids, 1 to ``block``), so all rows stay at the same step and cache slot.
  Greedy: argmaxes, a draft accepted when it is head 0's argmax. Sampling: speculative
  sampling (``spec_lib.verify_sampled``); the id after the written ones becomes
  ``pending`` (``proxyjax.eval.speculative`` says why it is not drawn again)."""
  step, done, key = s["step"], s["done"], s["key"]
  logits = spec_lib.draft_logits(model, s["h"], allowed)[:, :1 + n_drafts]
  if temperature <= 0.0:
    block = logits.argmax(-1).astype(jnp.int32)
  else:
    key, k_draft, k_check = jax.random.split(key, 3)
    q = filtered_logits(logits.astype(jnp.float32), temperature, top_p)
    block = jax.random.categorical(k_draft, q, axis=-1).astype(jnp.int32)
    block = block.at[:, 0].set(jnp.where(s["has_pending"], s["pending"], block[:, 0]))
  drafts = block[:, 1:]
  t = block.shape[1]
  hs, cache = decode_lib.decode_block(model, s["cache"], block)
  head0 = spec_lib.head0_logits(model, hs, allowed)  # head 0 after each id of the block
  if temperature <= 0.0:
    ok = spec_lib.accepted(drafts, head0[:, :-1].argmax(-1).astype(jnp.int32))
  else:
    p = jax.nn.softmax(filtered_logits(head0[:, :-1].astype(jnp.float32), temperature, top_p),
                       axis=-1)
    ok, then = spec_lib.verify_sampled(k_check, drafts, jax.nn.softmax(q[:, 1:], axis=-1), p)
  e = jnp.min(jnp.where(done, t - 1, ok)) + 1  # ids every running row accepts
  out = s["out"]
  for j in range(t):  # as _step does for each accepted id
    live = j < e
    tok = jnp.where(done, vocab_lib.PAD, block[:, j])
    out = out.at[:, step + j].set(jnp.where(live, tok, out[:, step + j]))
    ended = done
    for end in ends:
      ended = ended | (tok == end)
    ended = ended | (step + j + 1 >= s["limits"])
    for stop in stops:
      ended = ended | _ends_with(out, step + j, stop)
    done = jnp.where(live, ended, done)
  cache = decode_lib.rewind(cache, t - e)
  h = jax.lax.dynamic_index_in_dim(hs, e - 1, axis=1, keepdims=False)
  misses = jnp.where(e > 1, 0, s["misses"] + 1)  # drafts all failed: back off
  wait = jnp.where(e > 1, 0, jnp.minimum(jnp.left_shift(1, misses - 1), MAX_WAIT))
  pending = {}
  if temperature > 0.0:  # the id after the e written ones (none when every draft passed)
    pending = {"pending": jax.lax.dynamic_index_in_dim(then, jnp.minimum(e, t - 1) - 1, axis=1,
                                                       keepdims=False),
               "has_pending": e < t}
  return {**s, "step": step + e, "h": h, "cache": cache, "out": out, "done": done,
          "forwards": s["forwards"] + 1, "drafting": s["drafting"] + 1, "misses": misses,
          "wait": wait, "key": key, **pending}


def encode_prompt(prompt: bytes) -> np.ndarray:
  """``[BOS, <raw>, prompt bytes]``."""
  return RAW.encode(prompt)


def completion_bytes(ids: Sequence[int]) -> bytes:
  """Generated ids -> bytes, stopping at EOS or </raw>; other specials dropped."""
  return RAW.decode(ids)


def fit_context(ids: np.ndarray, context_len: int | None, prefix_len: int) -> np.ndarray:
  """``ids`` cut from the left to ``context_len`` ids, keeping its first ``prefix_len``
  (the format prefix); unchanged when it fits (or without a context)."""
  if context_len is None or len(ids) <= context_len:
    return ids
  if context_len <= prefix_len:
    raise ValueError(f"a context of {context_len} ids cannot hold the prompt prefix")
  return np.concatenate([ids[:prefix_len], ids[len(ids) - (context_len - prefix_len):]])


def _prepare(prompts: Sequence[np.ndarray], cfg: SamplingConfig, interface: Interface,
             context_len: int | None):
  """(stop id sequences, prompts fitted to the context, new ids each row may write);
  warns once for prompts cut from the left and once for rows the context caps."""
  max_new = cfg.max_new_tokens
  # Stop strings as id sequences, matched in the decode loop so a batch ends as soon as
  # every row has hit one; the host then truncates.
  stops = tuple(ids for ids in (interface.stop_ids(s) for s in cfg.stop_strings if s)
                if 0 < len(ids) <= max_new)
  fitted = [fit_context(np.asarray(p, np.int32), context_len, len(interface.prefix))
            for p in prompts]
  cut = [i for i, (p, f) in enumerate(zip(prompts, fitted)) if len(f) < len(p)]
  if cut:
    warnings.warn(f"{len(cut)} of {len(prompts)} prompts are longer than the model's context "
                  f"of {context_len} ids: cut from the left to their last "
                  f"{context_len - len(interface.prefix)} ids (prompt {cut[0]}: "
                  f"{len(prompts[cut[0]])} ids)", stacklevel=3)
  limits = [max_new if context_len is None else max(1, min(max_new, context_len - len(f) + 1))
            for f in fitted]
  capped = sum(1 for n in limits if n < max_new)
  if capped:
    warnings.warn(f"{capped} of {len(prompts)} prompts leave fewer than max_new_tokens="
                  f"{max_new} positions in the model's context of {context_len} ids: their "
                  f"generation stops at the context (as few as {min(limits)} new ids)",
                  stacklevel=3)
  return stops, fitted, limits


def _batch(rows: Sequence[tuple[np.ndarray, int]], n_rows: int):
  """Left-padded ``tokens``, ``valid`` and ``limits`` of ``n_rows`` rows (prompt, limit);
  the width rounded up to a multiple of 64 (fewer recompiles), filler rows copy the first."""
  width = max(len(r) for r, _ in rows)
  width = -(-width // 64) * 64  # bucket prompt lengths to limit recompiles
  tokens = np.zeros((n_rows, width), np.int32)
  valid = np.zeros((n_rows, width), bool)
  limits = np.zeros((n_rows,), np.int32)
  for j, (r, n) in enumerate(rows):
    tokens[j, width - len(r):] = r
    valid[j, width - len(r):] = True
    limits[j] = n
  for j in range(len(rows), n_rows):  # filler rows (a copy of the first prompt)
    tokens[j], valid[j], limits[j] = tokens[0], valid[0], limits[0]
  return tokens, valid, limits


def generate_ids(graphdef, params, prompts: Sequence[np.ndarray], cfg: SamplingConfig, *,
                 interface: Interface = RAW, batch_size: int = 8, mesh=None,
                 rules: dict | None = None, context_len: int | None = None
                 ) -> list[list[np.ndarray]]:
  """``cfg.n`` generated id rows (``max_new_tokens`` wide, PAD after the end) per prompt.

  ``prompts`` are id arrays starting with ``interface.prefix``. A prompt longer than
  ``context_len`` is cut from the left (prefix kept) and a row stops when its context is
  full; each of these warns once per call. Rows are batched in order of prompt length
  (less padding, fewer distinct compiled widths); the results come back in the order of
  ``prompts``. With a ``mesh`` and logical-axis ``rules`` (the training ones),
  activations and the KV cache are sharded like training (rows over data x fsdp).
  ``cfg.speculative`` decodes with the look-ahead heads' drafts
  (``proxyjax.eval.speculative``): greedy gives the same ids in fewer forwards,
  sampling the same distribution.
  """
  sharding = parallel.static_sharding(mesh, rules)
  max_new = cfg.max_new_tokens
  drafts = num_speculative_drafts(nnx.merge(graphdef, params).cfg, cfg, interface)
  stops, fitted, limits = _prepare(prompts, cfg, interface, context_len)
  rows = [(i, fitted[i], limits[i]) for i in range(len(prompts)) for _ in range(cfg.n)]
  rows.sort(key=lambda r: len(r[1]))  # stable: the n samples of a prompt stay together
  results: list[list[np.ndarray]] = [[] for _ in prompts]
  key = jax.random.PRNGKey(cfg.seed)
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    n_rows = batch_size if len(rows) > batch_size else len(chunk)
    tokens, valid, row_limits = _batch([(r, n) for _, r, n in chunk], n_rows)
    key, sub = jax.random.split(key)
    out = np.asarray(_generate(graphdef, params, jnp.asarray(tokens), jnp.asarray(valid), sub,
                               max_new=max_new, temperature=float(cfg.temperature),
                               top_p=float(cfg.top_p), stops=stops,
                               limits=jnp.asarray(row_limits), allowed=interface.allowed,
                               ends=interface.end_ids, sharding=sharding,
                               speculative=drafts))
    for j, (i, _, _) in enumerate(chunk):
      results[i].append(out[j])
  return results


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new", "block", "sharding"))
def _stream_start(graphdef, params, tokens, valid, key, limits, *, max_new, block, sharding):
  with parallel.traced_sharding(sharding):
    return _start(nnx.merge(graphdef, params), tokens, valid, key, limits, max_new, block)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new", "temperature", "top_p",
                                             "stops", "allowed", "ends", "sharding",
                                             "speculative"), donate_argnames=("state",))
def _stream_advance(graphdef, params, state, until, *, max_new, temperature, top_p, stops,
                    allowed, ends, sharding, speculative):
  with parallel.traced_sharding(sharding):
    return _advance(nnx.merge(graphdef, params), state, until, max_new=max_new,
                    temperature=temperature, top_p=top_p, stops=stops, allowed=allowed,
                    ends=ends, speculative=speculative)


class Stream:
  """One prompt's continuation, decoded a few ids at a time (``for ids in stream``).

  The same decode loop as ``generate_ids`` (the same steps, stops, context limit and
  PRNG key: ``key`` defaults to the one ``generate_ids`` gives a first batch), run in
  chunks: each iteration yields the ids ``[rows, c]`` written since the last one (PAD
  after a row's end) and ends when every row has ended or ``max_new_tokens`` are out.
  Chunks grow until one takes about ``chunk_s`` seconds (the first is one id).
  Greedy rows equal ``generate_ids``' rows for the same prompt and ``cfg``. A stream is
  iterated once (the decode state is donated from chunk to chunk).

  Attributes:
    steps: ids written per row so far.
    forwards: model forwards after the prefill so far (fewer than ``steps`` when
      speculative decoding accepted drafts).
    drafting: those of them over drafts (speculative decoding).
    compile_s: seconds ``compile`` took.
  """

  def __init__(self, graphdef, params, prompt: np.ndarray, cfg: SamplingConfig, *,
               interface: Interface = RAW, context_len: int | None = None, mesh=None,
               rules: dict | None = None, rows: int = 1, key: jax.Array | None = None,
               chunk_s: float = 0.05):
    self.graphdef, self.params, self.cfg = graphdef, params, cfg
    stops, fitted, limits = _prepare([prompt], cfg, interface, context_len)
    self.prompt = fitted[0]
    tokens, valid, row_limits = _batch([(fitted[0], limits[0])] * rows, rows)
    if key is None:
      key = jax.random.split(jax.random.PRNGKey(cfg.seed))[1]
    self._inputs = (jnp.asarray(tokens), jnp.asarray(valid), key, jnp.asarray(row_limits))
    self._sharding = parallel.static_sharding(mesh, rules)
    drafts = num_speculative_drafts(nnx.merge(graphdef, params).cfg, cfg, interface)
    self._start_kw = dict(max_new=cfg.max_new_tokens, block=1 + drafts, sharding=self._sharding)
    self._advance_kw = dict(max_new=cfg.max_new_tokens, temperature=float(cfg.temperature),
                            top_p=float(cfg.top_p), stops=stops, allowed=interface.allowed,
                            ends=interface.end_ids, sharding=self._sharding,
                            speculative=drafts)
    self.chunk_s = chunk_s
    self.steps = 0
    self.forwards = 0
    self.drafting = 0
    self.compile_s = 0.0
    self._state = None

  def compile(self) -> float:
    """Compiles (and runs) the prefill and an empty decode chunk, else the first chunk
    does; returns the seconds that took (``compile_s``)."""
    if self._state is None:
      t0 = time.perf_counter()
      state = _stream_start(self.graphdef, self.params, *self._inputs, **self._start_kw)
      self._state = _stream_advance(self.graphdef, self.params, state, jnp.int32(0),
                                    **self._advance_kw)
      jax.block_until_ready(self._state)
      self.compile_s = time.perf_counter() - t0
    return self.compile_s

  def __iter__(self) -> Iterator[np.ndarray]:
    self.compile()
    state, self._state = self._state, None
    written, chunk, max_new = 0, 1, self.cfg.max_new_tokens
    while True:
      t0 = time.perf_counter()
      state = _stream_advance(self.graphdef, self.params, state, jnp.int32(written + chunk),
                              **self._advance_kw)
      step = int(state["step"])
      out = np.asarray(state["out"])[:, written:min(step, max_new)]
      elapsed = time.perf_counter() - t0
      self.steps, self.forwards = min(step, max_new), int(state["forwards"])
      self.drafting = int(state["drafting"])
      if step > written:
        yield out
      written = step
      if written >= max_new or bool(np.all(np.asarray(state["done"]))):
        return
      chunk = int(min(256, max(1, chunk * self.chunk_s / max(elapsed, 1e-6))))


def generate(graphdef, params, prompts: Sequence[bytes], cfg: SamplingConfig,
             batch_size: int = 8, mesh=None, rules: dict | None = None, *,
             interface: Interface = RAW, context_len: int | None = None) -> list[list[str]]:
  """``cfg.n`` completions (text, stop strings applied) for each prompt, through
  ``interface`` (``generate_ids`` says how prompts, the context and batches are handled)."""
  ids = generate_ids(graphdef, params, [interface.encode(p) for p in prompts], cfg,
                     interface=interface, batch_size=batch_size, mesh=mesh, rules=rules,
                     context_len=context_len)
  return [[codegen.truncate_completion(interface.decode(row.tolist()).decode("utf-8", "replace"),
                                       cfg.stop_strings) for row in rows] for rows in ids]
