"""Entity specs loaded from include/config/entities.yaml.

Entities and their fields are configuration, never code: adding a field or an entity is a YAML change. The
loader checks the whole file up front and names every problem it finds, so a malformed config fails the
first task of a run with a message a data engineer can act on, instead of a KeyError deep in a load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DIRECTIONS = ("both", "dynamics_to_marketo")
AUTHORITIES = ("marketo", "dynamics")
FORMATS = ("email",)
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "include" / "config" / "entities.yaml"


class ConfigError(ValueError):
    """The entity configuration is malformed; the message lists every problem found."""


@dataclass(frozen=True)
class FieldMap:
    """One synced field: its Marketo name, its Dynamics column and the Dynamics rules it must meet."""

    marketo: str
    dynamics: str
    required: bool = False
    max_length: int | None = None
    format: str | None = None
    collision_authority: str | None = None  # overrides the entity's for this field
    options: tuple[Any, ...] | None = None  # allowed values (Dynamics picklist), from metadata


@dataclass(frozen=True)
class EntitySpec:
    """How one Dynamics entity maps onto Marketo people and which side wins a collision."""

    name: str
    direction: str
    collision_authority: str
    logical_name: str
    entity_set: str
    key: str
    link_field: str | None  # persons: the Marketo field holding the Dynamics id
    type_value: str | None  # persons: the value of msdynType
    fields: tuple[FieldMap, ...] = field(default_factory=tuple)
    deleted_field: str = "msdynIsDeleted"
    # "leads" for people; otherwise a Marketo object (companies, opportunities, salespersons,
    # customobjects/<name>) upserted by `key_field`, which holds the Dynamics id.
    marketo_object: str = "leads"
    key_field: str | None = None

    @property
    def is_person(self) -> bool:
        return self.marketo_object == "leads"

    @property
    def two_way(self) -> bool:
        return self.direction == "both"

    @property
    def field_authority(self) -> dict[str, str]:
        """Fields whose collisions are decided by another side than the entity's authority."""
        return {f.marketo: f.collision_authority for f in self.fields if f.collision_authority}

    @property
    def marketo_fields(self) -> list[str]:
        return [f.marketo for f in self.fields]

    @property
    def dynamics_columns(self) -> list[str]:
        return [f.dynamics for f in self.fields]

    def field(self, marketo_name: str) -> FieldMap:
        for f in self.fields:
            if f.marketo == marketo_name:
                return f
        raise KeyError(marketo_name)

    def to_marketo(self, dynamics_row: dict[str, Any]) -> dict[str, Any]:
        """Rename a Dynamics row's mapped columns to Marketo field names."""
        return {f.marketo: dynamics_row.get(f.dynamics) for f in self.fields}

    def to_dynamics(self, marketo_values: dict[str, Any]) -> dict[str, Any]:
        """Rename Marketo field names to Dynamics columns (only the names present)."""
        return {self.field(name).dynamics: value for name, value in marketo_values.items()}


def config_path() -> Path:
    return Path(os.environ.get("DYNAMICS_SYNC_CONFIG", DEFAULT_CONFIG))


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"entity config not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"entity config {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("entities"), dict) or not raw["entities"]:
        raise ConfigError(f"entity config {path} must have a non-empty 'entities' mapping")
    return raw


def entity_names(path: Path | None = None) -> list[str]:
    """The configured entity names, all a DAG file needs at parse time.

    The full check runs in each run's tasks (load_entities), so a semantic mistake in the config fails a
    task, red in the UI with every problem named, instead of silently removing the DAG.
    """
    return [str(name) for name in _read(path or config_path())["entities"]]


def load_entities(path: Path | None = None) -> dict[str, EntitySpec]:
    """Parse and check the entity config; raise ConfigError naming every problem."""
    return _load(Path(path or config_path()))


