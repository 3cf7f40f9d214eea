"""Entity specs loaded from include/config/entities.yaml.

Entities and their fields are configuration, never code: adding a field or an entity is a YAML change. The
loader checks the whole file up front and names every problem it finds, so a malformed config fails the
first task of a run with a message a data engineer can act on, instead of a KeyError deep in a load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import yaml

from dynamics_sync import fieldtypes

DIRECTIONS = ("both", "dynamics_to_marketo")
AUTHORITIES = ("marketo", "dynamics")
FORMATS = ("email",)
# Marketo's limit on a synced entity's name, as in the native sync's custom entity sync.
MAX_ENTITY_NAME = 33
FIELD_KEYS = {"marketo", "dynamics", "required", "max_length", "format", "collision_authority", "direction",
              "lookup", "through", "type"}
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "include" / "config" / "entities.yaml"


class ConfigError(ValueError):
    """The entity configuration is malformed; the message lists every problem found."""


@dataclass(frozen=True)
class Through:
    """The middle row of a two-level link: `column` of the `entity_set` row the field's lookup names."""

    entity_set: str
    key: str
    column: str


@dataclass(frozen=True)
class FieldMap:
    """One synced field: its Marketo name, its Dynamics column and the Dynamics rules it must meet."""

    marketo: str
    dynamics: str
    required: bool = False
    max_length: int | None = None
    format: str | None = None
    collision_authority: str | None = None  # overrides the entity's for this field
    options: tuple[Any, ...] | None = None  # allowed values in Marketo form (Dynamics choices), from metadata
    one_way: bool = False  # Dynamics to Marketo only, even on a two-way entity (always so for lookups)
    lookup: str | None = None  # the configured entity a Dynamics lookup column points at
    through: Through | None = None  # a second hop: the looked-up row's own lookup column
    declared_type: str | None = None  # the Dynamics AttributeType the config expects (drift check)
    dynamics_type: str | None = None  # from metadata, at run time
    marketo_type: str | None = None  # from Marketo describe, at run time
    labels: tuple[tuple[Any, str], ...] | None = None  # Dynamics choice value -> label, from metadata
    marketo_required: bool = False  # part of the Marketo object's dedupe key, from Marketo describe

    @property
    def read_column(self) -> str:
        """The Web API property to $select: lookups read as _<name>_value."""
        return f"_{self.dynamics}_value" if self.lookup else self.dynamics


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
    sync_filter: str | None = None  # a Dynamics Two Options column; an explicit No keeps the record out
    converted_from: tuple[str, str] | None = None  # (entity, lookup column): lead qualification
    depends_on: tuple[str, ...] = ()  # entities whose load must come first, besides lookup targets
    constants: tuple[tuple[str, Any], ...] = ()  # Marketo values every record of the object carries

    @property
    def dependencies(self) -> set[str]:
        """Entities synced before this one, so what it points at exists in Marketo when it loads."""
        deps = {f.lookup for f in self.fields if f.lookup} | set(self.depends_on)
        if self.converted_from:
            deps.add(self.converted_from[0])
        deps.discard(self.name)
        return deps

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

    @cached_property
    def marketo_types(self) -> dict[str, str | None]:
        """Each field's Marketo type (set from describe at run time), looked up once per spec, not per row."""
        return {f.marketo: f.marketo_type for f in self.fields}

    @property
    def two_way_fields(self) -> list[str]:
        """Fields whose Marketo changes are written back to Dynamics."""
        return [f.marketo for f in self.fields if self.two_way and not f.one_way]

    @property
    def dynamics_columns(self) -> list[str]:
        return [f.dynamics for f in self.fields]

    def field(self, marketo_name: str) -> FieldMap:
        for f in self.fields:
            if f.marketo == marketo_name:
                return f
        raise KeyError(marketo_name)

    def to_dynamics(self, marketo_values: dict[str, Any]) -> dict[str, Any]:
        """Marketo field names and values as the Dynamics columns take them (only the names present)."""
        body = {}
        for name, value in marketo_values.items():
            f = self.field(name)
            body[f.dynamics] = fieldtypes.to_dynamics(value, f.dynamics_type, f.marketo_type, dict(f.labels or ()))
        return body


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


def entity_order(path: Path | None = None) -> dict[str, list[str]]:
    """Each configured entity and the entities whose groups must finish first (parse time, cheap).

    Read from the raw file like entity_names: lookup targets, the entity a record is converted from, and
    `depends_on`. Edges that would form a cycle are left out here; load_entities reports the cycle.
    """
    raw = _read(path or config_path())["entities"]
    order = {name: [*read, *[d for d in converted if d not in read]]
             for name, (read, converted) in _edges(raw).items()}
    return {name: [d for d in deps if not _reaches(order, d, name)] for name, deps in order.items()}


