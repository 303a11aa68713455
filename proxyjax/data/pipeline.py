"""The Grain input pipeline (docs/method.md §1-4).

    sources --> shuffle (per epoch, seeded) --> repeat --mix(weights)-->
      --> per-process shard [process_index::process_count]
      --> read (threads) --> view + mixing (MixIterDataset, stateful)
      --> packing (concat-and-split | first-fit) --> batch --> mp_prefetch

Everything before ``mp_prefetch`` runs inside each worker process on its
slice. The iterator's ``get_state``/``set_state`` (and Grain's Orbax handler
``grain.checkpoint.CheckpointSave``) capture the whole chain, statistics
included, and restoring reproduces the exact same batches.

Several sources are interleaved by weight. Repeated forever (``num_epochs =
-1``) they never end; with a finite number of epochs (and in the validation
split) the mixture reads every document of every source by default, continuing
with the remaining sources' weights renormalised when one runs out
(``data.mixture_end='all'``), or stops when the first one runs out
(``'first'``), counting what the others still held as
``unread_at_end:<source>`` (``proxyjax.data.mixture``).

Bad data never hangs the pipeline: a stream that reads two passes' worth of
every source without a usable document (or a finite stream that ends before
its first batch) fails with ``mixing.NoUsableDocumentsError`` naming
``data.sources`` and the skip counts; and ``next_batch`` acts on SIGTERM within
``DATA_WAIT_GRACE_S`` seconds even while the pipeline is still working.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import weakref
from typing import Any, Sequence

import grain
import jax
import ml_collections
import numpy as np
from absl import flags
from jax.experimental import multihost_utils

from proxyjax import paths, rundir
from proxyjax import views as views_lib
from proxyjax import vocab as vocab_lib
from proxyjax.data import mixing, packing, permutation, tokenizer_training, worker_lifetime
from proxyjax.data import mixture as mixture_lib
from proxyjax.data import sources as sources_lib
from proxyjax.data import stats as stats_lib
from proxyjax.data import validation as data_validation
from proxyjax.data.sources import globs
from proxyjax.errors import ConfigError

SPLITS = ("train", "validation")


def build_view(config: ml_collections.ConfigDict) -> views_lib.View | None:
  """The configured compressed view (None when ``data.view == 'raw'``)."""
  d = config.data
  if d.view == "raw":
    return None
  path = ""
  if d.view in views_lib.NEEDS_TOKENIZER:
    path = resolve_tokenizer(config)
  neural_dir = d.get("neural_dir", "")
  if d.view == "neural":
    if not neural_dir:
      raise ConfigError("data.neural_dir", "data.view='neural' needs the shards written by "
                        "`python -m proxyjax.compress` (or a compressor run directory): set "
                        "--config.data.neural_dir=SHARDS and "
                        "--config.data.sources='arrayrecord:SHARDS/*.array_record'")
    if not os.path.isdir(neural_dir):
      raise ConfigError("data.neural_dir", f"no such directory: {neural_dir}")
  try:
    view = views_lib.build(d.view, views_lib.ViewOptions.from_config(
        d, tokenizer_path=path, neural_dir=neural_dir))
    if d.view == "neural":
      for shards_dir in _neural_shard_dirs(d.sources):
        view.check_shards(shards_dir)
    return view
  except (NotImplementedError, ValueError, OSError) as e:
    field = "data.neural_dir" if d.view == "neural" else "data.view"
    raise ConfigError(field, str(e)) from e


def _neural_shard_dirs(sources: str) -> list[str]:
  """The directories of ``arrayrecord:`` sources (their ``neural.json``, if any,
  must match the neural view)."""
  out = []
  for spec in sources_lib.parse_sources(sources):
    if spec.kind == "arrayrecord":
      root, _ = globs.split_glob(spec.location)
      out.append(root if paths.isdir(root) else paths.dirname(root))
  return out


def build_vocab(config: ml_collections.ConfigDict,
                view: views_lib.View | None | str = "config") -> vocab_lib.Vocab:
  """The id layout for ``view`` (default: the configured one; None = raw only).

  ``Vocab.size`` is the model's vocabulary size.
  """
  if isinstance(view, str):
    view = build_view(config)
  if view is None:
    return vocab_lib.Vocab(0)
  return vocab_lib.for_view(view.alphabet_size, separate_embedding=config.data.separate_embedding,
                            literal_bytes=view.literal_bytes,
                            shared_ids=config.data.get("shared_ids", False))


def cached_tokenizer_path(config: ml_collections.ConfigDict) -> str:
  """Where the tokenizer auto-trained for ``config`` is cached when there is no run
  directory (``proxyjax.data.inspect``, tools); a training run keeps its own in
  ``WORKDIR/tokenizer.json`` (``run_tokenizer``). It may not exist yet."""
  d = config.data
  key = hashlib.sha256(json.dumps(
      [d.sources, d.tokenizer_vocab_size, d.validation_fraction, d.text_field,
       d.record_format]).encode()).hexdigest()[:16]
  cache = os.path.expanduser(d.tokenizer_cache_dir)
  return os.path.join(cache, f"bpe{d.tokenizer_vocab_size}-{key}.json")


def _needs_auto_tokenizer(config: ml_collections.ConfigDict) -> bool:
  d = config.data
  return d.view in views_lib.NEEDS_TOKENIZER and not d.tokenizer_path


def _with_tokenizer_path(config: ml_collections.ConfigDict, path: str) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict(config.to_dict())
  out.data.tokenizer_path = path
  return out


def with_run_tokenizer(config: ml_collections.ConfigDict,
                       workdir: str | None) -> ml_collections.ConfigDict:
  """``config`` with ``data.tokenizer_path`` set to the run's ``WORKDIR/tokenizer.json``
  when its view needs the auto-trained tokenizer and the run has one (else unchanged):
  what every command reading a run (eval, sample, export) uses, never training one."""
  if not workdir or not _needs_auto_tokenizer(config):
    return config
  path = rundir.tokenizer_file(workdir)
  return _with_tokenizer_path(config, path) if paths.exists(path) else config


def vocab_without_training(config: ml_collections.ConfigDict,
                           workdir: str | None = None) -> vocab_lib.Vocab:
  """The configured vocabulary, never training a tokenizer: a tokenizer view reads
  ``data.tokenizer_path``, the run's ``WORKDIR/tokenizer.json``, or (runs from before
  runs kept their tokenizer) the cached auto-trained one, else fails naming the field."""
  config = with_run_tokenizer(config, workdir)
  if _needs_auto_tokenizer(config):
    path = cached_tokenizer_path(config)
    if not os.path.exists(path):
      where = f"{rundir.tokenizer_file(workdir)} nor " if workdir else ""
      raise ConfigError("data.tokenizer_path", f"the vocabulary of view {config.data.view!r} "
                        "is not recorded in the checkpoint and there is no "
                        f"{where}cached auto-trained tokenizer ({path}): set "
                        "--config.data.tokenizer_path to the run's tokenizer.json")
    config = _with_tokenizer_path(config, path)
  return build_vocab(config)


_LOCAL_COPIES: dict[str, str] = {}  # remote tokenizer URL -> local copy (this process)


def _local_tokenizer(path: str, config: ml_collections.ConfigDict) -> str:
  """A local file with the contents of the tokenizer at ``path`` (the views read local
  files): ``path`` itself, or for a URL a copy in ``data.tokenizer_cache_dir/remote``
  named by its contents' hash (downloaded once per process)."""
  if not paths.is_remote(path):
    return paths.local_path(path)
  if path in _LOCAL_COPIES and os.path.exists(_LOCAL_COPIES[path]):
    return _LOCAL_COPIES[path]
  data = paths.read_bytes(path)
  local = os.path.join(os.path.expanduser(config.data.tokenizer_cache_dir), "remote",
                       f"{hashlib.sha256(data).hexdigest()[:24]}.json")
  if not os.path.exists(local):
    os.makedirs(os.path.dirname(local), exist_ok=True)
    paths.write_bytes(local, data)
  _LOCAL_COPIES[path] = local
  return local


