"""The map between proxyjax's parameters and Hugging Face Llama tensors (both directions).

    proxyjax (``proxyjax.model.transformer``)      Hugging Face Llama (nn.Linear: [out, in])
    embed            [V, D]                        model.embed_tokens.weight   [V, D]
    blocks.attn_norm [L, D]   (x * (1 + w))        model.layers.i.input_layernorm.weight = 1 + w
    blocks.wq        [L, D, H, E]                  ...self_attn.q_proj.weight  [H*E, D]
    blocks.wk / wv   [L, D, K, E]                  ...self_attn.k_proj / v_proj.weight [K*E, D]
    blocks.wo        [L, H, E, D]                  ...self_attn.o_proj.weight  [D, H*E]
    blocks.mlp_norm  [L, D]                        ...post_attention_layernorm.weight = 1 + w
    blocks.w_gate / w_up [L, D, F]                 ...mlp.gate_proj / up_proj.weight [F, D]
    blocks.w_down    [L, F, D]                     ...mlp.down_proj.weight     [D, F]
    final_norm       [D]                           model.norm.weight = 1 + w
    lm_head          [D, P*V] (head h: cols hV..)  lm_head.weight [V, D] = head 0 transposed

Both use rotate-half RoPE (pairs (i, i + E/2) of each head), so the q/k rows need
no permutation. Blocks are stacked on a leading layers axis whatever
``model.scan_layers`` says (it only chooses scan or a loop when applying them).

The look-ahead heads go to ``LOOKAHEAD_FILE``: ``heads.h.weight`` [V, D] (main head
h = 1..P-1, predicts the id at t+1+h) and ``raw_heads.j.weight`` [320, D] (raw head
j, predicts t+1+P+j); both as ``lm_head.weight`` (logits = hidden @ W.T). The
exact norm offsets ``w`` go to ``NORM_OFFSETS_FILE`` (float32) so that an import
gives back identical parameters: ``(1 + w) - 1`` is not ``w`` in floating point.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from proxyjax import vocab as vocab_lib

LOOKAHEAD_FILE = "lookahead_heads.safetensors"
NORM_OFFSETS_FILE = "proxyjax_norm_offsets.safetensors"

# kind of each block parameter: how it becomes its Llama tensor.
BLOCKS = {
    "attn_norm": ("input_layernorm.weight", "norm"),
    "wq": ("self_attn.q_proj.weight", "heads_in"),
    "wk": ("self_attn.k_proj.weight", "heads_in"),
    "wv": ("self_attn.v_proj.weight", "heads_in"),
    "wo": ("self_attn.o_proj.weight", "heads_out"),
    "mlp_norm": ("post_attention_layernorm.weight", "norm"),
    "w_gate": ("mlp.gate_proj.weight", "linear"),
    "w_up": ("mlp.up_proj.weight", "linear"),
    "w_down": ("mlp.down_proj.weight", "linear"),
}
EMBED = "model.embed_tokens.weight"
FINAL_NORM = "model.norm.weight"
LM_HEAD = "lm_head.weight"


@dataclasses.dataclass(frozen=True)
class Entry:
  """One Llama tensor: its name, the proxyjax parameter (path, layer) and the conversion."""
  name: str
  path: tuple[str, ...]
  layer: int | None
  kind: str  # norm | heads_in | heads_out | linear | embed | head
  head: int = 0  # lm_head: which main head; raw_head: which raw head


def layer_name(i: int, suffix: str) -> str:
  return f"model.layers.{i}.{suffix}"


def model_entries(n_layers: int) -> list[Entry]:
  """The Llama checkpoint's tensors in file order (embedding, layers, norm, head)."""
  out = [Entry(EMBED, ("embed",), None, "embed")]
  for i in range(n_layers):
    for param, (suffix, kind) in BLOCKS.items():
      out.append(Entry(layer_name(i, suffix), ("blocks", param), i, kind))
  out.append(Entry(FINAL_NORM, ("final_norm",), None, "norm"))
  out.append(Entry(LM_HEAD, ("lm_head",), None, "head", 0))
  return out


def lookahead_entries(num_pred_heads: int, num_raw_pred_heads: int) -> list[Entry]:
  """The look-ahead heads (main heads 1..P-1, raw heads 0..R-1)."""
  out = [Entry(f"heads.{h}.weight", ("lm_head",), None, "head", h)
         for h in range(1, num_pred_heads)]
  out += [Entry(f"raw_heads.{j}.weight", ("raw_head",), None, "raw_head", j)
          for j in range(num_raw_pred_heads)]
  return out


def norm_entries(n_layers: int) -> list[Entry]:
  return [e for e in model_entries(n_layers) if e.kind == "norm"]


def hf_shape(entry: Entry, shape: tuple[int, ...], vocab_size: int) -> tuple[int, ...]:
  """The Llama tensor's shape from the proxyjax parameter's (layer axis included)."""
  if entry.layer is not None:
    shape = shape[1:]
  if entry.kind in ("norm", "embed"):
    return tuple(shape)
  if entry.kind == "heads_in":
    return (shape[1] * shape[2], shape[0])
  if entry.kind == "heads_out":
    return (shape[2], shape[0] * shape[1])
  if entry.kind == "linear":
    return (shape[1], shape[0])
  if entry.kind == "head":
    return (vocab_size, shape[0])
  if entry.kind == "raw_head":
    return (vocab_lib.RAW_VOCAB_SIZE, shape[0])
  raise ValueError(entry.kind)


def index(entry: Entry, vocab_size: int) -> tuple:
  """The part of the proxyjax parameter that ``entry`` is (its layer, its head's columns)."""
  if entry.layer is not None:
    return (entry.layer,)
  if entry.kind in ("head", "raw_head"):
    n = vocab_size if entry.kind == "head" else vocab_lib.RAW_VOCAB_SIZE
    return (slice(None), slice(entry.head * n, (entry.head + 1) * n))
  return ()


def to_hf(entry: Entry, x: np.ndarray) -> np.ndarray:
  """The proxyjax value's part ``index(entry)`` as the Llama tensor."""
  if entry.kind == "norm":
    return np.float32(1.0) + x.astype(np.float32)
  if entry.kind == "heads_in":
    return x.reshape(x.shape[0], -1).T
  if entry.kind == "heads_out":
    return x.reshape(-1, x.shape[-1]).T
  if entry.kind in ("linear", "head", "raw_head"):
    return x.T
  if entry.kind == "embed":
    return x
  raise ValueError(entry.kind)


def from_hf(entry: Entry, y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """The Llama tensor as the proxyjax value of shape ``shape`` (one layer's, for blocks;
  one head's ``[D, V]`` columns for heads). Norms: ``y - 1``."""
  y = np.asarray(y, dtype=np.float32)
  if entry.kind == "norm":
    return y - np.float32(1.0)
  if entry.kind in ("heads_in", "heads_out"):
    return y.T.reshape(shape)
  if entry.kind in ("linear", "head", "raw_head"):
    return y.T
  if entry.kind == "embed":
    return y
  raise ValueError(entry.kind)


def fetcher(entry: Entry, get: Callable[[tuple[str, ...], tuple], np.ndarray],
            vocab_size: int) -> Callable[[], np.ndarray]:
  """A function producing the Llama tensor of ``entry`` from ``get(path, index)``."""
  return lambda: to_hf(entry, get(entry.path, index(entry, vocab_size)))
