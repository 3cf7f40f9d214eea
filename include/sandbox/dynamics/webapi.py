"""Dataverse Web API v9.2 handlers: service document, WhoAmI, entity sets, change tracking.

Why: one dispatcher (``WebApi.handle``) serves every ``/api/data/v9.2/...`` request, whether it
arrived over HTTPS or as a part of a ``$batch`` body, so each behaviour is implemented once:

* collections with ``$select/$filter/$orderby/$top/$count`` and ``Prefer: odata.maxpagesize``,
  paged by keyset (the ``$skiptoken`` paging cookie carries the last row's sort values), never OFFSET;
* ``Prefer: odata.track-changes`` (full load, then ``@odata.deltaLink``) and delta reads with
  ``$deletedEntity`` rows, both paged the same way;
* create (POST), upsert/update (PATCH with If-Match / If-None-Match, by id or by a declared alternate
  key such as ``accounts(accountnumber='A-1')``), delete, single-property GET/PUT/DELETE, the
  CreateMultiple/UpdateMultiple/UpsertMultiple bound actions and the BulkDelete action (run at once,
  recorded as a completed ``asyncoperations`` system job);
* ``$expand`` of single-valued navigation properties (with ``$select`` inside);
* actions bound to one row (``ENTITY_ACTIONS``: ``leads(<id>)/Microsoft.Dynamics.CRM.QualifyLead``).

Entity sets come from ``tables.py``; table-specific rules live in ``guards`` (who may write
systemusers/teams, closed leads) and ``qualify``, not here.
"""

from __future__ import annotations

import datetime as dt
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from . import guards, odata_filter, qualify
from . import tables as t
from .batch import BatchProcessor
from .identity import Principal
from .metadata import MetadataApi, csdl, edm_of, parse_expand
from .odata_filter import ColumnRef, FilterError, SqlCompiler
from .protection import Limits, ServiceProtection
from .protocol import (
    MAX_PAGE_SIZE,
    ApiError,
    ApiRequest,
    ApiResponse,
    method_not_allowed,
    property_not_found,
    segment_not_found,
    split_path,
    split_top_level,
)
from .records import RecordCodec, not_found, now_utc, parse_guid
from .store import Store

SUPPORTED_OPTIONS = {"$select", "$filter", "$orderby", "$top", "$count", "$expand", "$skiptoken", "$deltatoken"}
TRACKING_REJECTED = ("$filter", "$orderby", "$top", "$expand")
_QUERY_SAFE = "$,()'=:@/!*;"
_KIND = {
    t.STRING: "string", t.MEMO: "string", t.INTEGER: "number", t.BIGINT: "number", t.PICKLIST: "number",
    t.STATE: "number", t.STATUS: "number", t.BOOLEAN: "bool", t.DATETIME: "datetime",
    t.UNIQUEIDENTIFIER: "guid", t.LOOKUP: "guid", t.OWNER: "guid", "Customer": "guid",
    "Decimal": "number", "Money": "number", "Double": "number",
}
EXPIRED_TOKEN = "Version stamp associated with the client has expired. Please perform a full sync."
MULTIPLE_ACTIONS = {"CreateMultiple", "UpdateMultiple", "UpsertMultiple"}
# Actions bound to one row: (table, action name) → handler(web, request, row id).
ENTITY_ACTIONS: dict[tuple[str, str], Callable[[Any, ApiRequest, str], ApiResponse]] = {
    ("lead", "QualifyLead"): qualify.qualify_lead,
}


@dataclass
class PageCookie:
    """What a ``$skiptoken`` remembers between pages."""

    page: int = 1
    keyset: list[Any] | None = None
    tracking: bool = False
    snapshot: int | None = None
    phase: str | None = None  # delta reads: "rows" then "deleted"
    after: int | None = None  # delta reads: last version returned in the current phase


def _encode_cookie_value(col: t.Column, value: Any) -> str:
    if col.type == t.UNIQUEIDENTIFIER:
        return "{" + str(value).upper() + "}"
    return str(value)


def _decode_cookie_value(col: t.Column, text: str) -> Any:
    if col.type == t.UNIQUEIDENTIFIER:
        return text.strip("{}").lower()
    if _KIND.get(col.type) == "number" and col.type not in ("Decimal", "Money", "Double"):
        return int(text)
    if _KIND.get(col.type) == "bool":
        return int(text)
    if col.type in ("Decimal", "Money", "Double"):
        return float(text)
    return text


def encode_cookie(table: t.Table, cookie: PageCookie, order: list[tuple[str, bool]]) -> str:
    inner = ET.Element("cookie", page=str(cookie.page))
    if cookie.snapshot is not None:
        inner.set("trackingversion", str(cookie.snapshot))
    if cookie.phase is not None:
        inner.set("phase", cookie.phase)
    if cookie.after is not None:
        inner.set("after", str(cookie.after))
    if cookie.keyset is not None:
        for (name, _), value in zip(order, cookie.keyset, strict=True):
            col = table.column(name)
            el = ET.SubElement(inner, name)
            if value is None or col is None:
                el.set("lastnull", "1")
            else:
                el.set("last", _encode_cookie_value(col, value))
    paging = quote(ET.tostring(inner, encoding="unicode"), safe="")
    tracking = "True" if cookie.tracking else "False"
    return f'<cookie pagenumber="{cookie.page + 1}" pagingcookie="{paging}" istracking="{tracking}" />'