def resolve_tokenizer(config: ml_collections.ConfigDict) -> str:
  """A local file of the tokenizer: ``data.tokenizer_path`` (a local copy of a URL), or,
  without a run directory, a byte-level BPE trained on the train split and cached in
  ``data.tokenizer_cache_dir`` (a training run sets ``data.tokenizer_path`` to its
  ``WORKDIR/tokenizer.json`` first: ``run_tokenizer``)."""
  d = config.data
  if d.tokenizer_path:
    if not paths.exists(d.tokenizer_path):
      raise ConfigError("data.tokenizer_path", f"no such file: {d.tokenizer_path}")
    return _local_tokenizer(d.tokenizer_path, config)
  path = cached_tokenizer_path(config)
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _train_tokenizer(config, path)
  return path


def _train_tokenizer(config: ml_collections.ConfigDict, path: str) -> None:
  """Trains the auto tokenizer of ``config`` into ``path`` (local or remote) and its
  training summary into ``path + '.summary.json'``, each written whole."""
  d = config.data
  tmp_dir = tempfile.mkdtemp(prefix="proxyjax-tokenizer-")
  tmp = os.path.join(tmp_dir, "tokenizer.json")
  print(f"proxyjax: training a {d.tokenizer_vocab_size}-token BPE on the train split of "
        f"{d.sources!r} (saved as {path})", file=sys.stderr, flush=True)
  try:
    try:
      summary = tokenizer_training.train_tokenizer(
          d.sources, d.tokenizer_vocab_size, tmp, max_document_bytes=d.max_document_bytes,
          progress=True, options=sources_lib.SourceOptions.from_config(config))
    except tokenizer_training.NoTrainingDocumentsError as e:
      raise ConfigError("data.sources", f"cannot train the tokenizer: {e}") from e
    summary["out"] = path
    paths.write_text(path + ".summary.json", json.dumps(summary, indent=1, sort_keys=True))
    with open(tmp, "rb") as f:
      paths.write_bytes(path, f.read())  # last: its presence means a finished tokenizer
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)


