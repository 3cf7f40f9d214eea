"""The entity config: the shipped file loads, and a malformed one fails with every problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamics_sync.entities import ConfigError, load_entities


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
    path = tmp_path / "entities.yaml"
    path.write_text(
        "entities:\n"
        "  lead:\n"
        "    direction: sideways\n"
        "    collision_authority: whoever\n"
        "    dynamics: {logical_name: lead, entity_set: leads}\n"
        "    marketo: {link_field: msdynLeadId, type_value: Lead}\n"
        "    fields:\n"
        "      - {marketo: firstName}\n"
        "      - {marketo: lastName, dynamics: lastname, max_length: -3}\n"
    )
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
