"""The Grain input pipeline (SPEC §1-4).

    sources --mix(weights)--> shuffle (per epoch, seeded) --> repeat
      --> per-process shard [process_index::process_count]
      --> read (threads) --> view + mixing (MixIterDataset, stateful)
      --> packing (concat-and-split | first-fit) --> batch --> mp_prefetch

Everything before ``mp_prefetch`` runs inside each worker process on its
slice. The iterator's ``get_state``/``set_state`` (and Grain's Orbax handler
``grain.checkpoint.CheckpointSave``) capture the whole chain, statistics
included, and restoring reproduces the exact same batches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any, Sequence

import grain
import ml_collections
import numpy as np

from proxyjax import config as config_lib
from proxyjax import vocab as vocab_lib
from proxyjax import views as views_lib
from proxyjax.data import mixing
from proxyjax.data import packing
from proxyjax.data import sources as sources_lib
from proxyjax.data import stats as stats_lib
from proxyjax.data import worker_lifetime
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
    return views_lib.make_view(d.view, tokenizer_path=path, gray_code=d.gray_code,
                               neural_dir=neural_dir)
  except (NotImplementedError, ValueError, OSError) as e:
    field = "data.neural_dir" if d.view == "neural" else "data.view"
    raise ConfigError(field, str(e)) from e


def build_vocab(config: ml_collections.ConfigDict,
                view: views_lib.View | None | str = "config") -> vocab_lib.Vocab:
  """The id layout for ``view`` (default: the configured one; None = raw only).

  ``Vocab.size`` is the model's vocabulary size.
  """
  if isinstance(view, str):
    view = build_view(config)
  if view is None:
    return vocab_lib.Vocab(0)
  return vocab_lib.Vocab(view.alphabet_size, config.data.separate_embedding, view.literal_bytes)


def resolve_tokenizer(config: ml_collections.ConfigDict) -> str:
  """``data.tokenizer_path``, or a byte-level BPE trained on the train split and cached."""
  d = config.data
  if d.tokenizer_path:
    if not os.path.exists(d.tokenizer_path):
      raise ConfigError("data.tokenizer_path", f"no such file: {d.tokenizer_path}")
    return d.tokenizer_path
  from proxyjax.tools import train_tokenizer  # pylint: disable=g-import-not-at-top
  key = hashlib.sha256(json.dumps(
      [d.sources, d.tokenizer_vocab_size, d.validation_fraction, d.text_field,
       d.record_format]).encode()).hexdigest()[:16]
  cache = os.path.expanduser(d.tokenizer_cache_dir)
  path = os.path.join(cache, f"bpe{d.tokenizer_vocab_size}-{key}.json")
  if not os.path.exists(path):
    os.makedirs(cache, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    train_tokenizer.train_tokenizer(
        d.sources, d.tokenizer_vocab_size, tmp, validation_fraction=d.validation_fraction,
        text_field=d.text_field, record_format=d.record_format, tfds_data_dir=d.tfds_data_dir)
    os.replace(tmp, path)
  return path


def build_schedule(config: ml_collections.ConfigDict) -> mixing.Schedule:
  d = config.data
  if not d.schedule.enabled:
    return mixing.Schedule.constant(d.rate, d.mode)
  s = d.schedule
  return mixing.Schedule(
      initial_rate=s.initial_rate, peak_rate=s.peak_rate, final_rate=s.final_rate,
      warmup_steps=s.warmup_steps, steady_steps=s.steady_steps, decay_steps=s.decay_steps,
      initial_mode=s.initial_mode, steady_mode=s.steady_mode, final_mode=s.final_mode)


def documents(config: ml_collections.ConfigDict, split: str,
              sources: Sequence[tuple[Any, float]] | None = None) -> grain.MapDataset:
  """The (mixed, shuffled, repeated) random-access stream of documents."""
  d = config.data
  if sources is None:
    specs = sources_lib.parse_sources(d.sources)
    sources = [(sources_lib.make_source(
        spec, split=split, validation_fraction=d.validation_fraction,
        text_field=d.text_field, record_format=d.record_format,
        tfds_data_dir=d.tfds_data_dir), spec.weight) for spec in specs]
  train = split == "train"
  epochs = None if (train and d.num_epochs == -1) else (d.num_epochs if train else 1)
  datasets = []
  for i, (source, _) in enumerate(sources):
    if len(source) == 0:
      raise ConfigError("data.sources", f"source {getattr(source, 'name', i)!r} has no "
                        f"documents in the {split!r} split")
    ds = grain.MapDataset.source(source)
    if train and d.shuffle:
      ds = EpochShuffleMapDataset(ds, seed=mixing.stream_key(config.seed, 1000 + i))
    datasets.append(ds.repeat(epochs) if epochs != 1 else ds)
  if len(datasets) == 1:
    return datasets[0]
  return grain.MapDataset.mix(datasets, [w for _, w in sources])


class EpochShuffleMapDataset(grain.MapDataset):
  """A fresh seeded permutation of the parent per epoch (index // len).

  Grain's ``MapDataset.shuffle`` computes an index shuffle per element
  (~300 us each here, more than compressing a small document); a numpy
  permutation per epoch costs O(documents) memory (4 bytes each) and ~1 us per
  lookup. Deterministic: the permutation of epoch e is a function of (seed, e).
  """

  def __init__(self, parent: grain.MapDataset, seed: int):
    super().__init__(parent)
    self._seed = int(seed)
    self._cache: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return f"EpochShuffleMapDataset(seed={self._seed})"

  def _permutation(self, epoch: int) -> np.ndarray:
    perm = self._cache.get(epoch)
    if perm is None:
      n = len(self._parent)
      perm = np.random.default_rng([self._seed, epoch]).permutation(n).astype(
          np.int32 if n < 2**31 else np.int64)
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

  def __getstate__(self):
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
  config_lib.validate_data(config)
  if split not in SPLITS:
    raise ConfigError("split", f"must be one of {SPLITS}, got {split!r}")
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index, process_count = jax.process_index(), jax.process_count()
  if config.batch_size % process_count:
    raise ConfigError("batch_size", f"{config.batch_size} rows do not split evenly over "
                      f"{process_count} processes")
  local_batch = config.batch_size // process_count
  d = config.data
  if isinstance(view, str):
    view = build_view(config)
  vocab = build_vocab(config, view)
  mixer = mixing.Mixer(
      vocab=vocab, view=view, schedule=schedule or build_schedule(config), seed=config.seed,
      symbols_per_step=local_batch * config.seq_len, process_index=process_index,
      max_document_bytes=d.max_document_bytes)

  docs = documents(config, split, sources)
  if process_count > 1:
    docs = docs[process_index::process_count]
  # Reader threads cost ~10% on local files (Grain polls its futures per
  # document); they pay off for remote storage. See docs/benchmarks.md.
  ds = docs.to_iter_dataset(grain.ReadOptions(num_threads=d.read_threads,
                                              prefetch_buffer_size=d.read_buffer_size))
  ds = mixing.MixIterDataset(ds, mixer)
  num_targets = config.model.num_pred_heads
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
  return iter(build_dataset(config, split, **kwargs))


def pipeline_stats(iterator: grain.DatasetIterator) -> dict[str, float | int]:
  """Accounting summed over all workers, with derived ratios (see ``stats``)."""
  return stats_lib.summarize(stats_lib.collect(iterator.get_state()))


def _ensure_absl_flags_parsed() -> None:
  # mp_prefetch reads absl flags; outside an absl app (tests, notebooks) they are unparsed.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
