"""Named crash points at the step boundaries, for the crash-recovery tests (off unless the env var names one).

A worker can die anywhere; what matters for "nothing lost, nothing duplicated" is what had been written
(to Marketo, Dynamics, the state store) when it died. Killing a process from outside cannot hit the
moment between a load's writes and its state-store commit reliably; a failpoint can. With
DYNAMICS_SYNC_CRASH_AT=<entity>:<point> (e.g. ``lead:load.written``) the process kills itself with
SIGKILL there: no exception handler, callback or finally block runs, exactly as when the OOM killer or a
lost node takes a worker.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "DYNAMICS_SYNC_CRASH_AT"
# extract.staged / transform.staged / validate.staged: the step's output is staged, its task not yet done.
# load.written: a part's writes reached the APIs, its state-store commit has not happened.
# load.committed: the commit (links, snapshots, watermarks) happened, the task has not reported success.
POINTS = ("extract.staged", "transform.staged", "validate.staged", "load.written", "load.committed")


def crash_point(point: str, entity: str) -> None:
    """Die here when DYNAMICS_SYNC_CRASH_AT names this point for this entity."""
    wanted = os.environ.get(ENV)
    if not wanted or wanted != f"{entity}:{point}":
        return
    logging.getLogger(__name__).critical("failpoint %s:%s: killing this worker (SIGKILL)", entity, point)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