# Sync Person to Microsoft is a person waiting for an answer: its calls go before any copy's.
INTERACTIVE_PRIORITY = 1_000


def load_priority(name: str, path: Path | None = None) -> int:
    """How many entities wait, directly or not, on this entity's load (0: none): its Marketo calls' place in
    a full window.

    In an initial copy the loads share Marketo's rate window while later entities wait on some of them
    (a contact's extract on its account's load, its transform on the leads'). Serving first the loads that
    the most entities wait on lets those others prepare while the rest of the loads keep the window busy.
    Counting dependents, not levels, also orders loads on one level: contacts (which projects and
    opportunity roles wait on) go before opportunities (only roles), so projects prepare while the
    opportunities still use the window instead of after it.
    """
    order = entity_order(path)
    waiting_on: dict[str, set[str]] = {n: set() for n in order}
    for entity, deps in order.items():
        for dep in deps:
            waiting_on[dep].add(entity)

    def dependents(entity: str) -> set[str]:
        found = set(waiting_on[entity])
        for other in waiting_on[entity]:
            found |= dependents(other)
        return found

    return len(dependents(name)) if name in order else 0


def extract_order(path: Path | None = None) -> dict[str, list[str]]:
    """Of entity_order's edges, those an extract that resolves lookups needs: lookup targets, `depends_on`.

    Replay's and reconcile's extracts always resolve lookups themselves (see sync_extract_order for the
    copy and the cycle); the entity a record is converted from (a contact's lead) is needed only from
    transform on.
    """
    raw = _read(path or config_path())["entities"]
    edges = _edges(raw)
    return {name: [d for d in deps if d in edges[name][0]] for name, deps in entity_order(path).items()}


def sync_extract_order(path: Path | None = None) -> dict[str, list[str]]:
    """What the extracts of the initial copy and the cycle wait for: nothing, except where a transform
    waits for more than its lookups anyway.

    A sync's extract leaves lookups as Dynamics ids for transform to resolve, so every entity reads at
    once and only its transform waits for what it points at (a copy reads the opportunity roles while the
    contacts load). An entity converted from another (a contact from its lead) transforms only after that
    one loads, which ends after its lookups' loads: resolving in transform would lengthen that wait, so its
    extract waits for its lookups and resolves them while the lead still loads (steps.extract_step).
    """
    order, reads = entity_order(path), extract_order(path)
    return {name: reads[name] if set(deps) - set(reads[name]) else [] for name, deps in order.items()}


