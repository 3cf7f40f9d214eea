"""Activity types and how a stored activity row is rendered by each activity endpoint.

Why a module: ``activities.json`` / ``deletedleads.json`` (generic Activity shape with primary attribute
and ``attributes``) and ``leadchanges.json`` (LeadChange shape with ``fields`` old/new values) show the
same rows differently; keeping both renderings next to the type catalogue keeps them consistent.

Attributes follow Adobe's examples ("Source"/"Reason" = "Web service API" on API changes, "Source Type"
on New Lead, empty attributes omitted). **Sandbox addition, unconfirmed for real Marketo:** every
activity written by the sandbox also carries ``{"name": "API User", "value": "<e-mail of the API user
that made the change>"}`` (``seed`` for ``/_sandbox/seed``), so that a sync can tell its own writes from
other users' (echo detection) deterministically. Real Marketo may not expose the API user this way; a
sync must not depend on it without a fallback.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

ACTIVITY_TYPES: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "Visit Webpage",
        "description": "User visits a web page",
        "primaryAttribute": {"name": "Webpage ID", "dataType": "integer"},
        "attributes": [
            {"name": "Client IP Address", "dataType": "string"},
            {"name": "Query Parameters", "dataType": "string"},
            {"name": "Referrer URL", "dataType": "string"},
            {"name": "Search Engine", "dataType": "string"},
            {"name": "Search Query", "dataType": "string"},
            {"name": "User Agent", "dataType": "string"},
            {"name": "Webpage URL", "dataType": "string"},
        ],
    },
    {
        "id": 2,
        "name": "Fill Out Form",
        "description": "User fills out and submits form on web page",
        "primaryAttribute": {"name": "Webform ID", "dataType": "integer"},
        "attributes": [
            {"name": "Client IP Address", "dataType": "string"},
            {"name": "Form Fields", "dataType": "text"},
            {"name": "Query Parameters", "dataType": "string"},
            {"name": "Referrer URL", "dataType": "string"},
            {"name": "User Agent", "dataType": "string"},
            {"name": "Webpage ID", "dataType": "integer"},
        ],
    },
    {
        "id": 12,
        "name": "New Lead",
        "description": "New person/record is added to the lead database",
        "primaryAttribute": {"name": "Lead ID", "dataType": "integer"},
        "attributes": [
            {"name": "API User", "dataType": "string"},
            {"name": "Created Date", "dataType": "date"},
            {"name": "Form Name", "dataType": "string"},
            {"name": "Lead Source", "dataType": "string"},
            {"name": "List Name", "dataType": "string"},
            {"name": "Source Type", "dataType": "string"},
        ],
    },
    {
        "id": 13,
        "name": "Change Data Value",
        "description": "Changed attribute value for a person",
        "primaryAttribute": {"name": "Attribute Name", "dataType": "integer"},
        "attributes": [
            {"name": "API User", "dataType": "string"},
            {"name": "New Value", "dataType": "text"},
            {"name": "Old Value", "dataType": "text"},
            {"name": "Reason", "dataType": "text"},
            {"name": "Source", "dataType": "string"},
        ],
    },
    {
        "id": 32,
        "name": "Merge Leads",
        "description": "Merge two or more person records",
        "primaryAttribute": {"name": "Lead ID", "dataType": "integer"},
        "attributes": [
            {"name": "API User", "dataType": "string"},
            {"name": "Master Updated", "dataType": "boolean"},
            {"name": "Merge Fields", "dataType": "text"},
            {"name": "Merge IDs", "dataType": "text"},
            {"name": "Merge Source", "dataType": "string"},
            {"name": "Merged in Sales", "dataType": "boolean"},
        ],
    },
    {
        "id": 37,
        "name": "Delete Lead",
        "description": "Delete person from the lead database",
        "primaryAttribute": {"name": "Lead ID", "dataType": "integer"},
        "attributes": [
            {"name": "API User", "dataType": "string"},
            {"name": "Remove from CRM", "dataType": "boolean"},
        ],
    },
]
KNOWN_TYPE_IDS = frozenset(t["id"] for t in ACTIVITY_TYPES)


def _base(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "marketoGUID": str(row["id"]),
        "leadId": row["leadId"],
        "activityDate": row["activityDate"],
        "activityTypeId": row["activityTypeId"],
    }


def _extra(row: sqlite3.Row) -> list[dict[str, Any]]:
    if not row["extra"]:
        return []
    return [{"name": k, "value": v} for k, v in json.loads(row["extra"]).items() if v is not None and v != ""]


def _api_user(row: sqlite3.Row) -> list[dict[str, Any]]:
    return [{"name": "API User", "value": row["apiUser"]}] if row["apiUser"] else []


def render_activity(row: sqlite3.Row) -> dict[str, Any]:
    """Item of ``activities.json`` and ``deletedleads.json``."""
    item = _base(row)
    if row["primaryAttributeValueId"] is not None:
        item["primaryAttributeValueId"] = row["primaryAttributeValueId"]
    if row["primaryAttributeValue"] is not None:
        item["primaryAttributeValue"] = row["primaryAttributeValue"]
    type_id = row["activityTypeId"]
    attrs: list[dict[str, Any]] = []
    if type_id == 13:
        if row["newValue"] is not None:
            attrs.append({"name": "New Value", "value": row["newValue"]})
        if row["oldValue"] is not None:
            attrs.append({"name": "Old Value", "value": row["oldValue"]})
        attrs.append({"name": "Reason", "value": row["reason"]})
        attrs.append({"name": "Source", "value": row["source"]})
    else:
        attrs.extend(_extra(row))
    attrs.extend(_api_user(row))
    item["attributes"] = attrs
    return item


def render_lead_change(row: sqlite3.Row) -> dict[str, Any]:
    """Item of ``leadchanges.json``: 12 with ``fields: []``, 13 with one changed field."""
    item = _base(row)
    if row["activityTypeId"] == 13:
        item["fields"] = [
            {
                "id": row["primaryAttributeValueId"],
                "name": row["fieldName"],
                "newValue": row["newValue"],
                "oldValue": row["oldValue"],
            }
        ]
        attrs = [{"name": "Source", "value": row["source"]}, {"name": "Reason", "value": row["reason"]}]
    else:
        item["fields"] = []
        attrs = _extra(row)
    item["attributes"] = attrs + _api_user(row)
    return item
