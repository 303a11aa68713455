r"""proxyjax entry point.

    python -m proxyjax.main --config=configs/tiny.py --workdir=/tmp/run [--config.x=y]
    python -m proxyjax.main --config=configs/tiny.py --workdir=/tmp/run --mode=eval \
        --eval.tasks=bpb,view_bpb
    python -m proxyjax.main --config=configs/14b.py --mode=plan --plan.devices=64 \
        --plan.device_memory_gb=80

``--mode=train`` (default) trains or resumes from WORKDIR; ``--mode=eval``
evaluates the newest checkpoint in WORKDIR and writes WORKDIR/eval/<task>.json;
``--mode=plan`` prints the per-device memory of the sharded train step and
whether it fits (no WORKDIR needed, nor data: a ladder config without
``--config.data.sources``, which train and eval refuse, plans as is). Train first checks
that same estimate against the local devices and stops in one line when it does not fit
(``--config.check_fits=false`` skips the check).

Multi-process (pods, SLURM, Kubernetes, local CPU tests): see
``proxyjax.distributed`` and ``launch/README.md``; e.g. on one machine

    python -m proxyjax.main ... --coordinator_address=127.0.0.1:12345 \
        --num_processes=2 --process_id=0 --local_device_count=4

Bad input -- an unknown flag or config field, a config file that is missing or
fails to load, an invalid config value, ``--mode=eval`` without a checkpoint --
prints one line, ``proxyjax: error: ...``, and exits with status 2 before any
training; ``--verbose`` adds the traceback (see ``proxyjax.cli``).
"""

import os
import sys
import traceback

from absl import flags, logging
from ml_collections import config_flags

from proxyjax import cli
from proxyjax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with get_config().",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "plan"], "What to run.")
_EVAL_TASKS = flags.DEFINE_string("eval.tasks", None,
                                  "Shorthand for --config.eval.tasks (comma-separated).")

# Multi-process (proxyjax.distributed; unset flags fall back to PROXYJAX_* variables).
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "jax.distributed: auto-detect, always, never.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process, 0..num_processes-1.")
_LOCAL_DEVICE_IDS = flags.DEFINE_string("local_device_ids", None,
                                        "Accelerators of this process, e.g. 0,1,2,3.")
_LOCAL_DEVICE_COUNT = flags.DEFINE_integer("local_device_count", None,
                                           "Fake CPU devices per process (CPU only).")
_INIT_TIMEOUT = flags.DEFINE_integer("distributed_init_timeout_s", 300,
                                     "Seconds to wait for all processes to connect.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer("heartbeat_timeout_s", 100,
                                          "Seconds of silence after which a process is dead.")
_SHUTDOWN_TIMEOUT = flags.DEFINE_integer("shutdown_timeout_s", 300,
                                         "Seconds a finished process waits for the others.")

# --mode=plan (proxyjax.plan).
_PLAN_DEVICES = flags.DEFINE_integer("plan.devices", None,
                                     "Devices to plan for (default: the local device count).")
_PLAN_MEMORY = flags.DEFINE_float("plan.device_memory_gb", None,
                                  "Memory per device in GiB (default: the platform's).")
_PLAN_PLATFORM = flags.DEFINE_enum("plan.platform", None, ["cpu", "gpu", "tpu"],
                                   "Target platform (default: the local backend).")
_PLAN_COMPILE = flags.DEFINE_enum("plan.compile", "auto", ["auto", "always", "never"],
                                  "Compile the sharded step for XLA's memory analysis.")
_PLAN_TOPOLOGY = flags.DEFINE_string("plan.topology", None,
                                     "TPU topology for ahead-of-time compilation, e.g. v5p:4x4x4.")


def _distributed_options(distributed):
  return distributed.Options(
      mode=_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
      local_device_ids=_LOCAL_DEVICE_IDS.value, local_device_count=_LOCAL_DEVICE_COUNT.value,
      init_timeout_s=_INIT_TIMEOUT.value, heartbeat_timeout_s=_HEARTBEAT_TIMEOUT.value,
      shutdown_timeout_s=_SHUTDOWN_TIMEOUT.value)


def _run(config, mode: str, workdir: str | None) -> None:
  # The modules that run a mode are imported here, not at the top: importing the
  # training stack takes ~7 s (JAX, Flax, Orbax), which a flag error, --help or a
  # Grain worker (spawned workers re-import this module) should not pay.
  # pylint: disable=g-import-not-at-top
  if mode == "plan":
    from proxyjax import plan
    plan.main(config, plan.Options(
        devices=_PLAN_DEVICES.value, device_memory_gb=_PLAN_MEMORY.value,
        platform=_PLAN_PLATFORM.value, compile=_PLAN_COMPILE.value,
        topology=_PLAN_TOPOLOGY.value, local_device_count=_LOCAL_DEVICE_COUNT.value))
    return
  from proxyjax import distributed
  from proxyjax.config import validation as config_validation
  from proxyjax.eval import validation
  config_validation.validate_corpus(config)  # a ladder config without --config.data.sources
  validation.validate(config)  # bad config: one line, before connecting to other processes
  distributed.initialize(_distributed_options(distributed))  # before anything touches devices
  if mode == "train":
    import jax

    from proxyjax import plan, trainer
    plan.check_fits(config)  # --mode=plan's estimate vs the local devices, before building
    distributed.check_resume(os.path.join(workdir, "checkpoints"), jax.process_count())
    stop = distributed.StopAgreement() if jax.process_count() > 1 else None
    trainer.train(config, workdir, stop=stop)
  elif mode == "eval":
    from proxyjax.eval import run as eval_run
    eval_run.evaluate(config, workdir)
  distributed.shutdown()
  # pylint: enable=g-import-not-at-top


def main(argv):
  cli.no_positional(argv)
  if _CONFIG.value is None:
    raise UserError("--config is required, e.g. --config=configs/tiny.py")
  if _WORKDIR.value is None and _MODE.value != "plan":
    raise UserError(f"--workdir is required with --mode={_MODE.value}")
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if _EVAL_TASKS.value is not None:
    config.eval.tasks = _EVAL_TASKS.value
  try:
    _run(config, _MODE.value, _WORKDIR.value)
  except Exception as e:  # pylint: disable=broad-except
    _fail_fast(e)
    raise


def _fail_fast(error: Exception) -> None:
  """In a multi-process job, exits at once instead of waiting for the others.

  A clean exit would block in ``jax.distributed.shutdown`` until every process
  arrives (``--shutdown_timeout_s``), while the survivors wait in a collective
  for this one; exiting hard lets them see the lost peer (closed connections,
  then the coordination service's heartbeat timeout) and fail too.
  """
  if "jax" not in sys.modules:
    return
  import jax  # pylint: disable=g-import-not-at-top
  if not jax.distributed.is_initialized() or jax.process_count() == 1:
    return
  if isinstance(error, UserError):  # the same bad input in every process: one line each
    if cli.verbose():
      traceback.print_exception(error)
    print(f"proxyjax: error: process {jax.process_index()} of {jax.process_count()}: "
          f"{cli.one_line(str(error))}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(cli.EXIT_USER_ERROR)  # pylint: disable=protected-access
  traceback.print_exception(error)
  first = (str(error).splitlines() or [""])[0][:400]
  print(f"proxyjax: process {jax.process_index()} of {jax.process_count()} failed: "
        f"{type(error).__name__}: {first}\n(a connection error here usually means another "
        "process died first: see its log); exiting without waiting for the others",
        file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(1)  # pylint: disable=protected-access


if __name__ == "__main__":
  cli.run(main)