def run_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """A training run's config for the data pipeline: ``data.tokenizer_path`` set to
  ``WORKDIR/tokenizer.json`` when the view needs the auto-trained tokenizer (``config``
  unchanged otherwise, and when ``data.tokenizer_path`` is set).

  The tokenizer belongs to the run: process 0 puts it there once (the cached one for
  this config when ``data.tokenizer_cache_dir`` has it, e.g. from an earlier run of the
  same data, else trained now), every other process waits for it at a barrier, then
  all read that file. A resumed run, and every later command on the run (eval, sample,
  export: ``with_run_tokenizer``), reads the same file and never trains another.
  """
  if not _needs_auto_tokenizer(config):
    return config
  target = rundir.tokenizer_file(workdir)
  if jax.process_index() == 0 and not paths.exists(target):
    paths.makedirs(workdir, exist_ok=True)
    cached = cached_tokenizer_path(config)
    if os.path.exists(cached):
      print(f"proxyjax: using the tokenizer cached for this data ({cached}) as {target}",
            file=sys.stderr, flush=True)
      if os.path.exists(cached + ".summary.json"):
        paths.write_bytes(target + ".summary.json",
                          paths.read_bytes(cached + ".summary.json"))
      paths.write_bytes(target, paths.read_bytes(cached))
    else:
      _train_tokenizer(config, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("proxyjax:run_tokenizer")
    paths.refresh(target)
  if not paths.exists(target):
    raise ConfigError("data.tokenizer_path", f"the run's tokenizer {target} is missing after "
                      "process 0 wrote it: every process must see the same --workdir (a "
                      "shared file system or bucket)")
  return _with_tokenizer_path(config, target)


def build_schedule(config: ml_collections.ConfigDict) -> mixing.Schedule:
  d = config.data
  if not d.schedule.enabled:
    return mixing.Schedule.constant(d.rate, d.mode)
  s = d.schedule
  return mixing.Schedule(
      initial_rate=s.initial_rate, peak_rate=s.peak_rate, final_rate=s.final_rate,
      warmup_steps=s.warmup_steps, steady_steps=s.steady_steps, decay_steps=s.decay_steps,
      initial_mode=s.initial_mode, steady_mode=s.steady_mode, final_mode=s.final_mode)


@dataclasses.dataclass(frozen=True)
class DocumentPlan:
  """What the document stream holds (for accounting and the no-usable-data check).

  Attributes:
    names: the sources' names, in order.
    sizes: their documents (one pass).
    finite: whether the stream ends (a finite number of epochs, or validation).
    mixture: the finite mixture of several sources (None otherwise).
  """
  names: tuple[str, ...]
  sizes: tuple[int, ...]
  finite: bool
  mixture: mixture_lib.FiniteMixture | None = None


def documents(config: ml_collections.ConfigDict, split: str,
              sources: Sequence[tuple[Any, float]] | None = None) -> grain.MapDataset:
  """The (mixed, shuffled, repeated) random-access stream of documents."""
  return plan_documents(config, split, sources)[0]


def plan_documents(config: ml_collections.ConfigDict, split: str,
                   sources: Sequence[tuple[Any, float]] | None = None
                   ) -> tuple[grain.MapDataset, DocumentPlan]:
  """``documents`` and its ``DocumentPlan``."""
  d = config.data
  if sources is None:
    specs = sources_lib.parse_sources(d.sources)
    options = sources_lib.SourceOptions.from_config(config)
    sources = [(sources_lib.make_source(spec, split=split, options=options), spec.weight)
               for spec in specs]
  end = d.get("mixture_end", "all")
  if end not in mixture_lib.END_RULES:
    raise ConfigError("data.mixture_end", f"must be one of {', '.join(mixture_lib.END_RULES)}, "
                      f"got {end!r}")
  train = split == "train"
  epochs = None if (train and d.num_epochs == -1) else (d.num_epochs if train else 1)
  datasets, names = [], []
  for i, (source, _) in enumerate(sources):
    names.append(str(getattr(source, "name", f"source{i}")))
    if len(source) == 0:
      raise ConfigError("data.sources", f"source {names[-1]!r} has no "
                        f"documents in the {split!r} split")
    ds = grain.MapDataset.source(source)
    if train and d.shuffle:
      ds = EpochShuffleMapDataset(ds, seed=mixing.stream_key(config.seed, 1000 + i),
                                  block=getattr(source, "shuffle_block", None))
    datasets.append(ds.repeat(epochs) if epochs != 1 else ds)
  plan = DocumentPlan(names=tuple(names), sizes=tuple(len(s) for s, _ in sources),
                      finite=epochs is not None)
  if len(datasets) == 1:
    return datasets[0], plan
  weights = [w for _, w in sources]
  if epochs is None:
    return grain.MapDataset.mix(datasets, weights), plan
  plan = dataclasses.replace(plan, mixture=mixture_lib.FiniteMixture(
      [len(ds) for ds in datasets], weights, end))
  return grain.MapDataset.select_from_datasets(datasets, plan.mixture), plan


# Sources of at most this many documents are shuffled with an exact numpy permutation per
# epoch (4 bytes a document: 4 MB at most; the order of every earlier release). Larger ones
# with ``permutation.WindowedPermutation``, evaluated per index: blocks of
# ``SHUFFLE_BLOCK_DOCUMENTS`` consecutive documents (a prepared source's documents per shard)
# in a keyed order, visited ``SHUFFLE_WINDOW_BLOCKS`` at a time, each window's documents in
# a keyed order. No per-document array, and the reader needs only the current window's
# shards (their open readers and in-memory indexes): RSS does not grow with the corpus.
EXACT_SHUFFLE_MAX_DOCUMENTS = 1 << 20
SHUFFLE_BLOCK_DOCUMENTS = 1 << 16
SHUFFLE_WINDOW_BLOCKS = 8
# The document order, recorded with each checkpoint (``meta['data_stream']``; a resume under
# another is refused like a changed data field). Checkpoints without the record used the
# numpy permutation for every source: the same order as ``NUMPY_STREAM`` runs.
NUMPY_STREAM = "numpy-permutation"
KEYED_STREAM = f"numpy-permutation<=2^{EXACT_SHUFFLE_MAX_DOCUMENTS.bit_length() - 1}," \
               "windowed-keyed-permutation-1"


def data_stream(sizes: Sequence[int], shuffle: bool = True) -> str:
  """The document order of a run whose shuffled sources have ``sizes`` documents."""
  if not shuffle or not sizes or max(sizes) <= EXACT_SHUFFLE_MAX_DOCUMENTS:
    return NUMPY_STREAM
  return KEYED_STREAM


class EpochShuffleMapDataset(grain.MapDataset):
  """A fresh seeded permutation of the parent per epoch (index // len).

  Deterministic: the permutation of epoch e is a function of (seed, e). Up to
  ``EXACT_SHUFFLE_MAX_DOCUMENTS`` it is ``np.random.default_rng([seed, e]).permutation``
  (built once per epoch, ~1 us a lookup); above, ``permutation.WindowedPermutation(len,
  stream_key(seed, e), block, SHUFFLE_WINDOW_BLOCKS)``, evaluated per index (~2.5 us, no
  per-document array in any process or Grain worker; ``block``: the source's
  ``shuffle_block``, else ``SHUFFLE_BLOCK_DOCUMENTS``). Grain's ``MapDataset.shuffle``
  costs ~300 us per element here.
  """

  def __init__(self, parent: grain.MapDataset, seed: int, block: int | None = None):
    super().__init__(parent)
    self._seed = int(seed)
    self._block = int(block or SHUFFLE_BLOCK_DOCUMENTS)
    self._cache: dict[int, Any] = {}

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return f"EpochShuffleMapDataset(seed={self._seed})"

  def _permutation(self, epoch: int):
    perm = self._cache.get(epoch)
    if perm is None:
      n = len(self._parent)
      if n <= EXACT_SHUFFLE_MAX_DOCUMENTS:
        # ``rng.permutation(n)`` (an int64 arange shuffled in place), built as int32.
        perm = np.arange(n, dtype=np.int32)
        np.random.default_rng([self._seed, epoch]).shuffle(perm)
      else:
        perm = permutation.WindowedPermutation(n, mixing.stream_key(self._seed, epoch),
                                               self._block, SHUFFLE_WINDOW_BLOCKS)
      if len(self._cache) >= 2:
        self._cache.pop(min(self._cache))
      self._cache[epoch] = perm
    return perm

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    n = len(self._parent)
    epoch, i = divmod(int(index), n)
    return self._parent[int(self._permutation(epoch)[i]) + epoch * n]

  def __getstate__(self):  # Grain workers rebuild the permutation they need
    state = self.__dict__.copy()
    state["_cache"] = {}
    return state


def build_dataset(config: ml_collections.ConfigDict, split: str = "train", *,
                  process_index: int | None = None, process_count: int | None = None,
                  schedule: mixing.Schedule | None = None,
                  sources: Sequence[tuple[Any, float]] | None = None,
                  view: views_lib.View | None | str = "config") -> grain.IterDataset:
  """The full pipeline as a Grain ``IterDataset`` of local batches.

  Args:
    config: the run config (``seed``, ``seq_len``, ``batch_size``, ``data``, ``model``).
    split: 'train' or 'validation' (validation: no shuffle, one pass, last batch
      padded with PAD rows).
    process_index / process_count: default to ``jax.process_index/count()``.
    schedule: overrides the configured rate schedule (e.g. raw-only evaluation).
    sources: overrides ``data.sources`` with ``[(random_access_source, weight)]``.
    view: overrides the configured compressed view (None = raw only).
  """
  data_validation.validate_data(config)
  if split not in SPLITS:
    raise ConfigError("split", f"must be one of {SPLITS}, got {split!r}")
  if process_index is None or process_count is None:
    process_index, process_count = jax.process_index(), jax.process_count()
  if config.batch_size % process_count:
    raise ConfigError("batch_size", f"{config.batch_size} rows do not split evenly over "
                      f"{process_count} processes")
  local_batch = config.batch_size // process_count
  d = config.data
  if isinstance(view, str):
    view = build_view(config)
  vocab = build_vocab(config, view)
  docs, plan = plan_documents(config, split, sources)
  mixer = mixing.Mixer(
      vocab=vocab, view=view, schedule=schedule or build_schedule(config), seed=config.seed,
      symbols_per_step=local_batch * config.seq_len, process_index=process_index,
      max_document_bytes=d.max_document_bytes, finite=plan.finite,
      source_names=plan.names, source_sizes=plan.sizes, mixture=plan.mixture,
      process_count=process_count)

  if process_count > 1:
    docs = docs[process_index::process_count]
  # Reader threads cost ~10% on local files (Grain polls its futures per
  # document); they pay off for remote storage. See docs/benchmarks.md.
  ds = docs.to_iter_dataset(grain.ReadOptions(num_threads=d.read_threads,
                                              prefetch_buffer_size=d.read_buffer_size))
  ds = mixing.MixIterDataset(ds, mixer)
  num_targets = sum(packing.head_counts(config.model))  # H main + R raw-head columns
  if d.packing == "concat":
    ds = packing.ConcatSplitPackIterDataset(ds, config.seq_len, num_targets, d.doc_mask)
  else:
    ds = packing.first_fit_pack(ds, config.seq_len, num_targets, d.packing_bins,
                                seed=config.seed, doc_mask=d.doc_mask)
  ds = ds.batch(local_batch, drop_remainder=False,
                batch_fn=functools.partial(stack_and_pad, batch_size=local_batch))
  if d.num_workers > 0:
    _ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=d.num_workers,
                                                     per_worker_buffer_size=d.worker_buffer_size),
                        worker_init_fn=worker_lifetime.WorkerInit(mixing.worker_init))
  _STREAMS[ds] = data_stream(plan.sizes, split == "train" and bool(d.shuffle))
  return ds


