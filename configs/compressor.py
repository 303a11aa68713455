"""The neural compressor: a small raw-byte LM (docs/method.md §6), CPU-trainable in minutes.

    python -m proxyjax.main --config=configs/compressor.py --workdir=/tmp/compressor
    python -m proxyjax.compress --config=configs/compressor.py --workdir=/tmp/compressor \
        --input=stdlib --output=/tmp/neural_shards
    python -m proxyjax.main --config=configs/tiny.py --workdir=/tmp/proxyjax-neural \
        --config.data.view=neural --config.data.neural_dir=/tmp/neural_shards \
        --config.data.sources='arrayrecord:/tmp/neural_shards/*.array_record'

``configs/compressor.py`` (tiny: ~1.4M parameters, CPU minutes) or
``configs/compressor.py:gpu`` (~20M parameters, rows of 1024 bytes, 20k steps; the
compressor still codes in float64). The ``compressor`` section sets the coder (T, N,
segmentation, context); its fields are documented in ``proxyjax.views.neural.settings.Settings``.
Every other field not set here keeps its default from proxyjax/config/schema.py (``base_config``).
``proxyjax.views.neural.settings.compressor_config(size)`` (the neural view's fallback) is the same
config; tests/config/test_configs.py pins both.
"""

import ml_collections

from proxyjax.config import base_config
from proxyjax.errors import ConfigError

SIZES = ("tiny", "gpu")


def get_config(size: str = "tiny"):
  """``configs/compressor.py`` (tiny, CPU minutes) or ``configs/compressor.py:gpu``."""
  size = size or "tiny"
  if size not in SIZES:
    raise ConfigError("config", f"unknown compressor size {size!r}; known: {', '.join(SIZES)}")
  gpu = size == "gpu"
  c = base_config()  # shared defaults, documented field by field

  # Model: a raw-byte LM; tiny 192 wide x 3 blocks, gpu 512 wide x 6 blocks.
  m = c.model
  m.d_model = 512 if gpu else 192  # Residual width (= n_heads x head_dim).
  m.n_layers = 6 if gpu else 3  # Decoder blocks.
  m.n_heads = 8 if gpu else 3  # Query heads.
  m.n_kv_heads = 0  # Key/value heads: 0 = n_heads (no GQA).
  m.head_dim = 64  # Per-head width.
  m.d_ff = 1536 if gpu else 512  # SwiGLU hidden width.
  m.raw_head = False  # Every target is raw: no extra raw head.
  m.dtype = "bfloat16" if gpu else "float32"  # Training compute dtype (CPU: float32 is faster).
  m.remat = "full" if gpu else "none"  # Recompute blocks in the backward pass (accelerator).
  m.attention = "auto" if gpu else "xla"  # Accelerator kernels, or plain XLA on CPU.
  m.scan_layers = gpu  # Scanned block on accelerators; unrolled is faster on CPU.
  m.logits_chunk = 1024 if gpu else 256  # Positions per cross-entropy chunk.

  # Vocabulary: 320 specials + raw bytes, padded to 384 ids (proxyjax/vocab.py).
  # Data: every document is [BOS, <raw>, bytes..., </raw>, EOS], the layout the coder feeds.
  d = c.data
  d.sources = "stdlib"  # Python's own standard library; point it at your corpus.
  d.view = "raw"  # No compressed view...
  d.schedule.enabled = False  # ...no mixing schedule...
  d.schedule.warmup_steps = 60  # (Unused with the schedule off; as in configs/tiny.py.)
  d.rate = 0.0  # ...and never a compressed document.
  d.mode = "sentinel"  # Raw documents wrapped in <raw> ... </raw>.

  # Batch: tiny 16 rows of 256 bytes, 400 steps; gpu 64 rows of 1024, 20k steps (~1.3B bytes).
  c.seq_len = 1024 if gpu else 256  # Ids per row.
  c.batch_size = 64 if gpu else 16  # Global rows per step.
  c.num_steps = 20_000 if gpu else 400  # Training steps.

  # Optimiser: AdamW; linear warm-up, then cosine to 10% of the peak at num_steps.
  o = c.opt
  o.peak_lr = 1e-3 if gpu else 3e-3  # Peak learning rate.
  o.warmup_steps = 500 if gpu else 20  # Linear warm-up steps.
  o.min_lr_ratio = 0.1  # Final LR = 0.1 x peak.
  o.weight_decay = 0.1  # Decoupled weight decay on all parameters.

  # Mesh: every local device in one FSDP axis.
  c.mesh.shape = (1, -1, 1)  # (data, fsdp, tensor); -1 = all remaining devices.
  c.mesh.rules = "fsdp"  # Parameters and optimiser state sharded over fsdp.

  # Loop.
  c.log_every = 100 if gpu else 20  # Steps between metric lines.
  c.eval_every = 2_000 if gpu else 200  # Steps between raw-BPB validations.
  c.eval.max_docs = 16  # Validation documents scored.
  c.checkpoint_every = 2_000 if gpu else 200  # Steps between checkpoints.
  c.keep_checkpoints = 3 if gpu else 2  # Checkpoints kept.

  # The coder (proxyjax.views.neural.settings.Settings; every field but batch_rows changes the
  # symbols, so shards record them and a decoder must use the same values).
  c.compressor = s = ml_collections.ConfigDict()
  s.symbol_bits = 16  # N: bits per packed symbol (alphabet 256 + 2^N).
  s.window_bits = 16  # T: bits per equal-information window (multiple of N).
  s.prob_bits = 16  # Precision of the integer frequency tables.
  # Segmentation by the model's predictive entropy h_t (bits): a segment starts where h_t
  # exceeds entropy_threshold or h_t - h_{t-1} exceeds entropy_jump; segments are coded
  # independently; one of mean entropy above literal_threshold stays literal bytes.
  s.entropy_threshold = 6.0  # Global threshold, bits in [0, 8] (8 = never).
  s.entropy_jump = 2.0  # Monotonicity threshold, bits in [0, 8] (8 = never).
  s.literal_threshold = 7.0  # Mean entropy (bits/byte) above which a segment stays literal.
  s.context = 1024 if gpu else 256  # Entropy pass: model input ids per row (<= seq_len).
  s.stride = 0  # Entropy pass: new bytes per row after the first (0 = half a row).
  s.window_context = 32  # Ids per window row ([BOS, <raw>] + <= 30 bytes: context restarts).
  s.batch_rows = 256 if gpu else 16  # Entropy rows per model call (256 fills an H100).
  s.cache_entries = 1 << 16  # Coded segments cached (same bytes -> same symbols).
  return c
