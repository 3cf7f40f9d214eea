"""Dynamics metadata turned into this run's fields and rules: drift and access reported, rules merged."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dynamics_sync.entities import ConfigError, load_entities
from dynamics_sync.metadata import effective, problems
from dynamics_sync.validate import rules_for


def _column(**overrides):
    base = {"type": "String", "required": False, "required_level": "None", "max_length": 100, "options": None,
            "readable": True, "creatable": True, "updatable": True, "secured": False}
    return {**base, **overrides}


def _columns(spec, **special):
    return {f.dynamics: special.get(f.dynamics, _column()) for f in spec.fields if f.dynamics not in special
            or special[f.dynamics] is not None}


def test_metadata_sharpens_the_configured_rules():
    spec = load_entities()["lead"]
    columns = _columns(spec, jobtitle=_column(required=True, max_length=20), firstname=_column(max_length=200))
    run_spec = effective(spec, columns)
    assert run_spec.field("title").required and run_spec.field("title").max_length == 20
    assert run_spec.field("firstName").max_length == 50, "the stricter of config and metadata"


def test_missing_secured_and_read_only_columns_are_reported_and_left_out():
    spec = load_entities()["lead"]
    columns = _columns(spec, companyname=None, telephone1=_column(secured=True),
                       jobtitle=_column(updatable=False))
    found = {p.field: p for p in problems(spec, columns)}
    assert found["company"].kind == "schema_drift" and "no column 'companyname'" in found["company"].reason
    assert found["phone"].kind == "inaccessible_field" and "secured" in found["phone"].reason
    assert "not valid for update" in found["title"].reason
    assert {f.marketo for f in effective(spec, columns).fields} == {"email", "firstName", "lastName"}


def test_an_inaccessible_email_stops_the_run():
    spec = load_entities()["contact"]
    with pytest.raises(ConfigError, match="matched by email"):
        problems(spec, _columns(spec, emailaddress1=_column(secured=True)))


def test_picklist_values_become_a_rule_and_a_text_field_turned_picklist_is_drift():
    spec = load_entities()["lead"]
    columns = _columns(spec, jobtitle=_column(type="Picklist", max_length=None, options=[1, 2]))
    assert [p.kind for p in problems(spec, columns)] == ["schema_drift"], "configured as text with a length"
    untyped = replace(spec, fields=tuple(replace(f, max_length=None) if f.marketo == "title" else f
                                         for f in spec.fields))
    [rule] = [r for r in rules_for(effective(untyped, columns), "dynamics") if r.kind == "in_set"]
    assert (rule.column, rule.allowed) == ("title", (1, 2))
