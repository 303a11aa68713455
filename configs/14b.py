r"""Ladder rung 14b (docs/method.md §5): 14.6B parameters, tokenizer proxy + raw head,
~2.1M symbols per step (256 rows of 8192), 50k steps.

    python -m proxyjax.data.prepare --sources='parquet:/data/code/*.parquet' --out=/data/prepared
    python -m proxyjax.main --config=configs/14b.py --workdir=RUN \
        --config.data.sources=prepared:/data/prepared

There is no default corpus: without --config.data.sources, training and eval stop at once
and say so (--mode=plan needs none). Training also stops before building anything when
--mode=plan's estimate does not fit the local devices (--config.check_fits=false skips that).

Recommended meshes (launch/README.md; `--mode=plan` estimates, not measured):
  8 x H100 80 GB nodes, one process per node, 8 nodes: mesh.shape=(8,8,1), mesh.dcn_shape=(8,1,1)
  TPU v5p-64 (32 chips): mesh.shape=(1,32,1)
Check another layout with: python -m proxyjax.main --config=configs/14b.py --mode=plan \
    --plan.devices=N --plan.device_memory_gb=80 --config.mesh.shape='(...)'

Every field not set here keeps its default from proxyjax/config/schema.py (``base_config``, where
each field is documented). The same rung with another view: configs/bytes.py:14b,
configs/tokens.py:14b. tests/config/test_configs.py pins this file's config.
"""

from proxyjax.config import NO_CORPUS, base_config


def get_config():
  c = base_config()  # shared defaults, documented field by field

  # Model: decoder-only transformer, RoPE, RMSNorm, SwiGLU (14.6B parameters).
  m = c.model
  m.d_model = 5120  # Residual width (= n_heads x head_dim).
  m.n_layers = 40  # Decoder blocks.
  m.n_heads = 40  # Query heads.
  m.n_kv_heads = 0  # Key/value heads: 0 = n_heads (no GQA).
  m.head_dim = 128  # Per-head width.
  m.d_ff = 16384  # SwiGLU hidden width.
  m.num_pred_heads = 1  # Main heads: next symbol only (the authors' proxy recipe: H 1, R 1).
  m.num_raw_pred_heads = 1  # Look-ahead 320-way raw head: the byte after the main target (authors).
  m.dtype = "bfloat16"  # Compute dtype; master weights stay float32 (param_dtype).
  m.remat = "full"  # Recompute each block in the backward pass (activation memory).
  m.scan_layers = True  # One compiled block scanned over the layers (fast compiles).
  m.attention = "auto"  # Best backend for the platform (cuDNN / Pallas / XLA).

  # Vocabulary: 320 specials + raw bytes, then 32768 BPE ids at 320+ (separate_embedding),
  # padded to a multiple of 128: 33152 ids (proxyjax/vocab.py).
  d = c.data
  d.view = "tokenizer"  # Compressed view: BPE token ids (the tokenizer proxy).
  d.tokenizer_vocab_size = 32768  # Trained on the train split and cached, unless tokenizer_path.
  d.tokenizer_path = ""  # A tokenizer.json to use instead of training one.
  d.separate_embedding = True  # Token ids get their own embedding rows (320+s).

  # Data: the paper's mixing schedule, warm-up on translation pairs then 90% compressed.
  d.sources = NO_CORPUS  # None: pass yours, 'prepared:DIR', 'parquet:GLOB', 'jsonl:GLOB', 'hf:PATH'.
  d.validation_fraction = 0.01  # Documents held out (by hash) for validation BPB.
  d.schedule.enabled = True  # Rate/mode follow the step.
  d.schedule.warmup_steps = 10_000  # Compressed rate 0.4 -> 0.9 over the first 10k steps...
  d.schedule.initial_rate = 0.4
  d.schedule.peak_rate = 0.9
  d.schedule.initial_mode = "translation_random"  # ...as raw/token translation pairs,
  d.schedule.steady_mode = "sentinel"  # then sentinel-wrapped views.
  d.packing = "concat"  # Concatenate documents and split into rows (no padding).
  d.doc_mask = True  # Attention stays within a document.
  d.num_workers = 4  # Grain worker processes per host (keep fixed across resumes).

  # Batch: 256 rows of 8192 ids = ~2.1M symbols per step, 50k steps (~105B symbols).
  c.seq_len = 8192  # Ids per row.
  c.batch_size = 256  # Global rows per step (split over processes).
  c.num_steps = 50_000  # Training steps.

  # Optimiser: AdamW; linear warm-up, then cosine to 10% of the peak at num_steps.
  o = c.opt
  o.peak_lr = 5e-4  # Peak learning rate of the 14b rung.
  o.warmup_steps = 500  # Linear warm-up steps.
  o.min_lr_ratio = 0.1  # Final LR = 0.1 x peak.
  o.b1, o.b2, o.eps = 0.9, 0.95, 1e-15  # Adam moments.
  o.weight_decay = 0.1  # Decoupled weight decay on all parameters.
  o.clip = 1.0  # Global-norm gradient clipping.

  # Mesh: FSDP over every device by default; for multi-node layouts see the docstring.
  c.mesh.shape = (1, -1, 1)  # (data, fsdp, tensor); -1 = all remaining devices.
  c.mesh.dcn_shape = (1, 1, 1)  # Part of the mesh across hosts (set for multi-node).
  c.mesh.rules = "fsdp"  # Parameters and optimiser state sharded over fsdp.

  # Loop: validate raw BPB and checkpoint every 1000 steps, keep the last 3.
  c.eval_every = 1000  # Steps between raw-BPB validations.
  c.checkpoint_every = 1000  # Steps between checkpoints.
  c.keep_checkpoints = 3  # Checkpoints kept.
  return c
