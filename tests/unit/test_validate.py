"""The Great Expectations split: bad rows are set aside with their reasons, the rest go on."""

from __future__ import annotations

import json

import pandas as pd

from dynamics_sync.entities import load_entities
from dynamics_sync.validate import split_invalid


def _rows(*people: dict) -> pd.DataFrame:
    spec = load_entities()["lead"]
    base = {"op": "update", "marketo_id": None, "dynamics_id": None, "write_fields": "[]",
            "snap_dynamics": "{}", "snap_marketo": "{}"}
    return pd.DataFrame([{**base, **{f: None for f in spec.marketo_fields}, **p} for p in people])


def test_rows_breaking_dynamics_rules_are_split_off_with_reasons():
    spec = load_entities()["lead"]
    frame = _rows(
        {"dynamics_id": "ok-1", "email": "a@example.com", "lastName": "Diaz"},
        {"dynamics_id": "no-last", "email": "b@example.com", "lastName": None},
        {"dynamics_id": "long", "email": "c@example.com", "lastName": "x" * 51},
        {"dynamics_id": "bad-email", "email": "not-an-email", "lastName": "Bo"},
        {"dynamics_id": "ok-2", "email": None, "lastName": "Eve"},
    )
    split = split_invalid(frame, spec, "dynamics")
    assert sorted(split.good["dynamics_id"]) == ["ok-1", "ok-2"]
    reasons = {row["dynamics_id"]: json.loads(row["reasons"]) for row in split.bad.to_dict("records")}
    assert reasons["no-last"][0]["reason"] == "lastname is required"
    assert reasons["long"][0]["rule"] == "max_length" and reasons["long"][0]["value"] == "x" * 51
    assert reasons["bad-email"][0]["reason"] == "emailaddress1 is not a valid email address"


def test_marketo_creates_need_an_email_but_updates_by_id_do_not():
    spec = load_entities()["lead"]
    frame = _rows(
        {"op": "create", "dynamics_id": "c1", "email": None, "lastName": "A"},
        {"op": "update", "dynamics_id": "u1", "marketo_id": 5, "email": None, "lastName": "B"},
        {"op": "create", "dynamics_id": "c2", "email": "ok@example.com", "lastName": "C"},
    )
    split = split_invalid(frame, spec, "marketo")
    assert sorted(split.good["dynamics_id"]) == ["c2", "u1"]
    assert list(split.bad["dynamics_id"]) == ["c1"]


def test_an_empty_batch_passes_through():
    split = split_invalid(_rows().iloc[0:0], load_entities()["lead"], "dynamics")
    assert split.good.empty and split.bad.empty


def test_data_docs_of_the_last_run_are_built_per_suite(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAMICS_SYNC_DATA_DOCS", str(tmp_path))
    spec = load_entities()["contact"]
    split_invalid(_rows({"dynamics_id": "x", "email": "bad", "lastName": "Z"}), spec, "dynamics")
    index = tmp_path / "contact_to_dynamics" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert index.exists() and "contact_to_dynamics" in index.read_text()
