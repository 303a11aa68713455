"""CPU demo: a ~3.6M-parameter model on the embedded stdlib corpus, minutes on 2 cores.

    python -m proxyjax.main --config=configs/tiny.py --workdir=/tmp/proxyjax-tiny

Every field not set here keeps its default from proxyjax/config/schema.py (``base_config``, where
each field is documented). ``proxyjax.config.tiny_config()`` (used by tests and the neural
compressor's config) is the same config; tests/config/test_configs.py pins both.
"""

from proxyjax.config import base_config


def get_config():
  c = base_config()  # shared defaults, documented field by field

  # Model: 256 wide, 4 blocks of 4 heads (~3.6M parameters).
  m = c.model
  m.d_model = 256  # Residual width (= n_heads x head_dim).
  m.n_layers = 4  # Decoder blocks.
  m.n_heads = 4  # Query heads.
  m.n_kv_heads = 0  # Key/value heads: 0 = n_heads (no GQA).
  m.head_dim = 64  # Per-head width.
  m.d_ff = 768  # SwiGLU hidden width.
  m.num_raw_pred_heads = 0  # No look-ahead raw heads.
  m.dtype = "float32"  # CPU: float32 is faster than bfloat16.
  m.remat = "none"  # Small activations: no recomputation.
  m.attention = "xla"  # Plain XLA attention (no accelerator kernels on CPU).
  m.scan_layers = False  # CPU: unrolled layers run ~20% faster (benchmarks/train_step.py).
  m.logits_chunk = 512  # One chunk per row in the cross-entropy.

  # Vocabulary: 320 specials + raw bytes, then 256 DEFLATE symbols at 320+
  # (separate_embedding), padded to a multiple of 128: 640 ids (proxyjax/vocab.py).
  d = c.data
  d.view = "deflate"  # Compressed view: DEFLATE bytes of each document.
  d.separate_embedding = True  # Compressed symbols get their own embedding rows (320+s).

  # Data: the embedded Python stdlib, the paper's mixing schedule with a short warm-up.
  d.sources = "stdlib"  # Python's own standard library, no download.
  d.validation_fraction = 0.01  # Documents held out (by hash) for validation BPB.
  d.schedule.enabled = True  # Rate/mode follow the step.
  d.schedule.warmup_steps = 60  # Compressed rate 0.4 -> 0.9 over the first 60 steps...
  d.schedule.initial_rate = 0.4
  d.schedule.peak_rate = 0.9
  d.schedule.initial_mode = "translation_random"  # ...as raw/deflate translation pairs,
  d.schedule.steady_mode = "sentinel"  # then sentinel-wrapped views.
  d.num_workers = 0  # Read in the main process.

  # Batch: 8 rows of 512 ids = 4096 symbols per step, 200 steps.
  c.seq_len = 512  # Ids per row.
  c.batch_size = 8  # Global rows per step.
  c.num_steps = 200  # Training steps.

  # Optimiser: AdamW; linear warm-up, then cosine to 10% of the peak at num_steps.
  o = c.opt
  o.peak_lr = 3e-3  # Peak learning rate.
  o.warmup_steps = 20  # Linear warm-up steps.
  o.min_lr_ratio = 0.1  # Final LR = 0.1 x peak.
  o.weight_decay = 0.1  # Decoupled weight decay on all parameters.
  o.clip = 1.0  # Global-norm gradient clipping.

  # Mesh: every local device in one FSDP axis (one CPU device in the demo).
  c.mesh.shape = (1, -1, 1)  # (data, fsdp, tensor); -1 = all remaining devices.
  c.mesh.rules = "fsdp"  # Parameters and optimiser state sharded over fsdp.

  # Loop: log every 10 steps, validate raw BPB on 16 documents and checkpoint every 100.
  c.log_every = 10  # Steps between metric lines.
  c.eval_every = 100  # Steps between raw-BPB validations.
  c.eval.max_docs = 16  # Validation documents scored.
  c.checkpoint_every = 100  # Steps between checkpoints.
  c.keep_checkpoints = 2  # Checkpoints kept.
  return c