def stack_and_pad(rows: Sequence[dict[str, np.ndarray]], batch_size: int) -> dict[str, np.ndarray]:
  """Stacks rows; a short final batch is padded with all-PAD rows (segment 0)."""
  out = {}
  for k in rows[0]:
    stacked = np.stack([r[k] for r in rows])
    if len(rows) < batch_size:
      pad = np.zeros((batch_size - len(rows),) + stacked.shape[1:], stacked.dtype)
      stacked = np.concatenate([stacked, pad])
    out[k] = stacked
  return out


def make_iterator(config: ml_collections.ConfigDict, split: str = "train",
                  **kwargs) -> grain.DatasetIterator:
  """``iter(build_dataset(...))``: a checkpointable iterator of local batches."""
  ds = build_dataset(config, split, **kwargs)
  it = iter(ds)
  _STREAMS[it] = _STREAMS.get(ds, NUMPY_STREAM)
  return it


# The document order of each dataset / iterator built here (``data_stream``).
_STREAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def iterator_data_stream(iterator: grain.DatasetIterator) -> str:
  """The document order (``data_stream``) of an iterator made by ``make_iterator``."""
  return _STREAMS.get(iterator, NUMPY_STREAM)


def pipeline_stats(iterator: grain.DatasetIterator) -> dict[str, float | int]:
  """Accounting summed over all workers, with derived ratios (see ``stats``)."""
  return stats_lib.summarize(stats_lib.collect(iterator.get_state()))


