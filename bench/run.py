"""`make bench` / `make bench-quick`: the product's speed, call counts and memory, through a real deployment.

Every scenario runs its DAG through Airflow's scheduler and LocalExecutor (include/runtime/deployment.py),
triggered and watched over the public REST API, against both sandboxes on loopback. Call counts and limit
errors come from the sandboxes' /_sandbox/stats; memory is the summed RSS of every process of the run
(Airflow components, their executor workers and task processes; the sandboxes, which stand in for the
vendors' servers, are reported apart), sampled from /proc every 0.25 s.

Results go to bench/results/latest.json and a dated copy, with exactly the keys the issue names:
initial_copy_limited, initial_copy_unlimited, incremental_idle, incremental_1k, incremental_50k (full only),
sync_person, plus machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dynamics_sync.entities import load_entities
from include.runtime.environment import LOCAL, ROOT

RESULTS = ROOT / "bench" / "results"
SIZES = {
    "quick": {"limited": 50_000, "unlimited": 100_000, "changes": [1_000], "sync_person_runs": 3},
    "full": {"limited": 1_000_000, "unlimited": 1_000_000, "changes": [1_000, 50_000], "sync_person_runs": 10},
}
MARKETO_RATE = 100 / 20  # calls per second, Marketo's published limit
DYNAMICS_RATE = 6000 / 300  # requests per second per user, Dataverse service protection
REAL_LATENCY = {"marketo": 150, "dynamics": 80}


def mix(n: int) -> dict[str, int]:
    """A realistic mix of N Dynamics records (users and teams are a few per thousand people)."""
    users, teams = max(5, n // 10_000), max(2, n // 50_000)
    accounts = n // 10
    projects = n // 20
    leads = (n - users - teams - 2 * accounts - projects) * 45 // 100
    contacts = n - users - teams - 2 * accounts - projects - leads
    return {"systemuser": users, "team": teams, "account": accounts, "opportunity": accounts, "lead": leads,
            "contact": contacts, "new_project": projects}


def seed(boxes: Any, counts: dict[str, int]) -> None:
    boxes.post("dynamics", "/_sandbox/seed", {"entity": "systemuser", "count": counts["systemuser"], "seed": 1})
    boxes.post("dynamics", "/_sandbox/seed", {"entity": "team", "count": counts["team"], "seed": 1})
    # Accounts with their contacts (parentcustomerid) and an opportunity each, whose contact is the
    # account's first (so opportunity roles are written); the other contacts belong to no account.
    per_account = min(counts["contact"] // max(counts["account"], 1), 4)
    boxes.post("dynamics", "/_sandbox/seed", {"entity": "account", "count": counts["account"], "seed": 1,
                                              "contacts_per_account": per_account, "opportunity_contact": True,
                                              "opportunities_per_account": 1, "owners": "users"})
    rest = {"lead": (counts["lead"], 0), "contact": (counts["contact"] - per_account * counts["account"],
                                                     per_account * counts["account"]),
            "new_project": (counts["new_project"], 0)}
    for entity, (count, start) in rest.items():
        body: dict[str, Any] = {"entity": entity, "count": count, "seed": 1, "start": start}
        if entity != "new_project":
            body["owners"] = "users"
        boxes.post("dynamics", "/_sandbox/seed", body)


def minimum_calls(counts: dict[str, int]) -> tuple[int, int]:
    """The fewest calls the published APIs allow for an initial copy of `counts`.

    Marketo: every record written once, 300 a call (Sync Leads / the object sync endpoints); Dynamics:
    every row read once, 5,000 a page, one paged read per entity.
    """
    writes = sum(counts.values())
    marketo = sum(math.ceil(n / 300) for n in counts.values() if n) + math.ceil(counts["opportunity"] / 300)
    dynamics = sum(max(1, math.ceil(n / 5000)) for n in counts.values())
    return marketo if writes else 0, dynamics


class RssSampler:
    """Peak memory of the product's processes (each root and all its descendants), sampled every 0.25 s.

    `roots` are the product (the Airflow components, whose descendants are the executor's workers and the
    task processes); `others` are sampled apart (the sandboxes, which stand in for Marketo's and
    Microsoft's servers). RSS counts a page shared by forked processes once per process, so the summed
    RSS overstates what the machine holds; PSS (from /proc/PID/smaps_rollup) splits shared pages between
    their processes and adds up to the memory really used. Both are reported, with what the deployment
    held when the run began (idle_*: the Airflow components alone, before any task), the peak per role
    (Airflow component, executor worker, task) and the hungriest tasks by name (task_peak_mb), which
    together say where the memory is.
    """

    def __init__(self, roots: list[int], others: list[int] | None = None):
        self.roots, self.others = roots, others or []
        self.peak_kb = self.peak_pss_kb = self.others_peak_kb = 0
        self.by_role_kb: dict[str, int] = {}
        self.by_task_kb: dict[str, tuple[int, int]] = {}  # task instance id -> peak (RSS, PSS) of its process
        self.idle_kb = self.idle_pss_kb = 0
        self.cpu_ticks: dict[int, tuple[str, int]] = {}  # pid -> (role, utime + stime last seen)
        self.cpu_before: dict[int, int] = {}  # what the processes running at the start had used before it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        table = _process_table()
        self.cpu_before = {pid: _cpu_ticks(pid) for pid in table}
        product = _descendants(self.roots, table)
        self.idle_kb = sum(table[p][1] for p in product)
        self.idle_pss_kb = sum(_pss_kb(p) for p in product)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak_kb / 1024, 1)

    def report(self, task_names: dict[str, str] | None = None, top: int = 6) -> dict[str, Any]:
        """The figures of the run; `task_names` (task instance id -> task id) names the hungriest tasks."""
        names = task_names or {}
        hungriest = sorted(self.by_task_kb.items(), key=lambda item: -item[1][0])[:top]
        return {"peak_rss_mb": self.peak_mb, "peak_pss_mb": round(self.peak_pss_kb / 1024, 1),
                "idle_rss_mb": round(self.idle_kb / 1024, 1), "idle_pss_mb": round(self.idle_pss_kb / 1024, 1),
                "peak_rss_mb_by_role": {k: round(v / 1024, 1) for k, v in sorted(self.by_role_kb.items())},
                "task_peak_mb": {names.get(ti, ti): {"rss": round(rss / 1024, 1), "pss": round(pss / 1024, 1)}
                                 for ti, (rss, pss) in hungriest},
                "sandboxes_peak_rss_mb": round(self.others_peak_kb / 1024, 1),
                "cpu_s_by_role": self.cpu_seconds()}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) per role, the sandboxes included: on 2 cores, what the wall time bought.

        Sampled like memory, so a process's last 0.25 s before it exits is not counted.
        """
        ticks: dict[str, int] = {}
        for pid, (role, used) in self.cpu_ticks.items():
            ticks[role] = ticks.get(role, 0) + used - self.cpu_before.get(pid, 0)
        hz = os.sysconf("SC_CLK_TCK")
        return {role: round(t / hz, 1) for role, t in sorted(ticks.items())}

    def _run(self) -> None:
        while not self._stop.is_set():
            table = _process_table()
            product = _descendants(self.roots, table)
            self.peak_kb = max(self.peak_kb, sum(table[p][1] for p in product))
            pss = {p: _pss_kb(p) for p in product}
            self.peak_pss_kb = max(self.peak_pss_kb, sum(pss.values()))
            self.others_peak_kb = max(self.others_peak_kb,
                                      sum(table[p][1] for p in _descendants(self.others, table)))
            roles: dict[str, int] = {}
            for pid in product:
                role = _role(table[pid][2])
                roles[role] = roles.get(role, 0) + table[pid][1]
                if (ti := _task_instance(table[pid][2])) is not None:
                    rss, known = table[pid][1], self.by_task_kb.get(ti, (0, 0))
                    self.by_task_kb[ti] = (max(known[0], rss), max(known[1], pss[pid]))
                self.cpu_ticks[pid] = (role, _cpu_ticks(pid))
            for pid in _descendants(self.others, table):
                self.cpu_ticks[pid] = ("sandboxes", _cpu_ticks(pid))
            for role, kb in roles.items():
                self.by_role_kb[role] = max(self.by_role_kb.get(role, 0), kb)
            self._stop.wait(0.25)


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, RSS in kB, command line)."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "status").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        rss = int(fields["VmRSS"].split()[0]) if "VmRSS" in fields else 0
        table[int(entry.name)] = (int(fields.get("PPid", "0").strip()), rss, cmdline)
    return table


