"""Alerts reach a webhook within the run: records that did not sync, a failed entity, a lagging entity.

The webhook is a real HTTP server on loopback standing in for the users' alerting (Slack, Alertmanager...),
configured the way users would: the Airflow connection dynamics_sync_alerts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dynamics_sync.state import watermarks
from include.demo.people import People
from include.runtime.run_dag import run
from include.runtime.sandboxes import free_port

pytestmark = pytest.mark.e2e
TOKEN = "alert-token-not-a-secret-of-the-apis"


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"auth": self.headers.get("Authorization"), **json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AIRFLOW_CONN_DYNAMICS_SYNC_ALERTS", json.dumps({
        "conn_type": "http", "host": f"http://127.0.0.1:{server.server_port}/alerts", "password": TOKEN}))
    yield received
    server.shutdown()


def _kinds(received: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for alert in received:
        out.setdefault(alert["kind"], []).append(alert)
    return out


def test_failures_and_lag_reach_the_alerts_webhook_within_the_run(sandboxes, fresh_state, webhook, monkeypatch,
                                                                 people_config: Path):
    monkeypatch.setenv("DYNAMICS_SYNC_CONFIG", str(people_config))
    for box in ("dynamics", "marketo"):
        sandboxes.post(box, "/_sandbox/reset")
    sandboxes.post("dynamics", "/_sandbox/seed", {"leads": 6, "contacts": 4, "seed": 41})
    assert str(run("dynamics_initial_sync").state) == "success"
    assert _kinds(webhook).keys() == set(), f"a clean copy raises no alert: {webhook}"

    people = People(sandboxes)
    [lead] = fresh_state.links_by_dynamics("lead", [_first(fresh_state, "lead")]).values()
    email = people.read_marketo(lead.marketo_id)["email"]
    people.edit_marketo(lead.marketo_id, {"lastName": ""})  # Dynamics requires a last name
    # The contact entity cannot read Dynamics (every call answered 500) and fails; the others go on.
    conn = json.loads(os.environ["AIRFLOW_CONN_DYNAMICS_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_DYNAMICS_DEFAULT", json.dumps(
        {**conn, "extra": {**conn["extra"], "max_attempts": 2, "backoff_base_s": 0.1}}))
    sandboxes.post("dynamics", "/_sandbox/faults", {"code": 500, "count": 1000, "method": "GET", "path": "contacts"})
    with fresh_state.engine.begin() as c:  # neither people entity has synced for two hours
        c.execute(sa.update(watermarks).where(watermarks.c.entity.in_(["lead", "contact"]),
                                              watermarks.c.side == "dynamics")
                  .values(updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)))
    try:
        cycle = run("dynamics_incremental_sync")
    finally:
        sandboxes.delete("dynamics", "/_sandbox/faults")
    assert str(cycle.state) == "failed", "the failed entity fails the run"

    kinds = _kinds(webhook)
    assert all(a["auth"] == f"Bearer {TOKEN}" for a in webhook)
    [failures] = kinds["record_failures"]
    assert failures["run_id"] == cycle.run_id and failures["counts"] == {"lead.rejected_by_validation": 1}
    assert failures["sample"][0]["dynamics_id"] == lead.dynamics_id
    assert email not in json.dumps(webhook), "alerts carry ids and reasons, not people's addresses"
    assert {a["entity"] for a in kinds["entity_failed"]} == {"contact"}
    assert "contact.extract" in {a["task_id"] for a in kinds["entity_failed"]}
    [lagging] = kinds["sync_lagging"]
    assert set(lagging["lag_minutes"]) == {"contact"}, "the lead entity synced in this very run is not late"
    assert lagging["lag_minutes"]["contact"] >= 120


def _first(store: Any, entity: str) -> str:
    from dynamics_sync.state import record_links

    with store.engine.connect() as conn:
        return conn.execute(sa.select(record_links.c.dynamics_id).where(record_links.c.entity == entity)
                            .order_by(record_links.c.id)).scalar()
