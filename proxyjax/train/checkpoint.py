"""Orbax checkpoints: model + optimizer + Grain iterator state + metadata in one step directory.

* async saves every N steps, keep-last-K, restore onto any mesh (the target is the
  abstract state with the *current* shardings, so Orbax reshards on load);
* **a save commits with a checksum manifest.** Just before Orbax renames
  ``<step>.orbax-checkpoint-tmp`` to ``<step>`` (after every process has written
  its part), process 0 writes ``<step>/checksums.json``: size and sha256 of every
  file of the step (Orbax's own ``_CHECKPOINT_METADATA`` and top-level
  ``commit_success.txt``, written after, excepted). The manifest is part of the
  atomic commit;
* **a failed save never costs an older checkpoint.** Keep-last-K is applied here,
  only after a save is confirmed committed; a save that fails (no space left, a
  read-only or vanished directory) raises ``CheckpointSaveError`` naming the step,
  the directory and the cause, and its partial temporary directory is removed.
  With async saves the failure is noticed at the next ``poll()`` (every train step);
* **restore verifies, and never silently starts afresh.** The newest step is
  checked against its manifest, then read. A step that is *unreadable* (a file
  missing or changed, or Orbax cannot read it) is moved aside to
  ``<step>.corrupt-<n>`` -- never deleted; Orbax ignores such names -- with a
  warning, and the previous step is tried. A step that is readable but does not
  fit this run (other parameter shapes, a data-iterator state this pipeline cannot
  take, a changed config field the ``check`` callback refuses) raises
  ``IncompatibleCheckpointError`` and is left as it is. If checkpoints existed and
  none is readable, ``NoReadableCheckpointError``. Steps saved before manifests
  existed restore without verification.

The directory may be local, ``gs://`` or ``s3://`` (Orbax writes arrays through
TensorStore's GCS driver, and through its S3 driver with ``orbax_s3``, which Orbax 0.12
lacks; every other file operation here goes through ``proxyjax.paths``). On object
storage Orbax commits a step in place and marks it with ``<step>/commit_success.txt``
(no rename): the manifest is written just before that marker, a step without the marker
is an unfinished save (removed at the next start), and moving a step aside or removing
it copies/deletes objects, the marker first. Other object stores are refused in one line.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
import shutil
import sys
import threading
import time
from typing import Any, Callable

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from proxyjax import errors as errors_lib
from proxyjax import paths
from proxyjax.errors import first_line
from proxyjax.train import orbax_s3
from proxyjax.train.manifest import MANIFEST, verify_manifest, write_manifest
from proxyjax.train.resume import IncompatibleCheckpointError

log = logging.getLogger(__name__)
ITEMS = ("state", "data", "meta")
TMP_MARKER = ".orbax-checkpoint-tmp"  # Orbax's uncommitted-save suffix (never listed as a step)
_DELETING = ".deleting"  # a step being removed by keep-last-K (never listed as a step)
_CORRUPT = re.compile(r"^(\d+)\.corrupt-(\d+)$")
_COMMIT_MARKER = "commit_success.txt"  # Orbax's commit marker on object storage

# The command-line entry points print proxyjax.errors.UserError as one line.
_UserError = getattr(errors_lib, "UserError", Exception)


class CheckpointError(RuntimeError, _UserError):
  """A checkpoint problem whose one-line message says what happened and what to do."""


def _remove_partial_save(directory: str, step: int, attempts: int = 20) -> None:
  """Removes ``<step>.orbax-checkpoint-tmp*``. Writer threads of a failed save can still
  create files in it for a moment after the error surfaced (seen under heavy CPU load),
  so removal is retried until the directory stays gone (bounded: ~2 s)."""
  if paths.is_remote(directory):  # committed in place: a step without its commit marker
    paths.refresh(directory)
    step_dir = paths.join(directory, str(step))
    if not paths.exists(paths.join(step_dir, _COMMIT_MARKER)):
      paths.rmtree(step_dir)
    return
  pattern = os.path.join(directory, f"{step}{TMP_MARKER}*")
  for _ in range(attempts):
    found = glob.glob(pattern)
    if not found:
      return
    for path in found:
      shutil.rmtree(path, ignore_errors=True)
    time.sleep(0.1)
  left = glob.glob(pattern)
  if left:
    log.warning("could not remove the partial save %s (it is ignored, and removed at the next "
                "start)", ", ".join(left))


class CheckpointSaveError(CheckpointError):
  """A save failed; older checkpoints are untouched and the partial save is removed."""

  def __init__(self, step: int, directory: str, message: str):
    self.step, self.directory = step, directory
    super().__init__(message)


class NoReadableCheckpointError(CheckpointError):
  """Checkpoints existed but none could be read (they were moved aside, not deleted)."""


# --- one-line causes -------------------------------------------------------------------

_CAUSES = (
    (errno.ENOSPC, ("No space left", "os_error_code='28'"), "no space left on device"),
    (errno.EDQUOT, ("Disk quota exceeded",), "disk quota exceeded"),
    (errno.EROFS, ("Read-only file system",), "read-only file system"),
    (errno.EACCES, ("Permission denied",), "permission denied"),
    (errno.EPERM, ("Operation not permitted",), "operation not permitted"),
    (errno.ENOENT, ("No such file or directory",), "a file or directory vanished"),
)


def _chain(error: BaseException) -> list[BaseException]:
  out, todo = [], [error]
  while todo and len(out) < 20:
    e = todo.pop(0)
    if e is None or any(e is o for o in out):
      continue
    out.append(e)
    todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
  return out


def describe_error(error: BaseException) -> str:
  """A short cause: 'no space left on device' etc. when recognisable, else the first line."""
  chain = _chain(error)
  for code, texts, words in _CAUSES:
    for e in chain:
      if getattr(e, "errno", None) == code or any(t in str(e) for t in texts):
        return words
  return first_line(error)


def disk_error(error: BaseException) -> str | None:
  """The cause when ``error`` is about the disk (full, quota, read-only, permissions)."""
  cause = describe_error(error)
  return cause if cause in [words for _, _, words in _CAUSES[:5]] else None


# --- Orbax's background errors: captured, not printed ----------------------------------


class _OrbaxErrorLog(logging.Filter):
  """Keeps ERROR records that Orbax logs from its background save threads (one
  traceback per thread and per failed write) off the console: the failure is
  reported once, as ``CheckpointSaveError``; the records go to DEBUG."""

  def __init__(self):
    super().__init__()
    self.lock = threading.Lock()
    self.errors: list[BaseException] = []

  def filter(self, record: logging.LogRecord) -> bool:
    path = record.pathname.replace(os.sep, "/")
    if record.levelno < logging.ERROR or "/orbax/" not in path:
      return True
    exc = record.exc_info[1] if record.exc_info else None
    with self.lock:
      if exc is not None and len(self.errors) < 16:
        self.errors.append(exc)
    log.debug("orbax: %s", record.getMessage(), exc_info=record.exc_info)
    return False

  def take(self) -> list[BaseException]:
    with self.lock:
      out, self.errors = self.errors, []
    return out


_ORBAX_ERRORS = _OrbaxErrorLog()


def _is_closed_loop_callback(exc_type, value, tb) -> bool:
  """After a failed save, tensorstore completes the writes still in flight into
  Orbax's already closed event loop, and each prints this traceback."""
  if exc_type is not RuntimeError or str(value) != "Event loop is closed" or tb is None:
    return False
  while tb.tb_next is not None:
    tb = tb.tb_next
  return tb.tb_frame.f_code.co_filename.replace(os.sep, "/").endswith("asyncio/base_events.py")


