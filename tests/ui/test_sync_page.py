"""The Dynamics Sync page in the Airflow UI, as a data engineer uses it.

Real DAG runs (dag.test) fill a state store from both sandboxes: an initial copy, then collisions and a
Marketo edit that blanks a lead's last name (refused by validation: an open failure) and a cycle. A real
Airflow api-server then serves the plugin with authentication enforced (SimpleAuthManager with a user
list and passwords, not the project's local everyone-is-admin mode), and headless Chromium (Debian's
chromium and chromedriver) logs in through the Airflow UI, opens the page from the UI's navigation and
searches the activity log. The read model's definitions and the budget cache are checked in-process
against real stores and the real Marketo sandbox.

The screenshot goes to the session's temp dir; SYNC_PAGE_SCREENSHOT=include/docs/sync-page.png refreshes
the README's copy (e.g. `SYNC_PAGE_SCREENSHOT=include/docs/sync-page.png make test` or this module alone).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

pytestmark = pytest.mark.e2e
ADMIN, OUTSIDER = "admin", "outsider"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
UI_ENTITIES = ("user", "account", "lead", "contact")  # the people_config fixture's entities


class OutsiderCannotReadTheSync(SimpleAuthManager):
    """SimpleAuthManager, except that the user `outsider` may read no DAG at all.

    SimpleAuthManager's lowest role (viewer) reads every DAG, so it cannot express "logged in, but not
    allowed to see the sync"; this real auth manager, loaded by the api-server through
    [core] auth_manager, can, and the page must follow whatever the auth manager decides.
    """

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        if user.get_name() == OUTSIDER:
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)


# ---- the world: real runs, then a real api-server ------------------------------------------------------

class ApiServer:
    """`airflow api-server` alone (no scheduler: nothing may run the DAGs behind the test's back), on the
    session's metadata DB, where dag.test() left the DAGs and their runs, with login enforced."""

    def __init__(self, home: Path, port: int):
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}"
        self.passwords = {ADMIN: secrets.token_urlsafe(12), OUTSIDER: secrets.token_urlsafe(12)}
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        from include.runtime.environment import ROOT

        self.home.mkdir(parents=True, exist_ok=True)
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps(self.passwords))
        passwords.chmod(0o600)
        return {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__AUTH_MANAGER": f"{__name__}.{OutsiderCannotReadTheSync.__name__}",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin,{OUTSIDER}:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
        }

    def start(self, timeout: float = 120) -> ApiServer:
        log = (self.home / "api-server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--port", str(self.port), "--host", "127.0.0.1",
             "--workers", "1", "--apps", "core"],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the api-server exited with {self.proc.returncode}; see {self.home}/api-server.log")
            try:
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the api-server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)

    def token(self, user: str) -> str:
        answer = requests.post(f"{self.url}/auth/token", json={"username": user, "password": self.passwords[user]},
                               timeout=30)
        assert answer.status_code == 201, answer.text
        return answer.json()["access_token"]

    def get(self, path: str, user: str | None = None, method: str = "GET", **kwargs: Any) -> requests.Response:
        """A request to the page's app, anonymous or as `user`, never following a redirect."""
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return requests.request(method, f"{self.url}/dynamics-sync{path}", headers=headers, timeout=60,
                                allow_redirects=False, **kwargs)

    def post(self, path: str, user: str | None = None, **kwargs: Any) -> requests.Response:
        return self.get(path, user, method="POST", **kwargs)

    def log(self) -> str:
        return (self.home / "api-server.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def world(sandboxes: Any, new_state: Any, people_config: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[dict[str, Any]]:
    """Two real runs' worth of activity, then the api-server serving the page over that state store."""
    from dynamics_sync.state import StateStore, record_links
    from include.demo.people import People
    from include.runtime.run_dag import run
    from include.runtime.sandboxes import free_port

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DYNAMICS_SYNC_CONFIG", str(people_config))
        patch.setenv("AIRFLOW_CONN_DYNAMICS_SYNC_STATE", json.dumps(new_state("ui")))
        for box in ("dynamics", "marketo"):
            sandboxes.post(box, "/_sandbox/reset")
        sandboxes.post("dynamics", "/_sandbox/seed", {"leads": 20, "contacts": 10, "seed": 3})
        store = StateStore.from_connection()
        initial = run("dynamics_initial_sync")
        assert str(initial.state) == "success"
        with store.engine.connect() as conn:
            links = {entity: [(r.dynamics_id, r.marketo_id) for r in conn.execute(
                record_links.select().where(record_links.c.entity == entity).order_by(record_links.c.id))]
                for entity in ("lead", "contact")}
        people = People(sandboxes)
        leads, contacts = links["lead"], links["contact"]
        for dynamics_id, marketo_id in leads[:2]:  # collisions: both sides changed the job title
            people.edit_dynamics("lead", dynamics_id, {"jobtitle": "Dynamics title"})
            people.edit_marketo(marketo_id, {"title": "Marketo title"})
        people.edit_dynamics("contact", contacts[0][0], {"telephone1": "+1 555 0100"})
        people.edit_marketo(contacts[0][1], {"phone": "+1 555 0199"})
        bad = leads[2]
        people.edit_marketo(bad[1], {"lastName": ""})  # Dynamics requires a last name: refused by validation
        cycle = run("dynamics_incremental_sync")
        assert str(cycle.state) == "success"
        emails = {marketo_id: people.read_marketo(marketo_id)["email"]
                  for marketo_id in (leads[0][1], leads[1][1], contacts[0][1], bad[1])}
        server = ApiServer(tmp_path_factory.mktemp("ui-airflow"), free_port()).start()
        try:
            yield {"store": store, "server": server, "cycle": cycle, "initial": initial, "bad": bad,
                   "bad_email": emails[bad[1]], "emails": emails, "people": people}
        finally:
            server.stop()
            store.dispose()


# ---- authentication and authorization ------------------------------------------------------------------

def test_anonymous_requests_are_refused(world):
    """Without a login the page sends the browser to Airflow's login and the API answers 401; no data leaks."""
    server, email = world["server"], world["bad_email"]
    for method, path in (("GET", "/"), ("GET", "/activity"), ("POST", "/activity"),
                         ("GET", "/data-docs/lead_to_dynamics/index.html")):
        answer = server.get(path, method=method, data={"q": email} if method == "POST" else None)
        assert answer.status_code == 302, path
        location = answer.headers["location"]
        assert location.startswith("/auth/login?next="), location
        assert email not in answer.text
    for method, path in (("GET", "/api/overview"), ("GET", "/api/activity"), ("POST", "/api/activity")):
        answer = server.get(path, method=method, data={"q": email} if method == "POST" else None)
        assert answer.status_code == 401, path
        assert email not in answer.text
    forged = {"_token": "not-a-token"}
    api = requests.get(f"{server.url}/dynamics-sync/api/activity", cookies=forged, timeout=30)
    assert api.status_code == 403 and email not in api.text
    page = requests.get(f"{server.url}/dynamics-sync/", cookies=forged, timeout=30, allow_redirects=False)
    assert page.status_code == 302 and page.headers["location"].startswith("/auth/login?next=")
    assert server.get("/static/sync_page.js").status_code == 200, "only the script and styles are public"


def test_a_user_who_may_not_read_the_sync_dags_is_refused(world):
    """Logged in is not enough: the auth manager must let the user read the sync DAGs' task logs."""
    server, email = world["server"], world["bad_email"]
    token = server.token(OUTSIDER)
    version = requests.get(f"{server.url}/api/v2/version", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert version.status_code == 200, "the outsider is a valid Airflow user"
    for path in ("/api/activity", "/api/overview", "/"):
        answer = server.get(path, user=OUTSIDER)
        assert answer.status_code == 403, path
        assert email not in answer.text


# ---- what the page tells a logged-in user --------------------------------------------------------------

def test_the_overview_shows_each_entity_and_the_budget(world):
    server, cycle = world["server"], world["cycle"]
    answer = server.get("/api/overview", user=ADMIN)
    assert answer.status_code == 200
    body = answer.json()
    entities = {e["entity"]: e for e in body["entities"]}
    assert sorted(entities) == sorted(UI_ENTITIES), "every configured entity, in config order"
    lead, contact = entities["lead"], entities["contact"]
    assert lead["last_run"] == {"dag_id": "dynamics_incremental_sync", "run_id": cycle.run_id}
    assert 0 <= lead["lag_s"] < 600
    assert lead["moved_24h"]["dynamics_to_marketo"] >= 20, "the initial copy created the 20 leads"
    assert lead["open_failures"] == 1 and lead["backlog"]["records"] == 1
    assert lead["backlog"]["oldest_age_s"] is not None and lead["backlog"]["budget_stopped_since"] is None
    assert contact["open_failures"] == 0 and contact["backlog"]["records"] == 0
    marketo = body["budget"]["marketo"]
    assert marketo["ok"] and marketo["used_today"] > 0
    assert marketo["daily_budget"] == int(marketo["daily_quota"] * marketo["budget_share"])
    assert body["budget"]["dynamics"]["daily_quota"] is None, "Dataverse has service protection, no daily quota"
    assert any(url.endswith("/dynamics-sync/data-docs/lead_to_dynamics/index.html") for url in lead["data_docs"])


def test_the_activity_search_narrows_by_email_type_and_run_and_links_each_row_to_its_task(world):
    server, cycle, email = world["server"], world["cycle"], world["bad_email"]
    everything = server.get("/api/activity", user=ADMIN).json()["rows"]
    assert {r["email"] for r in everything} >= set(world["emails"].values())
    [row] = server.post("/api/activity", user=ADMIN, data={"q": email.upper()}).json()["rows"]
    assert (row["email"], row["activity_type"], row["field"]) == (email, "rejected_by_validation", "lastName")
    assert row["run_id"] == cycle.run_id
    assert row["task_instance_url"] == (f"{server.url}/dags/dynamics_incremental_sync/runs/"
                                        f"{quote(cycle.run_id, safe='')}/tasks/{quote(row['task_id'], safe='')}")
    dynamics_id, marketo_id = world["bad"]
    for q in (dynamics_id, str(marketo_id)):  # by either record id
        assert [r["id"] for r in server.get("/api/activity", user=ADMIN, params={"q": q}).json()["rows"]] == [row["id"]]
    collisions = server.get("/api/activity", user=ADMIN, params={"type": "collision_resolved"}).json()["rows"]
    assert len(collisions) == 3 and {r["activity_type"] for r in collisions} == {"collision_resolved"}
    by_run = server.get("/api/activity", user=ADMIN, params={"run_id": world["initial"].run_id}).json()["rows"]
    assert all(r["run_id"] == world["initial"].run_id for r in by_run) and row["id"] not in {r["id"] for r in by_run}
    opened = server.get("/api/activity", user=ADMIN, params={"open": "1"}).json()["rows"]
    assert [r["id"] for r in opened] == [row["id"]]
    paged = server.get("/api/activity", user=ADMIN, params={"limit": 2}).json()
    assert len(paged["rows"]) == 2 and paged["has_more"] is (len(everything) > 2)


def test_the_data_docs_of_the_last_runs_are_served(world):
    server = world["server"]
    answer = server.get("/data-docs/lead_to_dynamics/index.html", user=ADMIN)
    assert answer.status_code == 200 and "text/html" in answer.headers["content-type"]
    assert "Data Docs" in answer.text or "Expectation" in answer.text
    assert server.get("/data-docs/lead_to_dynamics/..%2F..%2F..%2F..%2Fpasswords.json", user=ADMIN).status_code == 404


# ---- in the Airflow UI, in headless Chromium -----------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian's chromium and chromedriver are not installed (`make system-packages`)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1440,1400", "--force-device-scale-factor=1", "--lang=en-US"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_in_the_airflow_ui_searches_and_opens_task_runs(world, browser, tmp_path_factory):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    server, email, cycle = world["server"], world["bad_email"], world["cycle"]
    wait = WebDriverWait(browser, 60)
    browser.get(f"{server.url}/")
    wait.until(ec.visibility_of_element_located((By.NAME, "username"))).send_keys(ADMIN)
    browser.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(server.passwords[ADMIN], Keys.ENTER)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "a[href$='plugin/dynamics-sync']"))).click()

    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Dynamics Sync']")))
    browser.switch_to.frame(frame)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#entities tbody tr")) == len(UI_ENTITIES))
    lead = browser.find_element(By.CSS_SELECTOR, "#entities tr[data-entity='lead']")
    assert lead.find_element(By.CSS_SELECTOR, ".failures").text == "1"
    assert "1 record" in lead.find_element(By.CSS_SELECTOR, ".backlog").text
    assert "calls used today" in browser.find_element(By.ID, "marketo-budget").text

    def emails_shown(d: Any) -> list[str]:
        return [cell.text for cell in d.find_elements(By.CSS_SELECTOR, "#activity tbody td.email")]

    before = emails_shown(browser)
    assert len(set(before)) >= 4 and email in before
    browser.find_element(By.ID, "q").send_keys(email)
    wait.until(lambda d: emails_shown(d) == [email])
    row = browser.find_element(By.CSS_SELECTOR, "#activity tbody tr")
    assert "rejected_by_validation" in row.text and "lastname is required" in row.text.lower()

    browser.switch_to.default_content()
    shot = tmp_path_factory.mktemp("screenshots") / "sync-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("SYNC_PAGE_SCREENSHOT"):  # refresh the README's copy
        committed = Path(os.environ["SYNC_PAGE_SCREENSHOT"])
        committed.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, committed)

    # The row's link opens its task run in the Airflow UI itself, not inside the frame.
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe[title='Dynamics Sync']"))
    row.find_element(By.CSS_SELECTOR, "a.task-link").click()
    browser.switch_to.default_content()
    target = f"/dags/dynamics_incremental_sync/runs/{quote(cycle.run_id, safe='')}/tasks/"
    wait.until(lambda d: target in d.current_url)
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "iframe[title='Dynamics Sync']"))

    # The search was posted, not put in a URL: what was typed is not in Airflow's HTTP access log.
    log = server.log()
    assert "method=POST path=/dynamics-sync/activity" in log and email not in log


