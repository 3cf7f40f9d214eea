"""A dry run's load: every write the run would make, counted and sampled, and nothing written anywhere.

The run extracts, plans and validates exactly as a real one (so the report is what the next real run
would do, collisions and rejections included); only this step differs: no API write, no state-store
commit, no watermark moved, no Marketo activity posted. Creates are reported as creates: whether
Marketo already holds the email (then the real load links instead) is learned only by writing.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pandas as pd

from dynamics_sync.entities import EntitySpec
from dynamics_sync.load import dynamics_body, marketo_payload, object_payload
from dynamics_sync.transform import TO_DYNAMICS, TO_MARKETO

SAMPLE = 5  # writes shown per direction: enough to check the payloads by eye, small enough for XCom


def _marketo_payload(spec: EntitySpec, row: dict[str, Any]) -> dict[str, Any]:
    return marketo_payload(spec, row) if spec.is_person else object_payload(spec, row)


def _sample(spec: EntitySpec, row: dict[str, Any], direction: str) -> dict[str, Any]:
    payload = _marketo_payload(spec, row) if direction == TO_MARKETO else dynamics_body(spec, row)
    return {"op": row["op"], "dynamics_id": row["dynamics_id"],
            "marketo_id": None if row.get("marketo_id") is None else int(row["marketo_id"]),
            "payload": json.loads(json.dumps(payload, default=str))}


def report(spec: EntitySpec, parts: list[dict[str, pd.DataFrame]]) -> dict[str, Any]:
    """The would-be writes of one entity over all its parts: counts by direction and op, and a sample."""
    out: dict[str, Any] = {"entity": spec.name, "dry_run": True}
    for name, direction in (("marketo_writes", TO_MARKETO), ("dynamics_writes", TO_DYNAMICS)):
        ops: Counter[str] = Counter()
        sample: list[dict[str, Any]] = []
        rejected: Counter[str] = Counter()
        for frames in parts:
            rows = frames[name].to_dict("records")
            ops.update(row["op"] for row in rows)
            sample += [_sample(spec, row, direction) for row in rows[: SAMPLE - len(sample)]]
            bad = frames[f"{name}_rejected"]
            for reasons in bad.get("reasons", pd.Series(dtype=object)):
                rejected.update(f"{p['field']}: {p['rule']}" for p in json.loads(reasons or "[]"))
        out[direction] = {"would_write": dict(ops), "total": sum(ops.values()),
                          "would_reject": sum(len(frames[f"{name}_rejected"]) for frames in parts),
                          "rejected_by_rule": dict(rejected),
                          "sample": sample}
    out["snapshot_refreshes"] = sum(len(frames["refresh"]) for frames in parts)
    return out