def _descendants(roots: list[int], table: dict[int, tuple[int, int, str]]) -> set[int]:
    wanted = {pid for pid in roots if pid in table}
    changed = True
    while changed:
        changed = False
        for pid, (parent, _, _) in table.items():
            if parent in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    return wanted


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _task_instance(cmdline: str) -> str | None:
    """The task instance a task process runs (Airflow 3 titles it `airflow worker -- <ti id>`)."""
    if not cmdline.startswith("airflow worker -- ") or "LocalExecutor" in cmdline:
        return None
    return cmdline.split(" -- ", 1)[1].strip() or None


def _role(cmdline: str) -> str:
    """What an Airflow process is, from its title (Airflow 3 retitles its workers and task processes)."""
    if "LocalExecutor" in cmdline:
        return "executor workers"
    if cmdline.startswith("airflow worker --"):
        return "tasks"
    for role, marks in (("api-server", ("api_server", "api-server")), ("dag-processor", ("dag-processor",
                        "dag_processor", "DagFileProcessor")), ("scheduler", ("scheduler", "serve-logs"))):
        if any(mark in cmdline for mark in marks):
            return role
    return "other"


SCENARIOS = ("initial_copy_limited", "initial_copy_unlimited", "incremental_idle", "incremental_1k",
             "incremental_50k", "sync_person")


