"""Loading a trained model: its parameters only, its shape from the run's recorded config.

    loaded = load_params(workdir)            # newest readable step
    loaded = load_params(workdir, step=200)  # that step
    model = nnx.merge(loaded.graphdef, loaded.params)

Reads the ``params`` subtree of a step's Orbax ``state`` item (Orbax partial
restore): no optimizer is built and no optimizer state is read. The model's shape
comes from ``WORKDIR/config.json`` (else the config recorded in the checkpoint's
meta); the vocabulary from the checkpoint's meta (``rundir.VOCAB_KEY``), else it is
derived from the recorded config without ever training a tokenizer. The returned
config reads the run's own tokenizer (``WORKDIR/tokenizer.json``, when its view needs
the auto-trained one). WORKDIR may be local or ``gs://`` (``proxyjax.paths``).
Training's own resume restores the full state (``Checkpointer.restore``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from proxyjax import parallel, paths, rundir
from proxyjax import vocab as vocab_lib
from proxyjax.data import pipeline
from proxyjax.errors import UserError, first_line
from proxyjax.model import transformer
from proxyjax.train import checkpoint as ckpt_lib
from proxyjax.train import manifest as manifest_lib
from proxyjax.train import resume as resume_lib

log = logging.getLogger(__name__)

# model.* fields that say how the model runs, not its parameters: taken from the
# caller's config when one is given (e.g. another attention backend for eval).
RUNTIME_FIELDS = ("dtype", "attention", "remat", "logits_chunk")


@dataclasses.dataclass
class LoadedParams:
  """A trained model's parameters and what is needed to run them."""
  params: Any  # pure dict, sharded over ``mesh``
  step: int
  model_cfg: transformer.ModelConfig
  config: ml_collections.ConfigDict  # the run's recorded config (the caller's if none)
  vocab: vocab_lib.Vocab
  mesh: Mesh
  rules: dict
  meta: dict

  @functools.cached_property
  def graphdef(self):
    return transformer.abstract_model(self.model_cfg)[0]


def checkpoint_steps(workdir: str) -> list[int]:
  """Committed steps in ``WORKDIR/checkpoints`` (no Orbax manager, nothing created)."""
  directory = rundir.checkpoint_dir(workdir)
  paths.refresh(directory)
  try:
    names = paths.listdir(directory)
  except (FileNotFoundError, NotADirectoryError):
    return []
  if paths.is_remote(directory):  # committed in place: Orbax's marker says committed
    return sorted(int(n) for n in names if n.isdigit()
                  and paths.exists(paths.join(directory, n, "commit_success.txt")))
  return sorted(int(n) for n in names if n.isdigit()
                and paths.isdir(paths.join(directory, n)))


def read_meta(step_dir: str) -> dict:
  """A step's ``meta`` item (step, mesh, process count, config, vocabulary)."""
  ckpt_lib.check_directory(step_dir)  # s3://: Orbax's TensorStore specs (orbax_s3)
  ckptr = ocp.Checkpointer(ocp.JsonCheckpointHandler())
  try:
    return dict(ckptr.restore(epath.Path(step_dir) / "meta") or {})
  finally:
    ckptr.close()


def recorded_config(workdir: str, meta: dict | None = None) -> ml_collections.ConfigDict | None:
  """The run's config: ``WORKDIR/config.json``, else the one in a checkpoint's meta."""
  c = rundir.load_run_config(workdir)
  if c is None and meta and meta.get("config"):
    c = ml_collections.ConfigDict(meta["config"])
  return c


def run_vocab(run_config: ml_collections.ConfigDict, meta: dict | None,
              workdir: str | None = None) -> vocab_lib.Vocab:
  """The vocabulary the checkpoint was trained with; never trains a tokenizer (reads the
  run's ``WORKDIR/tokenizer.json`` when the checkpoint recorded no vocabulary)."""
  recorded = rundir.vocab_from_record((meta or {}).get(rundir.VOCAB_KEY))
  if recorded is not None:
    return recorded
  return pipeline.vocab_without_training(run_config, workdir)


def model_config(run_config: ml_collections.ConfigDict, vocab: vocab_lib.Vocab,
                 runtime: ml_collections.ConfigDict | None = None) -> transformer.ModelConfig:
  """The recorded model shape; ``RUNTIME_FIELDS`` from ``runtime`` when given."""
  if runtime is not None:
    run_config = ml_collections.ConfigDict(run_config.to_dict())
    for k in RUNTIME_FIELDS:
      run_config.model[k] = runtime.model[k]
  return transformer.ModelConfig.from_config(run_config, vocab)


def param_targets(model_cfg: transformer.ModelConfig, mesh: Mesh, rules: dict) -> Any:
  """ShapeDtypeStructs of the parameters, sharded by their logical axes over ``mesh``."""
  abstract = jax.eval_shape(lambda: transformer.init_params(model_cfg, 0))
  logical = transformer.logical_axes(transformer.abstract_model(model_cfg)[1])
  shardings = jax.tree.map(
      lambda spec, x: NamedSharding(mesh, parallel.logical_to_spec(tuple(spec), rules, x.shape,
                                                                   mesh)),
      logical, abstract, is_leaf=lambda x: isinstance(x, P))
  return ckpt_lib.abstract_with_shardings(abstract, shardings)


def _check_model_fields(run_config, config, where: str) -> None:
  """A caller's config with another model shape than the run's is refused, naming the field."""
  recorded = resume_lib.model_field_values(run_config)
  current = resume_lib.model_field_values(config)
  for field in resume_lib.MODEL_FIELDS:
    old, new = recorded.get(field), current.get(field)
    if old is not None and old != new:
      raise resume_lib.IncompatibleCheckpointError(
          field, f"this config has {new!r} but {where} was trained with {old!r}; the model "
                 f"shape comes from the run: pass --config.{field}={old!r} or drop the override")