# ---- the read model and the budget, in-process ---------------------------------------------------------

def test_a_failure_closes_when_its_record_syncs_later_and_a_budget_stop_when_the_entity_loads(fresh_state):
    from dynamics_sync.state import Activity, Link, RunContext
    from dynamics_sync.ui.readmodel import ActivityQuery, activity_types, entity_statuses, search_activity

    store, ctx = fresh_state, RunContext("dynamics_incremental_sync", "manual__1", "lead.load")
    store.commit_load(ctx, activities=[
        Activity("rejected_by_validation", "lead", "marketo_to_dynamics", dynamics_id="d-1", marketo_id=1,
                 email="one@example.com", field="lastName", reason="lastname is required"),
        Activity("refused_by_marketo", "lead", "dynamics_to_marketo", dynamics_id="d-2", email="two@example.com"),
        Activity("collision_resolved", "lead", "dynamics_to_marketo", dynamics_id="d-3", email="three@example.com"),
        Activity("budget_spent", "contact", "dynamics_to_marketo", reason="budget reached"),
    ])
    now = dt.datetime.now(dt.UTC)
    lead, contact = entity_statuses(store, ["lead", "contact"], now)
    assert (lead.open_failures, lead.waiting_records) == (2, 2)
    assert contact.budget_stopped_since is not None and contact.oldest_waiting == contact.budget_stopped_since

    later = RunContext("dynamics_incremental_sync", "manual__2", "lead.load")
    store.commit_load(later, links=[Link("lead", "d-1", 1, {"lastname": "Fixed"}, {"lastName": "Fixed"})],
                      summaries=[{"entity": "contact", "direction": "dynamics_to_marketo", "created": 0, "updated": 4}])
    lead, contact = entity_statuses(store, ["lead", "contact"], dt.datetime.now(dt.UTC))
    assert (lead.open_failures, lead.waiting_records) == (1, 1), "d-1 synced since it failed"
    assert contact.budget_stopped_since is None and contact.moved_24h == {"dynamics_to_marketo": 4}
    assert contact.last_run == ("dynamics_incremental_sync", "manual__2")
    still_open = search_activity(store, ActivityQuery(open_only=True), ["dynamics_incremental_sync"]).rows
    assert [r["dynamics_id"] for r in still_open] == ["d-2"]
    assert search_activity(store, ActivityQuery(), ["sync_person_to_dynamics"]).rows == [], \
        "rows of DAGs the user may not read are never returned"
    store.commit_load(later, activities=[Activity("reconcile_drift", "lead", dynamics_id="d-4")])
    assert activity_types(store)[-1] == "reconcile_drift", "a type a newer DAG writes can be searched for too"


