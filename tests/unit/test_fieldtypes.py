"""Values crossing between Dynamics and Marketo types keep their meaning and compare equal coming back."""

from __future__ import annotations

import pytest

from dynamics_sync.fieldtypes import incompatibility, payload_value, to_dynamics, to_marketo

LABELS = {1: "Advertisement", 8: "Web"}


@pytest.mark.parametrize(("value", "dynamics_type", "marketo_type", "expected"), [
    (8, "Picklist", "string", "Web"),
    (8, "Picklist", "integer", 8),
    (99, "Picklist", "string", "99"),  # a value the metadata does not know is kept, never dropped
    ("2024-05-01", "DateTime", "date", "2024-05-01"),
    ("2024-05-01T10:30:00Z", "DateTime", "date", "2024-05-01"),
    ("2024-05-01T10:30:00Z", "DateTime", "datetime", "2024-05-01T10:30:00Z"),
    (12.0, "Integer", "integer", 12),
    (1500.5, "Money", "currency", 1500.5),
    (True, "Boolean", "boolean", True),
    (42, "Integer", "string", "42"),
    (None, "Picklist", "string", None),
])
def test_dynamics_values_take_the_marketo_form(value, dynamics_type, marketo_type, expected):
    assert to_marketo(value, dynamics_type, marketo_type, LABELS) == expected


@pytest.mark.parametrize(("value", "dynamics_type", "marketo_type", "expected"), [
    ("Web", "Picklist", "string", 8),
    ("8", "Picklist", "string", 8),
    (8, "Picklist", "integer", 8),
    ("12", "Integer", "string", 12),
    (12.0, "Integer", "integer", 12),
    ("1500.5", "Money", "string", 1500.5),
    ("true", "Boolean", "boolean", True),
    ("Ana", "String", "string", "Ana"),
])
def test_marketo_values_take_the_dynamics_form(value, dynamics_type, marketo_type, expected):
    assert to_dynamics(value, dynamics_type, marketo_type, LABELS) == expected


def test_a_round_trip_is_lossless_for_choices():
    for code in LABELS:
        assert to_dynamics(to_marketo(code, "Picklist", "string", LABELS), "Picklist", "string", LABELS) == code


@pytest.mark.parametrize(("dynamics_type", "marketo_type", "ok"), [
    ("String", "email", True), ("Money", "currency", True), ("Money", "integer", False),
    ("Boolean", "string", False), ("DateTime", "integer", False), ("Lookup", "link", True),
    ("Picklist", "date", False), ("Integer", "float", True), ("Virtual", "string", True),
])
def test_compatibility(dynamics_type, marketo_type, ok):
    assert (incompatibility(dynamics_type, marketo_type) is None) is ok


def test_payloads_send_whole_numbers_to_integer_fields():
    assert payload_value(3.0, "integer") == 3 and isinstance(payload_value(3.0, "integer"), int)
    assert payload_value(3.5, "float") == 3.5