def profile_role(chain: list[str]) -> str:
    """A sampled process's role from its command line and its ancestors' (see bench.profile)."""
    if "include.sandbox" in chain[-1]:
        return "sandboxes"
    if len(chain) > 1 and "LocalExecutor" in chain[-2]:
        return "tasks"  # a task process is a child of an executor worker
    return _role(chain[-1])


class Bench:
    def __init__(self, mode: str, only: list[str] | None = None, profile: bool = False):
        self.mode, self.size = mode, SIZES[mode]
        self.root = LOCAL / "bench" / mode
        self.setup_s: float | None = None
        self.results: dict[str, Any] = {}
        self.profile = profile
        self.wanted = set(only or SCENARIOS)
        if not self.wanted & {"initial_copy_limited", "initial_copy_unlimited"}:
            self.wanted.add("initial_copy_unlimited")  # a cycle needs a copy first: the faster one

    # ---- set-up ----------------------------------------------------------------------------------

    def start(self) -> None:
        from include.runtime import connections
        from include.runtime.deployment import Deployment, postgres_url, recreate_postgres_database
        from include.runtime.sandboxes import Sandboxes, free_port

        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        os.environ["AIRFLOW_CONN_DYNAMICS_SYNC_STATE"] = json.dumps(
            {"conn_type": "sqlite", "host": str(self.root / "state.db")})
        os.environ["DYNAMICS_SYNC_STAGING"] = (self.root / "staging").as_uri()
        os.environ["DYNAMICS_SYNC_DATA_DOCS"] = str(self.root / "data_docs")
        os.environ["DYNAMICS_SYNC_SCHEDULE"] = "none"  # the bench triggers every cycle itself
        self.boxes = Sandboxes(marketo_port=free_port(), dynamics_port=free_port(), state_root=self.root / "sandbox",
                               log_dir=self.root / "logs").start()
        connections.use_sandboxes(self.boxes, override=True)
        database = f"dynamics_sync_bench_{self.mode}"
        recreate_postgres_database(database)
        self.airflow = Deployment(home=self.root / "airflow", db_url=postgres_url(database), port=free_port())
        # marketo_default lives in the metadata DB, as a connection made in the UI would, so each scenario
        # can set its client-side limits without restarting Airflow (an environment variable would win).
        self.marketo_conn = json.loads(os.environ.pop(f"AIRFLOW_CONN_{connections.MARKETO_CONN.upper()}"))
        self.airflow.prepare()
        self.airflow.start()
        self.airflow.api("POST", "/connections", json=self._marketo_conn_body({}))
        for dag_id in ("dynamics_initial_sync", "dynamics_incremental_sync", "sync_person_to_dynamics"):
            self.airflow.wait_for_dag(dag_id)

    def stop(self) -> None:
        self.airflow.stop()
        self.boxes.stop()

    def processes(self) -> list[int]:
        """The product: every Airflow component (the executor's workers and task processes are their children)."""
        return [p.pid for p in self.airflow.procs.values()]

    def sandbox_processes(self) -> list[int]:
        return [p.pid for p in self.boxes.procs]

    def _marketo_conn_body(self, extra: dict[str, Any]) -> dict[str, Any]:
        conn = self.marketo_conn
        return {"connection_id": "marketo_default", "conn_type": conn["conn_type"], "host": conn["host"],
                "login": conn["login"], "password": conn["password"], "extra": json.dumps({**conn["extra"], **extra})}

    def limits(self, real: bool) -> None:
        """Both sandboxes' limits, and the client-side limits of the Marketo connection to match.

        Limited: the connection takes the whole published rate (100 calls a 20 s window: the limiter holds
        a call's place until 20 s after its response, so no margin for jitter is needed; the product's
        default, 80, leaves room for the customer's other integrations) and the marketo_api pool's 4 tasks
        x 2 calls stay under the 10 concurrent calls. Unlimited: no client-side window either, as a
        connection for an instance with no limit would be set.
        """
        extra = {"calls_per_20s": 100} if real else {"calls_per_20s": 1_000_000, "max_concurrent": 4}
        self.airflow.api("PATCH", "/connections/marketo_default", json=self._marketo_conn_body(extra))
        if real:
            self.boxes.post("marketo", "/_sandbox/limits", {"calls_per_20s": 100, "max_concurrent": 10,
                                                            "daily_quota": 50_000,
                                                            "latency_ms": REAL_LATENCY["marketo"]})
            self.boxes.post("dynamics", "/_sandbox/limits", {"requests_per_300s": 6000, "max_concurrent": 52,
                                                             "latency_ms": REAL_LATENCY["dynamics"]})
        else:
            self.boxes.post("marketo", "/_sandbox/limits", {"calls_per_20s": 1_000_000, "max_concurrent": 1000,
                                                            "daily_quota": 100_000_000, "latency_ms": 0})
            self.boxes.post("dynamics", "/_sandbox/limits", {"requests_per_300s": 10_000_000, "max_concurrent": 1000,
                                                             "latency_ms": 0})

    def reset_counters(self) -> None:
        self.boxes.post("marketo", "/_sandbox/limits", {"reset_counters": True})
        self.boxes.post("dynamics", "/_sandbox/limits", {"reset_counters": True})

    def counters(self) -> dict[str, int]:
        marketo = self.boxes.get("marketo", "/_sandbox/stats")
        dynamics = self.boxes.get("dynamics", "/_sandbox/stats")
        rest = sum(n for endpoint, n in marketo["by_endpoint"].items() if "/identity/" not in endpoint)
        return {"marketo_calls": rest, "dynamics_calls": int(dynamics["requests"]),
                "limit_errors": sum(marketo["limit_errors"].values()) + int(dynamics["throttled"])}

    # ---- scenarios -------------------------------------------------------------------------------

    def initial_copy(self, n: int, real: bool) -> dict[str, Any]:
        self.boxes.post("dynamics", "/_sandbox/reset")
        self.boxes.post("marketo", "/_sandbox/reset")
        Path(self.root / "state.db").unlink(missing_ok=True)
        counts = mix(n)
        seed(self.boxes, counts)
        self.limits(real)
        self.reset_counters()
        scenario = f"initial_copy_{'limited' if real else 'unlimited'}"
        with RssSampler(self.processes(), self.sandbox_processes()) as rss, self.profiled(scenario):
            started = time.monotonic()
            run_id = self.airflow.trigger("dynamics_initial_sync", {"force": True})
            state = self.airflow.wait_for_run("dynamics_initial_sync", run_id, timeout=6 * 3600)
            wall = time.monotonic() - started
        calls = self.counters()
        memory = rss.report({ti["id"]: ti["task_id"]
                             for ti in self.airflow.task_instances("dynamics_initial_sync", run_id)})
        print(f"initial copy of {n:,} ({'limited' if real else 'unlimited'}): {state} in {wall:.1f} s, {calls}, "
              f"memory {memory}", flush=True)
        if state != "success":
            raise RuntimeError(f"the initial copy failed; see {self.root / 'airflow' / 'logs'}")
        if not real:
            return {"records": n, "wall_s": round(wall, 1), "records_per_s": round(n / wall, 1), **memory}
        marketo_min, dynamics_min = minimum_calls(counts)
        floor = max(calls["marketo_calls"] / MARKETO_RATE, calls["dynamics_calls"] / DYNAMICS_RATE)
        return {"records": n, "wall_s": round(wall, 1), **{k: calls[k] for k in ("marketo_calls",)},
                "marketo_calls_min": marketo_min, "dynamics_calls": calls["dynamics_calls"],
                "dynamics_calls_min": dynamics_min, "api_floor_s": round(floor, 1),
                "floor_ratio": round(wall / floor, 2) if floor else None, "limit_errors": calls["limit_errors"],
                **memory}

    @contextlib.contextmanager
    def profiled(self, scenario: str) -> Iterator[None]:
        """With --profile: py-spy over every process of the scenario, summed up in bench/results/."""
        if not self.profile:
            yield
            return
        from bench.profile import Profile, render

        roots = {**{f"airflow-{name}": proc.pid for name, proc in self.airflow.procs.items()},
                 **{f"sandbox-{i}": proc.pid for i, proc in enumerate(self.boxes.procs)}}
        with Profile(roots, self.root / "profile" / scenario) as spy:
            yield
        summary = spy.summary(profile_role)
        text = render(f"{scenario} ({self.mode}, {self.size[scenario.rsplit('_', 1)[1]]:,} "
                      f"records)", summary)
        (RESULTS / f"profile-{self.mode}-{scenario}.txt").write_text(text + "\n")
        print(text, flush=True)

    def incremental(self, changes: int) -> dict[str, Any]:
        if changes:
            self.make_changes(changes)
        self.reset_counters()
        state, wall = self.airflow.run("dynamics_incremental_sync")
        calls = self.counters()
        print(f"incremental with {changes:,} changes a side: {state} in {wall:.1f} s, {calls}", flush=True)
        return {"changes": changes, "wall_s": round(wall, 1), **calls, "state": state}

    def make_changes(self, n: int) -> None:
        """`n` edits on each side, made as people make them: Dynamics UpdateMultiple, Marketo Sync Leads."""
        from dynamics_sync.state import StateStore, record_links
        from include.demo.people import People

        people = People(self.boxes)
        store = StateStore.from_connection()
        with store.engine.connect() as conn:
            leads = conn.execute(record_links.select().where(record_links.c.entity == "lead")
                                 .order_by(record_links.c.id).limit(2 * n)).fetchall()
        store.dispose()
        stamp = time.strftime("%H%M%S")
        targets = [{"@odata.type": "Microsoft.Dynamics.CRM.lead", "leadid": row.dynamics_id,
                    "jobtitle": f"Dynamics edit {stamp}"} for row in leads[:n]]
        for start in range(0, len(targets), 1000):
            people.dynamics.request("POST", "leads/Microsoft.Dynamics.CRM.UpdateMultiple",
                                    json={"Targets": targets[start : start + 1000]})
        edits = [{"id": row.marketo_id, "title": f"Marketo edit {stamp}"} for row in leads[n : 2 * n]]
        for start in range(0, len(edits), 300):
            people.marketo.sync_leads(edits[start : start + 300], action="updateOnly", lookup_field="id")

    def sync_person(self, runs: int) -> dict[str, Any]:
        from include.demo.people import People

        people = People(self.boxes)
        seconds = []
        for i in range(runs):
            email = f"bench.person.{i}.{time.time_ns()}@example.com"
            marketo_id = people.create_marketo({"email": email, "firstName": "Bench", "lastName": f"Person {i}"})
            started = time.monotonic()
            run_id = self.airflow.trigger("sync_person_to_dynamics", {"marketo_lead_id": marketo_id})
            while not people.find_dynamics("lead", email):
                if time.monotonic() - started > 120:
                    raise TimeoutError(f"sync person {marketo_id} did not reach Dynamics within 120 s")
                time.sleep(0.2)
            seconds.append(time.monotonic() - started)
            # Not timed: the run goes on after the lead is readable (link, activity row); it must succeed, and
            # the next run (or the deployment's stop, which waits for running tasks) must not find it running.
            state = self.airflow.wait_for_run("sync_person_to_dynamics", run_id, timeout=120)
            if state != "success":
                raise RuntimeError(f"sync person run {run_id} ended {state}; see {self.root / 'airflow' / 'logs'}")
        print(f"sync person: {[round(s, 1) for s in seconds]}", flush=True)
        return {"runs": runs, "median_s": round(statistics.median(seconds), 2), "max_s": round(max(seconds), 2)}

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.start()
        self.setup_s = round(time.monotonic() - started, 1)
        print(f"set up (sandboxes, metadata DB, Airflow components) in {self.setup_s} s", flush=True)
        try:
            r, wanted = self.results, self.wanted
            if "initial_copy_limited" in wanted:
                r["initial_copy_limited"] = self.initial_copy(self.size["limited"], real=True)
            if "initial_copy_unlimited" in wanted:
                r["initial_copy_unlimited"] = self.initial_copy(self.size["unlimited"], real=False)
            if wanted & {"incremental_idle", "incremental_1k", "incremental_50k"}:
                # The first cycle after an initial copy reads the copy's own writes back from Marketo's change
                # feed (and recognises them as echoes); it is reported, and idle is measured after it.
                catch_up = self.incremental(0)
                idle = self.incremental(0)
                idle["calls_per_idle_day_share_of_budget"] = round(idle["marketo_calls"] * 288 / (50_000 * 0.8), 4)
                idle["entities"] = len(load_entities())
                idle["first_cycle_after_initial"] = {k: catch_up[k] for k in ("wall_s", "marketo_calls",
                                                                              "dynamics_calls")}
                r["incremental_idle"] = idle
            for changes in self.size["changes"]:
                key = "incremental_1k" if changes == 1_000 else "incremental_50k"
                if key in wanted:
                    r[key] = self.incremental(changes)
            if "sync_person" in wanted:
                r["sync_person"] = self.sync_person(self.size["sync_person_runs"])
        finally:
            stopping = time.monotonic()
            self.stop()
            print(f"stopped Airflow and the sandboxes in {time.monotonic() - stopping:.1f} s", flush=True)
        return r


