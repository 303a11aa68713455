"""Checking an export against proxyjax: the same logits from the written files.

``verify(result)`` runs the exported checkpoint on a fixed prompt
(``[<bos>, <raw>]`` + ``PROMPT``'s bytes) with transformers (``AutoModelForCausalLM``,
float32, eager attention) when transformers and torch are installed, else with
``numpy_logits`` (a NumPy Llama forward over the written safetensors), and compares
the head-0 logits of the ids proxyjax uses (``num_ids``) with proxyjax's own forward.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile

import numpy as np

from proxyjax import paths as storage
from proxyjax import vocab as vocab_lib
from proxyjax.errors import UserError
from proxyjax.hf import layout
from proxyjax.hf import safetensors_io as st

PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
# Max abs logit difference allowed, relative to max(1, max |logit|): float32 weights
# differ from proxyjax's only by the order of float32 sums; bfloat16 weights are rounded.
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2}


@dataclasses.dataclass
class VerifyResult:
  backend: str  # transformers | numpy
  max_abs_diff: float
  max_abs_logit: float
  tolerance: float
  note: str = ""

  @property
  def ok(self) -> bool:
    return self.max_abs_diff <= self.tolerance * max(1.0, self.max_abs_logit)


def tolerance(directory: str) -> float:
  """The tolerance for the weights of the Llama checkpoint in ``directory`` (by their
  stored dtype: the imported norms keep their exact offsets, the file rounded them)."""
  weights = st.SafetensorsDir(directory)
  header, _ = st.read_header(os.path.join(directory, weights.weight_map[layout.EMBED]))
  return TOLERANCE["float32" if header[layout.EMBED]["dtype"] in ("F32", "F64") else "bfloat16"]


def prompt_ids(text: str = PROMPT) -> np.ndarray:
  return np.concatenate([[vocab_lib.BOS, vocab_lib.RAW_OPEN],
                         vocab_lib.bytes_to_ids(text.encode())]).astype(np.int32)


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x_TxNxE: np.ndarray, theta: float) -> np.ndarray:
  T, _, E = x_TxNxE.shape
  inv = 1.0 / theta ** (np.arange(0, E, 2, dtype=np.float64) / E)
  angles = np.arange(T, dtype=np.float64)[:, None] * inv[None]
  cos = np.concatenate([np.cos(angles)] * 2, -1)[:, None, :]
  sin = np.concatenate([np.sin(angles)] * 2, -1)[:, None, :]
  half = E // 2
  rotated = np.concatenate([-x_TxNxE[..., half:], x_TxNxE[..., :half]], -1)
  return x_TxNxE * cos + rotated * sin


def numpy_logits(directory: str, ids: np.ndarray) -> np.ndarray:
  """Logits ``[T, V]`` of one row under the Llama checkpoint in ``directory`` (float64
  activations; the weights are read one tensor at a time)."""
  with open(os.path.join(directory, "config.json")) as f:
    c = json.load(f)
  weights = st.SafetensorsDir(directory)

  def w(name):  # one tensor at a time, float32 (products are computed in float64)
    return np.asarray(weights.get(name), dtype=np.float32)

  H, K, E = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
  eps, theta = c["rms_norm_eps"], c["rope_theta"]
  T = len(ids)
  x = np.asarray(weights.get(layout.EMBED)[np.asarray(ids)], dtype=np.float64)  # rows only
  causal = np.tril(np.ones((T, T), dtype=bool))
  for i in range(c["num_hidden_layers"]):
    def p(suffix, i=i):
      return w(layout.layer_name(i, suffix))
    h = _rms_norm(x, p("input_layernorm.weight"), eps)
    q = _rope((h @ p("self_attn.q_proj.weight").T).reshape(T, H, E), theta)
    k = _rope((h @ p("self_attn.k_proj.weight").T).reshape(T, K, E), theta)
    v = (h @ p("self_attn.v_proj.weight").T).reshape(T, K, E)
    k, v = np.repeat(k, H // K, axis=1), np.repeat(v, H // K, axis=1)
    s = np.einsum("qhe,khe->hqk", q, k) / np.sqrt(E)
    s = np.where(causal[None], s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = np.einsum("hqk,khe->qhe", a, v).reshape(T, H * E)
    x = x + o @ p("self_attn.o_proj.weight").T
    h = _rms_norm(x, p("post_attention_layernorm.weight"), eps)
    g, u = h @ p("mlp.gate_proj.weight").T, h @ p("mlp.up_proj.weight").T
    x = x + (g / (1.0 + np.exp(-g)) * u) @ p("mlp.down_proj.weight").T
  return _rms_norm(x, w(layout.FINAL_NORM), eps) @ w(layout.LM_HEAD).T


def transformers_available() -> bool:
  return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def transformers_logits(directory: str, ids: np.ndarray) -> np.ndarray:
  """Logits ``[T, V]`` of one row with transformers' ``AutoModelForCausalLM`` (float32)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  model = transformers.AutoModelForCausalLM.from_pretrained(
      directory, dtype=torch.float32, attn_implementation="eager")
  model.eval()
  with torch.no_grad():
    out = model(torch.as_tensor(np.asarray(ids, dtype=np.int64))[None])
  return out.logits[0].float().numpy()


def verify(result, backend: str = "auto") -> VerifyResult:
  """Compares the export ``result`` (``llama_export.ExportResult``) with proxyjax.

  Raises:
    UserError: ``backend='transformers'`` without transformers/torch installed.
  """
  from proxyjax.hf import llama_export  # pylint: disable=g-import-not-at-top
  note = ""
  if backend == "auto":
    backend = "transformers" if transformers_available() else "numpy"
    if backend == "numpy":
      note = "transformers/torch are not installed: checked with the NumPy Llama forward instead"
  elif backend == "transformers" and not transformers_available():
    raise UserError("--verify with transformers needs torch and transformers installed")
  ids = prompt_ids()
  ref = llama_export.proxyjax_logits(result.loaded, ids)
  with _local_copy(result.out, result.files) as directory:  # a gs:// / s3:// export: downloaded
    logits = (transformers_logits if backend == "transformers" else numpy_logits)(directory, ids)
    tol = tolerance(directory)
  got = np.asarray(logits, dtype=np.float64)[:, :ref.shape[1]]
  return VerifyResult(backend=backend, max_abs_diff=float(np.max(np.abs(got - ref))),
                      max_abs_logit=float(np.max(np.abs(ref))), tolerance=tol, note=note)


@contextlib.contextmanager
def _local_copy(directory: str, files: list[str]):
  """``directory`` itself when local, else a temporary local copy of its ``files``."""
  if not storage.is_remote(directory):
    yield directory
    return
  with tempfile.TemporaryDirectory(prefix="proxyjax-verify-") as tmp:
    for name in files:
      with storage.open_file(storage.join(directory, name), "rb") as src, \
          open(os.path.join(tmp, name), "wb") as dst:
        shutil.copyfileobj(src, dst, 16 << 20)
    yield tmp