def decode_cookie(table: t.Table, text: str, order: list[tuple[str, bool]] | None) -> PageCookie:
    def invalid() -> ApiError:
        return ApiError(400, "0x80060888", "The $skiptoken value is not a valid paging cookie.")

    try:
        outer = ET.fromstring(text)
        inner = ET.fromstring(unquote(outer.get("pagingcookie", "")))
        cookie = PageCookie(
            page=int(outer.get("pagenumber", "2")),
            tracking=outer.get("istracking", "False").lower() == "true",
        )
        if inner.get("trackingversion"):
            cookie.snapshot = int(inner.get("trackingversion", "0"))
        cookie.phase = inner.get("phase")
        if inner.get("after"):
            cookie.after = int(inner.get("after", "0"))
        children = list(inner)
        if children:
            if order is None or [c.tag for c in children] != [name for name, _ in order]:
                raise invalid()
            keyset = []
            for child in children:
                col = table.column(child.tag)
                if col is None:
                    raise invalid()
                keyset.append(None if child.get("lastnull") else _decode_cookie_value(col, child.get("last", "")))
            cookie.keyset = keyset
        return cookie
    except (ET.ParseError, ValueError, TypeError):
        raise invalid() from None


def _format_delta_token(version: int, when: dt.datetime) -> str:
    return f"{version}!{when.strftime('%m/%d/%Y %H:%M:%S')}"


def _parse_delta_token(token: str) -> tuple[int, dt.datetime]:
    version, _, stamp = token.partition("!")
    try:
        when = dt.datetime.strptime(stamp.strip(), "%m/%d/%Y %H:%M:%S").replace(tzinfo=dt.UTC)
        return int(version), when
    except ValueError:
        raise ApiError(400, "0x80040203", f"The delta token '{token}' is not valid.") from None


def _etag_matches(header: str, version: Any) -> bool:
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate.strip('"') == str(version):
            return True
    return False