def test_peoples_data_is_escaped_on_the_page(fresh_state):
    from dynamics_sync.state import Activity, RunContext
    from dynamics_sync.ui import readmodel
    from dynamics_sync.ui.app import render_page
    from dynamics_sync.ui.budget import MarketoBudget

    hostile = '<img src=x onerror="alert(1)">'
    fresh_state.commit_load(RunContext("dynamics_incremental_sync", "r<script>", "lead.load"), activities=[
        Activity("rejected_by_validation", "lead", dynamics_id="d-1", email=f"{hostile}@example.com",
                 old_value=hostile, new_value="</td><script>alert(2)</script>", reason=hostile)])
    now = dt.datetime.now(dt.UTC)
    query = readmodel.ActivityQuery(q=hostile)
    page = readmodel.search_activity(fresh_state, query, ["dynamics_incremental_sync"])
    assert len(page.rows) == 1
    html = render_page(statuses=readmodel.entity_statuses(fresh_state, ["lead"], now),
                       marketo=MarketoBudget(now, error="Marketo could not be read: Marketo: cannot reach x"),
                       page=page, runs=readmodel.recent_runs(fresh_state, ["dynamics_incremental_sync"]), sites=[],
                       entities=["lead"], user="<b>me</b>", now=now)
    assert "<img" not in html and "<script>alert" not in html and "<b>me</b>" not in html
    assert "&lt;img src=x" in html and "r%3Cscript%3E" in html
    assert 'id="marketo-unreachable"' in html and "could not be read" in html, "an unreachable Marketo is said"


def test_the_marketo_usage_is_cached_and_an_unreachable_marketo_is_reported(sandboxes):
    from dynamics_sync.ui.budget import BudgetCache, read_marketo_budget

    usage = "GET /rest/v1/stats/usage.json"

    def usage_calls() -> int:
        return int(sandboxes.get("marketo", "/_sandbox/stats")["by_endpoint"].get(usage, 0))

    clock = [0.0]
    cache = BudgetCache(read_marketo_budget, ttl_s=60, clock=lambda: clock[0])
    before = usage_calls()
    first = cache.get()
    assert first.ok and first.used_today is not None
    for _ in range(5):
        assert cache.get() is first
    assert usage_calls() == before + 1, "page views within a minute cost one usage call"
    sandboxes.post("marketo", "/_sandbox/faults", {"method": "GET", "path": "/rest/v1/stats/usage.json",
                                                  "code": 503, "count": 1})
    clock[0] += 61
    started = time.monotonic()
    down = cache.get()
    assert time.monotonic() - started < 10, "the page does not wait for the hook's retries"
    assert not down.ok and "Marketo" in down.error and "client_secret" not in down.error
    clock[0] += 61
    assert cache.get().ok, "read again once the cache expired"
