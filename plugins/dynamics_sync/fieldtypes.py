"""Field types on both sides: which Dynamics and Marketo types may be mapped, and how values cross.

Values travel in Marketo's form everywhere inside the sync (frames, snapshots, activity_log): a choice
column reads as its label when the Marketo field is text, a date-only column as YYYY-MM-DD, a lookup as
the id Marketo knows the target by. Converting once, at the edges, keeps the three-way merge a plain
comparison, so a value the sync wrote comes back equal and is recognised as an echo.

Adobe does not document the native sync's type rules (sync-semantics.md §5); the table below is the
conservative one: a mapping that could lose or garble data (a decimal into an integer, text into a
number, a choice into a date) is a config error, named with both types.
"""

from __future__ import annotations

import math
from typing import Any

TEXT = frozenset({"string", "text", "email", "phone", "url"})
NUMBER = frozenset({"integer", "float", "currency", "score", "percent"})
PERSON_REF = frozenset({"integer", "link", "reference"})
WHOLE = PERSON_REF | {"score"}  # Marketo types whose values are whole numbers

# Dynamics AttributeType -> Marketo dataTypes it may be mapped to.
COMPATIBLE: dict[str, frozenset[str]] = {
    "String": TEXT,
    "Memo": TEXT,
    "Integer": NUMBER | TEXT,
    "BigInt": NUMBER | TEXT,
    "Money": frozenset({"float", "currency"}) | TEXT,
    "Decimal": frozenset({"float", "currency"}) | TEXT,
    "Double": frozenset({"float", "currency"}) | TEXT,
    "Boolean": frozenset({"boolean"}),
    "DateTime": frozenset({"date", "datetime"}),
    "Picklist": TEXT | frozenset({"integer"}),
    "State": TEXT | frozenset({"integer"}),
    "Status": TEXT | frozenset({"integer"}),
    "Uniqueidentifier": TEXT,
    "Lookup": TEXT | PERSON_REF,
    "Owner": TEXT | PERSON_REF,
    "Customer": TEXT | PERSON_REF,
}
CHOICE = frozenset({"Picklist", "State", "Status"})
TEXT_TYPES = frozenset({"String", "Memo"})


def incompatibility(dynamics_type: str | None, marketo_type: str | None) -> str | None:
    """Why these two types cannot be mapped onto each other, or None when they can (or one is unknown)."""
    if not dynamics_type or not marketo_type or dynamics_type not in COMPATIBLE:
        return None
    if marketo_type in COMPATIBLE[dynamics_type]:
        return None
    allowed = ", ".join(sorted(COMPATIBLE[dynamics_type]))
    return f"Dynamics {dynamics_type} cannot be mapped to Marketo {marketo_type} (allowed: {allowed})"


def _number(value: Any, marketo_type: str | None) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    if marketo_type in WHOLE and float(value).is_integer():
        return int(value)
    return value


def to_marketo(value: Any, dynamics_type: str | None, marketo_type: str | None,
               labels: dict[Any, str] | None = None) -> Any:
    """A Dynamics value in the form its Marketo field holds."""
    if value is None:
        return None
    if dynamics_type in CHOICE and marketo_type in TEXT and labels:
        return labels.get(int(value), str(value)) if _is_int(value) else value
    if dynamics_type == "DateTime" and marketo_type == "date" and isinstance(value, str):
        return value[:10]
    if marketo_type in TEXT and not isinstance(value, str):
        return str(value)
    return _number(value, marketo_type)


def to_dynamics(value: Any, dynamics_type: str | None, marketo_type: str | None,
                labels: dict[Any, str] | None = None) -> Any:
    """A Marketo value (as the sync holds it) in the form the Dynamics column takes."""
    if value is None:
        return None
    if dynamics_type in CHOICE and labels and isinstance(value, str):
        by_label = {label: code for code, label in labels.items()}
        return by_label.get(value, int(value) if value.isdigit() else value)
    if dynamics_type in ("Integer", "BigInt") and _is_int(value):
        return int(value)
    if dynamics_type in ("Money", "Decimal", "Double") and isinstance(value, int | float | str):
        try:
            return float(value)
        except ValueError:
            return value
    if dynamics_type == "Boolean" and isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return value


def payload_value(value: Any, marketo_type: str | None) -> Any:
    """A value as Marketo's JSON expects it (staged frames turn integers with gaps into floats)."""
    return _number(value, marketo_type)


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, str) and value.lstrip("-").isdigit()
