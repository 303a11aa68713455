"""Multi-process start-up: ``jax.distributed`` for clusters, pods and local tests.

``proxyjax.main`` calls ``initialize`` before anything touches devices. Each
setting comes from its flag, else its environment variable, else (for the
address, process count and id) from jax's own cluster auto-detection:

    setting              flag                    environment
    coordinator          --coordinator_address   PROXYJAX_COORDINATOR (host:port)
    process count        --num_processes         PROXYJAX_NUM_PROCESSES
    process id           --process_id            PROXYJAX_PROCESS_ID, else JOB_COMPLETION_INDEX
                                                 when the process count is set too
    visible accelerators --local_device_ids      PROXYJAX_LOCAL_DEVICE_IDS (e.g. 0,1,2,3)
    fake CPU devices     --local_device_count    PROXYJAX_LOCAL_DEVICE_COUNT

``--distributed=auto`` (default) initializes when the explicit settings name
more than one process, or when a multi-process launch is detected: ``srun``
with SLURM_NTASKS > 1, ``mpirun`` (Open MPI), a Kubernetes Indexed Job
(JOB_COMPLETION_INDEX, with the ``kubernetes`` package installed), or a Cloud
TPU VM; a plain single process skips it.
``on`` always initializes (jax fills in what is unset), ``off`` never does.

Multi-process CPU runs use gloo collectives. The coordination service's
heartbeat timeout bounds how long survivors wait when a process dies.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys
from typing import Mapping

import jax

from proxyjax import paths
from proxyjax.errors import ConfigError, UserError

MODES = ("auto", "on", "off")
ENV = {
    "coordinator_address": ("PROXYJAX_COORDINATOR",),
    "num_processes": ("PROXYJAX_NUM_PROCESSES",),
    "process_id": ("PROXYJAX_PROCESS_ID", "JOB_COMPLETION_INDEX"),
    "local_device_ids": ("PROXYJAX_LOCAL_DEVICE_IDS",),
    "local_device_count": ("PROXYJAX_LOCAL_DEVICE_COUNT",),
}
_INT_FIELDS = ("num_processes", "process_id", "local_device_count")


@dataclasses.dataclass(frozen=True)
class Options:
  """How this process joins the job (None = from the environment / auto-detect)."""
  mode: str = "auto"
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: str | None = None  # comma-separated accelerator ids of this process
  local_device_count: int | None = None  # fake CPU devices per process (CPU tests)
  init_timeout_s: int = 300  # how long to wait for all processes to connect
  heartbeat_timeout_s: int = 100  # a process silent this long is declared dead
  shutdown_timeout_s: int = 300  # how long a finished process waits for the others

  def with_env(self, environ: Mapping[str, str] | None = None) -> "Options":
    """Fills unset fields from the environment variables of ``ENV``."""
    environ = os.environ if environ is None else environ
    updates = {}
    for field, names in ENV.items():
      if getattr(self, field) is not None:
        continue
      value = next((environ[n] for n in names if environ.get(n, "") != ""), None)
      if value is None:
        continue
      if field in _INT_FIELDS:
        try:
          value = int(value)
        except ValueError as e:
          raise ConfigError(field, f"environment value {value!r} is not an integer") from e
      updates[field] = value
    merged = dataclasses.replace(self, **updates)
    if (self.process_id is None and merged.num_processes is None
        and environ.get("PROXYJAX_PROCESS_ID", "") == ""):
      # JOB_COMPLETION_INDEX names the process only together with an explicit
      # process count (a JobSet's index is per job, not per process).
      merged = dataclasses.replace(merged, process_id=None)
    return merged


@dataclasses.dataclass(frozen=True)
class Decision:
  """Whether and how to call ``jax.distributed.initialize``."""
  initialize: bool
  reason: str
  kwargs: dict


def detect_cluster(environ: Mapping[str, str] | None = None) -> str | None:
  """The multi-process launcher this process runs under ('slurm', 'ompi', 'k8s', 'tpu')."""
  env = os.environ if environ is None else environ

  def count(name):
    try:
      return int(env.get(name, "1"))
    except ValueError:
      return 1

  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
           "SLURM_LOCALID")  # set by srun (not by the sbatch script itself)
  if all(v in env for v in slurm) and count("SLURM_NTASKS") > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1:
    return "ompi"
  if ("KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env
      and importlib.util.find_spec("kubernetes") is not None):  # jax's detection needs it
    return "k8s"
  if "," in env.get("TPU_WORKER_HOSTNAMES", "") or _on_cloud_tpu_vm():
    return "tpu"
  return None


def _on_cloud_tpu_vm() -> bool:
  try:
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def decide(opts: Options, environ: Mapping[str, str] | None = None) -> Decision:
  """Pure decision from the options (already merged with the environment)."""
  if opts.mode not in MODES:
    raise ConfigError("distributed", f"must be one of {MODES}, got {opts.mode!r}")
  timeouts = {"initialization_timeout": opts.init_timeout_s,
              "heartbeat_timeout_seconds": opts.heartbeat_timeout_s,
              "shutdown_timeout_seconds": opts.shutdown_timeout_s}
  explicit = {k: v for k, v in (("coordinator_address", opts.coordinator_address),
                                ("num_processes", opts.num_processes),
                                ("process_id", opts.process_id)) if v is not None}
  if opts.local_device_ids:
    explicit["local_device_ids"] = [int(i) for i in str(opts.local_device_ids).split(",")]
  if opts.mode == "off":
    return Decision(False, "--distributed=off", {})
  if opts.num_processes is not None and opts.num_processes < 1:
    raise ConfigError("num_processes", f"must be >= 1, got {opts.num_processes}")
  if opts.process_id is not None and opts.num_processes is not None and not (
      0 <= opts.process_id < opts.num_processes):
    raise ConfigError("process_id", f"must be in [0, {opts.num_processes}), got {opts.process_id}")
  if opts.mode == "on":
    return Decision(True, "--distributed=on", {**explicit, **timeouts})
  if opts.num_processes is None and detect_cluster(environ) is None:
    env = os.environ if environ is None else environ
    index = opts.process_id or env.get("JOB_COMPLETION_INDEX", "0")
    if str(index) not in ("", "0"):  # N pods/processes would each train alone
      raise ConfigError("num_processes", f"process id {index} without a process count: "
                        "set --num_processes (or PROXYJAX_NUM_PROCESSES)")
  if opts.num_processes == 1:
    return Decision(False, "single process (num_processes=1)", {})
  if opts.num_processes is not None:
    if opts.coordinator_address is None or opts.process_id is None:
      cluster = detect_cluster(environ)
      if cluster is None:
        raise ConfigError("coordinator_address", "num_processes > 1 also needs "
                          "--coordinator_address and --process_id (or their PROXYJAX_* "
                          "environment variables) outside SLURM/MPI/Kubernetes/Cloud TPU")
      return Decision(True, f"explicit settings + {cluster}", {**explicit, **timeouts})
    # Fully explicit: no cluster detection (under srun it would restrict each
    # process to the GPU numbered SLURM_LOCALID).
    return Decision(True, "explicit settings",
                    {**explicit, **timeouts, "cluster_detection_method": "deactivate"})
  cluster = detect_cluster(environ)
  if cluster is not None:
    return Decision(True, f"auto-detected {cluster}", {**explicit, **timeouts})
  if opts.coordinator_address is not None:
    raise ConfigError("num_processes", "--coordinator_address given without --num_processes")
  return Decision(False, "single process", {})


def initialize(opts: Options, environ: Mapping[str, str] | None = None) -> Decision:
  """Configures CPU devices/collectives and joins the job; call before any device use."""
  opts = opts.with_env(environ)
  if opts.local_device_count:
    jax.config.update("jax_num_cpu_devices", int(opts.local_device_count))
  decision = decide(opts, environ)
  if decision.initialize:
    # gloo is jax's default CPU collective today; pinned so CPU multi-process runs
    # (tests, local.sh) keep working if that default changes. GPUs/TPUs ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**decision.kwargs)
    print(f"proxyjax: process {jax.process_index()} of {jax.process_count()} "
          f"({decision.reason}), {jax.local_device_count()} local / {jax.device_count()} "
          f"global {jax.devices()[0].platform} devices", file=sys.stderr, flush=True)
  return decision


def shutdown() -> None:
  """Leaves the job cleanly (waits up to the shutdown timeout for the others)."""
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()


class StopAgreement:
  """``stop`` hook of ``loop.train``: one stop decision, at the same step, on every process.

  SIGTERM (preemption) reaches the processes of a job at different times, but
  the checkpoint save and the train step are collective: all processes must
  stop after the same step. Each step, a process that wants to stop writes a
  key for that step to the coordination service, all processes meet at a
  barrier for that step, then all read the step's keys: a key written before
  the barrier is seen by everyone, so the decision is the same everywhere.
  Costs one barrier round trip per step on the host (no device sync).
  """

  def __init__(self, timeout_s: int = 3600):
    from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
    self._client = jax_distributed.global_state.client
    if self._client is None:
      raise RuntimeError("StopAgreement needs jax.distributed to be initialized")
    self._process = jax.process_index()
    self._timeout_ms = int(timeout_s * 1000)  # generous: covers first-step compiles

  def __call__(self, step: int, requested: bool) -> bool:
    key = f"proxyjax/stop/{step}/"
    if requested:
      self._client.key_value_set(f"{key}{self._process}", "1", allow_overwrite=True)
    self._client.wait_at_barrier(f"proxyjax/step/{step}", self._timeout_ms)
    return bool(self._client.key_value_dir_get(key))


# --- resume checks ------------------------------------------------------------------

_DATA_STATE = re.compile(r"process_(\d+)-of-(\d+)\.json$")


def checkpoint_process_count(checkpoint_dir: str) -> tuple[int, int] | None:
  """(step, process count) of the newest checkpoint holding Grain iterator state.

  ``checkpoint_dir`` may be local or on object storage (``gs://...``): read through
  ``proxyjax.paths``, with the listing cache dropped first (Orbax writes the bucket's
  checkpoints through TensorStore, behind fsspec's back).
  """
  paths.refresh(checkpoint_dir)
  try:
    names = paths.listdir(checkpoint_dir)
  except (FileNotFoundError, NotADirectoryError):
    return None
  steps = sorted((int(n) for n in names if n.isdigit()), reverse=True)
  for step in steps:
    pattern = paths.join(checkpoint_dir, str(step), "data", "process_*-of-*.json")
    for path in paths.glob(pattern):
      match = _DATA_STATE.search(path)
      if match:
        return step, int(match.group(2))
  return None


class ResumeProcessCountError(UserError, RuntimeError):
  """The newest checkpoint was written by another number of processes."""


def check_resume(checkpoint_dir: str, process_count: int) -> None:
  """Fails clearly when the newest checkpoint was written by another process count.

  Each process saves its own Grain iterator position (``data/process_i-of-n.json``);
  with a different number of processes the per-process document shards differ, so
  the data stream cannot continue exactly. Parameters and optimizer state alone
  restore onto any mesh and process count (``Checkpointer.restore(target, None)``).
  """
  found = checkpoint_process_count(checkpoint_dir)
  if found is None or found[1] == process_count:
    return
  step, saved = found
  raise ResumeProcessCountError(
      f"the checkpoint at step {step} in {checkpoint_dir} was written by {saved} "
      f"process(es) but this run has {process_count}: the Grain data-iterator state is "
      f"per process and cannot be remapped. Resume with {saved} processes (any mesh "
      f"shape works), or start a new workdir and initialize from these parameters.")
