"""`make up`: the product running on this machine, to open in the Airflow UI and watch.

Starts both sandboxes (seeded with a small demo data set), an Airflow deployment (api-server, scheduler,
dag-processor as separate processes, LocalExecutor) on a PostgreSQL metadata DB of its own, the state
store in a second PostgreSQL database, runs the initial copy once when the state store is empty, and then
leaves the incremental DAG to the scheduler (every 5 minutes). It stays in the foreground, printing each
finished run, until Ctrl-C or SIGTERM, then stops every process it started.

Everything it keeps is under .local/up/ (Airflow home, sandboxes' data, staging) and in the two
databases (dynamics_sync_airflow, dynamics_sync_state on 127.0.0.1:5432, user postgres). The next
`make up` carries on where the last one stopped when it is started the same way (same ports and
databases) and its initial copy had finished; otherwise, or with --fresh, it starts over: both
databases and the sandboxes' data are recreated. `python -m include.runtime.up --down` (make down) stops
a `make up` running elsewhere, or what a killed one left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from include.runtime.environment import LOCAL

HOME = LOCAL / "up"
INITIAL, INCREMENTAL, SYNC_PERSON = "dynamics_initial_sync", "dynamics_incremental_sync", "sync_person_to_dynamics"
# A small company's worth of records: enough for every entity to have something to copy, small enough that
# the initial copy takes about a minute (its cost is per task, not per record, at this size).
DYNAMICS_SEED = (
    {"entity": "systemuser", "count": 5, "seed": 7},
    {"entity": "team", "count": 2, "seed": 7},
    {"entity": "lead", "count": 200, "seed": 7, "owners": "users"},
    {"entity": "contact", "count": 150, "seed": 7, "owners": "users"},
    {"entity": "account", "count": 30, "seed": 7, "owners": "users", "contacts_per_account": 1,
     "contact_start": 150, "opportunities_per_account": 1, "opportunity_contact": True},
    {"entity": "new_project", "count": 10, "seed": 7},
)
MARKETO_SEED = {"people": 60, "overlap_leads": 10, "overlap_contacts": 10, "seed": 7}
SESSION_KEYS = ("marketo_port", "dynamics_port", "database", "state_database")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="make up", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(env("DYNAMICS_SYNC_UP_PORT", 8080)),
                        help="the Airflow UI and API port on 127.0.0.1 (DYNAMICS_SYNC_UP_PORT, default 8080)")
    # The sandboxes keep their ports between sessions: Dataverse delta links in the state store name them.
    parser.add_argument("--marketo-port", type=int, default=int(env("MARKETO_SANDBOX_PORT", 8081)),
                        help="the Marketo sandbox (MARKETO_SANDBOX_PORT, default 8081)")
    parser.add_argument("--dynamics-port", type=int, default=int(env("DYNAMICS_SANDBOX_PORT", 8082)),
                        help="the Dynamics sandbox (DYNAMICS_SANDBOX_PORT, default 8082)")
    parser.add_argument("--database", default=env("DYNAMICS_SYNC_UP_DATABASE", "dynamics_sync_airflow"),
                        help="the Airflow metadata database on 127.0.0.1:5432")
    parser.add_argument("--state-database", default=env("DYNAMICS_SYNC_UP_STATE_DATABASE", "dynamics_sync_state"),
                        help="the state store's database on 127.0.0.1:5432")
    parser.add_argument("--home", type=Path, default=HOME, help="where it keeps its files (default .local/up)")
    parser.add_argument("--fresh", action="store_true", help="start over: new databases and sandbox data")
    parser.add_argument("--down", action="store_true", help="stop a `make up` of the same --home and exit")
    return parser.parse_args(argv)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: unwind through the `finally` that stops everything."""


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise Interrupted