def _install_error_filter() -> None:
  absl_logger = logging.getLogger("absl")
  if _ORBAX_ERRORS not in absl_logger.filters:
    absl_logger.addFilter(_ORBAX_ERRORS)
  previous = sys.unraisablehook
  if getattr(previous, "_proxyjax_checkpoint", False):
    return

  def hook(unraisable):
    if _is_closed_loop_callback(unraisable.exc_type, unraisable.exc_value,
                                unraisable.exc_traceback):
      log.debug("after a failed checkpoint save: %s", unraisable.exc_value)
      return
    previous(unraisable)

  hook._proxyjax_checkpoint = True  # pylint: disable=protected-access
  sys.unraisablehook = hook


# --- multi-process agreement -------------------------------------------------------------


def _all_ok(ok: bool) -> bool:
  """True when every process says ok (one process: ``ok``)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray([int(ok)], np.int32))))


def _from_process_0(value: int) -> int:
  """Process 0's ``value`` on every process."""
  if jax.process_count() == 1:
    return int(value)
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  def name(path):
    return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                    for k in path)
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {name(p): tuple(getattr(x, "shape", ())) for p, x in leaves}


def check_directory(directory: str) -> None:
  """Raises ``CheckpointError`` (one line) for a checkpoint directory on a store that
  Orbax cannot write to (object storage other than ``gs://`` and ``s3://``); on
  ``s3://`` makes Orbax able to (``orbax_s3.install``)."""
  if not paths.is_remote(directory):
    return
  scheme = paths.scheme(directory)
  if scheme == "s3":
    orbax_s3.install()
  elif scheme != "gs":
    raise CheckpointError(
        f"cannot write checkpoints to {directory}: Orbax writes checkpoints to gs://, "
        f"s3:// and local (or mounted) paths only (TensorStore has no driver for "
        f"{scheme}://); use a gs://, s3:// or local --workdir (or mount the store)")


