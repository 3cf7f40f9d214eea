"""The three-way merge: what to write where for one linked record, decided field by field.

Each side's current values are compared with that side's snapshot (the values last synced there):
- changed on one side only: the value flows to the other side;
- changed on both sides to the same value: nothing to write, both snapshots take the value;
- changed on both sides to different values: a collision, and the field's authority wins (the entity's
  unless the field names its own);
- changed on neither: nothing.
A side that reported no change for the record is taken to be at its snapshot. The sync's own writes
come back next cycle equal to the snapshot they were recorded in, so they compare as "unchanged": that is
the echo rule, and it needs no hint about who made the change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MARKETO = "marketo"
DYNAMICS = "dynamics"


@dataclass(frozen=True)
class Collision:
    field: str
    marketo_value: Any
    dynamics_value: Any
    winner: str
    previous_value: Any = None

    @property
    def winning_value(self) -> Any:
        return self.marketo_value if self.winner == MARKETO else self.dynamics_value


@dataclass
class MergeResult:
    """Writes for each side (Marketo field names) and the snapshot refresh needing no write."""

    to_marketo: dict[str, Any] = field(default_factory=dict)
    to_dynamics: dict[str, Any] = field(default_factory=dict)
    refresh: dict[str, Any] = field(default_factory=dict)
    collisions: list[Collision] = field(default_factory=list)

    @property
    def is_echo(self) -> bool:
        """Something was reported changed, yet nothing differs from the snapshots."""
        return not (self.to_marketo or self.to_dynamics or self.refresh or self.collisions)


def normalize(value: Any) -> Any:
    """Compare values the way both APIs store them: empty string and null are the same, text is trimmed."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas means missing
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def same(a: Any, b: Any) -> bool:
    a, b = normalize(a), normalize(b)
    if a is None or b is None:
        return a is b
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    return a == b


def merge(
    fields: list[str],
    *,
    authority: str,
    field_authority: dict[str, str] | None = None,
    two_way: bool,
    dynamics_current: dict[str, Any] | None,
    marketo_current: dict[str, Any] | None,
    dynamics_snapshot: dict[str, Any],
    marketo_snapshot: dict[str, Any],
) -> MergeResult:
    """Merge one linked record. `*_current` is None when that side reported no change for it.

    For a one-way entity (Dynamics to Marketo), Marketo edits never flow back and Dynamics always wins.
    """
    field_authority = field_authority or {}
    for value in (authority, *field_authority.values()):
        if value not in (MARKETO, DYNAMICS):
            raise ValueError(f"authority must be {MARKETO!r} or {DYNAMICS!r}, not {value!r}")
    if not two_way:
        marketo_current, authority, field_authority = None, DYNAMICS, {}
    result = MergeResult()
    for name in fields:
        d_changed = dynamics_current is not None and name in dynamics_current and not same(
            dynamics_current[name], dynamics_snapshot.get(name)
        )
        m_changed = marketo_current is not None and name in marketo_current and not same(
            marketo_current[name], marketo_snapshot.get(name)
        )
        if d_changed and m_changed:
            d_value, m_value = dynamics_current[name], marketo_current[name]
            if same(d_value, m_value):
                result.refresh[name] = normalize(d_value)
                continue
            winner = field_authority.get(name, authority)
            collision = Collision(
                field=name,
                marketo_value=normalize(m_value),
                dynamics_value=normalize(d_value),
                winner=winner,
                previous_value=normalize(dynamics_snapshot.get(name)),
            )
            result.collisions.append(collision)
            target = result.to_dynamics if winner == MARKETO else result.to_marketo
            target[name] = collision.winning_value
        elif d_changed:
            result.to_marketo[name] = normalize(dynamics_current[name])
        elif m_changed:
            result.to_dynamics[name] = normalize(marketo_current[name])
    return result


def initial_values(
    fields: list[str], dynamics_values: dict[str, Any], marketo_values: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The initial copy of one Dynamics record onto an existing (or new) Marketo person.

    Dynamics is the source of the initial copy, but a null in Dynamics never blanks a value Marketo
    already holds: nothing is lost. Returns (writes to Marketo, the Marketo snapshot after them).
    """
    marketo_values = marketo_values or {}
    writes: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name in fields:
        d_value = normalize(dynamics_values.get(name))
        m_value = normalize(marketo_values.get(name))
        if d_value is None:
            after[name] = m_value
        else:
            after[name] = d_value
            if not same(d_value, m_value):
                writes[name] = d_value
    return writes, after