@dataclass
class Up:
    args: argparse.Namespace
    boxes: Any = None
    airflow: Any = None
    reported: set[tuple[str, str]] = field(default_factory=set)  # (dag id, run id) already printed
    recorded: bool = False  # processes.json is this session's

    @property
    def home(self) -> Path:
        return self.args.home.resolve()

    @property
    def processes_file(self) -> Path:
        return self.home / "processes.json"

    @property
    def session_file(self) -> Path:
        return self.home / "session.json"

    def session(self) -> dict[str, Any]:
        return {key: getattr(self.args, key) for key in SESSION_KEYS}

    def resumable(self) -> bool:
        """The last session ran the same way and finished its initial copy: its data still belong together."""
        if self.args.fresh or not self.session_file.exists():
            return False
        last = json.loads(self.session_file.read_text())
        return last.get("initial_copy_done") is True and {k: last.get(k) for k in SESSION_KEYS} == self.session()

    # ---- start ------------------------------------------------------------------------------------

    def start(self) -> None:
        from include.runtime import connections
        from include.runtime.deployment import (
            Deployment,
            ensure_postgres_database,
            postgres_url,
            recreate_postgres_database,
        )
        from include.runtime.sandboxes import Sandboxes

        _refuse_running(self.processes_file)
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", self.args.port)) == 0:
                raise RuntimeError(f"port {self.args.port} for the Airflow UI is taken; choose another with --port "
                                   "(or DYNAMICS_SYNC_UP_PORT)")
        resume = self.resumable()
        if not resume:
            for name in ("sandbox", "airflow", "staging", "data_docs"):
                shutil.rmtree(self.home / name, ignore_errors=True)
            self.session_file.unlink(missing_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self._environment()
        print(f"Starting the sandboxes: Marketo on {self.args.marketo_port}, Dynamics on {self.args.dynamics_port}",
              flush=True)
        self.boxes = Sandboxes(marketo_port=self.args.marketo_port, dynamics_port=self.args.dynamics_port,
                               state_root=self.home / "sandbox", log_dir=self.home / "sandbox-logs")
        self.boxes.start()
        self._record()
        if resume and not self.boxes.get("dynamics", "/_sandbox/stats").get("leads"):
            resume = False  # the sandboxes' data went missing: the state store's links point at nothing
        if not resume:
            self._seed()
        connections.use_sandboxes(self.boxes, override=True)
        import psycopg2

        try:
            for database in (self.args.database, self.args.state_database):
                if resume:
                    ensure_postgres_database(database)
                else:
                    recreate_postgres_database(database)
        except psycopg2.OperationalError as exc:
            raise RuntimeError(f"PostgreSQL at 127.0.0.1:5432 (user postgres) is needed: {exc}".strip()) from None
        if not resume:
            self.session_file.write_text(json.dumps({**self.session(), "initial_copy_done": False}))
        self.airflow = Deployment(home=self.home / "airflow", db_url=postgres_url(self.args.database),
                                  port=self.args.port,
                                  # The incremental DAG waits, paused, until the initial copy has run.
                                  extra_env={"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"})
        print(f"Preparing the metadata DB {self.args.database} and starting Airflow on {self.airflow.url}",
              flush=True)
        self.airflow.prepare()
        self.airflow.start(timeout=180)
        self._record()
        for dag_id in (INITIAL, SYNC_PERSON):
            self.airflow.wait_for_dag(dag_id)
        self.airflow.wait_for_dag(INCREMENTAL, unpause=False)
        self._report_runs(quiet=True)  # what an earlier session ran is history: report only this one's runs
        self._initial_copy()

    def _environment(self) -> None:
        """What every component inherits: the state store, staging and Data Docs of this home."""
        state = {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres",
                 "schema": self.args.state_database}
        os.environ["AIRFLOW_CONN_DYNAMICS_SYNC_STATE"] = json.dumps(state)
        os.environ.setdefault("DYNAMICS_SYNC_STAGING", (self.home / "staging").as_uri())
        os.environ.setdefault("DYNAMICS_SYNC_DATA_DOCS", str(self.home / "data_docs"))
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        os.environ.setdefault("TQDM_DISABLE", "1")

    def _seed(self) -> None:
        self.boxes.post("dynamics", "/_sandbox/reset")
        self.boxes.post("marketo", "/_sandbox/reset")
        for body in DYNAMICS_SEED:
            self.boxes.post("dynamics", "/_sandbox/seed", body)
        self.boxes.post("marketo", "/_sandbox/seed", MARKETO_SEED)
        counts = ", ".join(f"{body['count']} {body['entity']}" for body in DYNAMICS_SEED)
        print(f"Seeded Dynamics ({counts}) and Marketo ({MARKETO_SEED['people']} people, "
              f"{MARKETO_SEED['overlap_leads'] + MARKETO_SEED['overlap_contacts']} sharing an email with Dynamics)",
              flush=True)

    def _initial_copy(self) -> None:
        from dynamics_sync.state import StateStore
        from include.runtime.deployment import postgres_url

        store = StateStore.from_url(postgres_url(self.args.state_database))
        try:
            populated = store.is_populated()
        finally:
            store.dispose()
        if not populated:
            self.airflow.pause(INCREMENTAL)  # a resumed metadata DB may have it unpaused
            run_id = self.airflow.trigger(INITIAL)
            print(f"The state store is empty: running the initial copy ({self.airflow.url}/dags/{INITIAL}/runs/"
                  f"{run_id})", flush=True)
            started = time.monotonic()
            state = self.airflow.wait_for_run(INITIAL, run_id, timeout=3600, poll_s=2)
            print(f"Initial copy {state} in {time.monotonic() - started:.0f} s", flush=True)
            self.reported.add((INITIAL, run_id))
            if state != "success":
                raise RuntimeError(f"the initial copy failed; its task logs are in the UI ({self.airflow.url}/dags/"
                                   f"{INITIAL}) and under {self.airflow.home / 'logs'}")
        self.session_file.write_text(json.dumps({**self.session(), "initial_copy_done": True}))
        self.airflow.pause(INCREMENTAL, False)

    def _record(self) -> None:
        """Which processes this session started, for `--down` when this process cannot stop them itself."""
        groups = [proc.pid for proc in self.airflow.procs.values()] if self.airflow else []
        pids = [proc.pid for proc in self.boxes.procs] if self.boxes else []
        self.processes_file.write_text(json.dumps({"up": os.getpid(), "groups": groups, "pids": pids}))
        self.recorded = True

    # ---- running ----------------------------------------------------------------------------------

    def banner(self) -> None:
        schedule = _schedule(os.environ.get("DYNAMICS_SYNC_SCHEDULE", "*/5 * * * *"))
        print(f"""
Dynamics Sync is up.
  Airflow UI      {self.airflow.url}
  Login           none: the Simple auth manager treats every visitor as an admin (it listens on 127.0.0.1
                  only). Open the URL, then Dags > {INCREMENTAL}.
  Schedule        {INCREMENTAL} runs {schedule},
                  each run covering 5 minutes of changes; {INITIAL} and
                  {SYNC_PERSON} run when triggered (Trigger in the UI)
  Sandboxes       Marketo {self.boxes.marketo_url}, Dynamics {self.boxes.dynamics_url}
                  (edit records there through their APIs; the next cycle moves the changes)
  Databases       metadata {self.args.database}, state store {self.args.state_database} (127.0.0.1:5432,
                  user postgres); the sync's decisions are the state store's activity_log table
  Files           {self.home} (component logs in airflow/component-logs/)
Ctrl-C stops everything.
""", flush=True)

    def watch(self) -> None:
        """Until a component dies: print each run of the sync's DAGs as it finishes."""
        next_poll = 0.0
        while True:
            self.airflow.check_alive()
            for box in self.boxes.boxes:
                if box.proc is not None and box.proc.poll() is not None:
                    raise RuntimeError(f"the {box.name} sandbox exited with {box.proc.returncode}; "
                                       f"see {box.log_path}")
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + 10
                self._report_runs()
            time.sleep(1)

    def _report_runs(self, quiet: bool = False) -> None:
        for dag_id in (INCREMENTAL, INITIAL, SYNC_PERSON):
            try:
                runs = self.airflow.runs(dag_id, order_by="-run_after", limit=5)
            except (RuntimeError, OSError):
                return  # the API server is busy; the next poll catches up
            for run in reversed(runs):
                key = (dag_id, run["dag_run_id"])
                if run["state"] in ("success", "failed") and key not in self.reported:
                    self.reported.add(key)
                    if not quiet:
                        print(f"{run['end_date']}  {dag_id} {run['run_type']} run {run['state']}: "
                              f"{self.airflow.url}/dags/{dag_id}/runs/{run['dag_run_id']}", flush=True)

    # ---- stop -------------------------------------------------------------------------------------

    def stop(self) -> None:
        if self.airflow is not None:
            self.airflow.stop()
        if self.boxes is not None:
            self.boxes.stop()
        if self.recorded:  # not another session's record (a refused start leaves it for `make down`)
            self.processes_file.unlink(missing_ok=True)


def _schedule(cron: str) -> str:
    """How the incremental DAG is scheduled, as dags/dynamics_incremental_sync.py reads the same variable."""
    if cron == "none":
        return "only when triggered (DYNAMICS_SYNC_SCHEDULE=none)"
    if cron == "*/5 * * * *":
        return "every 5 minutes (cron */5 * * * *)"
    return f"on cron {cron} (DYNAMICS_SYNC_SCHEDULE)"


def _alive(pid: int, mark: str) -> bool:
    """Whether `pid` runs and is what we started (its command line holds `mark`), not a reused pid."""
    try:
        return mark in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _refuse_running(processes_file: Path) -> None:
    """One `make up` per home: a second would fight the first over its ports, databases and files."""
    if not processes_file.exists():
        return
    record = json.loads(processes_file.read_text())
    up = record.get("up")
    if up and up != os.getpid() and _alive(up, "include.runtime.up"):
        raise RuntimeError(f"`make up` is already running (pid {up}); Ctrl-C it, or `make down`")
    if any(_alive(g, "airflow") for g in record.get("groups", [])) or \
            any(_alive(p, "include.sandbox") for p in record.get("pids", [])):
        raise RuntimeError("processes of an earlier `make up` that did not stop are still running; "
                           "`make down` stops them")


def down(home: Path) -> int:
    """Stop the `make up` of `home`: ask it to stop (SIGTERM), or stop what a killed one left behind."""
    path = home.resolve() / "processes.json"
    if not path.exists():
        print(f"nothing to stop ({path} does not exist)")
        return 0
    record = json.loads(path.read_text())
    up = record.get("up")
    if up and _alive(up, "include.runtime.up"):
        os.kill(up, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while _alive(up, "include.runtime.up") and time.monotonic() < deadline:
            time.sleep(0.5)
        print(f"stopped make up (pid {up})")
        return 0
    groups = [group for group in record.get("groups", []) if _alive(group, "airflow")]
    pids = [pid for pid in record.get("pids", []) if _alive(pid, "include.sandbox")]
    for sig in (signal.SIGTERM, signal.SIGKILL):  # politely first, then for sure
        if not _left(groups, pids):
            break
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while _left(groups, pids) and time.monotonic() < deadline:
            time.sleep(0.5)
    path.unlink()
    print(f"stopped what a previous make up left behind ({len(groups)} Airflow components, {len(pids)} sandboxes)")
    return 0


def _left(groups: list[int], pids: list[int]) -> bool:
    """Whether any process of those groups (task processes included) or any of those sandboxes still runs."""
    for group in groups:
        try:
            os.killpg(group, 0)
            return True
        except ProcessLookupError:
            pass
    return any(_alive(pid, "include.sandbox") for pid in pids)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.down:
        return down(args.home)
    # Ctrl-C and SIGTERM alike; SIGINT explicitly too, since a shell starts a background job with it ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    up = Up(args)
    code = 0
    try:
        up.start()
        up.banner()
        up.watch()
    except Interrupted:
        print("\nStopping...", flush=True)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # A second Ctrl-C / SIGTERM while stopping must not leave half of it running.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        up.stop()
    if up.recorded:
        print("Stopped everything make up started.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
