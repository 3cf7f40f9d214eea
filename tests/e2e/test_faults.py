"""Faults caused for real mid-run: no record is lost, duplicated or silently dropped.

Each test makes people's edits on both sides (through the public APIs, include.demo.people), injects
count-limited faults into the sandboxes (POST /_sandbox/faults, /_sandbox/limits) so that they fire
during one real incremental run (dag.test), then reads both systems back: every edit is on both sides,
every Dynamics lead and contact has exactly one Marketo person, carrying its id and linked to it, and the
sandboxes' own counters prove that each fault fired inside the run (no test can pass because nothing
happened). The edits: a Dynamics and a Marketo edit of a lead and of a contact, two Marketo contact edits
(Dynamics takes them in one UpdateMultiple call), and a new Dynamics lead; each test edits records of
its own.

The sync starts no Marketo bulk job (no bulk extract or import: it reads the activity feeds and people
by id, and writes 300 records a call), so "a bulk job that fails or never finishes" applies here to
Dataverse's one bulk call, UpdateMultiple, failing (5xx) and held past the client's timeout.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dynamics_sync import extract, steps
from dynamics_sync.errors import ApiError, AuthError, ChangeTrackingExpired
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.state import StateStore, watermarks
from include.demo.people import People
from include.runtime.run_dag import run
from tests.support import link_ids

pytestmark = pytest.mark.e2e
LEADS, CONTACTS = 16, 20
INCREMENTAL = "dynamics_incremental_sync"
PEOPLE = ("lead", "contact")
MARKETO_CONN, DYNAMICS_CONN = "AIRFLOW_CONN_MARKETO_DEFAULT", "AIRFLOW_CONN_DYNAMICS_DEFAULT"


def _with_extra(conn_env: str, **extra: Any) -> str:
    """The connection in `conn_env` with more extra settings, as the JSON Airflow reads from the environment."""
    definition = json.loads(os.environ[conn_env])
    return json.dumps({**definition, "extra": {**definition.get("extra", {}), **extra}})


@pytest.fixture(scope="module")
def world(sandboxes: Any, new_state: Any, people_config: Path) -> Iterator[dict[str, Any]]:
    """Users, accounts, leads and contacts copied once; each test then edits records of its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DYNAMICS_SYNC_CONFIG", str(people_config))
        patch.setenv("AIRFLOW_CONN_DYNAMICS_SYNC_STATE", json.dumps(new_state("faults")))
        # The hooks' retry rules stay as shipped (attempts, Retry-After, Marketo's 20 s after a 606); only
        # the exponential backoff's base is short, so that a test of a 5xx does not idle.
        for conn_env in (MARKETO_CONN, DYNAMICS_CONN):
            patch.setenv(conn_env, _with_extra(conn_env, backoff_base_s=0.2))
        for box in ("dynamics", "marketo"):
            sandboxes.post(box, "/_sandbox/reset")
            sandboxes.delete(box, "/_sandbox/faults")
        sandboxes.post("dynamics", "/_sandbox/seed", {"leads": LEADS, "contacts": CONTACTS, "seed": 61})
        sandboxes.post("dynamics", "/_sandbox/seed", {"entity": "account", "count": 2, "seed": 61})
        store = StateStore.from_connection()
        copy = run("dynamics_initial_sync")
        assert str(copy.state) == "success"
        pool = {entity: _links(store, entity) for entity in PEOPLE}
        assert (len(pool["lead"]), len(pool["contact"])) == (LEADS, CONTACTS)
        yield {"store": store, "people": People(sandboxes), "pool": pool}
        for box in ("dynamics", "marketo"):
            sandboxes.delete(box, "/_sandbox/faults")
        store.dispose()


@pytest.fixture
def clean_faults(sandboxes: Any) -> Iterator[None]:
    """A fault a failing test left unused must not fire in the next test (nor in a person's edit)."""
    yield
    for box in ("dynamics", "marketo"):
        sandboxes.delete(box, "/_sandbox/faults")


def _links(store: StateStore, entity: str) -> list[tuple[str, int]]:
    return link_ids(store, entity, live_only=True)


# ---- people's edits, and what both systems must hold after the cycle --------------------------------------


