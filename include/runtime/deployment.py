"""A real Airflow deployment on this machine: api-server, scheduler and dag-processor as separate processes.

Why: dag.test() runs every task in one process, one after another; a deployment runs them as the
scheduler hands them to the executor, in parallel within the pools, each in its own process. The
benchmarks (and `make up`) measure and run the product that way. The metadata DB is PostgreSQL (as in
docker-compose.yaml); the components share one environment (JWT secret, execution API URL), and runs are
triggered and watched through Airflow's public REST API, as an outside tool would.

The executor is LocalExecutor by default; `executor="CeleryExecutor"` adds a Celery worker process (the
compose topology: tasks go through a Redis broker to the worker, results come back through the metadata
DB), so the same product is proven on a distributed engine without Docker.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from include.runtime.environment import ROOT

COMPONENTS = ("api-server", "scheduler", "dag-processor")
CELERY_WORKER = "celery-worker"
FINISHED = {"success", "failed"}


def postgres_url(database: str, host: str = "127.0.0.1", port: int = 5432, user: str = "postgres") -> str:
    return f"postgresql+psycopg2://{user}@{host}:{port}/{database}"


def _admin(database: str, statements: list[str], host: str, port: int) -> list[Any]:
    """Run statements about `database` on the server's `postgres` database (CREATE/DROP DATABASE cannot run
    in a transaction). The name goes into the SQL text, so only plain identifiers are accepted."""
    import psycopg2

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", database):
        raise ValueError(f"not a plain PostgreSQL database name: {database!r}")
    conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            results = []
            for statement in statements:
                cur.execute(statement)
                results.append(cur.fetchall() if cur.description else None)
            return results
    finally:
        conn.close()


def recreate_postgres_database(database: str, host: str = "127.0.0.1", port: int = 5432) -> None:
    """A clean metadata DB for one deployment (the bench's runs never mix with earlier ones)."""
    _admin(database, [f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', f'CREATE DATABASE "{database}"'],
           host, port)


def ensure_postgres_database(database: str, host: str = "127.0.0.1", port: int = 5432) -> bool:
    """Create `database` unless it exists (what `make up` keeps between sessions); True when it was created."""
    [found] = _admin(database, [f"SELECT 1 FROM pg_database WHERE datname = '{database}'"], host, port)
    if found:
        return False
    _admin(database, [f'CREATE DATABASE "{database}"'], host, port)
    return True


def drop_postgres_database(database: str, host: str = "127.0.0.1", port: int = 5432) -> None:
    """Drop a database a test or tool made, even with connections still open (FORCE ends them)."""
    _admin(database, [f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'], host, port)


@dataclass
class Deployment:
    """The Airflow components as child processes sharing one environment.

    `Deployment(home=..., db_url=..., port=...)` is LocalExecutor (api-server, scheduler, dag-processor).
    With `executor="CeleryExecutor"` and a `broker_url`, a Celery worker joins them: the scheduler sends
    every task to `queue` on the broker, only this deployment's worker listens there, and task results
    come back through the metadata DB (Celery's database result backend), as in docker-compose.yaml.
    """

    home: Path
    db_url: str
    port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    # Four tasks at once: the marketo_api pool's 4 slots, on 2 cores. Each LocalExecutor worker is a
    # process of its own (about 150 MB), so more slots than tasks that can run only cost memory.
    parallelism: int = 4
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    executor: str = "LocalExecutor"
    # Celery only: the broker (e.g. redis://127.0.0.1:6379/13), the queue this deployment's tasks go to
    # and its worker reads (a name of its own keeps other Celery users of the broker apart), and the
    # worker's slots (the same 4 as LocalExecutor's by default).
    broker_url: str = ""
    queue: str = "default"
    worker_concurrency: int = 4
    # The port the task log server listens on (the scheduler's with LocalExecutor, the worker's with
    # Celery). Airflow's default, 8793, would collide between two deployments on one machine.
    log_server_port: int = 0

    def __post_init__(self) -> None:
        if self.executor not in ("LocalExecutor", "CeleryExecutor"):
            raise ValueError(f"executor must be LocalExecutor or CeleryExecutor, not {self.executor!r}")
        if self.celery and not self.broker_url:
            raise ValueError("a CeleryExecutor deployment needs broker_url (e.g. redis://127.0.0.1:6379/13)")
        if not self.log_server_port:
            from include.runtime.sandboxes import free_port

            self.log_server_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def celery(self) -> bool:
        return self.executor == "CeleryExecutor"

    @property
    def components(self) -> tuple[str, ...]:
        """The processes start() runs, each in a process group of its own."""
        return (*COMPONENTS, CELERY_WORKER) if self.celery else COMPONENTS

    @property
    def logs(self) -> Path:
        """Where each component's stdout/stderr goes (<component>.log); task logs are under home/logs."""
        return self.home / "component-logs"

    def env(self) -> dict[str, str]:
        self.home.mkdir(parents=True, exist_ok=True)
        secret_file = self.home / "jwt_secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(32))
            secret_file.chmod(0o600)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secret_file.read_text(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # An entity's next step waits for the scheduler's next loop; an idle loop sleeps this long (1 s by
            # default), and an idle sync cycle is about ten such hops along the entity dependency chain.
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # Three DAG files: one parsing process is enough, and each costs a process (about 190 MB).
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_server_port),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
        }
        if self.celery:
            env.update({
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                # The result backend is the metadata DB (Celery's database backend, its own tables).
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.db_url}",
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                # No broadcast (pidbox) or event queues: they are shared by every Celery app of the broker
                # database, and this deployment needs neither (the scheduler reads results from the DB).
                "AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL": "False",
                # A task still running after this long is handed to another worker: a day, longer than any
                # task of the sync (the 1M-record copy's longest is minutes). Said here, not left as a warning.
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
            })
        env.update(self.extra_env)
        return env

    def airflow(self, *args: str, timeout: float = 600) -> str:
        """Run one `airflow` CLI command in this deployment's environment."""
        done = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def prepare(self, timeout: float = 600) -> None:
        """Migrate the metadata DB and create the pools (the same pools as everywhere else).

        One process does both (what `airflow db migrate` and `airflow pools set` do, through the same
        functions): each `airflow` command pays Airflow's import, seconds on this machine.
        """
        code = "from include.runtime.environment import prepare; prepare()"
        done = subprocess.run([sys.executable, "-c", code], env=self.env(), cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"migrating the metadata DB {self.db_url} failed: {done.stderr[-2000:]}")

    def _command(self, name: str) -> list[str]:
        args = [sys.executable, "-m", "airflow"]
        if name == "api-server":
            return [*args, name, "--port", str(self.port), "--host", "127.0.0.1", "--workers", "1"]
        if name == CELERY_WORKER:
            # No mingle/gossip: they talk to every worker on the broker; this one works alone on its queue.
            return [*args, "celery", "worker", "--queues", self.queue, "--concurrency",
                    str(self.worker_concurrency), "--without-mingle", "--without-gossip"]
        return [*args, name]

    def start(self, timeout: float = 120) -> Deployment:
        """Start every component and wait for the API server; on any failure stop what was started."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> Deployment:
        env = self.env()
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in self.components:
            with (self.logs / f"{name}.log").open("ab") as out:  # the child keeps its own descriptor
                self.procs[name] = subprocess.Popen(self._command(name), env=env, stdout=out,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(1)
        raise TimeoutError(f"the Airflow API server did not answer on {self.url} within {timeout:.0f} s")

    def check_alive(self) -> None:
        """Raise if a component exited: a deployment with one part missing only looks alive."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {proc.returncode}; see {self.logs / name}.log")

    def stop(self) -> None:
        """Stop every component with its children (task processes): each runs in a process group of its own."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        # A component that exited on SIGTERM may leave a child behind in its group (a task process, a
        # Celery pool process, the log server): nothing of the group outlives the deployment.
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)
        self.procs.clear()

    # ---- the public REST API ----------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = requests.Session()
        token = requests.get(f"{self.url}/auth/token", timeout=30)
        if token.ok and token.headers.get("content-type", "").startswith("application/json"):
            session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        return session

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._session().request(method, f"{self.url}/api/v2{path}", timeout=60, **kwargs)
        if not response.ok:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text[:500]}")
        return response.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 300, unpause: bool = True) -> None:
        """Until the dag-processor has parsed `dag_id` (and it is unpaused, unless `unpause` is False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                dag = self.api("GET", f"/dags/{dag_id}")
                if unpause and dag.get("is_paused"):
                    self.pause(dag_id, False)
                return
            except RuntimeError:
                time.sleep(0.5)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout:.0f} s")

    def pause(self, dag_id: str, paused: bool = True) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 3600, poll_s: float = 0.2) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in FINISHED:
                return state
            time.sleep(poll_s)
        raise TimeoutError(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")

    def run(self, dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 3600) -> tuple[str, float]:
        """Trigger a run and wait for it: (final state, seconds from trigger to finish)."""
        started = time.monotonic()
        run_id = self.trigger(dag_id, conf)
        state = self.wait_for_run(dag_id, run_id, timeout)
        return state, time.monotonic() - started

    def runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        """The DAG's runs (REST filters as keyword arguments, e.g. run_type="scheduled", state="success")."""
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, **params})["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of one run, with where it ran (hostname, pid, queue) and how it ended."""
        body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return body["task_instances"]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