def _check_shapes(step_dir: str, targets: Any, where: str) -> None:
  ckpt_lib.check_directory(step_dir)
  handler = ocp.PyTreeCheckpointHandler()
  try:
    saved = handler.metadata(epath.Path(step_dir) / "state").tree
  finally:
    handler.close()
  if not isinstance(saved, dict) or "params" not in saved:
    raise ckpt_lib.CheckpointError(f"{where} holds no parameters")
  old, new = ckpt_lib._flat_shapes(saved["params"]), ckpt_lib._flat_shapes(targets)  # pylint: disable=protected-access
  for name in sorted(set(old) | set(new)):
    if old.get(name) != new.get(name):
      raise resume_lib.IncompatibleCheckpointError(
          "model", f"parameter params.{name} has shape {old.get(name)} in {where} but "
                   f"{new.get(name)} in the model rebuilt from the run's recorded config")


def _restore_params(step_dir: str, targets: Any) -> Any:
  ckpt_lib.check_directory(step_dir)
  ckptr = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  try:
    out = ckptr.restore(epath.Path(step_dir) / "state", args=ocp.args.PyTreeRestore(
        item={"params": targets},
        restore_args={"params": ocp.checkpoint_utils.construct_restore_args(targets)},
        partial_restore=True))
  finally:
    ckptr.close()
  return out["params"]


def _choose_step(workdir: str, step: int | None) -> list[int]:
  """Candidate steps, newest first (one when ``step`` is given)."""
  directory = rundir.checkpoint_dir(workdir)
  steps = checkpoint_steps(workdir)
  if not steps:
    raise rundir.NoCheckpointError(f"no checkpoint in {directory} (train first: "
                                   f"--mode=train --workdir={workdir})")
  if step is None:
    return steps[::-1]
  if int(step) not in steps:
    raise rundir.NoCheckpointError(f"no checkpoint at step {step} in {directory} (steps: "
                                   f"{', '.join(map(str, steps))})")
  return [int(step)]


def load_params(workdir: str, step: int | None = None, *, mesh: Mesh | None = None,
                config: ml_collections.ConfigDict | None = None,
                rules: dict | None = None) -> LoadedParams:
  """The parameters of a run's checkpoint (``step``, default the newest readable one).

  Args:
    workdir: the training run's directory.
    step: the checkpoint step; None = the newest one that passes its checksums
      (unreadable newer ones are skipped with a warning, never moved or deleted).
    mesh: where the parameters go (default: ``config``'s mesh, else the run's).
    config: the caller's config, if any: its ``RUNTIME_FIELDS`` and mesh rules are
      used; a different model shape is refused. Also the fallback for runs that
      recorded no config.
    rules: logical axis rules (default: those of ``mesh.rules``).

  Raises:
    rundir.NoCheckpointError: no checkpoint, or not the step asked for.
    checkpoint.CheckpointError: the checkpoint cannot be read.
    resume.IncompatibleCheckpointError: ``config`` has another model shape.
  """
  directory = rundir.checkpoint_dir(workdir)
  skipped = []
  for candidate in _choose_step(workdir, step):
    step_dir = paths.join(directory, str(candidate))
    where = f"the checkpoint at step {candidate} in {directory}"
    reason = manifest_lib.verify_manifest(step_dir)
    if reason is not None:
      if step is not None:
        raise ckpt_lib.CheckpointError(f"{where} is unreadable: {reason}")
      log.warning("%s is unreadable (%s); trying the previous one", where, reason)
      skipped.append(f"{candidate} ({reason})")
      continue
    try:
      meta = read_meta(step_dir)
    except Exception as e:  # pylint: disable=broad-except
      meta = {}
      log.warning("%s: metadata unreadable (%s)", where, first_line(e, 200))
    run_config = recorded_config(workdir, meta)
    if run_config is None:
      if config is None:
        raise UserError(f"{workdir} records no config ({rundir.RUN_CONFIG_FILE}) and none was "
                        "given: pass the config the run was trained with")
      run_config = config
    elif config is not None:
      _check_model_fields(run_config, config, where)
    source = config if config is not None else run_config
    vocab = run_vocab(run_config, meta, workdir)
    model_cfg = model_config(run_config, vocab, config)
    if mesh is None:
      mesh = parallel.make_mesh(source.mesh.shape, dcn_shape=source.mesh.dcn_shape)
    rules = rules if rules is not None else parallel.rules_for(source.mesh.rules)
    targets = param_targets(model_cfg, mesh, rules)
    _check_shapes(step_dir, targets, where)
    try:
      params = _restore_params(step_dir, targets)
    except PermissionError as e:
      raise ckpt_lib.CheckpointError(f"{where} cannot be read: "
                                     f"{ckpt_lib.describe_error(e)}") from e
    except Exception as e:  # pylint: disable=broad-except
      if step is not None:
        raise ckpt_lib.CheckpointError(f"{where} cannot be restored: "
                                       f"{first_line(e, 200)}") from e
      log.warning("%s cannot be restored (%s); trying the previous one", where,
                  first_line(e, 200))
      skipped.append(f"{candidate} ({first_line(e, 120)})")
      continue
    return LoadedParams(params=params, step=int(candidate), model_cfg=model_cfg,
                        config=pipeline.with_run_tokenizer(run_config, workdir), vocab=vocab, mesh=mesh, rules=rules, meta=meta)
  raise ckpt_lib.NoReadableCheckpointError(
      f"no readable checkpoint in {directory}: step(s) {'; '.join(skipped)} are unreadable")