@dataclass
class Edits:
    """Edits made before a faulted cycle, each (entity, dynamics id, marketo id, Dynamics column, Marketo
    field, value), and the new Dynamics leads (id, email)."""

    values: list[tuple[str, str, int, str, str, str]] = field(default_factory=list)
    new_leads: list[tuple[str, str]] = field(default_factory=list)

    def to_marketo(self) -> list[tuple[str, str, int, str, str, str]]:
        """The edits people made in Dynamics, which the sync has to write to Marketo."""
        return [e for e in self.values if not e[5].startswith("M ")]


def make_edits(world: dict[str, Any], tag: str) -> Edits:
    """A change in each direction for a lead and a contact, two Marketo contact edits and a new Dynamics lead.

    A value starting with "M " is typed in Marketo, any other in Dynamics."""
    people, pool = world["people"], world["pool"]
    (l1, m1), (l2, m2) = pool["lead"].pop(0), pool["lead"].pop(0)
    (c1, n1), (c2, n2), (c3, n3) = (pool["contact"].pop(0) for _ in range(3))
    edits = Edits(values=[
        ("lead", l1, m1, "jobtitle", "title", f"D {tag}"),            # Dynamics -> Marketo
        ("lead", l2, m2, "firstname", "firstName", f"M {tag}"),       # Marketo -> Dynamics (one PATCH)
        ("contact", c1, n1, "jobtitle", "title", f"D {tag}"),         # Dynamics -> Marketo
        ("contact", c2, n2, "jobtitle", "title", f"M {tag} a"),       # Marketo -> Dynamics (UpdateMultiple)
        ("contact", c3, n3, "jobtitle", "title", f"M {tag} b"),
    ])
    for entity, dynamics_id, marketo_id, column, name, value in edits.values:
        if value.startswith("M "):
            people.edit_marketo(marketo_id, {name: value})
        else:
            people.edit_dynamics(entity, dynamics_id, {column: value})
    email = f"new-{tag}@example.com"
    lead_id = people.create_dynamics("lead", {"firstname": "New", "lastname": tag, "emailaddress1": email,
                                              "subject": "faults"})
    edits.new_leads.append((lead_id, email))
    return edits


def assert_synced(world: dict[str, Any], edits: Edits) -> None:
    """Every edit on both sides; each new lead in Marketo once, linked; no person doubled, no record unlinked."""
    people = world["people"]
    for entity, dynamics_id, marketo_id, column, name, value in edits.values:
        held = (people.read_dynamics(entity, dynamics_id).get(column), people.read_marketo(marketo_id).get(name))
        assert held == (value, value), f"{entity} {dynamics_id} {column}/{name}: (Dynamics, Marketo) hold {held}"
    for lead_id, email in edits.new_leads:
        found = people.find_marketo(email)
        assert [p["msdynLeadId"] for p in found] == [lead_id], f"the new lead {email} in Marketo: {found}"
    assert_one_person_per_record(people, world["store"])


def assert_one_person_per_record(people: People, store: StateStore) -> None:
    """Each Dynamics lead and contact: exactly one Marketo person with its email, carrying its id, linked to it."""
    for entity, key, link_field in (("lead", "leadid", "msdynLeadId"), ("contact", "contactid", "msdynContactId")):
        rows = people.list_dynamics(entity, ["emailaddress1"])
        emails = [r["emailaddress1"] for r in rows]
        found = people.marketo.get_leads("email", emails, ["id", "email", "msdynLeadId", "msdynContactId"])
        per_email = Counter(p["email"] for p in found)
        assert {e: n for e, n in per_email.items() if n != 1} == {}, f"{entity}: Marketo people doubled"
        assert set(per_email) == set(emails), f"{entity}: records with no Marketo person"
        person = {p["email"]: p for p in found}
        links = store.links_by_dynamics(entity, [r[key] for r in rows])
        for row in rows:
            mine = person[row["emailaddress1"]]
            assert mine[link_field] == row[key], f"{entity} {row[key]}: its person carries {mine[link_field]}"
            link = links.get(row[key])
            assert link is not None and link.marketo_id == mine["id"], f"{entity} {row[key]}: link {link}"


# ---- the sandboxes' own counters, and the runs --------------------------------------------------------------


def inject(sandboxes: Any, side: str, *faults: dict[str, Any]) -> None:
    sandboxes.post(side, "/_sandbox/faults", {"faults": list(faults)})


def pending(sandboxes: Any) -> dict[str, list[dict[str, Any]]]:
    """Faults not used up yet, per sandbox: empty once every injected fault fired."""
    return {box: sandboxes.get(box, "/_sandbox/faults")["faults"] for box in ("marketo", "dynamics")}


