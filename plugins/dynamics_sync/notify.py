"""Alerts that reach people within the run: a failed entity, records that did not sync, a lagging entity.

The native sync mails failures once a day; here each alert is a JSON POST to the webhook of the Airflow
connection `dynamics_sync_alerts` (type http: host = the URL, e.g. a Slack/Teams incoming webhook, an
Alertmanager or PagerDuty endpoint behind a small relay; password, if set, goes as a Bearer token), so
users point it at their own alerting. Without that connection the alert is a WARNING in the task log only.
Delivery problems are logged, never raised: an alert must not turn a good sync red, nor hide the error.

Alerts carry ids, counts and reasons, never field values or email addresses: the channel is not the
activity log, which keeps the people's data behind Airflow's authentication.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections import Counter
from typing import Any

import requests
from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)
ALERTS_CONN_ID = "dynamics_sync_alerts"
LAG_ENV, LAG_DEFAULT_MIN = "DYNAMICS_SYNC_LAG_ALERT_MINUTES", 30
SAMPLE = 10  # failed records named in one alert


def _target() -> tuple[str, dict[str, str]] | None:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(ALERTS_CONN_ID)
    except AirflowNotFoundException:
        return None
    url = conn.host or ""
    if conn.schema and "://" not in url:
        url = f"{conn.schema}://{url}"
    if conn.port and url.count(":") < 2:
        head, _, tail = url.partition("://")
        host, _, path = tail.partition("/")
        url = f"{head}://{host}:{conn.port}/{path}"
    headers = {"Content-Type": "application/json"}
    if conn.password:
        headers["Authorization"] = f"Bearer {conn.password}"
    return url, headers


def send_alert(kind: str, summary: str, **details: Any) -> dict[str, Any]:
    """Log the alert and POST it to the alerts webhook when one is configured; returns the alert."""
    alert = {"source": "dynamics-sync", "kind": kind, "summary": summary,
             "sent_at": dt.datetime.now(dt.UTC).isoformat(), **details}
    log.warning("ALERT %s: %s", kind, summary)
    target = _target()
    if target is None:
        return alert
    url, headers = target
    try:
        response = requests.post(url, data=json.dumps(alert, default=str), headers=headers, timeout=10)
        if not response.ok:
            log.error("the alerts webhook answered HTTP %s; the alert above was not delivered", response.status_code)
    except requests.RequestException as exc:
        log.error("the alerts webhook did not answer (%s); the alert above was not delivered", type(exc).__name__)
    return alert


class SyncFailureNotifier(BaseNotifier):
    """on_failure_callback of the sync's tasks: the entity that failed, the task, and why, at once."""

    def __init__(self, entity: str | None = None):
        super().__init__()
        self.entity = entity

    def notify(self, context: Any) -> None:
        ti, dag_run = context.get("ti"), context.get("dag_run")
        error = context.get("exception")
        reason = f"{type(error).__name__}: {error}" if error is not None else "see the task log"
        send_alert("entity_failed", f"{self.entity or 'the run'}: task {getattr(ti, 'task_id', '?')} failed: "
                   f"{reason[:500]}", entity=self.entity, dag_id=getattr(dag_run, "dag_id", None),
                   run_id=getattr(dag_run, "run_id", None), task_id=getattr(ti, "task_id", None),
                   try_number=getattr(ti, "try_number", None))


def lag_threshold() -> dt.timedelta:
    return dt.timedelta(minutes=float(os.environ.get(LAG_ENV, LAG_DEFAULT_MIN)))


def run_report(dag_id: str, run_id: str, entities: list[str]) -> dict[str, Any]:
    """After every entity of a run: alert on the records that did not sync, and on any lagging entity."""
    from dynamics_sync.state import RECORD_FAILURES, StateStore

    store = StateStore.from_connection()
    try:
        failures = [a for a in store.activities(dag_id=dag_id, run_id=run_id)
                    if a["activity_type"] in RECORD_FAILURES]
        synced = {name: store.watermark_row(name, "dynamics")[1] for name in entities}
    finally:
        store.dispose()
    report: dict[str, Any] = {"record_failures": len(failures), "lagging": {}}
    if failures:
        by_kind = Counter(f"{a['entity']}.{a['activity_type']}" for a in failures)
        sample = [{k: a[k] for k in ("entity", "activity_type", "dynamics_id", "marketo_id", "field", "reason")}
                  for a in failures[:SAMPLE]]
        report["by_kind"] = dict(by_kind)
        send_alert("record_failures", f"{len(failures)} record(s) did not sync in {dag_id} {run_id}: "
                   + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())), dag_id=dag_id, run_id=run_id,
                   counts=dict(by_kind), sample=sample)
    now, limit = dt.datetime.now(dt.UTC), lag_threshold()
    for name, at in synced.items():
        if at is None:
            continue  # never copied: the initial copy's business, not a lag
        at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
        if now - at > limit:
            report["lagging"][name] = round((now - at).total_seconds() / 60, 1)
    if report["lagging"]:
        send_alert("sync_lagging", "no successful sync for more than "
                   f"{limit.total_seconds() / 60:.0f} min: " + ", ".join(
                       f"{name} ({minutes} min)" for name, minutes in report["lagging"].items()),
                   dag_id=dag_id, run_id=run_id, lag_minutes=report["lagging"])
    return report
