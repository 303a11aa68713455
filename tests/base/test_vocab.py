"""The id layout of docs/method.md §1 and the document parser."""

import numpy as np
import pytest

from proxyjax import vocab as V


def test_id_layout():
  assert (V.PAD, V.BOS, V.EOS) == (0, 1, 2)
  assert (V.RAW_OPEN, V.RAW_CLOSE, V.COMP_OPEN, V.COMP_CLOSE) == (12, 13, 14, 15)
  assert V.bytes_to_ids(b"\x00A\xff").tolist() == [64, 129, 319]
  assert V.ids_to_bytes([64, 129, 319]) == b"\x00A\xff"
  with pytest.raises(ValueError):
    V.ids_to_bytes([320])


@pytest.mark.parametrize("alphabet, separate, literal, num_ids, size, offset", [
    (0, True, False, 320, 384, 320),
    (256, True, False, 576, 640, 320),
    (256, False, False, 320, 384, 64),
    (16, False, False, 320, 384, 64),
    (4096, False, False, 4416, 4480, 320),  # non-byte views never share ids
    (65536, True, False, 65856, 65920, 320),
    (256 + 65536, False, True, 65856, 65920, 320),  # neural: literals share raw ids
])
def test_vocab_size_and_offsets(alphabet, separate, literal, num_ids, size, offset):
  v = V.Vocab(alphabet, separate, literal)
  assert v.num_ids == num_ids and v.size == size and v.size % 128 == 0
  assert v.compressed_offset == offset


def test_literal_bytes_mapping_round_trips():
  v = V.Vocab(256 + 65536, separate_embedding=False, literal_bytes=True)
  sym = np.array([0, 255, 256, 256 + 65535])
  ids = v.symbols_to_ids(sym)
  assert ids.tolist() == [64, 319, 320, 320 + 65535]
  np.testing.assert_array_equal(v.ids_to_symbols(ids), sym)


def test_parse_documents():
  v = V.Vocab(256)
  stream = np.concatenate([
      v.document(v.raw_body(b"ab")),
      v.document(v.compressed_body(np.array([7, 8])), v.raw_body(b"c")),
      [V.BOS, 70, 71, V.EOS],
      [0, 0]])
  docs = V.parse_documents(stream)
  assert [[p.kind for p in d] for d in docs] == [["raw"], ["compressed", "raw"], ["bare"]]
  assert V.ids_to_bytes(docs[0][0].ids) == b"ab"
  assert v.ids_to_symbols(docs[1][0].ids).tolist() == [7, 8]
  with pytest.raises(ValueError):
    V.parse_documents([V.BOS, V.RAW_OPEN, 70, V.EOS])


@pytest.mark.parametrize("alphabet, separate, literal, shared, offset, num_ids", [
    (256, True, False, False, 320, 576),  # the default: its own ids
    (256, True, False, True, 64, 320),  # data.shared_ids: byte ids 64 + s, whatever separate
    (16, True, False, True, 64, 320),
    (4096, True, False, True, 320, 4416),  # not byte-valued: never shared
    (256 + 65536, True, True, True, 320, 65856),  # literal bytes: unchanged
])
def test_for_view_shared_ids(alphabet, separate, literal, shared, offset, num_ids):
  v = V.for_view(alphabet, separate_embedding=separate, literal_bytes=literal, shared_ids=shared)
  assert v.compressed_offset == offset and v.num_ids == num_ids
  assert v == V.Vocab(alphabet, separate and not shared, literal)  # recorded as such
  if offset == 64:
    assert v.symbols_to_ids(np.array([0, 5, alphabet - 1])).tolist() == [64, 69, 63 + alphabet]