class WebApi:
    def __init__(self, store: Store, limits: Limits, protection: ServiceProtection, base_url: str,
                 business_unit_id: str, organization_id: str) -> None:
        self.store = store
        self.codec = RecordCodec(store)
        self.limits = limits
        self.api = f"{base_url.rstrip('/')}/api/data/v9.2/"
        self.metadata = MetadataApi(tuple(store.tables.values()), self.api)
        self.business_unit_id = business_unit_id
        self.organization_id = organization_id
        self.batch = BatchProcessor(self.handle, store, protection, self.api)
        self._csdl = csdl(tuple(store.tables.values()))

    # ------------------------------------------------------------------ entry point
    def handle(self, req: ApiRequest) -> ApiResponse:
        try:
            return self._route(req)
        except ApiError as exc:
            return exc.response()

    def entity_url(self, table: t.Table, row_id: str) -> str:
        return f"{self.api}{table.entity_set}({row_id})"

    def _route(self, req: ApiRequest) -> ApiResponse:
        segments = split_path(req.path)
        if not segments:
            if req.method != "GET":
                raise method_not_allowed(req.method)
            return self._service_document()
        name, key = segments[0]
        if name == "$metadata" and len(segments) == 1:
            if req.method != "GET":
                raise method_not_allowed(req.method)
            return ApiResponse(200, {"Content-Type": "application/xml", "OData-Version": "4.0"}, self._csdl)
        if name == "$batch" and len(segments) == 1:
            if req.method != "POST":
                raise method_not_allowed(req.method)
            if req.in_batch:
                raise ApiError(400, "0x80048d19", "A batch request cannot contain another batch request.")
            return self.batch.handle(req)
        if name == "WhoAmI" and len(segments) == 1 and key in (None, ""):
            if req.method != "GET":
                raise ApiError(404, "0x8006088a",
                               f"No HTTP resource was found that matches the request URI '{self.api}WhoAmI'.")
            return ApiResponse.json(200, {
                "@odata.context": f"{self.api}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": self.business_unit_id,
                "UserId": req.caller.user_id,
                "OrganizationId": self.organization_id,
            })
        if name == "EntityDefinitions":
            return self.metadata.handle(req, segments)
        if name == "BulkDelete" and len(segments) == 1 and key is None:
            if req.method != "POST":
                raise method_not_allowed(req.method)
            return self._bulk_delete(req)
        table = self.codec.by_set.get(name)
        if table is None:
            raise segment_not_found(name)
        if key is None:
            if len(segments) == 1:
                if req.method == "GET":
                    return self._list(req, table)
                if req.method == "POST":
                    return self._create(req, table)
                raise method_not_allowed(req.method)
            action = segments[1][0]
            if len(segments) == 2 and action == "$count":
                if req.method != "GET":
                    raise method_not_allowed(req.method)
                return self._count(req, table)
            if len(segments) == 2 and action.startswith("Microsoft.Dynamics.CRM.") and \
                    action.split(".")[-1] in MULTIPLE_ACTIONS:
                if req.method != "POST":
                    raise method_not_allowed(req.method)
                return self._multiple(req, table, action.split(".")[-1])
            raise segment_not_found(action)
        row_id, alt = self._locate(table, key)
        if len(segments) == 1 and req.method == "PATCH":
            return self._patch(req, table, row_id, alt)
        if row_id is None:
            raise self._alt_not_found(table)
        if len(segments) == 1:
            if req.method == "GET":
                return self._get(req, table, row_id)
            if req.method == "DELETE":
                return self._delete(req, table, row_id)
            raise method_not_allowed(req.method)
        bound = segments[1][0]
        if len(segments) == 2 and bound.startswith("Microsoft.Dynamics.CRM."):
            action = ENTITY_ACTIONS.get((table.logical_name, bound.split(".")[-1]))
            if action is None:
                raise segment_not_found(bound)
            if req.method != "POST":
                raise method_not_allowed(req.method)
            return action(self, req, row_id)
        return self._property(req, table, row_id, segments[1:])

    def _service_document(self) -> ApiResponse:
        items = [{"name": tb.entity_set, "kind": "EntitySet", "url": tb.entity_set}
                 for tb in self.store.tables.values()]
        items.append({"name": "EntityDefinitions", "kind": "EntitySet", "url": "EntityDefinitions"})
        items.append({"name": "WhoAmI", "kind": "FunctionImport", "url": "WhoAmI"})
        items.append({"name": "BulkDelete", "kind": "ActionImport", "url": "BulkDelete"})
        items.sort(key=lambda i: i["name"].lower())
        return ApiResponse.json(200, {"@odata.context": f"{self.api}$metadata", "value": items})

    @staticmethod
    def _alt_not_found(table: t.Table) -> ApiError:
        # Message as commonly reported for alternate-key misses (exact text unconfirmed).
        return ApiError(404, "0x80040217",
                        f"A record with the specified key values does not exist in {table.logical_name} entity")

    def _locate(self, table: t.Table, key: str) -> tuple[str | None, dict[str, Any] | None]:
        """Row id for a key segment: the primary key (row may not exist) or a declared alternate key."""
        raw = key.strip()
        if "=" not in raw or raw.partition("=")[0].strip() == table.primary_id:
            return self._key(table, raw), None
        values: dict[str, Any] = {}
        for part in split_top_level(raw, ","):
            name, eq, literal = part.partition("=")
            name, literal = name.strip(), literal.strip()
            col = table.column_by_json_name(name)
            if not eq or col is None:
                raise self._bad_key(table)
            if literal.startswith("'") and literal.endswith("'") and len(literal) >= 2:
                value: Any = unquote(literal[1:-1]).replace("''", "'")
            elif literal == "null":
                raise self._bad_key(table)
            elif parse_guid(literal) is not None:
                value = parse_guid(literal)
            else:
                try:
                    value = int(literal)
                except ValueError:
                    raise self._bad_key(table) from None
            values[col.name] = value
        if not any(set(k) == set(values) for k in table.alternate_keys):
            raise self._bad_key(table)
        row = self.store.find_by(table, values)
        return (row[table.primary_id] if row else None), values

    @staticmethod
    def _bad_key(table: t.Table) -> ApiError:
        return ApiError(
            400, "0x80060888",
            f"The key in the request URI is not valid for resource '{table.edm_type}'. Ensure that the names "
            f"and number of key properties match the declared or alternate key properties for the resource "
            f"'{table.edm_type}'.",
        )

    def _key(self, table: t.Table, key: str) -> str:
        raw = key.strip()
        if "=" in raw:
            name, _, value = raw.partition("=")
            if name.strip() == table.primary_id and table.logical_name not in ("systemuser", "team"):
                raw = value.strip()
        guid = parse_guid(raw)
        if guid is None:
            raise ApiError(
                400, "0x80060888",
                f"The key in the request URI is not valid for resource '{table.edm_type}'. Ensure that the names "
                f"and number of key properties match the declared or alternate key properties for the resource "
                f"'{table.edm_type}'.",
            )
        return guid

    # ------------------------------------------------------------------ query helpers
    def _select(self, table: t.Table, raw: str | None) -> tuple[list[t.Column], list[str] | None]:
        if raw is None or not raw.strip():
            return list(table.columns), None
        cols: list[t.Column] = []
        names: list[str] = []
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            col = table.column_by_json_name(name)
            if col is None:
                raise property_not_found(name, table.edm_type)
            if col not in cols:
                cols.append(col)
                names.append(name)
        return cols, names

    def _resolver(self, table: t.Table, logical: bool = False) -> Callable[[str], ColumnRef]:
        """Map a $filter property (``_ownerid_value``; with ``logical``: ``ownerid``) to its SQL column."""
        def resolve(path: str) -> ColumnRef:
            col = table.column(path) if logical else table.column_by_json_name(path)
            if col is None:
                raise property_not_found(path, table.edm_type)
            if col.behavior == "DateOnly":  # stored as YYYY-MM-DD; compare as the start of that day
                return ColumnRef(f"(\"{col.name}\" || 'T00:00:00Z')", "datetime", edm_of(col))
            return ColumnRef(f'"{col.name}"', _KIND.get(col.type, "string"), edm_of(col))
        return resolve

    def _where(self, req: ApiRequest, table: t.Table) -> tuple[str, list[Any]]:
        text = req.params.get("$filter")
        if text is None or not text.strip():
            return "", []
        aliases = {k: v for k, v in req.params.items() if k.startswith("@")}
        try:
            ast = odata_filter.parse(text, aliases)
            return SqlCompiler(self._resolver(table), caller_id=req.caller.user_id,
                               resolve_logical=self._resolver(table, logical=True)).compile(ast)
        except FilterError as exc:
            raise ApiError(400, "0x80060888", str(exc)) from None

    def _order(self, req: ApiRequest, table: t.Table) -> list[tuple[str, bool]]:
        order: list[tuple[str, bool]] = []
        raw = req.params.get("$orderby")
        if raw and raw.strip():
            aliases = {k: v for k, v in req.params.items() if k.startswith("@")}
            for item in raw.split(","):
                parts = item.split()
                if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
                    raise ApiError(400, "0x80060888", f"Syntax error at position 0 in '{raw}'.")
                name = aliases.get(parts[0], parts[0])
                col = table.column_by_json_name(name)
                if col is None:
                    raise property_not_found(name, table.edm_type)
                if all(c != col.name for c, _ in order):
                    order.append((col.name, len(parts) == 2 and parts[1] == "desc"))
        if all(c != table.primary_id for c, _ in order):
            order.append((table.primary_id, False))
        return order

    def _check_options(self, req: ApiRequest) -> None:
        for name in req.params:
            if not name.startswith("$"):
                continue
            if name not in SUPPORTED_OPTIONS:
                raise ApiError(400, "0x80060888", f"The query parameter {name} is not supported")

    def _render_page(self, req: ApiRequest, table: t.Table, rows: list[dict[str, Any]],
                     cols: list[t.Column], expand: bool = True) -> list[dict[str, Any]]:
        names = self.codec.lookup_names(table, rows, cols)
        role = req.caller.role
        out = [self.codec.render(table, r, cols, req.prefer, names, role) for r in rows]
        if expand and req.params.get("$expand"):
            for nav, (col, targets, options) in self._expansions(req, table).items():
                ids = [r.get(col.name) for r in rows]
                found: dict[str, dict[str, Any]] = {}
                for target in targets:
                    ttable = self.store.tables.get(target)
                    if ttable is None:
                        continue
                    tcols, _ = self._select(ttable, options.get("$select"))
                    related = self.store.get_many(ttable, [i for i in ids if i and i not in found])
                    rendered = self._render_page(req, ttable, related, tcols, expand=False)
                    found.update({r[ttable.primary_id]: item for r, item in zip(related, rendered, strict=True)})
                for item, row_id in zip(out, ids, strict=True):
                    item[nav] = found.get(row_id) if row_id else None
        return out

    def _expansions(self, req: ApiRequest, table: t.Table
                    ) -> dict[str, tuple[t.Column, tuple[str, ...], dict[str, str]]]:
        """Single-valued navigation properties named in $expand, with their $select."""
        out: dict[str, tuple[t.Column, tuple[str, ...], dict[str, str]]] = {}
        for nav, options in parse_expand(req.params.get("$expand")).items():
            found = table.nav_column(nav)
            if found is None:
                raise property_not_found(nav, table.edm_type)
            for option in options:
                if option != "$select":
                    raise ApiError(400, "0x80060888", f"The query option '{option}' inside $expand of the "
                                   f"single-valued navigation property '{nav}' is not supported.")
            col, targets = found
            out[nav] = (col, targets, options)
        return out

    def _expand_names(self, req: ApiRequest, table: t.Table, names: list[str] | None) -> list[str] | None:
        """The @odata.context selection including expanded navigation properties."""
        if not req.params.get("$expand"):
            return names
        extra = []
        for nav, (_, _, options) in self._expansions(req, table).items():
            extra.append(f"{nav}({options['$select']})" if options.get("$select") else f"{nav}()")
        return (names or []) + extra if names else extra

    def _link(self, table: t.Table, pairs: list[tuple[str, str]]) -> str:
        query = "&".join(f"{quote(k, safe='$@')}={quote(v, safe=_QUERY_SAFE)}" for k, v in pairs)
        return f"{self.api}{table.entity_set}?{query}"

    def _applied(self, req: ApiRequest, extra: list[str]) -> dict[str, str]:
        applied = list(extra)
        raw = req.prefer.values.get("odata.include-annotations")
        if raw:
            applied.append(f'odata.include-annotations="{raw}"')
        return {"Preference-Applied": ",".join(applied)} if applied else {}

    def _context(self, table: t.Table, names: list[str] | None, suffix: str = "") -> str:
        sel = f"({','.join(names)})" if names else ""
        return f"{self.api}$metadata#{table.entity_set}{sel}{suffix}"

    # ------------------------------------------------------------------ reads
    def _list(self, req: ApiRequest, table: t.Table) -> ApiResponse:
        params = req.params
        self._check_options(req)
        tracking = req.prefer.has("odata.track-changes") or "$deltatoken" in params
        if "$skiptoken" in params and 'istracking="true"' in params["$skiptoken"].lower():
            tracking = True
        if tracking:
            if not table.change_tracking:
                raise ApiError(400, "0x80044353",
                               f"Change tracking is not enabled for the entity '{table.logical_name}'.")
            for option in TRACKING_REJECTED:
                if option in params:
                    raise ApiError(400, "0x80060888",
                                   f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.')
        cols, names = self._select(table, params.get("$select"))
        names = self._expand_names(req, table, names)
        maxpagesize = req.prefer.maxpagesize
        page_size = min(maxpagesize or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        applied = [f"odata.maxpagesize={page_size}"] if maxpagesize else []
        if tracking:
            applied.append("odata.track-changes")
        if "$deltatoken" in params:
            return self._delta(req, table, cols, names, page_size, applied)

        top = None
        if "$top" in params and maxpagesize is None:
            try:
                top = int(params["$top"])
                if top < 0:
                    raise ValueError
            except ValueError:
                raise ApiError(400, "0x80060888",
                               f"Invalid value '{params['$top']}' for $top query option found.") from None
        limit = min(top, MAX_PAGE_SIZE) if top is not None else page_size
        where, wparams = self._where(req, table)
        order = self._order(req, table)
        cookie = decode_cookie(table, params["$skiptoken"], order) if "$skiptoken" in params else PageCookie()
        if tracking and cookie.snapshot is None:
            cookie.snapshot = self.store.current_version()
        rows = self.store.select(table, where, wparams, order, cookie.keyset, limit + 1) if limit else []
        more = len(rows) > limit and top is None
        rows = rows[:limit]

        body: dict[str, Any] = {"@odata.context": self._context(table, names)}
        if params.get("$count", "").lower() == "true":
            count = self.store.count(table, where, wparams, MAX_PAGE_SIZE + 1)
            body["@odata.count"] = min(count, MAX_PAGE_SIZE)
            if req.prefer.wants("Microsoft.Dynamics.CRM.totalrecordcount"):
                body["@Microsoft.Dynamics.CRM.totalrecordcount"] = min(count, MAX_PAGE_SIZE)
            if req.prefer.wants("Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"):
                body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = count > MAX_PAGE_SIZE
        body["value"] = self._render_page(req, table, rows, cols)
        if more:
            next_cookie = PageCookie(page=cookie.page, keyset=[rows[-1].get(c) for c, _ in order],
                                     tracking=tracking, snapshot=cookie.snapshot if tracking else None)
            pairs = [(k, v) for k, v in parse_qsl(req.query, keep_blank_values=True) if k != "$skiptoken"]
            pairs.append(("$skiptoken", encode_cookie(table, next_cookie, order)))
            body["@odata.nextLink"] = self._link(table, pairs)
        elif tracking:
            body["@odata.deltaLink"] = self._delta_link(req, table, cookie.snapshot or 0)
        return ApiResponse.json(200, body, self._applied(req, applied))

    def _delta_link(self, req: ApiRequest, table: t.Table, version: int) -> str:
        token = _format_delta_token(version, dt.datetime.now(dt.UTC))
        pairs = [("$select", req.params["$select"])] if "$select" in req.params else []
        link = self._link(table, pairs)
        sep = "&" if pairs else ""
        return f"{link}{sep}$deltatoken={quote(token, safe='')}"

    def _delta_since(self, token: str) -> int:
        """The version a delta token stands for; expired tokens (age or a reset) ask for a full sync."""
        since, issued = _parse_delta_token(token)
        age = (dt.datetime.now(dt.UTC) - issued).total_seconds()
        if age > int(self.limits["delta_token_ttl_s"]) or since < self.store.min_delta_version():
            raise ApiError(400, "0x80044352", EXPIRED_TOKEN)
        return since

    def _delta(self, req: ApiRequest, table: t.Table, cols: list[t.Column], names: list[str] | None,
               page_size: int, applied: list[str]) -> ApiResponse:
        since = self._delta_since(req.params["$deltatoken"])
        if "$skiptoken" in req.params:
            cookie = decode_cookie(table, req.params["$skiptoken"], None)
        else:
            cookie = PageCookie(tracking=True, snapshot=self.store.current_version(), phase="rows")
        snapshot = cookie.snapshot if cookie.snapshot is not None else self.store.current_version()
        values: list[dict[str, Any]] = []
        next_cookie: PageCookie | None = None
        if cookie.phase != "deleted":
            rows = self.store.changed_rows(table, since, snapshot, cookie.after, page_size + 1)
            if len(rows) > page_size:
                rows = rows[:page_size]
                next_cookie = PageCookie(cookie.page, None, True, snapshot, "rows", rows[-1]["versionnumber"])
            values.extend(self._render_page(req, table, rows, cols))
            after = None
        else:
            after = cookie.after
        if next_cookie is None:
            room = page_size - len(values)
            tombs = self.store.tombstones(table, since, snapshot, after, room + 1)
            if len(tombs) > room:
                tombs = tombs[:room]
                last = tombs[-1]["version"] if tombs else after
                next_cookie = PageCookie(cookie.page, None, True, snapshot, "deleted", last)
            deleted_ctx = f"{self.api}$metadata#{table.entity_set}/$deletedEntity"
            values.extend({"@odata.context": deleted_ctx, "id": tomb["id"], "reason": "deleted"} for tomb in tombs)
        body: dict[str, Any] = {"@odata.context": self._context(table, names, "/$delta"), "value": values}
        if next_cookie is not None:
            pairs = [(k, v) for k, v in parse_qsl(req.query, keep_blank_values=True) if k != "$skiptoken"]
            pairs.append(("$skiptoken", encode_cookie(table, next_cookie, [])))
            body["@odata.nextLink"] = self._link(table, pairs)
        else:
            body["@odata.deltaLink"] = self._delta_link(req, table, snapshot)
        return ApiResponse.json(200, body, self._applied(req, applied))

    def _count(self, req: ApiRequest, table: t.Table) -> ApiResponse:
        if "$deltatoken" in req.params:
            since = self._delta_since(req.params["$deltatoken"])
            count = self.store.count_changes(table, since, self.store.current_version())
        else:
            where, wparams = self._where(req, table)
            count = min(self.store.count(table, where, wparams, MAX_PAGE_SIZE + 1), MAX_PAGE_SIZE)
        return ApiResponse(200, {"Content-Type": "text/plain; charset=utf-8", "OData-Version": "4.0"},
                           str(count).encode())

    def _get(self, req: ApiRequest, table: t.Table, row_id: str) -> ApiResponse:
        self._check_options(req)
        cols, names = self._select(table, req.params.get("$select"))
        names = self._expand_names(req, table, names)
        row = self.store.get(table, row_id)
        if row is None:
            raise not_found(table, row_id)
        etag = f'W/"{row["versionnumber"]}"'
        if_none = req.header("If-None-Match")
        if if_none and if_none != "null" and not req.prefer.annotations and "$expand" not in req.params \
                and _etag_matches(if_none, row["versionnumber"]):
            return ApiResponse.empty(304, {"ETag": etag})
        body = {"@odata.context": self._context(table, names, "/$entity")}
        body.update(self._render_page(req, table, [row], cols)[0])
        return ApiResponse.json(200, body, {"ETag": etag, **self._applied(req, [])})

    # ------------------------------------------------------------------ writes (single place for each rule)
    @staticmethod
    def _privilege_error(table: t.Table, caller: Principal, verb: str) -> ApiError:
        return guards.privilege_error(table, caller, verb)

    def create_row(self, table: t.Table, body: Any, caller: Principal, row_id: str | None = None,
                   key_values: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create one row from a payload (inside a transaction); return the stored row."""
        if table.read_only:
            raise self._privilege_error(table, caller, "Create")
        values = self.codec.parse_payload(table, body, creating=True, role=caller.role)
        if row_id is not None:
            values[table.primary_id] = row_id
        values.update(key_values or {})
        return self.insert_values(table, values, caller)

    def insert_values(self, table: t.Table, values: dict[str, Any], caller: Principal) -> dict[str, Any]:
        """Create one row from already validated values by column name (create_row, QualifyLead)."""
        with self.store.transaction():
            if values.get(table.primary_id) and self.store.get(table, values[table.primary_id]) is not None:
                raise ApiError(412, "0x80040237", "Cannot insert duplicate key.")
            row = self.codec.new_row(table, values, caller.user_id, bool(self.limits["strict_required"]))
            self._check_keys(table, row)
            self.store.insert(table, row)
        return row

    def _check_keys(self, table: t.Table, row: dict[str, Any]) -> None:
        """Alternate keys must be unique (Dataverse enforces them with a unique index)."""
        for cols in table.alternate_keys:
            values = {c: row.get(c) for c in cols}
            if any(v is None for v in values.values()):
                continue
            other = self.store.find_by(table, values)
            if other is not None and other[table.primary_id] != row.get(table.primary_id):
                shown = ", ".join(table.column(c).display for c in cols if table.column(c))
                raise ApiError(
                    412, "0x80060892",
                    f"A record that has the attribute values {shown} already exists. The entity key {shown} Key "
                    "requires that this set of attributes contains unique values. Select unique values and try "
                    "again.")

    def update_row(self, table: t.Table, existing: dict[str, Any], body: Any, caller: Principal,
                   key_values: dict[str, Any] | None = None) -> dict[str, Any]:
        if not guards.may_update(table):
            raise self._privilege_error(table, caller, "Write")
        values = self.codec.parse_payload(table, body, creating=False, role=caller.role)
        for name in key_values or {}:
            values.pop(name, None)  # key values in the URL win for existing rows
        guards.check_update(table, existing, values, caller)
        with self.store.transaction():
            changes = self.codec.changed_row(table, existing, values, caller.user_id,
                                             bool(self.limits["strict_required"]))
            if any(c in changes for cols in table.alternate_keys for c in cols):
                self._check_keys(table, {**existing, **changes})
            self.store.update(table, existing[table.primary_id], changes)
        return {**existing, **changes}

    def upsert_row(self, table: t.Table, row_id: str, body: Any, caller: Principal,
                   if_match: str | None = None, if_none_match: str | None = None,
                   key_values: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """PATCH semantics: update if present, else create; honour If-Match / If-None-Match."""
        with self.store.transaction():
            existing = self.store.get(table, row_id)
            if existing is None:
                if if_match is not None:
                    raise not_found(table, row_id)
                return self.create_row(table, body, caller, row_id, key_values), True
            if if_none_match is not None and if_none_match.strip() == "*":
                raise ApiError(412, "0x80040237", "A record with matching key values already exists.")
            if if_match is not None and not _etag_matches(if_match, existing["versionnumber"]):
                raise ApiError(412, "0x80060882",
                               "The version of the existing record doesn't match the RowVersion property provided.")
            return self.update_row(table, existing, body, caller, key_values), False

    def delete_row(self, table: t.Table, row_id: str, caller: Principal, if_match: str | None = None) -> None:
        if not guards.may_delete(table):
            raise self._privilege_error(table, caller, "Delete")
        with self.store.transaction():
            existing = self.store.get(table, row_id)
            if existing is None:
                raise not_found(table, row_id)
            guards.check_delete(self.store, table, existing, caller)
            if if_match is not None and not _etag_matches(if_match, existing["versionnumber"]):
                raise ApiError(412, "0x80060882",
                               "The version of the existing record doesn't match the RowVersion property provided.")
            self.store.delete(table, row_id, self.store.allocate_versions(1), now_utc())

    def _write_response(self, req: ApiRequest, table: t.Table, row: dict[str, Any], created: bool) -> ApiResponse:
        url = self.entity_url(table, row[table.primary_id])
        etag = f'W/"{row["versionnumber"]}"'
        if req.prefer.values.get("return") == "representation":
            cols, names = self._select(table, req.params.get("$select"))
            body = {"@odata.context": self._context(table, names, "/$entity")}
            body.update(self._render_page(req, table, [row], cols)[0])
            headers = {"ETag": etag, **self._applied(req, ["return=representation"])}
            if created:
                headers["Location"] = url
            return ApiResponse.json(201 if created else 200, body, headers)
        return ApiResponse.empty(204, {"OData-EntityId": url, "Location": url})

    @staticmethod
    def _conditional(req: ApiRequest) -> tuple[str | None, str | None]:
        if_match = req.header("If-Match")
        if_none = req.header("If-None-Match")
        if if_none is not None and if_none.strip().lower() == "null":
            if_none = None
        return if_match, if_none

    def _create(self, req: ApiRequest, table: t.Table) -> ApiResponse:
        row = self.create_row(table, req.json_body(table.entity_set), req.caller)
        return self._write_response(req, table, row, created=True)

    def _patch(self, req: ApiRequest, table: t.Table, row_id: str | None,
               alt: dict[str, Any] | None = None) -> ApiResponse:
        if_match, if_none = self._conditional(req)
        if not guards.may_update(table):
            raise self._privilege_error(table, req.caller, "Write")
        body = req.json_body(table.entity_set)
        if row_id is None:  # alternate key that matches no row: create it with the key values
            if if_match is not None:
                raise self._alt_not_found(table)
            row = self.create_row(table, body, req.caller, key_values=alt)
            return self._write_response(req, table, row, True)
        row, created = self.upsert_row(table, row_id, body, req.caller, if_match, if_none, alt)
        return self._write_response(req, table, row, created)

    def _delete(self, req: ApiRequest, table: t.Table, row_id: str) -> ApiResponse:
        if_match, _ = self._conditional(req)
        self.delete_row(table, row_id, req.caller, if_match)
        return ApiResponse.empty(204)

    def _property(self, req: ApiRequest, table: t.Table, row_id: str,
                  rest: list[tuple[str, str | None]]) -> ApiResponse:
        name = rest[0][0]
        col = table.column_by_json_name(name)
        raw_value = len(rest) == 2 and rest[1][0] == "$value"
        if col is None or len(rest) > 2 or (len(rest) == 2 and not raw_value) or rest[0][1] is not None:
            raise segment_not_found(name if col is None else rest[-1][0])
        if req.method == "GET":
            row = self.store.get(table, row_id)
            if row is None:
                raise not_found(table, row_id)
            value = self.codec.render(table, row, [col], req.prefer, {}, req.caller.role).get(col.json_name)
            if value is None:
                return ApiResponse.empty(204)
            if raw_value:
                return ApiResponse(200, {"Content-Type": "text/plain", "OData-Version": "4.0"}, str(value).encode())
            return ApiResponse.json(200, {
                "@odata.context": f"{self.api}$metadata#{table.entity_set}({row_id})/{col.json_name}", "value": value})
        if raw_value or col.is_lookup:
            raise method_not_allowed(req.method)
        if req.method == "PUT":
            body = req.json_body(table.entity_set)
            if not isinstance(body, dict) or "value" not in body:
                raise ApiError(400, "0x80048d19", "The property value must be sent as {\"value\": ...}.")
            new_value = body["value"]
        elif req.method == "DELETE":
            new_value = None
        else:
            raise method_not_allowed(req.method)
        existing = self.store.get(table, row_id)
        if existing is None:
            raise not_found(table, row_id)
        self.update_row(table, existing, {col.json_name: new_value}, req.caller)
        return ApiResponse.empty(204)

    def _multiple(self, req: ApiRequest, table: t.Table, action: str) -> ApiResponse:
        body = req.json_body(table.entity_set)
        targets = body.get("Targets") if isinstance(body, dict) else None
        if not isinstance(targets, list) or not targets:
            raise ApiError(400, "0x80040203", "The 'Targets' parameter must be a non-empty collection.")
        ids: list[str] = []
        with self.store.transaction():
            for target in targets:
                if not isinstance(target, dict):
                    raise ApiError(400, "0x80040203", "Each item of 'Targets' must be an entity.")
                data = {k: v for k, v in target.items() if k not in ("@odata.type", "@odata.id")}
                row_id = None
                alt: dict[str, Any] | None = None
                if isinstance(target.get(table.primary_id), str):
                    row_id = parse_guid(target[table.primary_id])
                elif isinstance(target.get("@odata.id"), str):
                    ref = target["@odata.id"]
                    key = ref[ref.index("(") + 1:ref.rindex(")")] if "(" in ref and ref.endswith(")") else ref
                    row_id, alt = self._locate(table, key)
                if action == "CreateMultiple":
                    ids.append(self.create_row(table, data, req.caller)[table.primary_id])
                    continue
                if row_id is None and alt is None:
                    raise ApiError(400, "0x80040203", f"Each target must carry its primary key '{table.primary_id}'.")
                data.pop(table.primary_id, None)
                if action == "UpdateMultiple":
                    existing = self.store.get(table, row_id) if row_id else None
                    if existing is None:
                        raise not_found(table, row_id) if row_id else self._alt_not_found(table)
                    self.update_row(table, existing, data, req.caller, alt)
                elif row_id is None:
                    row_id = self.create_row(table, data, req.caller, key_values=alt)[table.primary_id]
                else:
                    self.upsert_row(table, row_id, data, req.caller, key_values=alt)
                ids.append(row_id)
        if action == "UpdateMultiple":
            return ApiResponse.empty(204)
        return ApiResponse.json(200, {
            "@odata.context": f"{self.api}$metadata#Microsoft.Dynamics.CRM.{action}Response", "Ids": ids})

    # ------------------------------------------------------------------ BulkDelete
    _CONDITION_SQL = {
        "equal": "= ?", "notequal": "<> ?", "greaterthan": "> ?", "greaterequal": ">= ?", "lessthan": "< ?",
        "lessequal": "<= ?", "like": "LIKE ?", "notlike": "NOT LIKE ?",
    }

    def _condition(self, table: t.Table, cond: Any) -> tuple[str, list[Any]]:
        if not isinstance(cond, dict) or not isinstance(cond.get("AttributeName"), str):
            raise ApiError(400, "0x80040203", "Each condition needs an AttributeName and an Operator.")
        col = table.column(cond["AttributeName"].lower())
        if col is None:
            raise ApiError(400, "0x80041103",
                           f"'{table.logical_name}' entity doesn't contain attribute with Name = "
                           f"'{cond['AttributeName']}' and NameMapping = 'Logical'.")
        op = str(cond.get("Operator", "Equal")).lower()
        raw_values = cond.get("Values") or []
        values = [v.get("Value") if isinstance(v, dict) else v for v in raw_values]
        if col.type == t.BOOLEAN:
            values = [1 if str(v).lower() in ("true", "1") else 0 for v in values]
        name = f'"{col.name}"'
        if op == "null":
            return f"{name} IS NULL", []
        if op == "notnull":
            return f"{name} IS NOT NULL", []
        if op in ("in", "notin"):
            if not values:
                raise ApiError(400, "0x80040203", f"Condition operator '{cond.get('Operator')}' needs values.")
            return f"{name} {'NOT ' if op == 'notin' else ''}IN ({','.join('?' * len(values))})", values
        if len(values) != 1:
            raise ApiError(400, "0x80040203", f"Condition operator '{cond.get('Operator')}' expects one value.")
        value = values[0]
        if op in ("beginswith", "endswith", "contains"):
            pattern = {"beginswith": "{}%", "endswith": "%{}", "contains": "%{}%"}[op].format(value)
            return f"{name} LIKE ?", [pattern]
        sql = self._CONDITION_SQL.get(op)
        if sql is None:
            raise ApiError(400, "0x80040203", f"The condition operator '{cond.get('Operator')}' is not supported "
                           "by this sandbox.")
        return f"{name} {sql}", [value]

    def _criteria(self, table: t.Table, criteria: Any) -> tuple[str, list[Any]]:
        if not criteria:
            return "", []
        parts: list[str] = []
        params: list[Any] = []
        for cond in criteria.get("Conditions") or []:
            sql, extra = self._condition(table, cond)
            parts.append(sql)
            params.extend(extra)
        for sub in criteria.get("Filters") or []:
            sql, extra = self._criteria(table, sub)
            if sql:
                parts.append(f"({sql})")
                params.extend(extra)
        joiner = " OR " if str(criteria.get("FilterOperator", "And")).lower() == "or" else " AND "
        return joiner.join(parts), params

    def _bulk_delete(self, req: ApiRequest) -> ApiResponse:
        """BulkDelete: runs at once here (the real service queues a system job); answers the job id."""
        body = req.json_body("BulkDelete")
        queries = body.get("QuerySet") if isinstance(body, dict) else None
        if not isinstance(queries, list) or not queries or not isinstance(body.get("JobName"), str):
            raise ApiError(400, "0x80040203", "BulkDelete requires 'QuerySet' (a collection of QueryExpression) "
                           "and 'JobName'.")
        plans = []
        for query in queries:
            table = self.store.tables.get(str(query.get("EntityName", "")).lower()) \
                if isinstance(query, dict) else None
            if table is None:
                raise ApiError(400, "0x80040203", "Each QueryExpression needs a valid 'EntityName'.")
            if table.read_only:
                raise self._privilege_error(table, req.caller, "Delete")
            plans.append((table, *self._criteria(table, query.get("Criteria"))))
        job = str(uuid.uuid4())
        deleted = 0
        stamp = now_utc()
        with self.store.transaction():
            for table, where, params in plans:
                deleted += self.store.delete_where(table, where, params, stamp)
            jobs = self.store.tables["asyncoperation"]
            self.store.insert(jobs, {
                "asyncoperationid": job, "name": body["JobName"], "operationtype": 13, "statecode": 3,
                "statuscode": 30, "message": f"{deleted} records deleted.", "completedon": stamp,
                "ownerid": req.caller.user_id, "createdon": stamp, "modifiedon": stamp,
                "createdby": req.caller.user_id, "modifiedby": req.caller.user_id,
                "versionnumber": self.store.allocate_versions(1)})
        context = f"{self.api}$metadata#Microsoft.Dynamics.CRM.BulkDeleteResponse"
        return ApiResponse.json(200, {"@odata.context": context, "JobId": job})
