"""End-to-end tests of the TFDS source on tiny datasets prepared on disk.

The datasets are generated locally in the ``array_record`` file format by
``GeneratorBasedBuilder`` subclasses: no TensorFlow and no download is needed.
The builders are defined under ``skip_registration``, so ``tfds.data_source``
finds the prepared datasets from their files in ``data_dir`` alone, exactly as
a fresh Grain worker process does.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from proxyjax import vocab as V
from proxyjax.config import base_config
from proxyjax.data import pipeline, sources
from proxyjax.errors import ConfigError

tfds = pytest.importorskip("tensorflow_datasets")

TEXT_NAME = "proxyjax_tiny_text"  # features {"text": Text()}, no config
CONTENT_NAME = "proxyjax_tiny_content"  # {"content", "title"}, config "small"

TRAIN = [
    "def f(x):\n  return x + 1\n",
    "héllo wörld — ✓ 日本語 🚀\n",
    "# just a comment\n",
    "print('tfds')\n",
    "x = [1, 2, 3]\n",
]
VALIDATION = [
    "validation doc one\n",
    "второй документ\n",
]
CONTENT = [
    ("first title", "contenu numéro un\n"),
    ("second title", "content two ∑\n"),
    ("third title", "three\n"),
]


def _define_builders():
  """The two builder classes, kept out of the global TFDS registry."""
  with tfds.core.registered.skip_registration():

    class ProxyjaxTinyText(tfds.core.GeneratorBasedBuilder):
      """Text documents in a ``text`` feature; train and validation splits."""
      VERSION = tfds.core.Version("1.0.0")

      def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            disable_shuffling=True)  # keep the generation order

      def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(TRAIN),
                "validation": self._generate_examples(VALIDATION)}

      def _generate_examples(self, texts):
        for i, text in enumerate(texts):
          yield i, {"text": text}

    class ProxyjaxTinyContent(tfds.core.GeneratorBasedBuilder):
      """Documents in ``content`` (plus a ``title``); one builder config."""
      VERSION = tfds.core.Version("1.0.0")
      BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="small")]

      def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "title": tfds.features.Text(),
                "content": tfds.features.Text(),
            }),
            disable_shuffling=True)

      def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

      def _generate_examples(self):
        for i, (title, content) in enumerate(CONTENT):
          yield i, {"title": title, "content": content}

  return ProxyjaxTinyText, ProxyjaxTinyContent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A TFDS data_dir holding both tiny datasets, prepared as ArrayRecord."""
  root = tmp_path_factory.mktemp("tfds_data")
  download_config = tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  text_builder, content_builder = _define_builders()
  for builder in (text_builder(data_dir=str(root), file_format="array_record"),
                  content_builder(config="small", data_dir=str(root),
                                  file_format="array_record")):
    builder.download_and_prepare(download_config=download_config)
    # No TFRecord fallback: the files are ArrayRecord shards.
    assert list(builder.data_path.glob("*.array_record-*")), builder.data_path
  return root


def _tfds(location, data_dir, split="train", text_field=""):
  return sources.make_source(sources.SourceSpec("tfds", location, 1.0),
                             split=split, tfds_data_dir=str(data_dir),
                             text_field=text_field)


def _docs(source):
  return [source[i] for i in range(len(source))]


def _utf8(texts):
  return [t.encode("utf-8") for t in texts]


# --- the source -------------------------------------------------------------


@pytest.mark.parametrize("split,texts", [
    ("train", TRAIN), ("validation", VALIDATION),
    ("all", TRAIN + VALIDATION)])
def test_documents_in_order(data_dir, split, texts):
  src = _tfds(TEXT_NAME, data_dir, split=split)
  assert isinstance(src, sources.TfdsSource)
  assert len(src) == len(texts)
  docs = _docs(src)
  assert [d["text"] for d in docs] == _utf8(texts)
  for i, doc in enumerate(docs):
    assert doc == {"text": _utf8(texts)[i], "source": f"tfds:{TEXT_NAME}",
                   "key": f"{split}:{i}", "error": None}
    assert isinstance(doc["text"], bytes)
  assert src[-1] == docs[-1]
  assert src[np.int64(1)] == docs[1]
  with pytest.raises(IndexError):
    src[len(texts)]  # pylint: disable=pointless-statement
  assert repr(src) == (f"TfdsSource(name='tfds:{TEXT_NAME}', split={split!r}, "
                       f"len={len(texts)})")


