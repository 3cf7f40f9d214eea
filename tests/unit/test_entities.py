"""The entity config: the shipped file loads, and a malformed one fails with every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamics_sync.entities import ConfigError, entity_order, load_entities, load_priority


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "entities.yaml"
    path.write_text(text)
    return path


def test_shipped_config_maps_the_native_default_person_fields():
    entities = load_entities()
    lead, contact = entities["lead"], entities["contact"]
    expected = {"email": "emailaddress1", "firstName": "firstname", "lastName": "lastname",
                "phone": "telephone1", "title": "jobtitle"}
    for spec in (lead, contact):
        assert expected.items() <= {f.marketo: f.dynamics for f in spec.fields}.items()
    assert lead.field("company").dynamics == "companyname"
    assert (lead.collision_authority, contact.collision_authority) == ("marketo", "dynamics")
    assert lead.two_way and contact.two_way


def test_malformed_config_names_every_problem(tmp_path: Path):
    path = _write(tmp_path, (
        "entities:\n"
        "  lead:\n"
        "    direction: sideways\n"
        "    collision_authority: whoever\n"
        "    dynamics: {logical_name: lead, entity_set: leads}\n"
        "    marketo: {link_field: msdynLeadId, type_value: Lead}\n"
        "    fields:\n"
        "      - {marketo: firstName}\n"
        "      - {marketo: lastName, dynamics: lastname, max_length: -3}\n"
    ))
    with pytest.raises(ConfigError) as err:
        load_entities(path)
    message = str(err.value)
    for problem in ("direction", "collision_authority", "dynamics.key", "needs both", "max_length",
                    "must map Marketo 'email'"):
        assert problem in message


@pytest.mark.parametrize("text", ["", "entities: []", "entities: {lead: [1, 2]", "just text"])
def test_unusable_files_are_config_errors(tmp_path: Path, text: str):
    path = tmp_path / "entities.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_entities(path)


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_entities(tmp_path / "nope.yaml")


def test_every_native_entity_is_configured_with_its_direction():
    entities = load_entities()
    objects = {name: spec.marketo_object for name, spec in entities.items() if not spec.is_person}
    assert objects == {"user": "salespersons", "team": "customobjects/msdynTeam_c", "account": "companies",
                       "opportunity": "opportunities", "opportunity_role": "opportunities/roles",
                       "project": "customobjects/msdynProject_c"}
    assert all(not spec.two_way for spec in entities.values() if not spec.is_person), "one way only"
    contact = entities["contact"]
    assert contact.field("externalCompanyId").lookup == "account" and contact.field("externalCompanyId").one_way
    assert "externalCompanyId" not in contact.two_way_fields, "a lookup never flows back to Dynamics"
    assert contact.converted_from == ("lead", "originatingleadid")


def test_entities_load_after_what_they_point_at():
    order = entity_order()
    assert order["user"] == []
    assert set(order["contact"]) == {"account", "user", "lead"}, "lookups and the lead it may be qualified from"
    assert set(order["opportunity_role"]) == {"contact", "opportunity"}, "lookups and depends_on"


def test_a_full_rate_window_serves_first_the_loads_most_entities_wait_on():
    """Users (everything points at them) first; contacts, which projects and roles wait on, before
    opportunities, which only roles wait on; nothing waits on teams, roles or projects."""
    priority = {name: load_priority(name) for name in entity_order()}
    assert priority["user"] > priority["account"] > priority["lead"] > priority["contact"] > priority["opportunity"]
    assert priority["team"] == priority["opportunity_role"] == priority["project"] == 0


def test_lookups_must_name_configured_entities_and_form_no_cycle(tmp_path: Path):
    path = _write(tmp_path, (
        "entities:\n"
        "  a_really_long_custom_entity_name_x:\n"
        "    direction: dynamics_to_marketo\n"
        "    dynamics: {logical_name: new_a, entity_set: new_as, key: new_aid}\n"
        "    marketo: {object: customobjects/a_c, key_field: aId}\n"
        "    fields:\n"
        "      - {marketo: owner, dynamics: ownerid}\n"
        "  b:\n"
        "    direction: dynamics_to_marketo\n"
        "    dynamics: {logical_name: new_b, entity_set: new_bs, key: new_bid}\n"
        "    marketo: {object: customobjects/b_c, key_field: bId}\n"
        "    fields:\n"
        "      - {marketo: a, dynamics: new_aid, lookup: nobody}\n"
        "  c:\n"
        "    direction: dynamics_to_marketo\n"
        "    dynamics: {logical_name: new_c, entity_set: new_cs, key: new_cid}\n"
        "    marketo: {object: customobjects/c_c, key_field: cId}\n"
        "    fields:\n"
        "      - {marketo: c, dynamics: new_c, through: {entity_set: x}}\n"
    ))
    with pytest.raises(ConfigError) as err:
        load_entities(path)
    message = str(err.value)
    for problem in ("limited to 33 characters", "looks up 'nobody'", "through needs entity_set, key and column"):
        assert problem in message


def test_a_dependency_cycle_is_named(tmp_path: Path):
    body = ("    direction: dynamics_to_marketo\n"
            "    dynamics: {{logical_name: new_{0}, entity_set: new_{0}s, key: new_{0}id}}\n"
            "    marketo: {{object: customobjects/{0}_c, key_field: id{0}}}\n"
            "    fields:\n"
            "      - {{marketo: other, dynamics: new_other, lookup: {1}}}\n")
    path = _write(tmp_path, "entities:\n  x:\n" + body.format("x", "y") + "  y:\n" + body.format("y", "x"))
    with pytest.raises(ConfigError, match="dependency cycle"):
        load_entities(path)
    order = entity_order(path)
    assert not (order["x"] and order["y"]), "the DAG still parses: the cyclic edges are dropped"
