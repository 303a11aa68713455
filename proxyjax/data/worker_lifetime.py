"""Grain worker processes end when the process that started them dies.

Grain's ``mp_prefetch`` workers are ``spawn``-ed children that loop until the
parent sets a stop event; a parent killed with SIGKILL (or OOM-killed) never
sets it, and the workers -- and, through them, the ``multiprocessing`` resource
tracker, which exits once every holder of its pipe is gone -- outlive it.

``WorkerInit`` wraps the ``worker_init_fn`` given to ``mp_prefetch``: in each
worker it starts a daemon thread that waits for the parent to exit (a pidfd,
else polling ``os.getppid()``) and then ends the worker at once. The parent's
pid is taken when Grain pickles the init function in the parent, right before
it spawns the worker.

``PR_SET_PDEATHSIG`` is not used: it fires when the *thread* that forked the
child exits, and Grain starts its workers from short-lived threads.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Callable

POLL_S = 0.5  # getppid polling interval where pidfds are unavailable


def _exit_now() -> None:
  os._exit(1)  # pylint: disable=protected-access


def _wait_for_exit(parent_pid: int, pidfd: int | None) -> None:
  if pidfd is not None:
    try:
      select.select([pidfd], [], [])  # readable once the process has exited
    except OSError:
      pass
    else:
      _exit_now()
  while os.getppid() == parent_pid:
    time.sleep(POLL_S)
  _exit_now()


def exit_with_parent(parent_pid: int) -> None:
  """Ends this process (``os._exit``) as soon as ``parent_pid`` -- its parent -- exits."""
  pidfd = None
  try:
    pidfd = os.pidfd_open(parent_pid)
  except (AttributeError, OSError):  # no pidfd_open (Python/Linux), or already gone
    pidfd = None
  if os.getppid() != parent_pid:  # already orphaned, or not the parent: a pidfd could be stale
    if pidfd is not None:
      os.close(pidfd)
    _exit_now()
  threading.Thread(target=_wait_for_exit, args=(parent_pid, pidfd), daemon=True,
                   name="proxyjax-exit-with-parent").start()


class WorkerInit:
  """A picklable ``worker_init_fn(index, count)``: ``exit_with_parent``, then ``init``."""

  def __init__(self, init: Callable[[int, int], None] | None = None):
    self.init = init
    self.parent_pid = os.getpid()

  def __getstate__(self):
    # Pickled by Grain in the process that is about to spawn the worker.
    return {"init": self.init, "parent_pid": os.getpid()}

  def __setstate__(self, state):
    self.__dict__.update(state)

  def __call__(self, worker_index: int, worker_count: int) -> None:
    exit_with_parent(self.parent_pid)
    if self.init is not None:
      self.init(worker_index, worker_count)
