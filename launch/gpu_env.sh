# Environment for proxyjax on NVIDIA GPU nodes; sourced by slurm_gpu.sbatch and the
# k8s_gpu.yaml pods (one list of XLA flags for both). Variables already set win.
#
# XLA: overlap FSDP all-gathers / reduce-scatters with compute: the latency-hiding
# scheduler + pipelined collectives, and small collectives combined into ~128 MiB
# ones (fewer, larger NCCL calls). Tune the thresholds per model; see
# https://docs.jax.dev/en/latest/gpu_performance_tips.html.
PROXYJAX_XLA_GPU_FLAGS="\
 --xla_gpu_enable_latency_hiding_scheduler=true\
 --xla_gpu_enable_highest_priority_async_stream=true\
 --xla_gpu_enable_pipelined_all_gather=true\
 --xla_gpu_enable_pipelined_reduce_scatter=true\
 --xla_gpu_enable_pipelined_all_reduce=true\
 --xla_gpu_enable_while_loop_double_buffering=true\
 --xla_gpu_all_gather_combine_threshold_bytes=134217728\
 --xla_gpu_reduce_scatter_combine_threshold_bytes=134217728\
 --xla_gpu_all_reduce_combine_threshold_bytes=134217728\
 --xla_gpu_enable_all_gather_combine_by_dim=false\
 --xla_gpu_enable_reduce_scatter_combine_by_dim=false"
export XLA_FLAGS="${XLA_FLAGS:-}${PROXYJAX_XLA_GPU_FLAGS}"
# JAX preallocates 75% of GPU memory by default; give it 90% (what --mode=plan assumes).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
# NCCL: warnings only. The InfiniBand HCAs and the bootstrap interface are site
# specific, e.g. NCCL_IB_HCA=mlx5_0,...,mlx5_7 NCCL_SOCKET_IFNAME=eth0.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export TOKENIZERS_PARALLELISM=false