def marketo_errors(sandboxes: Any) -> Counter[str]:
    """Errors the Marketo sandbox answered, per code (HTTP ones as "HTTP 502"), and faults injected."""
    stats = sandboxes.get("marketo", "/_sandbox/stats")
    return Counter({**stats["errors"], "faulted": stats["faulted"]})


def dynamics_fired(sandboxes: Any) -> int:
    return int(sandboxes.get("dynamics", "/_sandbox/faults")["fired"])


def tries(dag_run: Any) -> dict[str, tuple[str, int]]:
    """Each task's final state and the tries it took."""
    return {ti.task_id: (str(ti.state), ti.try_number) for ti in dag_run.get_task_instances()}


def retried(dag_run: Any) -> dict[str, int]:
    return {task: n for task, (_, n) in tries(dag_run).items() if n > 1}


def written(store: StateStore, run_id: str) -> dict[tuple[str, str], tuple[int, int]]:
    """run_summary of a run: (created, updated) per entity and direction, where it wrote anything."""
    return {(s["entity"], s["direction"]): (s["created"], s["updated"])
            for s in store.summaries(INCREMENTAL, run_id) if s["created"] or s["updated"]}


@pytest.fixture
def task_log(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """What the test's runs logged: the sync's own records (the hooks' retries, alerts) and what the task
    runner prints (a task's exception, Airflow's retry decision)."""

    def read() -> str:
        out, err = capfd.readouterr()
        return caplog.text + out + err

    return read


def marks(store: StateStore) -> dict[tuple[str, str], str | None]:
    return {(entity, side): store.watermark(entity, side) for entity in PEOPLE for side in ("dynamics", "marketo")}


# What a cycle writes for make_edits: a Marketo update and a create of the new lead, one Dynamics lead update;
# one Marketo contact update, two Dynamics contact updates.
WRITES = {("lead", "dynamics_to_marketo"): (1, 1), ("lead", "marketo_to_dynamics"): (0, 1),
          ("contact", "dynamics_to_marketo"): (0, 1), ("contact", "marketo_to_dynamics"): (0, 2)}


# ---- throttling: 429 with Retry-After, 606, 615 ---------------------------------------------------------------


def test_throttling_429_606_615_is_waited_out_inside_the_run(world, sandboxes, clean_faults, task_log):
    """Dataverse's 429 is waited out for its Retry-After; Marketo's 606 (for 20 s, Marketo's window) and 615
    are backed off; the hooks absorb them, so no task needs a retry, and every edit moves once."""
    edits = make_edits(world, "throttled")
    before_m, before_d = marketo_errors(sandboxes), dynamics_fired(sandboxes)
    inject(sandboxes, "dynamics", {"code": 429, "count": 1, "method": "GET", "path": "leads", "retry_after": 2})
    inject(sandboxes, "marketo",
           {"method": "GET", "path": "/rest/v1/activities/leadchanges.json", "code": "606", "count": 1},
           {"method": "POST", "path": "/rest/v1/leads.json", "code": "615", "count": 1})
    cycle = run(INCREMENTAL)
    log = task_log()

    assert str(cycle.state) == "success", tries(cycle)
    assert retried(cycle) == {}, "absorbed by the hooks, no task retry"
    assert pending(sandboxes) == {"marketo": [], "dynamics": []}, "every fault fired inside the run"
    fired = marketo_errors(sandboxes) - before_m
    assert (fired["606"], fired["615"], dynamics_fired(sandboxes) - before_d) == (1, 1, 1)
    assert "429 throttled by service protection; retrying in 2." in log, "Retry-After: 2 was honoured"
    assert re.search(r"606 Max rate limit '\d+' exceeded with in '20' secs; retrying in 2[0-2]\.\d s", log)
    assert "615 Concurrent access limit reached; retrying" in log
    assert written(world["store"], cycle.run_id) == WRITES, "each record written once"
    assert_synced(world, edits)


# ---- server errors: 5xx and Marketo's transient codes ---------------------------------------------------------


def test_server_errors_on_reads_and_writes_are_retried_and_nothing_is_written_twice(world, sandboxes, clean_faults,
                                                                                   task_log):
    """5xx on a Dataverse delta read, a PATCH and an UpdateMultiple (a 503 with Retry-After); a 502 on a Marketo
    write, a 500 on a Marketo read, 608 (API temporarily unavailable) on the merge/delete feed: each call is
    retried in place, so no task fails, and each record is written once."""
    edits = make_edits(world, "server-errors")
    before_m, before_d = marketo_errors(sandboxes), dynamics_fired(sandboxes)
    inject(sandboxes, "dynamics",
           {"code": 500, "count": 1, "method": "GET", "path": "contacts"},
           {"code": 502, "count": 1, "method": "PATCH", "path": "leads("},
           {"code": 503, "count": 1, "method": "POST", "path": "contacts/Microsoft.Dynamics.CRM.UpdateMultiple",
            "retry_after": 1})
    inject(sandboxes, "marketo",
           {"method": "POST", "path": "/rest/v1/leads.json", "code": 502, "count": 1},
           {"method": "GET", "path": "/rest/v1/leads.json", "code": 500, "count": 1},
           {"method": "GET", "path": "/rest/v1/activities.json", "code": "608", "count": 1})
    cycle = run(INCREMENTAL)
    log = task_log()

    assert str(cycle.state) == "success", tries(cycle)
    assert retried(cycle) == {}, "absorbed by the hooks, no task retry"
    assert pending(sandboxes) == {"marketo": [], "dynamics": []}, "every fault fired inside the run"
    fired = marketo_errors(sandboxes) - before_m
    assert (fired["HTTP 502"], fired["HTTP 500"], fired["608"]) == (1, 1, 1)
    assert dynamics_fired(sandboxes) - before_d == 3
    for said in ("HTTP 500 from GET /api/data/v9.2/contacts", "HTTP 502 from PATCH /api/data/v9.2/leads(",
                 "Marketo: HTTP 502 on /v1/leads.json", "Marketo: HTTP 500 on /v1/leads.json",
                 "Marketo: 608 API Temporarily Unavailable"):
        assert said in log, f"the task log does not say {said!r}"
    assert re.search(r"HTTP 503 from POST \S+/contacts/Microsoft.Dynamics.CRM.UpdateMultiple; retrying in 1\.[01] s",
                     log), "the 503's Retry-After: 1 was honoured"
    assert written(world["store"], cycle.run_id) == WRITES, "a retried write is not counted (or made) twice"
    assert_synced(world, edits)


# ---- timeouts: a Marketo write and Dataverse's bulk update that never answer -----------------------------------


def test_timeouts_on_writes_fail_the_try_and_the_retry_writes_once(world, sandboxes, clean_faults, monkeypatch,
                                                                  task_log):
    """A Marketo write and a Dataverse UpdateMultiple held past the client's timeout: the client gives up
    (the hook does not blindly re-send a write whose fate it does not know), the task fails, Airflow retries
    it, and the retry redoes the load: the held create never landed, so the new lead is created once,
    linked; a re-sent update is idempotent; and the failed tries committed nothing, so nothing counts twice."""
    for conn_env in (MARKETO_CONN, DYNAMICS_CONN):
        monkeypatch.setenv(conn_env, _with_extra(conn_env, timeout_s=4))
    edits = make_edits(world, "timeouts")
    before_m, before_d = marketo_errors(sandboxes), dynamics_fired(sandboxes)
    inject(sandboxes, "marketo", {"method": "POST", "path": "/rest/v1/leads.json", "code": "timeout", "hold_s": 30,
                                  "count": 1})
    inject(sandboxes, "dynamics", {"code": 504, "count": 1, "method": "POST", "delay_ms": 8000,
                                   "path": "contacts/Microsoft.Dynamics.CRM.UpdateMultiple"})
    cycle = run(INCREMENTAL)

    assert str(cycle.state) == "success", tries(cycle)
    assert retried(cycle) == {"lead.load": 2, "contact.load": 2}, "only the two timed-out loads were retried"
    assert pending(sandboxes) == {"marketo": [], "dynamics": []}, "both faults fired inside the run"
    assert (marketo_errors(sandboxes) - before_m)["faulted"] == 1 and dynamics_fired(sandboxes) - before_d == 1
    log = task_log()
    assert "ServiceUnavailable: Marketo: cannot reach http://127.0.0.1:" in log, "the task log names the timeout"
    assert "ServiceUnavailable: Dynamics: cannot reach https://127.0.0.1:" in log
    assert log.count("(ReadTimeout)") >= 2
    assert written(world["store"], cycle.run_id) == WRITES, "the failed tries committed nothing"
    assert_synced(world, edits)


# ---- tokens that expire mid-run, and Entra ID hiccups -------------------------------------------------------


def _when(condition: Callable[[], bool], then: Callable[[], None], timeout_s: float = 60) -> threading.Thread:
    """Run `then` in a thread as soon as `condition` holds (polled every 50 ms); errors surface in `.error`."""

    def holds() -> bool:
        try:
            return condition()
        except Exception:  # e.g. a metadata DB busy for a moment: look again
            return False

    def watch() -> None:
        try:
            deadline = time.monotonic() + timeout_s
            while not holds():
                if time.monotonic() > deadline:
                    raise TimeoutError("the condition never held")
                time.sleep(0.05)
            then()
        except BaseException as exc:  # handed to the test thread
            thread.error = exc  # type: ignore[attr-defined]

    thread = threading.Thread(target=watch, daemon=True)
    thread.error = None  # type: ignore[attr-defined]
    thread.start()
    return thread


def test_tokens_that_expire_mid_run_are_renewed_and_the_call_redone(world, sandboxes, clean_faults, task_log):
    """Marketo: the sync's token really expires while a call of the run is in flight (the sandbox's token
    lifetime is cut under it), so the next call with it gets 602. Dataverse rejects a token once (401) and
    Entra ID answers its token request 429, then 503. Each hook renews and redoes the call; nothing fails."""
    edits = make_edits(world, "tokens")
    before_m, before_d = marketo_errors(sandboxes), dynamics_fired(sandboxes)
    inject(sandboxes, "dynamics",
           {"code": 401, "count": 1, "method": "GET", "path": "leads"},
           {"code": 429, "count": 1, "target": "token", "retry_after": 1},
           {"code": 503, "count": 1, "target": "token", "retry_after": 1})
    # A lead-changes read of the run is held 2 s; meanwhile every issued Marketo token is expired.
    inject(sandboxes, "marketo", {"method": "GET", "path": "/rest/v1/activities/leadchanges.json",
                                  "code": "timeout", "hold_s": 2, "count": 1})

    def expire_tokens() -> None:
        sandboxes.post("marketo", "/_sandbox/limits", {"token_ttl_s": 1})
        sandboxes.post("marketo", "/_sandbox/limits", {"token_ttl_s": 3600})  # new tokens live an hour again

    watcher = _when(lambda: not sandboxes.get("marketo", "/_sandbox/faults")["faults"], expire_tokens)
    cycle = run(INCREMENTAL)
    log = task_log()
    watcher.join(5)

    assert watcher.error is None, watcher.error
    assert str(cycle.state) == "success", tries(cycle)
    assert retried(cycle) == {}, "absorbed by the hooks, no task retry"
    assert pending(sandboxes) == {"marketo": [], "dynamics": []}, "every fault fired inside the run"
    assert (marketo_errors(sandboxes) - before_m)["602"] >= 1, "a call was made with the expired token"
    assert dynamics_fired(sandboxes) - before_d == 3
    for said in ("602 Access token expired; renewed the token", "rejected the access token (HTTP 401); renewed",
                 "Entra ID token endpoint busy: temporarily_unavailable", "Entra ID token endpoint unavailable"):
        assert said in log, f"the task log does not say {said!r}"
    assert written(world["store"], cycle.run_id) == WRITES
    assert_synced(world, edits)


def test_a_rejected_token_is_renewed_at_entra_id_once_and_a_second_rejection_is_refused_credentials(
        sandboxes, clean_faults):
    """A 401 makes the hook ask Entra ID for a new token (not MSAL's cache: the token endpoint's injected
    503 is used up by that very renewal); a fresh token refused too means the app user is not set up,
    which no retry fixes: AuthError at once, after one renewal, not six tries."""
    hook = DynamicsHook()
    hook.who_am_i()  # a token in MSAL's cache
    inject(sandboxes, "dynamics", {"code": 401, "count": 1, "method": "GET", "path": "leads"},
           {"code": 503, "count": 1, "target": "token"})
    assert list(hook.pages("leads", params={"$select": "leadid"}))
    assert pending(sandboxes)["dynamics"] == [], "the renewal went to Entra ID"
    before = dynamics_fired(sandboxes)
    inject(sandboxes, "dynamics", {"code": 401, "count": 5, "method": "GET", "path": "leads"})
    with pytest.raises(AuthError, match="refused a freshly issued access token"):
        list(hook.pages("leads", params={"$select": "leadid"}))
    assert dynamics_fired(sandboxes) - before == 2, "the rejected token and the renewed one"


def test_an_expired_delta_link_is_told_apart_from_other_refusals(sandboxes):
    """Dataverse's "version stamp ... expired" (HTTP 400) becomes ChangeTrackingExpired, so the extract can
    fall back to a full compare; it stays an ApiError for every other caller."""
    hook = DynamicsHook()
    *_, (_, link) = hook.pages("leads", params={"$select": "leadid"}, track_changes=True)
    sandboxes.post("dynamics", "/_sandbox/limits", {"delta_token_ttl_s": 0})
    try:
        with pytest.raises(ChangeTrackingExpired) as expired:
            list(hook.pages(link, track_changes=True))
    finally:
        sandboxes.post("dynamics", "/_sandbox/limits", {"delta_token_ttl_s": 604800})
    assert isinstance(expired.value, ApiError) and expired.value.status == 400
    assert "Please perform a full sync" in expired.value.message


# ---- the daily quota: 607 -------------------------------------------------------------------------------------


def test_a_spent_daily_quota_fails_the_run_clearly_and_the_next_day_resumes_where_it_stopped(
        world, sandboxes, clean_faults, task_log):
    """Marketo answers 607 when the people are written (the account's company went in before the quota ran
    out): the run goes red at once (no retry can help before midnight), names the quota, frees its entities
    and leaves their watermarks; the next day's run writes exactly what was left, once."""
    people, store = world["people"], world["store"]
    edits = make_edits(world, "quota")
    [account] = people.list_dynamics("account", ["name"])[:1]
    people.edit_dynamics("account", account["accountid"], {"name": "Renamed before the quota ran out"})
    before = marks(store)
    inject(sandboxes, "marketo", {"method": "POST", "path": "/rest/v1/leads.json", "code": "607", "count": 50})
    stopped = run(INCREMENTAL)
    log = task_log()
    sandboxes.delete("marketo", "/_sandbox/faults")  # midnight US Central: the quota resets

    states = tries(stopped)
    assert str(stopped.state) == "failed"
    assert states["lead.load"] == ("failed", 1) and states["contact.load"] == ("failed", 1), "failed, not retried"
    assert states["account.load"] == ("success", 1)
    assert "QuotaExhausted: Marketo daily API quota reached (607: Daily quota reached); resume after it resets" in log
    assert "lead: task lead.load failed: QuotaExhausted" in log, "the failure alert names the quota"
    assert re.search(r"Retry policy decision .*action=fail.*daily API quota spent", log), "and says why no retry"
    assert marks(store) == before, "no people watermark moved"
    assert (store.lock_holder("lead"), store.lock_holder("contact")) == (None, None), "the entities are free"
    for _, _, marketo_id, _, name, value in edits.to_marketo():
        assert people.read_marketo(marketo_id).get(name) != value, "the 607 refused the write"
    assert people.find_marketo(edits.new_leads[0][1]) == []
    company = people.read_object("account", account["accountid"])
    assert company["company"] == "Renamed before the quota ran out"

    resumed = run(INCREMENTAL)
    assert str(resumed.state) == "success", tries(resumed)
    assert written(store, resumed.run_id) == WRITES, "what was left, once; the account is not written again"
    assert all(marks(store)[key] != value for key, value in before.items()), "the watermarks moved now"
    assert_synced(world, edits)


# ---- two runs never sync the same entity at once -----------------------------------------------------------------


def test_a_backfill_holding_an_entity_makes_the_schedule_wait_and_nothing_is_written_twice(
        world, sandboxes, monkeypatch, task_log):
    """A backfill run is syncing leads (it holds the lead lock, its extract done) when the scheduled run
    starts: the scheduled run's lead extract fails on the lock and is retried by Airflow until the backfill
    has committed; it then finds the backfill's writes at the snapshots and writes nothing again. The
    backfill leaves the watermarks to the scheduled run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    monkeypatch.setenv("DYNAMICS_SYNC_RETRIES", "5")  # read when the DAG file is parsed, i.e. by run()
    people, store = world["people"], world["store"]
    (l1, m1), (l2, m2) = world["pool"]["lead"].pop(0), world["pool"]["lead"].pop(0)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    people.edit_dynamics("lead", l1, {"jobtitle": "D overlap"})
    people.edit_marketo(m2, {"firstName": "M overlap"})
    time.sleep(1.1)
    backfill = steps.RunInfo(dag_id=INCREMENTAL, run_id=f"backfill__{start:%Y-%m-%dT%H:%M:%S}", run_type="backfill",
                             interval_start=start, interval_end=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    extracted = steps.extract_step("lead", steps.INCREMENTAL, backfill)  # the backfill is mid-run
    assert store.lock_holder("lead") == backfill.run_id and extracted["interval"] is True

    def schedule_waits() -> bool:
        with create_session() as session:
            return session.query(TaskInstance).filter(
                TaskInstance.dag_id == INCREMENTAL, TaskInstance.task_id == "lead.extract",
                TaskInstance.state == TaskInstanceState.UP_FOR_RETRY).count() > 0

    def backfill_finishes() -> None:
        transformed = steps.transform_step("lead", extracted, backfill)
        steps.load_step("lead", steps.validate_step("lead", transformed, backfill), backfill)

    finisher = _when(schedule_waits, backfill_finishes, timeout_s=120)
    scheduled = run(INCREMENTAL)
    finisher.join(60)

    assert finisher.error is None, finisher.error
    assert str(scheduled.state) == "success", tries(scheduled)
    assert tries(scheduled)["lead.extract"][1] >= 2, "the scheduled run waited for the lead"
    log = task_log()
    assert f"EntityLocked: lead is being synced by {INCREMENTAL} run {backfill.run_id}" in log
    assert "Retry policy decision" in log and "Matched rule for EntityLocked" in log
    by_backfill = {(s["entity"], s["direction"]): (s["created"], s["updated"])
                   for s in store.summaries(INCREMENTAL, backfill.run_id)}
    assert by_backfill == {("lead", "dynamics_to_marketo"): (0, 1), ("lead", "marketo_to_dynamics"): (0, 1)}
    assert written(store, scheduled.run_id) == {}, "the scheduled run wrote nothing the backfill had written"
    assert store.lock_holder("lead") is None
    with store.engine.connect() as conn:
        owners = {r.side: r.run_id for r in conn.execute(watermarks.select().where(watermarks.c.entity == "lead"))}
    assert owners["dynamics"] == owners["marketo"] == scheduled.run_id, "the backfill moved no watermark"
    assert people.read_marketo(m1)["title"] == "D overlap"
    assert people.read_dynamics("lead", l2)["firstname"] == "M overlap"
    assert_one_person_per_record(people, store)


# ---- an expired change-tracking token -------------------------------------------------------------------------


def test_an_expired_change_tracking_token_falls_back_to_a_full_compare_and_says_so(world, sandboxes, clean_faults,
                                                                                 task_log):
    """Dataverse forgets the version a delta link stands for (the token outlived the organisation's change
    tracking retention): the entity reads every record, compares it with the last-synced snapshots, writes
    only what differs, flags the records deleted in the gap, logs why, and keeps a fresh delta link."""
    people, store = world["people"], world["store"]
    edits = make_edits(world, "expired-delta")
    gone, gone_person = world["pool"]["lead"].pop(0)
    people.delete_dynamics("lead", gone)  # a deletion the expired token will never report
    sandboxes.post("dynamics", "/_sandbox/limits", {"delta_token_ttl_s": 0})  # every delta link issued so far
    try:
        cycle = run(INCREMENTAL)
    finally:
        sandboxes.post("dynamics", "/_sandbox/limits", {"delta_token_ttl_s": 604800})
    log = task_log()

    assert str(cycle.state) == "success", tries(cycle)
    assert retried(cycle) == {}, "the entity fell back by itself"
    for entity in PEOPLE:
        [said] = store.activities(run_id=cycle.run_id, entity=entity, activity_type="change_tracking_expired")
        assert "full compare" in said["reason"]
    assert "lead: Dynamics change tracking expired" in log
    assert written(store, cycle.run_id) == {**WRITES, ("lead", "dynamics_to_marketo"): (1, 2)}, \
        "only what differs is written (and the deleted lead flagged)"
    assert people.read_marketo(gone_person).get("msdynIsDeleted") in (True, "true", 1)
    extract.dynamics_delta(DynamicsHook(), store.watermark("lead", "dynamics"))  # a fresh delta link, usable
    assert_synced(world, edits)