def _ensure_absl_flags_parsed() -> None:
  # mp_prefetch reads absl flags; outside an absl app (tests, notebooks) they are unparsed.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


# --- waiting for a batch ---------------------------------------------------------------

# Seconds a SIGTERM received while waiting for a batch leaves the pipeline to deliver it
# (the caller then saves and stops as usual) before the wait is abandoned.
DATA_WAIT_GRACE_S = 3.0
# Seconds the process then has to wind down (close the data iterator, ...) before it exits
# hard (os._exit): Grain may wait up to 25 s per worker process it cannot stop cleanly.
EXIT_DEADLINE_S = 5.0


class DataWaitInterrupted(SystemExit):
  """SIGTERM arrived while waiting for a batch, and the batch did not come within
  ``DATA_WAIT_GRACE_S`` (or a second SIGTERM came). A ``SystemExit`` (status 143,
  as for a process killed by SIGTERM): the run stops at once, without saving
  (the data iterator is mid-batch), keeping the checkpoints it has."""

  def __init__(self, message: str, exit_deadline: threading.Event | None = None):
    super().__init__(128 + signal.SIGTERM)
    self.message = message
    self._exit_deadline = exit_deadline

  def cancel_exit_deadline(self) -> None:
    """For callers that handle the interruption and go on: no hard exit later."""
    if self._exit_deadline is not None:
      self._exit_deadline.set()

  def __str__(self) -> str:
    return self.message


