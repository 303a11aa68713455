"""A byte-level Hugging Face tokenizer for proxyjax's raw interface.

Ids (``proxyjax.vocab``): UTF-8 byte b <-> id 64 + b; the specials 0..63 with their
names (``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<raw>`` 12, ``</raw>`` 13, ``<comp>``
14, ``</comp>`` 15; the reserved ones ``<reserved_N>``). The compressed-view ids
(320 and above, when the model has them) are not in the tokenizer: the exported
model keeps them in its embedding and ``vocab_size``, but raw-byte serving never
feeds nor produces them (``generation_config.json`` suppresses them).

Built with the ``tokenizers`` library: a BPE model without merges over the 256
byte characters of the ``ByteLevel`` pre-tokenizer (each UTF-8 byte one token,
no regex split, no prefix space), the ``ByteLevel`` decoder, and a
``TemplateProcessing`` post-processor that prefixes ``[<bos>, <raw>]``:
``tokenizer("def f():")`` (special tokens added, the default) gives exactly the
ids proxyjax feeds through its raw interface, ``[1, 12, 64 + b...]`` (no
``</raw>``: the model continues the bytes); ``add_special_tokens=False`` gives the
byte ids alone. Text that happens to contain ``<raw>`` etc. is encoded as bytes
by transformers (``split_special_tokens`` in ``tokenizer_config.json``); with the
``tokenizers`` library alone set ``tokenizer.encode_special_tokens = True`` for
the same.
"""

from __future__ import annotations

import json
import os

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from proxyjax import vocab as vocab_lib

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
FILES = (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE)
PREFIX = (vocab_lib.BOS, vocab_lib.RAW_OPEN)  # what the raw interface feeds before the bytes


def byte_chars() -> list[str]:
  """The character that the ``ByteLevel`` pre-tokenizer writes for each byte 0..255.

  Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for
  themselves; the others, in byte order, are the characters U+0100, U+0101, ...
  """
  printable = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
  out, shifted = [], 0
  for b in range(256):
    if b in printable:
      out.append(chr(b))
    else:
      out.append(chr(0x100 + shifted))
      shifted += 1
  return out


def special_names() -> dict[int, str]:
  """Id -> name of the 64 special ids (reserved ones ``<reserved_N>``)."""
  return {i: vocab_lib.SPECIAL_NAMES.get(i, f"<reserved_{i}>")
          for i in range(vocab_lib.BYTE_OFFSET)}


def build_tokenizer() -> Tokenizer:
  """The byte-level tokenizer (ids 0..319)."""
  names = special_names()
  vocab = {name: i for i, name in names.items()}
  vocab.update({c: vocab_lib.BYTE_OFFSET + b for b, c in enumerate(byte_chars())})
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                               use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([AddedToken(names[i], special=True, normalized=False)
                          for i in range(vocab_lib.BYTE_OFFSET)])
  prefix = " ".join(names[i] for i in PREFIX)
  tok.post_processor = processors.TemplateProcessing(
      single=f"{prefix} $A", pair=f"{prefix} $A $B:1",
      special_tokens=[(names[i], i) for i in PREFIX])
  return tok


def tokenizer_config(model_max_length: int) -> dict:
  """``tokenizer_config.json`` for transformers' ``AutoTokenizer`` (no custom code)."""
  names = special_names()
  return {
      "tokenizer_class": "PreTrainedTokenizerFast",
      "bos_token": names[vocab_lib.BOS], "eos_token": names[vocab_lib.EOS],
      "pad_token": names[vocab_lib.PAD], "unk_token": None,
      "additional_special_tokens": [names[i] for i in (vocab_lib.RAW_OPEN, vocab_lib.RAW_CLOSE,
                                                       vocab_lib.COMP_OPEN, vocab_lib.COMP_CLOSE)],
      "model_max_length": int(model_max_length),
      "padding_side": "left",  # batched generation: prompts end at the same position
      "split_special_tokens": True,  # '<raw>' typed in text is bytes, as proxyjax encodes it
      "clean_up_tokenization_spaces": False,
      "add_prefix_space": False,
  }


def special_tokens_map() -> dict:
  names = special_names()
  return {"bos_token": names[vocab_lib.BOS], "eos_token": names[vocab_lib.EOS],
          "pad_token": names[vocab_lib.PAD],
          "additional_special_tokens": [names[i] for i in (
              vocab_lib.RAW_OPEN, vocab_lib.RAW_CLOSE, vocab_lib.COMP_OPEN, vocab_lib.COMP_CLOSE)]}


def write(directory: str, model_max_length: int) -> list[str]:
  """Writes the three tokenizer files into ``directory``; returns their names."""
  build_tokenizer().save(os.path.join(directory, TOKENIZER_FILE))
  for name, content in ((TOKENIZER_CONFIG_FILE, tokenizer_config(model_max_length)),
                        (SPECIAL_TOKENS_MAP_FILE, special_tokens_map())):
    with open(os.path.join(directory, name), "w") as f:
      json.dump(content, f, indent=2)
      f.write("\n")
  return list(FILES)