def test_non_ascii_bytes_exact(data_dir):
  src = _tfds(TEXT_NAME, data_dir)
  assert src[1]["text"] == "héllo wörld — ✓ 日本語 🚀\n".encode("utf-8")
  assert src[1]["text"].decode("utf-8") == TRAIN[1]


def test_config_and_content_fallback(data_dir):
  src = _tfds(f"{CONTENT_NAME}/small", data_dir)
  assert src.name == f"tfds:{CONTENT_NAME}/small"
  assert [d["text"] for d in _docs(src)] == _utf8(c for _, c in CONTENT)
  assert all(d["error"] is None for d in _docs(src))


def test_text_field(data_dir):
  src = _tfds(f"{CONTENT_NAME}/small", data_dir, text_field="title")
  assert [d["text"] for d in _docs(src)] == _utf8(t for t, _ in CONTENT)


def test_missing_text_field(data_dir):
  src = _tfds(TEXT_NAME, data_dir, text_field="body")
  assert len(src) == len(TRAIN)
  for i, doc in enumerate(_docs(src)):
    assert doc == {"text": b"", "source": f"tfds:{TEXT_NAME}",
                   "key": f"train:{i}", "error": sources.MISSING_TEXT}


def test_pickles(data_dir):
  src = _tfds(TEXT_NAME, data_dir)
  state = src.__getstate__()
  assert state["_source"] is None  # only the arguments travel
  copy = pickle.loads(pickle.dumps(src))
  assert copy._source is None  # pylint: disable=protected-access
  assert len(copy) == len(src)
  assert copy[0] == src[0]
  assert _docs(copy) == _docs(src)


def test_missing_dataset_raises_config_error(data_dir):
  with pytest.raises(ConfigError, match="data.sources.*proxyjax_no_such_dataset"):
    _tfds("proxyjax_no_such_dataset", data_dir)


# --- the full pipeline ------------------------------------------------------


def _pipeline_docs(data_dir, location, split="train", num_workers=0):
  c = base_config()
  c.seq_len = 64
  c.batch_size = 2
  c.data.shuffle = False
  c.data.num_epochs = 1
  c.data.num_workers = num_workers
  c.data.view = "raw"
  c.data.sources = f"tfds:{location}"
  c.data.tfds_data_dir = str(data_dir)
  it = pipeline.make_iterator(c, split, process_index=0, process_count=1)
  batches = list(it)
  stats = pipeline.pipeline_stats(it)
  it.close()
  assert batches
  # With worker processes, batch b comes from worker b % num_workers, and a
  # document cut at a batch end continues in that worker's next batch.
  groups = max(num_workers, 1)
  out = []
  for w in range(groups):
    rows = [np.asarray(r) for b in batches[w::groups] for r in b["inputs"]]
    if not rows:
      continue
    last = rows[-1]
    nonzero = np.flatnonzero(last)
    rows[-1] = last[:nonzero[-1] + 1] if nonzero.size else last[:0]
    for doc in V.parse_documents(np.concatenate(rows)):
      assert len(doc) == 1 and doc[0].kind == "raw", doc
      out.append(V.ids_to_bytes(doc[0].ids))
  return out, stats


@pytest.mark.parametrize("num_workers", [0, 2])
def test_pipeline_train(data_dir, num_workers):
  texts, stats = _pipeline_docs(data_dir, TEXT_NAME, num_workers=num_workers)
  if num_workers:  # the workers' documents interleave
    assert sorted(texts) == sorted(_utf8(TRAIN))
  else:
    assert texts == _utf8(TRAIN)
  assert stats["docs_read"] == len(TRAIN)


def test_pipeline_validation_with_config(data_dir):
  texts, stats = _pipeline_docs(data_dir, TEXT_NAME, split="validation")
  assert texts == _utf8(VALIDATION)
  assert stats["docs_read"] == len(VALIDATION)
  texts, stats = _pipeline_docs(data_dir, f"{CONTENT_NAME}/small")
  assert texts == _utf8(c for _, c in CONTENT)
  assert stats["docs_read"] == len(CONTENT)