class _DataWait:
  """Context of one ``next_batch``: SIGTERM is passed on to the handler installed
  before (e.g. the training loop's preemption flag) and, if the batch has not come
  ``grace_s`` later, or on a second SIGTERM, the wait is interrupted: Grain's
  worker processes are sent SIGTERM (see ``mixing.worker_init``) and, if there
  were any, the process exits at the latest ``EXIT_DEADLINE_S`` later."""

  def __init__(self, grace_s: float):
    self._grace_s = grace_s
    self._previous = None
    self._installed = False
    self._signals = 0
    self._expired = False
    self._lock = threading.Lock()
    self._active = False
    self._timer: threading.Timer | None = None

  def __enter__(self) -> "_DataWait":
    if threading.current_thread() is not threading.main_thread():
      return self
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):  # SIG_DFL ends the process anyway; SIG_IGN: ignored by choice
      return self
    self._previous = previous
    self._active = True
    signal.signal(signal.SIGTERM, self._handle)
    self._installed = True
    return self

  def _handle(self, signum, frame) -> None:
    if not self._active:  # the wait is over: only the usual handler
      self._previous(signum, frame)
      return
    self._signals += 1
    if self._signals == 1:
      self._previous(signum, frame)
      print(f"proxyjax: SIGTERM while waiting for data; waiting up to {self._grace_s:g} s for "
            "the batch", file=sys.stderr, flush=True)
      self._timer = threading.Timer(self._grace_s, self._expire)
      self._timer.daemon = True
      self._timer.start()
      return
    self._interrupt()

  def _expire(self) -> None:
    with self._lock:
      if not self._active:
        return
      self._expired = True
      # A real signal to the main thread: it also wakes a blocking wait.
      signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

  def _interrupt(self) -> None:
    why = "no batch came" if self._expired else "a second SIGTERM came"
    with self._lock:
      self._active = False
    cancelled = None
    if _stop_grain_workers():  # closing the iterator may wait for them: exit by a deadline
      cancelled = threading.Event()
      threading.Thread(target=_exit_later, args=(EXIT_DEADLINE_S, 128 + signal.SIGTERM, cancelled),
                       daemon=True, name="proxyjax-exit-deadline").start()
    error = DataWaitInterrupted(
        f"proxyjax: SIGTERM while waiting for data and {why}: stopping now, without a "
        "checkpoint for the steps since the last one (the checkpoints on disk are kept)",
        cancelled)
    print(error, file=sys.stderr, flush=True)
    raise error

  def __exit__(self, *exc) -> None:
    with self._lock:
      self._active = False
    if self._timer is not None:
      self._timer.cancel()
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)


