"""Dynamics metadata turned into this run's fields and rules: drift and access reported, rules merged."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dynamics_sync.entities import ConfigError, load_entities
from dynamics_sync.metadata import baseline, effective, new_problems, problems
from dynamics_sync.validate import rules_for


def _column(**overrides):
    base = {"type": "String", "required": False, "required_level": "None", "max_length": 100, "options": None,
            "readable": True, "creatable": True, "updatable": True, "secured": False}
    return {**base, **overrides}


def _columns(spec, **special):
    return {f.dynamics: special.get(f.dynamics, _column()) for f in spec.fields if f.dynamics not in special
            or special[f.dynamics] is not None}


def _schema(spec, marketo=None, baseline=None, **special):
    """The schema extract hands on: both sides' fields (Marketo: text fields unless given) and the last run's."""
    fields = {f.marketo: {"type": "string", "length": 255, "updateable": True} for f in spec.fields}
    fields.update(marketo or {})
    return {"dynamics": _columns(spec, **special), "marketo": {k: v for k, v in fields.items() if v is not None},
            "marketo_read": True, "baseline": baseline or {}}


def _lead():
    """The lead entity with its text fields only (no lookups or choices), as most cases here need."""
    spec = load_entities()["lead"]
    return replace(spec, fields=tuple(f for f in spec.fields if not f.lookup and f.marketo != "leadSource"))


def test_metadata_sharpens_the_configured_rules():
    spec = _lead()
    schema = _schema(spec, jobtitle=_column(required=True, max_length=20), firstname=_column(max_length=200))
    run_spec = effective(spec, schema)
    assert run_spec.field("title").required and run_spec.field("title").max_length == 20
    assert run_spec.field("firstName").max_length == 50, "the stricter of config and metadata"


def test_missing_secured_and_read_only_columns_are_reported_and_left_out():
    spec = _lead()
    schema = _schema(spec, companyname=None, telephone1=_column(secured=True), jobtitle=_column(updatable=False))
    found = {p.field: p for p in problems(spec, schema)}
    assert found["company"].kind == "schema_drift" and "no column 'companyname'" in found["company"].reason
    assert found["phone"].kind == "inaccessible_field" and "secured" in found["phone"].reason
    assert "not valid for update" in found["title"].reason
    assert {f.marketo for f in effective(spec, schema).fields} == {"email", "firstName", "lastName"}


def test_a_field_missing_in_marketo_is_drift_and_left_out():
    spec = _lead()
    schema = _schema(spec, marketo={"title": None})
    [problem] = problems(spec, schema)
    assert (problem.field, problem.kind) == ("title", "schema_drift") and "Marketo has no field" in problem.reason
    assert "title" not in effective(spec, schema).marketo_fields


def test_an_inaccessible_email_stops_the_run():
    spec = load_entities()["contact"]
    with pytest.raises(ConfigError, match="matched by email"):
        problems(spec, _schema(spec, emailaddress1=_column(secured=True)))


def test_a_column_whose_type_changed_since_the_last_run_is_drift_not_a_crash():
    spec = _lead()
    types = {f.dynamics: "String" for f in spec.fields}
    schema = _schema(spec, baseline={"types": types}, jobtitle=_column(type="Picklist", max_length=None,
                                                                        options=[1, 2]))
    [problem] = problems(spec, schema)
    assert (problem.field, problem.kind) == ("title", "schema_drift") and "not String as before" in problem.reason
    assert baseline(spec, schema)["types"]["jobtitle"] == "String", "stays flagged until the config changes"


def test_types_that_cannot_be_mapped_are_a_config_error_naming_both():
    spec = _lead()
    untyped = replace(spec, fields=tuple(replace(f, max_length=None) for f in spec.fields))
    with pytest.raises(ConfigError, match=r"title <- jobtitle: Dynamics Boolean cannot be mapped to Marketo string"):
        problems(untyped, _schema(untyped, jobtitle=_column(type="Boolean", max_length=None)))
    with pytest.raises(ConfigError, match="config gives a text length"):
        problems(spec, _schema(spec, jobtitle=_column(type="Integer", max_length=None)))


def test_a_choice_into_a_text_field_is_validated_and_carried_by_its_label():
    spec = load_entities()["lead"]
    source = _column(type="Picklist", max_length=None, options=[1, 8], labels=[[1, "Advertisement"], [8, "Web"]])
    run_spec = effective(spec, _schema(spec, leadsourcecode=source))
    [rule] = [r for r in rules_for(run_spec, "dynamics") if r.kind == "in_set"]
    assert (rule.column, rule.allowed) == ("leadSource", ("Advertisement", "Web"))
    assert run_spec.to_dynamics({"leadSource": "Web"}) == {"leadsourcecode": 8}


def test_each_problem_is_logged_once_until_it_changes():
    spec = _lead()
    schema = _schema(spec, telephone1=_column(secured=True))
    assert [p.field for p in new_problems(spec, schema)] == ["phone"]
    again = {**schema, "baseline": baseline(spec, schema)}
    assert new_problems(spec, again) == [], "already reported by the last run"
    assert [p.field for p in problems(spec, again)] == ["phone"], "still left out"