def _move_dir(src: str, dst: str) -> None:
  """Renames a directory; on object storage copies every object, then deletes the
  source (its commit marker first, so a half-moved step is never a step)."""
  if not paths.is_remote(src):
    os.rename(src, dst)
    return
  paths.refresh(src)
  prefix = src.rstrip("/") + "/"
  files = [f for f in paths.walk_files(src) if f.startswith(prefix)]
  if not files:
    raise FileNotFoundError(f"{src}: no such checkpoint directory")
  for f in files:
    with paths.open_file(f, "rb") as fin:
      paths.write_bytes(paths.join(dst, f[len(prefix):]), fin.read())
  marker = paths.join(src, _COMMIT_MARKER)
  if paths.exists(marker):
    paths.remove(marker)
  paths.rmtree(src)
  paths.refresh(src)


class Checkpointer:

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    check_directory(directory)
    self.remote = paths.is_remote(directory)
    self.directory = directory.rstrip("/") if self.remote else os.path.abspath(directory)
    self.keep = max(int(keep), 1)  # the newest committed step is never deleted
    self.async_save = async_save
    self._is_main = jax.process_index() == 0
    self._saving: int | None = None  # the step whose save is in flight
    _install_error_filter()
    # Always Orbax's async checkpointer (the manifest is written by its commit
    # callback); `async_save=False` waits for each save. Keep-last-K is ours.
    extra = {}
    if self.remote and paths.scheme(self.directory) == "s3":  # no atomic rename: a marker
      extra["temporary_path_class"] = orbax_s3.temporary_path_class()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, enable_async_checkpointing=True, create=True,
        async_options=ocp.AsyncOptions(post_finalization_callback=self._before_commit),
        **extra)
    try:
      self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
    except OSError as e:
      raise CheckpointError(f"cannot create the checkpoint directory {self.directory}: "
                            f"{describe_error(e)}; fix it or choose another --workdir") from e

  # --- listing ----------------------------------------------------------------------

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def _step_dir(self, step: int) -> str:
    return paths.join(self.directory, str(step))

  def corrupt_dirs(self) -> list[str]:
    """Names of steps moved aside as unreadable (``<step>.corrupt-<n>``)."""
    names = self._names()
    return sorted((n for n in names if _CORRUPT.match(n)),
                  key=lambda n: tuple(int(g) for g in _CORRUPT.match(n).groups()))

  def remove_partial_saves(self) -> list[str]:
    """Removes leftovers of interrupted or failed saves (``<step>.orbax-checkpoint-tmp*``,
    ``<step>.deleting``) -- by process 0, at the start of training only (a concurrent
    evaluation never removes a save in progress)."""
    removed = []
    if self._is_main:
      for name in self._names():
        unfinished = TMP_MARKER in name or name.endswith(_DELETING)
        if self.remote and name.isdigit():  # committed in place: no marker, no commit
          unfinished = not paths.exists(paths.join(self.directory, name, _COMMIT_MARKER))
        if unfinished:
          paths.rmtree(paths.join(self.directory, name))
          removed.append(name)
      if removed:
        log.warning("removed %d unfinished checkpoint save(s) in %s: %s", len(removed),
                    self.directory, ", ".join(removed))
    _barrier("proxyjax:checkpoint:remove_partial_saves")
    self.manager.reload()
    return removed

  def check_writable(self) -> None:
    """Fails now, not at the first save, when the checkpoint directory is not writable."""
    if not self._is_main:
      return
    probe = paths.join(self.directory, f".write-test-{os.getpid()}")
    try:
      paths.makedirs(self.directory, exist_ok=True)
      paths.write_text(probe, "ok")
      paths.remove(probe)
    except OSError as e:
      raise CheckpointError(
          f"the checkpoint directory {self.directory} is not writable: {describe_error(e)}; "
          "fix it or choose another --workdir") from e

  # --- saving -----------------------------------------------------------------------

  def _before_commit(self) -> None:
    """Orbax's post-finalization callback (process 0, background thread, all parts
    written, just before the rename that commits the step): the checksum manifest."""
    step = self._saving
    if step is None:
      return
    if self.remote:  # committed in place, by the marker written after this callback
      paths.refresh(self.directory)
      if paths.isdir(self._step_dir(step)):
        write_manifest(self._step_dir(step))
      else:
        log.warning("checkpoint at step %d: no directory to write %s into; the step will "
                    "restore without checksum verification", step, MANIFEST)
      return
    candidates = glob.glob(os.path.join(self.directory, f"{step}{TMP_MARKER}*"))
    candidates = [c for c in candidates if os.path.isdir(c)]
    if candidates:
      step_dir = max(candidates, key=os.path.getmtime)
    elif os.path.isdir(self._step_dir(step)):  # filesystems committing in place
      step_dir = self._step_dir(step)
    else:
      log.warning("checkpoint at step %d: no directory to write %s into; the step will "
                  "restore without checksum verification", step, MANIFEST)
      return
    write_manifest(step_dir)

  def save(self, step: int, state: Any, data_iter: grain.DatasetIterator | None,
           meta: dict, *, force: bool = False) -> bool:
    """Starts saving ``step`` (waits for it if ``async_save`` is off). Raises
    ``CheckpointSaveError`` if this save, or the previous one still in flight, fails."""
    self._finish()
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    _ORBAX_ERRORS.take()
    self._saving = step
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
    except Exception as e:  # pylint: disable=broad-except
      self._saving = None
      self._failed(step, e)
    if not saved:
      self._saving = None
      return False
    if not self.async_save:
      self._finish()
    return True

  def poll(self) -> None:
    """Completes a finished background save (cheap when none is): raises
    ``CheckpointSaveError`` naming its step if it failed, else applies keep-last-K."""
    if self._saving is not None and not self.manager.is_saving_in_progress():
      self._finish()

  def wait(self) -> None:
    """Waits for the save in flight; raises ``CheckpointSaveError`` if it failed."""
    self._finish()

  def _finish(self) -> None:
    step = self._saving
    if step is None:
      return
    error = None
    try:
      self.manager.wait_until_finished()
      self.manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      error = e
    finally:
      self._saving = None
    if self.remote and error is None:
      paths.refresh(self.directory)
    if error is None and not paths.isdir(self._step_dir(step)):
      logged = _ORBAX_ERRORS.take()
      error = logged[0] if logged else RuntimeError("the save never committed")
    if error is not None:
      self._failed(step, error)
    self._prune()

  def _failed(self, step: int, error: BaseException) -> None:
    """Removes the partial save of ``step`` and raises one clear error."""
    logged = _ORBAX_ERRORS.take()
    cause = describe_error(error)
    if cause == first_line(error) and logged:  # Orbax logged the actual cause
      cause = describe_error(logged[0])
    detail = next((e for e in [error, *logged] if "Error writing" in str(e)
                   or getattr(e, "errno", None)), error)
    detail = first_line(detail, 10_000)
    if len(detail) > 240:  # the start (what failed) and the end (the OS error)
      detail = f"{detail[:150]} ... {detail[-80:]}"
    if self._is_main:
      _remove_partial_save(self.directory, step)
    try:
      self.manager.reload()
      kept = self.all_steps()
    except Exception:  # pylint: disable=broad-except
      kept = []
    if kept:
      kept_text = (f"the checkpoint{'s' if len(kept) > 1 else ''} at step"
                   f"{'s' if len(kept) > 1 else ''} {', '.join(map(str, kept))} "
                   f"{'are' if len(kept) > 1 else 'is'} intact; free space or fix the directory "
                   f"and re-run the same command to resume from step {kept[-1]}")
    else:
      kept_text = "there is no earlier checkpoint; free space or fix the directory and re-run"
    raise CheckpointSaveError(
        step, self.directory,
        f"checkpoint at step {step} could not be saved in {self.directory}: {cause}; the "
        f"partial save was removed and {kept_text} ({detail})") from error

  def _prune(self) -> None:
    """Keep-last-K over committed steps (process 0). A step is renamed to
    ``<step>.deleting`` before removal, so a half-deleted step never looks like one."""
    if not self._is_main:
      return
    steps = [s for s in self._disk_steps()]
    for step in steps[:-self.keep]:
      doomed = self._step_dir(step) + _DELETING
      try:
        if self.remote:  # the marker first: a half-deleted step is no step
          marker = paths.join(self._step_dir(step), _COMMIT_MARKER)
          if paths.exists(marker):
            paths.remove(marker)
          paths.rmtree(self._step_dir(step))
        else:
          os.rename(self._step_dir(step), doomed)
          shutil.rmtree(doomed)
      except OSError as e:
        log.warning("keep-last-%d: could not remove the checkpoint at step %d in %s (%s)",
                    self.keep, step, self.directory, describe_error(e))
    self.manager.reload()

  def _names(self) -> list[str]:
    """The names in the checkpoint directory ([] when it does not exist)."""
    paths.refresh(self.directory)
    try:
      return paths.listdir(self.directory)
    except FileNotFoundError:
      return []

  def _disk_steps(self) -> list[int]:
    names = self._names()
    if self.remote:  # committed steps carry Orbax's marker
      return sorted(int(n) for n in names if n.isdigit()
                    and paths.exists(paths.join(self.directory, n, _COMMIT_MARKER)))
    return sorted(int(n) for n in names
                  if n.isdigit() and os.path.isdir(os.path.join(self.directory, n)))

  # --- restoring --------------------------------------------------------------------

  def _move_aside(self, step: int, reason: str) -> str:
    src = self._step_dir(step)
    n = 1
    names = set(self._names())
    while f"{step}.corrupt-{n}" in names:
      n += 1
    dst = f"{src}.corrupt-{n}"
    if self._is_main:
      try:
        _move_dir(src, dst)
      except OSError as e:
        raise CheckpointError(
            f"the checkpoint at step {step} in {self.directory} is unreadable ({reason}) "
            f"and could not be moved aside ({describe_error(e)}); move or remove it, then "
            "re-run") from e
      log.warning("checkpoint at step %d in %s is unreadable (%s); moved it aside to %s "
                  "(not deleted) and trying the previous checkpoint", step, self.directory,
                  reason, paths.basename(dst))
    _barrier(f"proxyjax:checkpoint:move_aside:{step}")
    paths.refresh(self.directory)
    self.manager.reload()
    return paths.basename(dst)

  def _check_shapes(self, step: int, abstract_state: Any) -> None:
    """Parameter names and shapes of the checkpoint against this run's model."""
    handler = ocp.StandardCheckpointHandler()
    try:
      saved = handler.metadata(epath.Path(self._step_dir(step)) / "state").tree
    finally:
      handler.close()
    if not isinstance(saved, dict) or "params" not in saved or "params" not in abstract_state:
      return
    old, new = _flat_shapes(saved["params"]), _flat_shapes(abstract_state["params"])
    where = f"the checkpoint at step {step} in {self.directory}"
    for name in sorted(set(old) | set(new)):
      if old.get(name) != new.get(name):
        have = lambda s: "no such parameter" if s is None else f"shape {s}"
        raise IncompatibleCheckpointError(
            "model", f"parameter params.{name} has {have(old.get(name))} in {where} but "
            f"{have(new.get(name))} in this run: the model differs, and parameters cannot be "
            "restored into another model shape; resume with the model config that wrote it, "
            "or start a new --workdir")

  def _unreadable(self, step: int, reason: str, verified: bool, moved: list[str]) -> None:
    if verified:  # intact files that cannot be read: moving them aside would not help
      raise CheckpointError(
          f"the checkpoint at step {step} in {self.directory} passes its checksums but cannot "
          f"be restored into this run ({reason}); it was written by an incompatible version "
          "or for another model: resume with the version and config that wrote it, or start "
          "a new --workdir")
    moved.append(f"{step} ({reason})")
    self._move_aside(step, reason)

  def restore(self, abstract_state: Any, data_iter: grain.DatasetIterator | None = None, *,
              check: Callable[[int, dict], bool] | None = None):
    """Restores the newest readable checkpoint: (step, state, meta), or None if there is none.

    ``check(step, meta)`` sees a readable candidate's metadata before its state is
    read: it raises (e.g. ``IncompatibleCheckpointError``) to refuse the checkpoint,
    and returns whether ``data_iter`` is restored (False: the data stream starts
    afresh). Unreadable steps are moved aside (see the module docstring); if no step
    is readable, ``NoReadableCheckpointError``.
    """
    moved: list[str] = []

    def read_everywhere(step, reason, verified, failure):
      """Whether every process read ``step``; if not, it is moved aside (``_unreadable``)."""
      if _all_ok(reason is None):
        return True
      self._unreadable(step, reason or f"{failure} on another process", verified, moved)
      return False

    self.manager.reload()
    while self.all_steps():
      step = self.all_steps()[-1]
      step_dir = self._step_dir(step)
      reason = None
      if self._is_main:  # 0: verified, 1: no manifest (older save), 2: corrupt
        reason = verify_manifest(step_dir)
        status = 2 if reason else 0 if paths.exists(paths.join(step_dir, MANIFEST)) else 1
      else:
        status = 0
      status = _from_process_0(status)
      if status == 2:
        self._unreadable(step, reason or "checksum mismatch (see process 0)", False, moved)
        continue
      verified = status == 0
      meta = None
      try:
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = dict(meta["meta"] or {})
      except Exception as e:  # pylint: disable=broad-except
        reason = f"metadata unreadable: {first_line(e, 200)}"
      if not read_everywhere(step, reason, verified, "metadata unreadable"):
        continue
      restore_data = check(step, meta) if check is not None else True
      try:
        self._check_shapes(step, abstract_state)
      except IncompatibleCheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        reason = f"parameter metadata unreadable: {first_line(e, 200)}"
      state = None
      if reason is None:
        try:
          out = self.manager.restore(
              step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
          state = out["state"]
        except PermissionError as e:
          raise CheckpointError(f"the checkpoint at step {step} in {self.directory} cannot "
                                f"be read: {describe_error(e)}") from e
        except Exception as e:  # pylint: disable=broad-except
          reason = f"cannot be restored: {first_line(e, 200)}"
      if not read_everywhere(step, reason, verified, "cannot be restored"):
        continue
      if data_iter is not None and restore_data:
        try:
          self.manager.restore(
              step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iter)))
        except Exception as e:  # pylint: disable=broad-except
          raise IncompatibleCheckpointError(
              "data", f"the data-iterator state of the checkpoint at step {step} in "
              f"{self.directory} does not fit this run's data pipeline ({first_line(e, 160)}); "
              "did a data.* field change? Resume with the data settings that wrote it, start "
              "a new --workdir, or pass --config.restore_policy=fresh_data to keep the "
              "parameters, optimizer and step and restart the data stream") from e
      if moved:
        log.warning("resuming from step %d in %s after moving aside unreadable checkpoint(s): "
                    "%s", step, self.directory, "; ".join(moved))
      return step, state, meta
    corrupt = self.corrupt_dirs()
    if moved or corrupt:
      what = (f"step(s) {'; '.join(moved)} were unreadable" if moved
              else "only checkpoints moved aside earlier as unreadable remain")
      raise NoReadableCheckpointError(
          f"no readable checkpoint in {self.directory}: {what} ({', '.join(corrupt)}); "
          "refusing to start from scratch over them: use a new --workdir, or move the "
          "*.corrupt-* directories elsewhere to start afresh here")
    return None

  def close(self) -> None:
    """Waits for the save in flight (raising ``CheckpointSaveError`` if it failed)."""
    try:
      self._finish()
    finally:
      try:
        self.manager.close()
      except Exception as e:  # pylint: disable=broad-except
        log.warning("closing the checkpoint manager for %s: %s", self.directory,
                    first_line(e))


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (restore onto the current mesh)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state, shardings)