def _edges(raw: dict[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    """Per entity: (entities its extract reads links of, entities its transform reads links of)."""
    edges: dict[str, tuple[list[str], list[str]]] = {}
    for name, body in raw.items():
        body = body if isinstance(body, dict) else {}
        read = [f.get("lookup") for f in body.get("fields") or [] if isinstance(f, dict) and f.get("lookup")]
        read += list(body.get("depends_on") or [])
        converted = body.get("converted_from")
        later = [converted["entity"]] if isinstance(converted, dict) and converted.get("entity") else []

        def known(deps: list[Any], name: str = str(name)) -> list[str]:
            return [d for d in dict.fromkeys(map(str, deps)) if d in raw and d != name]

        edges[str(name)] = (known(read), known(later))
    return edges


def _reaches(order: dict[str, list[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(order.get(node, []))
    return False


def load_entities(path: Path | None = None) -> dict[str, EntitySpec]:
    """Parse and check the entity config; raise ConfigError naming every problem."""
    return _load(Path(path or config_path()))


@cache
def _load(path: Path) -> dict[str, EntitySpec]:
    raw = _read(path)
    problems: list[str] = []
    specs = {}
    for name, body in raw["entities"].items():
        try:
            spec = _parse_entity(str(name), body, problems)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            # A shape no check above foresaw: still a config error naming the entity, never a crash.
            problems.append(f"entities.{name} is malformed ({type(exc).__name__}: {exc})")
            spec = None
        if spec is not None:
            specs[spec.name] = spec
    _check_references(specs, problems)
    if problems:
        raise ConfigError(f"entity config {path} has {len(problems)} problem(s): " + "; ".join(problems))
    return specs


def _check_references(specs: dict[str, EntitySpec], problems: list[str]) -> None:
    """Lookups, conversions and dependencies name configured entities, and form no cycle."""
    for spec in specs.values():
        for f in spec.fields:
            if f.lookup and f.lookup not in specs:
                problems.append(f"entities.{spec.name}: field {f.marketo} looks up {f.lookup!r}, which is not a "
                                f"configured entity ({sorted(specs)})")
        for dep in spec.dependencies:
            if dep not in specs:
                problems.append(f"entities.{spec.name} depends on {dep!r}, which is not a configured entity")
    order = {s.name: sorted(d for d in s.dependencies if d in specs) for s in specs.values()}
    for name, deps in order.items():
        if any(_reaches(order, d, name) for d in deps):
            problems.append(f"entities.{name} is part of a dependency cycle (lookups / depends_on / converted_from)")


def _parse_entity(name: str, body: Any, problems: list[str]) -> EntitySpec | None:
    where = f"entities.{name}"
    if not isinstance(body, dict):
        problems.append(f"{where} must be a mapping")
        return None
    dyn = body.get("dynamics") or {}
    mkto = body.get("marketo") or {}
    for key, value in (("dynamics", dyn), ("marketo", mkto)):
        if not isinstance(value, dict):
            problems.append(f"{where}.{key} must be a mapping")
            return None
    if not isinstance(body.get("fields") or [], list):
        problems.append(f"{where}.fields must be a list of field mappings")
        return None
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
    if len(name) > MAX_ENTITY_NAME:
        problems.append(f"{where}: entity names are limited to {MAX_ENTITY_NAME} characters (Marketo's limit)")
    unknown = set(body) - {"direction", "collision_authority", "dynamics", "marketo", "fields", "sync_filter",
                           "converted_from", "depends_on"}
    if unknown:
        problems.append(f"{where} has unknown key(s) {sorted(unknown)}")
    sync_filter = body.get("sync_filter")
    if sync_filter is not None and (not isinstance(sync_filter, str) or not sync_filter):
        problems.append(f"{where}.sync_filter must name a Dynamics Two Options column, like new_synctomkto")
    converted = body.get("converted_from")
    if converted is not None and not (
        isinstance(converted, dict) and converted.get("entity") and converted.get("column")
    ):
        problems.append(f"{where}.converted_from needs 'entity' and 'column' (e.g. lead, originatingleadid)")
    if converted is not None and marketo_object != "leads":
        problems.append(f"{where}.converted_from applies to people only")
    depends_on = body.get("depends_on") or []
    if not isinstance(depends_on, list):
        problems.append(f"{where}.depends_on must be a list of entity names")
    constants = mkto.get("values") or {}
    if not isinstance(constants, dict):
        problems.append(f"{where}.marketo.values must map Marketo field names to values")
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
        sync_filter=sync_filter,
        converted_from=(str(converted["entity"]), str(converted["column"])) if converted else None,
        depends_on=tuple(str(d) for d in depends_on),
        constants=tuple(constants.items()),
    )


def _parse_field(where: str, raw: Any, problems: list[str]) -> FieldMap | None:
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) and raw[k] for k in ("marketo", "dynamics")):
        problems.append(f"{where} needs both 'marketo' and 'dynamics' names")
        return None
    unknown = set(raw) - FIELD_KEYS
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
    direction = raw.get("direction", "both")
    if direction not in DIRECTIONS:
        problems.append(f"{where}.direction must be one of {DIRECTIONS}, not {direction!r}")
    lookup = raw.get("lookup")
    if lookup is not None and (not isinstance(lookup, str) or not lookup):
        problems.append(f"{where}.lookup must name a configured entity")
    through = _parse_through(where, raw.get("through"), problems)
    if through is not None and not lookup:
        problems.append(f"{where}.through needs a lookup (the entity reached through it)")
    return FieldMap(
        marketo=str(raw["marketo"]),
        dynamics=str(raw["dynamics"]),
        required=bool(raw.get("required", False)),
        max_length=max_length if isinstance(max_length, int) else None,
        format=fmt,
        collision_authority=authority if authority in AUTHORITIES else None,
        one_way=direction == "dynamics_to_marketo" or bool(lookup),
        lookup=str(lookup) if lookup else None,
        through=through,
        declared_type=str(raw["type"]) if raw.get("type") else None,
    )


def _parse_through(where: str, raw: Any, problems: list[str]) -> Through | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) for k in ("entity_set", "key", "column")):
        problems.append(f"{where}.through needs entity_set, key and column (the middle row's lookup column)")
        return None
    return Through(raw["entity_set"], raw["key"], raw["column"])
