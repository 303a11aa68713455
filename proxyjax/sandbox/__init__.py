"""Running untrusted programs (model completions) in isolation, and judging them.

A subsystem of its own (it imports nothing else from proxyjax): evaluation calls this
small API, and the modules below hold the rest.

* ``runner`` -- ``run`` / ``run_many`` one Python program per fresh child: user, mount,
  PID, IPC and network namespaces where the kernel allows them, rlimits, a private
  workdir, a fresh /tmp, hidden home directories; ``Limits`` in, ``Result`` out.
* ``isolation`` -- the child side (sent as ``-c`` source): sets the isolation up, then
  runs the program.
* ``differential`` -- HumanEval/MBPP-style judging: ``record`` the canonical solution's
  outputs on the tests' inputs, then ``run_and_judge`` candidates against them.
* ``values`` -- the value encoding both sides of ``differential`` use.

Tests: ``tests/sandbox/`` (isolation, escapes, limits) and ``tests/eval/test_codegen.py``
(judging through evaluation).
"""

from proxyjax.sandbox.differential import Recording, Task, record, run_and_judge
from proxyjax.sandbox.runner import (
    ERROR,
    FAILED,
    PASSED,
    TIMEOUT,
    Limits,
    Result,
    isolation,
    run,
    run_many,
    warn_once,
)

__all__ = ["ERROR", "FAILED", "PASSED", "TIMEOUT", "Limits", "Recording", "Result", "Task",
           "isolation", "record", "run", "run_and_judge", "run_many", "warn_once"]
