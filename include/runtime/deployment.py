"""A real Airflow deployment on this machine: api-server, scheduler and dag-processor with LocalExecutor.

Why: dag.test() runs every task in one process, one after another; a deployment runs them as the
scheduler hands them to the executor, in parallel within the pools, each in its own process. The
benchmarks (and `make up`) measure and run the product that way. The metadata DB is PostgreSQL (as in
docker-compose.yaml); the components share one environment (JWT secret, execution API URL), and runs are
triggered and watched through Airflow's public REST API, as an outside tool would.
"""

from __future__ import annotations

import contextlib
import os
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
FINISHED = {"success", "failed"}


def postgres_url(database: str, host: str = "127.0.0.1", port: int = 5432, user: str = "postgres") -> str:
    return f"postgresql+psycopg2://{user}@{host}:{port}/{database}"


def recreate_postgres_database(database: str, host: str = "127.0.0.1", port: int = 5432) -> None:
    """A clean metadata DB for one deployment (the bench's runs never mix with earlier ones)."""
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{database}"')
    conn.close()


@dataclass
class Deployment:
    """The three Airflow components as child processes sharing one environment."""

    home: Path
    db_url: str
    port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    # Four tasks at once: the marketo_api pool's 4 slots, on 2 cores. Each LocalExecutor worker is a
    # process of its own (about 150 MB), so more slots than tasks that can run only cost memory.
    parallelism: int = 4
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        self.home.mkdir(parents=True, exist_ok=True)
        secret_file = self.home / "jwt_secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(32))
            secret_file.chmod(0o600)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
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
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # Three DAG files: one parsing process is enough, and each costs a process (about 190 MB).
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
            **self.extra_env,
        }
        return env

    def airflow(self, *args: str, timeout: float = 600) -> str:
        """Run one `airflow` CLI command in this deployment's environment."""
        done = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def prepare(self) -> None:
        """Migrate the metadata DB and create the pools (the same pools as everywhere else)."""
        from include.runtime.environment import POOLS

        self.airflow("db", "migrate")
        for name, (slots, description) in POOLS.items():
            self.airflow("pools", "set", name, str(slots), description)

    def start(self, timeout: float = 120) -> Deployment:
        env = self.env()
        logs = self.home / "component-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name in COMPONENTS:
            out = (logs / f"{name}.log").open("ab")
            args = [sys.executable, "-m", "airflow", name]
            if name == "api-server":
                args += ["--port", str(self.port), "--host", "127.0.0.1", "--workers", "1"]
            self.procs[name] = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {proc.returncode}; see {logs / name}.log")
            try:
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(1)
        raise TimeoutError(f"the Airflow API server did not answer on {self.url} within {timeout:.0f} s")

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

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        """Until the dag-processor has parsed `dag_id` (and it is unpaused)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                dag = self.api("GET", f"/dags/{dag_id}")
                if dag.get("is_paused"):
                    self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
                return
            except RuntimeError:
                time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout:.0f} s")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 3600, poll_s: float = 0.5) -> str:
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


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