def machine() -> dict[str, Any]:
    import airflow

    mem_kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
    return {"cpus": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1), "python": platform.python_version(),
            "airflow": airflow.__version__, "platform": platform.platform(), "executor": "LocalExecutor"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller sizes (under a few minutes)")
    parser.add_argument("--only", action="append", choices=SCENARIOS, metavar="SCENARIO",
                        help="run only this scenario (repeatable; a cycle runs after the copy it needs); the result "
                             "goes to a dated -partial file, latest.json keeps the last whole run")
    parser.add_argument("--profile", action="store_true",
                        help="sample the initial copies with py-spy: bench/results/profile-<mode>-<scenario>.txt")
    args = parser.parse_args(argv)
    from include.runtime.environment import configure

    configure(LOCAL / "bench" / "cli-airflow")
    mode = "quick" if args.quick else "full"
    started = time.monotonic()
    bench = Bench(mode, only=args.only, profile=args.profile)
    try:
        bench.run()
    finally:
        # A run that stops half-way keeps the scenarios it finished, in a dated "-partial" file only:
        # latest.json always holds a whole run.
        results = {**bench.results, "machine": {
            **machine(), "mode": mode, "total_s": round(time.monotonic() - started, 1), "setup_s": bench.setup_s,
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}}
        wanted = [key for key in SCENARIOS if mode == "full" or key != "incremental_50k"]
        complete = not args.only and all(key in results for key in wanted)
        RESULTS.mkdir(parents=True, exist_ok=True)
        text = json.dumps(results, indent=2)
        stamp = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{mode}"
        if complete:
            (RESULTS / "latest.json").write_text(text + "\n")
        (RESULTS / f"{stamp}{'' if complete else '-partial'}.json").write_text(text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