@cache
def _load(path: Path) -> dict[str, EntitySpec]:
    raw = _read(path)
    problems: list[str] = []
    specs = {}
    for name, body in raw["entities"].items():
        spec = _parse_entity(str(name), body, problems)
        if spec is not None:
            specs[spec.name] = spec
    if problems:
        raise ConfigError(f"entity config {path} has {len(problems)} problem(s): " + "; ".join(problems))
    return specs


def _parse_entity(name: str, body: Any, problems: list[str]) -> EntitySpec | None:
    where = f"entities.{name}"
    if not isinstance(body, dict):
        problems.append(f"{where} must be a mapping")
        return None
    dyn = body.get("dynamics") or {}
    mkto = body.get("marketo") or {}
    direction = body.get("direction", "both")
    authority = body.get("collision_authority", "dynamics")
    if direction not in DIRECTIONS:
        problems.append(f"{where}.direction must be one of {DIRECTIONS}, not {direction!r}")
    if authority not in AUTHORITIES:
        problems.append(f"{where}.collision_authority must be one of {AUTHORITIES}, not {authority!r}")
    for key in ("logical_name", "entity_set", "key"):
        if not isinstance(dyn.get(key), str) or not dyn.get(key):
            problems.append(f"{where}.dynamics.{key} is required")
    marketo_object = str(mkto.get("object") or "leads")
    required_keys = ("link_field", "type_value") if marketo_object == "leads" else ("key_field",)
    for key in required_keys:
        if not isinstance(mkto.get(key), str) or not mkto.get(key):
            problems.append(f"{where}.marketo.{key} is required")
    if marketo_object != "leads" and direction != "dynamics_to_marketo":
        problems.append(f"{where}: Marketo {marketo_object} are synced one way only (direction: dynamics_to_marketo)")
    fields = []
    for i, raw_field in enumerate(body.get("fields") or []):
        parsed = _parse_field(f"{where}.fields[{i}]", raw_field, problems)
        if parsed:
            fields.append(parsed)
    if not fields:
        problems.append(f"{where}.fields must list at least one field")
    if marketo_object == "leads" and "email" not in [f.marketo for f in fields]:
        problems.append(f"{where}.fields must map Marketo 'email' (people are matched by email)")
    for attr in ("marketo", "dynamics"):
        names = [getattr(f, attr) for f in fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"{where}.fields map {attr} name(s) {dupes} more than once")
    if any(p.startswith(where) for p in problems):
        return None
    return EntitySpec(
        name=name,
        direction=direction,
        collision_authority=authority,
        logical_name=dyn["logical_name"],
        entity_set=dyn["entity_set"],
        key=dyn["key"],
        link_field=mkto.get("link_field"),
        type_value=mkto.get("type_value"),
        fields=tuple(fields),
        deleted_field=str(mkto.get("deleted_field") or "msdynIsDeleted"),
        marketo_object=marketo_object,
        key_field=mkto.get("key_field"),
    )


def _parse_field(where: str, raw: Any, problems: list[str]) -> FieldMap | None:
    if not isinstance(raw, dict) or not raw.get("marketo") or not raw.get("dynamics"):
        problems.append(f"{where} needs both 'marketo' and 'dynamics' names")
        return None
    unknown = set(raw) - {"marketo", "dynamics", "required", "max_length", "format", "collision_authority"}
    if unknown:
        problems.append(f"{where} has unknown key(s) {sorted(unknown)}")
    max_length = raw.get("max_length")
    if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
        problems.append(f"{where}.max_length must be a positive integer")
    authority = raw.get("collision_authority")
    if authority is not None and authority not in AUTHORITIES:
        problems.append(f"{where}.collision_authority must be one of {AUTHORITIES}, not {authority!r}")
    fmt = raw.get("format")
    if fmt is not None and fmt not in FORMATS:
        problems.append(f"{where}.format must be one of {FORMATS}")
    return FieldMap(
        marketo=str(raw["marketo"]),
        dynamics=str(raw["dynamics"]),
        required=bool(raw.get("required", False)),
        max_length=max_length if isinstance(max_length, int) else None,
        format=fmt,
        collision_authority=authority if authority in AUTHORITIES else None,
    )
