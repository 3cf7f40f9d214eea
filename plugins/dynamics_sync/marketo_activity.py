"""Failures shown where marketers look: a "Dynamics Sync Failed" activity on the person in Marketo.

The native sync records a person it could not sync in that person's own Marketo activity log. Every such
failure is first committed to activity_log (the record of truth); this then adds a custom activity to
each person concerned. If Marketo cannot take them right now, the task log says so and nothing else is
affected: the activity_log rows stay, and the run does not fail for it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from dynamics_sync.hooks.marketo import MarketoHook
from dynamics_sync.state import RECORD_FAILURES, Activity

log = logging.getLogger(__name__)
FAILURES = RECORD_FAILURES
TYPE = {
    "apiName": "dynamicsSyncFailed",
    "name": "Dynamics Sync Failed",
    "triggerName": "Dynamics sync failed",
    "filterName": "Dynamics sync failed",
    "description": "The Marketo <-> Dynamics sync could not move this person; the reason is attached.",
    "primaryAttribute": {"apiName": "entity", "name": "Entity", "dataType": "string"},
}
ATTRIBUTES = [
    {"apiName": "reason", "name": "Reason", "dataType": "text"},
    {"apiName": "direction", "name": "Direction", "dataType": "string"},
    {"apiName": "dynamicsId", "name": "Dynamics Id", "dataType": "string"},
    {"apiName": "field", "name": "Field", "dataType": "string"},
]


def post_failures(hook: MarketoHook, activities: Sequence[Activity]) -> int:
    """Add one custom activity per failure that concerns a known person; returns how many were added."""
    failures = [a for a in activities if a.activity_type in FAILURES and a.marketo_id is not None]
    if not failures:
        return 0
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        type_id = hook.ensure_activity_type(TYPE, ATTRIBUTES)
        results = hook.add_activities([
            {
                "leadId": int(a.marketo_id),
                "activityDate": now,
                "activityTypeId": type_id,
                "primaryAttributeValue": a.entity or "",
                "attributes": [
                    {"apiName": "reason", "value": (a.reason or a.activity_type)[:2000]},
                    {"apiName": "direction", "value": a.direction or ""},
                    {"apiName": "dynamicsId", "value": a.dynamics_id or ""},
                    {"apiName": "field", "value": a.field or ""},
                ],
            }
            for a in failures
        ])
    except Exception as exc:  # the failures are already in activity_log; Marketo's copy is a courtesy
        log.warning("could not add %d 'Dynamics Sync Failed' activities in Marketo (%s); they are in activity_log",
                    len(failures), exc)
        return 0
    added = sum(1 for r in results if r.get("status") == "added")
    log.info("added %d of %d 'Dynamics Sync Failed' activities to people in Marketo", added, len(failures))
    return added