def _exit_later(seconds: float, status: int, cancelled: threading.Event) -> None:
  if cancelled.wait(seconds):
    return
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


def _stop_grain_workers() -> bool:
  """Sends SIGTERM to this process's Grain worker processes (whether there were any):
  one busy in the mixer hands an error to the main process and ends (closing the
  iterator would otherwise wait for its next batch); elsewhere it ends at once."""
  workers = [c for c in multiprocessing.active_children() if c.name.startswith("grain-")]
  for child in workers:
    child.terminate()
  return bool(workers)


_PRODUCED = weakref.WeakSet()  # iterators that gave next_batch a batch


def next_batch(iterator, grace_s: float = DATA_WAIT_GRACE_S) -> dict[str, np.ndarray]:
  """``next(iterator)``, acting on SIGTERM while the pipeline works.

  In the main thread, with a Python SIGTERM handler installed (the training
  loop's), a SIGTERM during the wait is passed on to that handler at once; if
  the batch then does not arrive within ``grace_s`` seconds (or another SIGTERM
  comes), ``DataWaitInterrupted`` ends the wait (and the process, being a
  ``SystemExit``), after terminating Grain's worker processes.

  A finite stream that ends before its first batch without having used a
  document (every document skipped) raises ``mixing.NoUsableDocumentsError``
  instead of ``StopIteration``.
  """
  with _DataWait(grace_s):
    try:
      batch = next(iterator)
    except StopIteration:
      _check_some_document_used(iterator)
      raise
  try:
    _PRODUCED.add(iterator)
  except TypeError:  # not weak-referenceable
    pass
  return batch


def _check_some_document_used(iterator) -> None:
  try:
    if iterator in _PRODUCED:
      return
  except TypeError:
    return
  stats = pipeline_stats(iterator)
  if stats.get("docs_used", 0):
    return
  where = mixing.skip_summary(stats)
  if not stats.get("docs_read", 0):
    where = ("its counts stay in the Grain worker processes: `python -m proxyjax.data.inspect "
             "--stats --config.data.num_workers=0` shows them")
  raise mixing.NoUsableDocumentsError(
      f"the (finite) data stream ended before its first batch: no usable document in a "
      f"whole pass over the sources; {where}")
