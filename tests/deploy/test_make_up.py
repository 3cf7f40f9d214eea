"""`make up` as a user runs it: the product comes up, the scheduler runs the incremental DAG, SIGTERM stops it all.

`python -m include.runtime.up` is started as a user's shell would (no test-session environment), on ports
and databases of this test's own and with a one-minute cron so the scheduler's first cycle comes within a
minute of the initial copy. The test watches through the public REST API for a run of
dynamics_incremental_sync with run_type "scheduled" (the scheduler's, not a trigger) to succeed, then sends
SIGTERM and checks that nothing it started is left: no process of its tree or of their process groups, no
listener on its ports. A failing test still stops everything (the fixture kills what is left).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from include.runtime.environment import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

INCREMENTAL = "dynamics_incremental_sync"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tree(root: int) -> dict[int, int]:
    """Every live process under `root` (and root): pid -> its process group."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
                parents[int(entry.name)] = int(fields[1])
    tree, changed = {root}, True
    while changed:
        before = len(tree)
        tree |= {pid for pid, parent in parents.items() if parent in tree}
        changed = len(tree) != before
    groups = {}
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            groups[pid] = os.getpgid(pid)
    return groups


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie its parent (or init) is about to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


@dataclass
class UpProcess:
    proc: subprocess.Popen
    output: Path
    airflow: Any  # a Deployment pointed at its API, used only for REST calls
    ports: list[int]

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 5432)) != 0:
            pytest.skip("needs PostgreSQL at 127.0.0.1:5432")
    from include.runtime.deployment import Deployment, drop_postgres_database
    from include.runtime.sandboxes import free_port

    home = tmp_path_factory.mktemp("up")
    suffix = uuid.uuid4().hex[:8]
    meta_db, state_db = f"dsync_up_meta_{suffix}", f"dsync_up_state_{suffix}"
    port, marketo_port, dynamics_port = free_port(), free_port(), free_port()
    # A user's shell: none of the test session's Airflow or sync settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DYNAMICS_SYNC_"))}
    env["DYNAMICS_SYNC_SCHEDULE"] = "* * * * *"  # every minute for the test; the data interval stays 5 minutes
    output = home / "up.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "include.runtime.up", "--home", str(home / "state"), "--port", str(port),
             "--marketo-port", str(marketo_port), "--dynamics-port", str(dynamics_port), "--database", meta_db,
             "--state-database", state_db, "--fresh"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    started = UpProcess(proc, output, Deployment(home=home / "client", db_url="", port=port),
                        [port, marketo_port, dynamics_port])
    try:
        yield started
    finally:
        leftovers = _tree(proc.pid) if proc.poll() is None else {}
        for group in {proc.pid, *leftovers.values()}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        proc.wait(timeout=30)
        # What the killed process recorded and could not stop itself (components run in groups of their own).
        from include.runtime.up import down

        down(home / "state")
        drop_postgres_database(meta_db)
        drop_postgres_database(state_db)


def _wait_for(up: UpProcess, what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.proc.poll() is not None:
            pytest.fail(f"make up exited with {up.proc.returncode} while waiting for {what}:\n{up.text()[-3000:]}")
        with contextlib.suppress(RuntimeError, OSError):
            found = check()
            if found:
                return found
        time.sleep(2)
    pytest.fail(f"no {what} within {timeout:.0f} s:\n{up.text()[-3000:]}")


def test_up_runs_the_incremental_dag_on_its_schedule(up: UpProcess) -> None:
    _wait_for(up, "banner", lambda: "Dynamics Sync is up." in up.text(), timeout=240)
    banner = up.text()
    assert f"Airflow UI      http://127.0.0.1:{up.ports[0]}" in banner
    assert "Login           none: the Simple auth manager treats every visitor as an admin" in banner
    dag = up.airflow.api("GET", f"/dags/{INCREMENTAL}")
    assert (dag["is_paused"], dag["timetable_summary"]) == (False, "* * * * *")
    [initial] = up.airflow.runs("dynamics_initial_sync")
    assert (initial["run_type"], initial["state"]) == ("manual", "success")

    def scheduled_success() -> dict[str, Any] | None:
        # Unpausing after the copy makes the scheduler create a run for the latest tick at once (no catchup):
        # the first one here comes from the scheduler, not from a trigger, within seconds of the banner.
        runs = up.airflow.runs(INCREMENTAL, run_type="scheduled")
        failed = [run["dag_run_id"] for run in runs if run["state"] == "failed"]
        assert not failed, f"scheduled runs failed: {failed}"
        return next((run for run in runs if run["state"] == "success"), None)

    run = _wait_for(up, "successful scheduled incremental run", scheduled_success, timeout=180)
    # The run covers the DAG's 5-minute data interval, whatever the cron.
    start, end = (dt.datetime.fromisoformat(run[key]) for key in ("data_interval_start", "data_interval_end"))
    assert end - start == dt.timedelta(minutes=5)
    # make up tells the user about the run too.
    _wait_for(up, "the run in make up's output",
              lambda: f"{INCREMENTAL}/runs/{run['dag_run_id']}" in up.text(), timeout=30)


def test_sigterm_stops_everything_it_started(up: UpProcess) -> None:
    assert up.proc.poll() is None, up.text()[-3000:]
    tree = _tree(up.proc.pid)
    # Itself, two sandboxes, api-server, scheduler, dag-processor (and their own children).
    assert len(tree) >= 6, tree
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(timeout=90) == 0, up.text()[-3000:]
    assert "Stopped everything make up started." in up.text()
    def group_alive(group: int) -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True

    # A process started in one of the groups after the snapshot (a task, a parse) must be gone too.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (all(_gone(pid) for pid in tree)
                                               and not any(group_alive(g) for g in set(tree.values()))):
        time.sleep(0.5)
    assert [pid for pid in tree if not _gone(pid)] == []
    for group in set(tree.values()):
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
    assert [port for port in up.ports if _listening(port)] == []
