"""CPU demo: a ~2M-parameter proxy-compression model on the embedded stdlib corpus, minutes on 2 cores.

    python -m proxyjax.main --config=configs/tiny.py --workdir=/tmp/proxyjax-tiny

One model learns Python source as raw UTF-8 bytes and as BPE token ids (the compressed view
the paper finds transfers best), first as raw/token translation pairs, then as
sentinel-wrapped views; it is evaluated through raw bytes only. At the end the trainer
prints a summary: validation raw BPB, the raw/compressed share it trained on, where the
results are, and a greedy completion of ``summary_prompt``.

Every field not set here keeps its default from proxyjax/config/schema.py (``base_config``,
where each field is documented). ``proxyjax.config.tiny_config()`` (the base of the tests'
configs and of the neural compressor's) is the earlier 3.6M deflate recipe;
tests/config/test_configs.py pins how the two differ.
"""

from proxyjax.config import base_config


def get_config():
  c = base_config()  # shared defaults, documented field by field

  # Model: 128 wide, 4 blocks of 4 heads (~0.8M parameters besides the embedding): in ten
  # minutes on 2 cores a model this size sees more bytes than a wider one and ends lower.
  m = c.model
  m.d_model = 128  # Residual width (= n_heads x head_dim).
  m.n_layers = 4  # Decoder blocks.
  m.n_heads = 4  # Query heads.
  m.n_kv_heads = 0  # Key/value heads: 0 = n_heads (no GQA).
  m.head_dim = 32  # Per-head width.
  m.d_ff = 384  # SwiGLU hidden width.
  m.num_raw_pred_heads = 0  # No look-ahead raw heads.
  m.dtype = "float32"  # CPU: float32 is faster than bfloat16.
  m.remat = "none"  # Small activations: no recomputation.
  m.attention = "xla"  # Plain XLA attention (no accelerator kernels on CPU).
  m.scan_layers = False  # CPU: unrolled layers run ~20% faster (benchmarks/train_step.py).
  m.logits_chunk = 256  # One chunk per row in the cross-entropy.

  # Vocabulary: 320 specials + raw bytes, then the 1024 BPE ids at 320+ (separate_embedding),
  # padded to a multiple of 128: 1408 ids (proxyjax/vocab.py).
  d = c.data
  d.view = "tokenizer"  # Compressed view: BPE token ids (~2.5 bytes per token here).
  d.tokenizer_vocab_size = 1024  # Trained on the train split at first use (seconds), then cached.
  d.separate_embedding = True  # Compressed symbols get their own embedding rows (320+s).

  # Data: the embedded Python stdlib; files over 8 KB skipped (counted as docs_skipped), so a
  # few minutes of training see ~1,000 distinct files instead of a handful of long ones.
  d.sources = "stdlib"  # Python's own standard library, no download.
  d.validation_fraction = 0.01  # Documents held out (by hash) for validation BPB.
  d.max_document_bytes = 8192  # Longer documents are skipped (the tokenizer trains on the rest).
  d.schedule.enabled = True  # Rate/mode follow the step.
  d.schedule.warmup_steps = 300  # Compressed rate 0.25 -> 0.33 over the first 300 steps...
  d.schedule.initial_rate = 0.25
  d.schedule.peak_rate = 0.33  # (The paper uses 0.9; a model this small and short needs
  d.schedule.final_rate = 0.33  # most of its steps on raw bytes to get below 3 bits per byte.)
  d.schedule.initial_mode = "translation_random"  # ...as raw/token translation pairs,
  d.schedule.steady_mode = "sentinel"  # then sentinel-wrapped views.
  d.num_workers = 0  # Read in the main process.

  # Batch: 8 rows of 256 ids = 2048 symbols per step, 1200 steps.
  c.seq_len = 256  # Ids per row (and the model's context).
  c.batch_size = 8  # Global rows per step.
  c.num_steps = 1200  # Training steps.

  # Optimiser: AdamW; linear warm-up, then cosine to 10% of the peak at num_steps.
  o = c.opt
  o.peak_lr = 6e-3  # Peak learning rate.
  o.warmup_steps = 60  # Linear warm-up steps.
  o.min_lr_ratio = 0.1  # Final LR = 0.1 x peak.
  o.weight_decay = 0.1  # Decoupled weight decay on all parameters.
  o.clip = 1.0  # Global-norm gradient clipping.

  # Mesh: every local device in one FSDP axis (one CPU device in the demo).
  c.mesh.shape = (1, -1, 1)  # (data, fsdp, tensor); -1 = all remaining devices.
  c.mesh.rules = "fsdp"  # Parameters and optimiser state sharded over fsdp.

  # Loop: log every 10 steps, validate raw BPB and checkpoint every 600 steps. Validation
  # scores the held-out documents of at most 8 KB, the distribution training reads (12
  # documents, 23 KB; eval.max_document_bytes=0 also scores the 5 longer ones, mostly the
  # 107 KB test/test_doctest.py).
  c.log_every = 10  # Steps between metric lines.
  c.eval_every = 600  # Steps between raw-BPB validations.
  c.eval.max_docs = 0  # Validation documents scored (0 = all of the split).
  c.eval.max_document_bytes = d.max_document_bytes  # Longer ones are skipped and counted.
  c.eval.batch_size = 32  # Validation windows per forward pass.
  c.checkpoint_every = 600  # Steps between checkpoints.
  c.keep_checkpoints = 2  # Checkpoints kept.
  # The end-of-run summary completes this greedily. Small files of the corpus are mostly
  # tests; a bare "def f(n):\n" prompt gets a line or two and then runs of indentation from
  # a model this small.
  c.summary_prompt = "import unittest\n\n\nclass TestPath(unittest.TestCase):\n"
  return c
