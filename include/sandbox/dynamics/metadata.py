"""Dataverse metadata: ``EntityDefinitions`` (tables, columns, choices) and the ``$metadata`` CSDL.

Why: clients discover tables and columns before they write. A Dataverse client first asks
``EntityDefinitions?$filter=LogicalName eq 'lead'`` (an empty ``value`` means "unknown table"),
reads ``Attributes`` for RequiredLevel / MaxLength / IsValidForCreate / IsSecured, and reads the
``PicklistAttributeMetadata`` cast before writing strings (a 404 there makes it retry and fail).
All of it is generated from ``tables.py`` so that metadata and behaviour cannot drift apart.
"""

from __future__ import annotations

import uuid
from typing import Any
from xml.sax.saxutils import quoteattr

from . import odata_filter
from . import tables as t
from .protocol import ApiError, ApiRequest, ApiResponse, property_not_found, segment_not_found, split_top_level

_NS = uuid.UUID("6d3c3a3e-1f0e-4c59-9d1e-5a7f0c2b8e41")
CRM = "Microsoft.Dynamics.CRM."

_METADATA_CLASS = {
    t.STRING: "StringAttributeMetadata",
    t.MEMO: "MemoAttributeMetadata",
    t.INTEGER: "IntegerAttributeMetadata",
    t.BIGINT: "BigIntAttributeMetadata",
    t.BOOLEAN: "BooleanAttributeMetadata",
    t.DATETIME: "DateTimeAttributeMetadata",
    t.PICKLIST: "PicklistAttributeMetadata",
    t.STATE: "StateAttributeMetadata",
    t.STATUS: "StatusAttributeMetadata",
    t.LOOKUP: "LookupAttributeMetadata",
    t.OWNER: "LookupAttributeMetadata",
    "Customer": "LookupAttributeMetadata",
    t.UNIQUEIDENTIFIER: "UniqueIdentifierAttributeMetadata",
    "Decimal": "DecimalAttributeMetadata",
    "Money": "MoneyAttributeMetadata",
    "Double": "DoubleAttributeMetadata",
}
_ENUM_CLASSES = {"PicklistAttributeMetadata", "StateAttributeMetadata", "StatusAttributeMetadata"}
KNOWN_CASTS = set(_METADATA_CLASS.values()) | {"AttributeMetadata", "EnumAttributeMetadata"}

EDM_TYPES = {
    t.STRING: "Edm.String", t.MEMO: "Edm.String", t.INTEGER: "Edm.Int32", t.BIGINT: "Edm.Int64",
    t.BOOLEAN: "Edm.Boolean", t.DATETIME: "Edm.DateTimeOffset", t.PICKLIST: "Edm.Int32", t.STATE: "Edm.Int32",
    t.STATUS: "Edm.Int32", t.LOOKUP: "Edm.Guid", t.OWNER: "Edm.Guid", "Customer": "Edm.Guid",
    t.UNIQUEIDENTIFIER: "Edm.Guid", "Decimal": "Edm.Decimal", "Money": "Edm.Decimal", "Double": "Edm.Double",
}


def edm_of(col: t.Column) -> str:
    if col.type == t.DATETIME and col.behavior == "DateOnly":
        return "Edm.Date"
    return EDM_TYPES.get(col.type, "Edm.String")


def _id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, ":".join(parts)))


def label(text: str, *parts: str) -> dict[str, Any]:
    if not text:
        return {"LocalizedLabels": [], "UserLocalizedLabel": None}
    item = {"Label": text, "LanguageCode": 1033, "IsManaged": True, "MetadataId": _id("label", *parts, text),
            "HasChanged": None}
    return {"LocalizedLabels": [item], "UserLocalizedLabel": dict(item)}


def managed(value: Any, name: str, can_change: bool = True) -> dict[str, Any]:
    return {"Value": value, "CanBeChanged": can_change, "ManagedPropertyLogicalName": name}


def metadata_class(col: t.Column) -> str:
    return _METADATA_CLASS.get(col.type, "AttributeMetadata")


def entity_metadata(table: t.Table) -> dict[str, Any]:
    return {
        "MetadataId": _id("entity", table.logical_name),
        "HasChanged": None,
        "LogicalName": table.logical_name,
        "SchemaName": table.schema_name,
        "EntitySetName": table.entity_set,
        "LogicalCollectionName": table.entity_set,
        "CollectionSchemaName": table.display_collection.replace(" ", ""),
        "PrimaryIdAttribute": table.primary_id,
        "PrimaryNameAttribute": table.primary_name,
        "ObjectTypeCode": table.object_type_code,
        "OwnershipType": "UserOwned" if table.column("ownerid") else "BusinessOwned",
        "ChangeTrackingEnabled": table.change_tracking,
        "CanChangeTrackingBeEnabled": managed(True, "canchangetrackingbeenabled"),
        "IsOptimisticConcurrencyEnabled": True,
        "IsCustomEntity": table.custom,
        "IsManaged": not table.custom,
        "IsActivity": False,
        "IsIntersect": False,
        "IsPrivate": False,
        "IsLogicalEntity": False,
        "IsValidForAdvancedFind": True,
        "IsAuditEnabled": managed(True, "canmodifyauditsettings"),
        "IsCustomizable": managed(True, "iscustomizable"),
        "DisplayName": label(table.display, table.logical_name),
        "DisplayCollectionName": label(table.display_collection, table.logical_name, "collection"),
        "Description": label("", table.logical_name),
        "IntroducedVersion": "5.0.0.0",
        "TableType": "Standard",
        "EntityColor": None,
        "EntityHelpUrl": None,
        "EntityHelpUrlEnabled": False,
        "ExternalName": None,
        "ExternalCollectionName": None,
        "PrimaryImageAttribute": None,
        "ActivityTypeMask": 0,
        "AutoRouteToOwnerQueue": False,
        "CanCreateAttributes": managed(True, "cancreateattributes"),
        "CanCreateForms": managed(True, "cancreateforms"),
        "CanCreateViews": managed(True, "cancreateviews"),
        "HasActivities": True,
        "HasNotes": True,
        "HasFeedback": False,
        "HasEmailAddresses": any(c.format == "Email" for c in table.columns),
        "IsActivityParty": table.logical_name in ("lead", "contact", "systemuser", "account"),
        "IsArchivalEnabled": False,
        "IsAvailableOffline": True,
        "IsBusinessProcessEnabled": True,
        "IsConnectionsEnabled": managed(True, "canmodifyconnectionsettings"),
        "IsDocumentManagementEnabled": False,
        "IsDuplicateDetectionEnabled": managed(True, "canmodifyduplicatedetectionsettings"),
        "IsEnabledForCharts": True,
        "IsMailMergeEnabled": managed(True, "canmodifymailmergesettings"),
        "IsQuickCreateEnabled": True,
        "IsReadOnlyInMobileClient": managed(False, "canmodifymobilevisibility"),
        "IsRenameable": managed(True, "isrenameable"),
        "IsRetrieveAuditEnabled": False,
        "IsRetrieveMultipleAuditEnabled": False,
        "IsSolutionAware": False,
        "IsStateModelAware": table.column("statecode") is not None,
        "SyncToExternalSearchIndex": False,
        "UsesBusinessDataLabelTable": False,
    }


def option_set(table: t.Table, col: t.Column) -> dict[str, Any]:
    base = {
        "MetadataId": _id("optionset", table.logical_name, col.name),
        "HasChanged": None,
        "IsCustomOptionSet": False,
        "IsGlobal": False,
        "IsManaged": True,
        "Name": f"{table.logical_name}_{col.name}",
        "ExternalTypeName": None,
        "IntroducedVersion": "5.0.0.0",
        "Description": label(""),
        "DisplayName": label(col.display, table.logical_name, col.name),
        "IsCustomizable": managed(True, "iscustomizable"),
    }
    if col.type == t.BOOLEAN:
        yes = col.options[1].label if len(col.options) > 1 else "Yes"
        no = col.options[0].label if col.options else "No"
        return {"@odata.type": "#Microsoft.Dynamics.CRM.BooleanOptionSetMetadata", **base, "OptionSetType": "Boolean",
                "TrueOption": {"Value": 1, "Label": label(yes), "Description": label("")},
                "FalseOption": {"Value": 0, "Label": label(no), "Description": label("")}}
    options = []
    for opt in col.options:
        item: dict[str, Any] = {
            "Value": opt.value, "Color": None, "IsManaged": True, "ExternalValue": "", "ParentValues": [],
            "Tag": None, "IsHidden": False, "MetadataId": None, "HasChanged": None,
            "Label": label(opt.label, table.logical_name, col.name, str(opt.value)),
            "Description": label(""),
        }
        if col.type == t.STATUS:
            item["@odata.type"] = "#Microsoft.Dynamics.CRM.StatusOptionMetadata"
            item["State"] = opt.state
            item["TransitionData"] = None
        elif col.type == t.STATE:
            item["@odata.type"] = "#Microsoft.Dynamics.CRM.StateOptionMetadata"
            item["DefaultStatus"] = opt.default_status
            item["InvariantName"] = opt.invariant_name or opt.label
        options.append(item)
    set_type = {t.STATE: "State", t.STATUS: "Status"}.get(col.type, "Picklist")
    return {"@odata.type": "#Microsoft.Dynamics.CRM.OptionSetMetadata", **base, "OptionSetType": set_type,
            "Options": options}


def attribute_metadata(table: t.Table, col: t.Column, index: int) -> dict[str, Any]:
    cls = metadata_class(col)
    data: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{cls}",
        "MetadataId": _id("attribute", table.logical_name, col.name),
        "HasChanged": None,
        "AttributeOf": None,
        "AttributeType": col.type,
        "AttributeTypeName": {"Value": f"{col.type}Type"},
        "ColumnNumber": index + 1,
        "EntityLogicalName": table.logical_name,
        "LogicalName": col.name,
        "SchemaName": col.schema_name,
        "DisplayName": label(col.display, table.logical_name, col.name),
        "Description": label("", table.logical_name, col.name),
        "IsCustomAttribute": col.custom,
        "IsManaged": True,
        "IsLogical": False,
        "IsPrimaryId": col.name == table.primary_id,
        "IsPrimaryName": col.name == table.primary_name,
        "IsValidForCreate": col.create,
        "IsValidForUpdate": col.update,
        "IsValidForRead": col.read,
        "IsValidForForm": True,
        "IsRequiredForForm": col.required in (t.SYSTEM_REQUIRED, t.APPLICATION_REQUIRED),
        "IsSecured": col.secured,
        "CanBeSecuredForCreate": col.create,
        "CanBeSecuredForRead": col.read,
        "CanBeSecuredForUpdate": col.update,
        "IsFilterable": True,
        "IsSearchable": col.type in (t.STRING, t.MEMO),
        "IsRetrievable": True,
        "SourceType": 0,
        "IntroducedVersion": "5.0.0.0",
        "RequiredLevel": managed(col.required, "canmodifyrequirementlevelsettings",
                                 col.required != t.SYSTEM_REQUIRED),
        "IsAuditEnabled": managed(True, "canmodifyauditsettings"),
        "IsValidForAdvancedFind": managed(True, "canmodifysearchsettings"),
        "IsCustomizable": managed(True, "iscustomizable"),
        "IsRenameable": managed(True, "isrenameable"),
        "IsValidForGrid": True,
        "IsValidODataAttribute": True,
        "IsSortableEnabled": managed(False, "canmodifyissortablesettings"),
        "IsGlobalFilterEnabled": managed(False, "canmodifyglobalfiltersettings"),
        "IsDataSourceSecret": False,
        "CanModifyAdditionalSettings": managed(True, "canmodifyadditionalsettings"),
        "AutoNumberFormat": None,
        "DeprecatedVersion": None,
        "ExternalName": None,
        "InheritsFrom": None,
        "LinkedAttributeId": None,
        "SettingOf": None,
        "SourceTypeMask": 0,
        "CreatedOn": None,
        "ModifiedOn": None,
    }
    if col.type in (t.STRING, t.MEMO):
        fmt = col.format or ("TextArea" if col.type == t.MEMO else "Text")
        data.update({"MaxLength": col.max_length, "DatabaseLength": (col.max_length or 0) * 2, "Format": fmt,
                     "FormatName": {"Value": fmt}, "ImeMode": "Auto", "IsLocalizable": False, "YomiOf": None})
    elif col.type == t.INTEGER:
        data.update({"MinValue": int(col.min_value) if col.min_value is not None else -2147483648,
                     "MaxValue": int(col.max_value) if col.max_value is not None else 2147483647,
                     "Format": "None"})
    elif col.type in (t.MONEY, t.DECIMAL, t.DOUBLE):
        data.update({"MinValue": col.min_value if col.min_value is not None else -922337203685477,
                     "MaxValue": col.max_value if col.max_value is not None else 922337203685477,
                     "Precision": 2, "ImeMode": "Auto"})
        if col.type == t.MONEY:
            data.update({"PrecisionSource": 2, "IsBaseCurrency": False, "CalculationOf": None})
    elif col.type == t.BIGINT:
        data.update({"MinValue": -9223372036854775808, "MaxValue": 9223372036854775807})
    elif col.type == t.DATETIME:
        date_only = col.behavior == "DateOnly"
        data.update({"Format": "DateOnly" if date_only else "DateAndTime",
                     "DateTimeBehavior": {"Value": col.behavior or "UserLocal"}, "ImeMode": "Inactive",
                     "MinSupportedValue": "1753-01-01T00:00:00Z", "MaxSupportedValue": "9999-12-30T23:59:59Z",
                     "CanChangeDateTimeBehavior": managed(False, "canchangedatetimebehavior", False)})
    elif col.type in t.CHOICE_TYPES:
        data.update({"DefaultFormValue": col.default if col.default is not None else -1,
                     "ParentPicklistLogicalName": None})
    elif col.type == t.BOOLEAN:
        # No default (the sync filter) means an unset value stays null, and metadata says so.
        data.update({"DefaultValue": None if col.default is None else bool(col.default)})
    elif col.is_lookup:
        data.update({"Targets": list(col.targets), "Format": "None"})
    return data


def entity_keys(table: t.Table) -> list[dict[str, Any]]:
    """EntityKeyMetadata for the table's alternate keys."""
    out = []
    for cols in table.alternate_keys:
        name = f"{table.logical_name}_{'_'.join(cols)}_key" if not table.custom else f"{cols[0]}_key"
        display = " ".join(table.column(c).display for c in cols if table.column(c)) + " Key"
        out.append({"MetadataId": _id("key", table.logical_name, *cols), "HasChanged": None,
                    "LogicalName": name, "SchemaName": name, "EntityLogicalName": table.logical_name,
                    "KeyAttributes": list(cols), "EntityKeyIndexStatus": "Active", "IsManaged": not table.custom,
                    "IsSynchronous": False, "IsExportKey": False, "IntroducedVersion": "1.0",
                    "AsyncJob": None, "DisplayName": label(display, table.logical_name, "key", *cols),
                    "IsCustomizable": managed(True, "iscustomizable")})
    return out


def relationships(tables: dict[str, t.Table]) -> list[dict[str, Any]]:
    """One-to-many relationships behind every lookup between served tables."""
    out = []
    for table in tables.values():
        for col in table.columns:
            for nav, targets in col.nav_names().items():
                for target in targets:
                    ref = tables.get(target)
                    if ref is None:
                        continue
                    schema = f"{table.logical_name}_{col.name}_{target}" if col.type != t.OWNER else \
                        f"{target}_{table.logical_name}s"
                    out.append({
                        "@odata.type": "#Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
                        "MetadataId": _id("relationship", schema), "HasChanged": None, "SchemaName": schema,
                        "RelationshipType": "OneToManyRelationship", "IsCustomRelationship": col.custom,
                        "IsManaged": not col.custom, "IsValidForAdvancedFind": True, "SecurityTypes": "None",
                        "ReferencedEntity": target, "ReferencedAttribute": ref.primary_id,
                        "ReferencingEntity": table.logical_name, "ReferencingAttribute": col.name,
                        "ReferencingEntityNavigationPropertyName": nav,
                        "ReferencedEntityNavigationPropertyName": schema,
                        "IsHierarchical": target == table.logical_name,
                        "CascadeConfiguration": {"Assign": "NoCascade", "Delete": "RemoveLink",
                                                 "Merge": "NoCascade", "Reparent": "NoCascade",
                                                 "Share": "NoCascade", "Unshare": "NoCascade",
                                                 "RollupView": "NoCascade"},
                    })
    return out


def attributes(table: t.Table) -> list[dict[str, Any]]:
    return [attribute_metadata(table, col, i) for i, col in enumerate(table.columns)]


# ------------------------------------------------------------------------------ query plumbing
def _path_get(obj: dict[str, Any]) -> Any:
    def get(path: str) -> Any:
        cur: Any = obj
        for part in path.split("/"):
            if not isinstance(cur, dict):
                return None
            cur = cur.get(part)
        return cur
    return get


def _filter(items: list[dict[str, Any]], text: str | None, aliases: dict[str, str]) -> list[dict[str, Any]]:
    if not text:
        return items
    try:
        ast = odata_filter.parse(text, aliases)
        return [i for i in items if odata_filter.evaluate(ast, _path_get(i))]
    except odata_filter.FilterError as exc:
        raise ApiError(400, "0x80060888", str(exc)) from None


def _parse_options(text: str) -> dict[str, str]:
    """``$select=a,b;$filter=x`` → {"$select": "a,b", "$filter": "x"}."""
    out = {}
    for part in split_top_level(text, ";"):
        name, _, value = part.partition("=")
        if name.strip():
            out[name.strip()] = value
    return out


def parse_expand(text: str | None) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    if not text:
        return out
    for item in split_top_level(text, ","):
        item = item.strip()
        if not item:
            continue
        if "(" in item and item.endswith(")"):
            name, opts = item[: item.index("(")], item[item.index("(") + 1: -1]
            out[name.strip()] = _parse_options(opts)
        else:
            out[item] = {}
    return out


def _select(obj: dict[str, Any], select: str | None, known: set[str], type_name: str,
            always: tuple[str, ...] = ("MetadataId", "Attributes", "OptionSet", "GlobalOptionSet", "Keys",
                                       "ManyToOneRelationships", "OneToManyRelationships",
                                       "ManyToManyRelationships", "Privileges")) -> dict[str, Any]:
    if not select:
        return obj
    names = [s.strip() for s in select.split(",") if s.strip()]
    for name in names:
        if name not in known:
            raise property_not_found(name, f"Microsoft.Dynamics.CRM.{type_name}")
    out = {k: v for k, v in obj.items() if k.startswith("@")}
    for name in names:
        out[name] = obj.get(name)
    for name in always:
        if name in obj:
            out.setdefault(name, obj[name])
    return out


# Navigation properties of EntityMetadata other than Attributes: expandable, always empty here.
_EMPTY_ENTITY_NAVS = ("Keys", "ManyToOneRelationships", "OneToManyRelationships", "ManyToManyRelationships",
                      "Privileges")
_ENTITY_KEYS = set(entity_metadata(t.TABLES[0])) | {"Attributes", *_EMPTY_ENTITY_NAVS}
_ATTRIBUTE_KEYS: set[str] = set()
for _table in t.TABLES:
    for _attr in attributes(_table):
        _ATTRIBUTE_KEYS.update(k for k in _attr if not k.startswith("@"))
_ATTRIBUTE_KEYS.update({"OptionSet", "GlobalOptionSet", "MaxLength", "Targets", "Format", "FormatName"})
_OPTIONSET_KEYS = {"MetadataId", "HasChanged", "IsCustomOptionSet", "IsGlobal", "IsManaged", "Name",
                   "ExternalTypeName", "IntroducedVersion", "Description", "DisplayName", "IsCustomizable",
                   "OptionSetType", "Options", "TrueOption", "FalseOption"}


class MetadataApi:
    """Answers ``EntityDefinitions`` requests for the tables in ``tables``."""

    def __init__(self, tables: tuple[t.Table, ...], api_url: str) -> None:
        self.tables = {table.logical_name: table for table in tables}
        self.relationships = relationships(self.tables)
        self.by_id = {_id("entity", table.logical_name): table for table in tables}
        self.api = api_url

    def _find(self, key: str) -> t.Table:
        key = key.strip()
        logical = None
        if key.startswith("LogicalName="):
            logical = key.split("=", 1)[1].strip().strip("'")
            table = self.tables.get(logical)
        else:
            table = self.by_id.get(key.strip("'").lower())
        if table is None:
            name = logical if logical is not None else key
            raise ApiError(404, "0x80040217",
                           f"Could not find entity with logical name '{name}'." if logical is None else
                           f"Entity with a name = '{name}' with namemapping = 'Logical' was not found in the "
                           "MetadataCache.")
        return table

    @staticmethod
    def _cast_matches(cast: str | None, col: t.Column) -> bool:
        cls = metadata_class(col)
        return (not cast or cast == "AttributeMetadata" or cast == cls
                or (cast == "EnumAttributeMetadata" and cls in _ENUM_CLASSES))

    def _attribute_items(self, table: t.Table, cast: str | None, expand: dict[str, dict[str, str]],
                         params: dict[str, str], aliases: dict[str, str],
                         only: t.Column | None = None) -> list[dict[str, Any]]:
        items = []
        for index, col in enumerate(table.columns):
            if (only is not None and col is not only) or not self._cast_matches(cast, col):
                continue
            attr = attribute_metadata(table, col, index)
            for nav in ("OptionSet", "GlobalOptionSet"):
                if nav in expand:
                    if nav == "OptionSet" and (col.type in t.CHOICE_TYPES or col.type == t.BOOLEAN):
                        attr[nav] = _select(option_set(table, col), expand[nav].get("$select"), _OPTIONSET_KEYS,
                                            "OptionSetMetadataBase")
                    else:
                        attr[nav] = None
            items.append(attr)
        items = _filter(items, params.get("$filter"), aliases)
        type_name = cast or "AttributeMetadata"
        return [_select(i, params.get("$select"), _ATTRIBUTE_KEYS, type_name) for i in items]

    def _expand_entity(self, item: dict[str, Any], table: t.Table, expand: dict[str, dict[str, str]],
                       aliases: dict[str, str]) -> None:
        for nav, options in expand.items():
            if nav == "Attributes":
                item[nav] = self._attribute_items(table, None, parse_expand(options.get("$expand")), options,
                                                  aliases)
            elif nav == "Keys":
                item[nav] = entity_keys(table)
            elif nav == "ManyToOneRelationships":
                item[nav] = [r for r in self.relationships if r["ReferencingEntity"] == table.logical_name]
            elif nav == "OneToManyRelationships":
                item[nav] = [r for r in self.relationships if r["ReferencedEntity"] == table.logical_name]
            elif nav in _EMPTY_ENTITY_NAVS:
                item[nav] = []
            else:
                raise property_not_found(nav, "Microsoft.Dynamics.CRM.EntityMetadata")

    def handle(self, req: ApiRequest, segments: list[tuple[str, str | None]]) -> ApiResponse:
        if req.method != "GET":
            raise ApiError(405, "0x80060888", f"The requested resource does not support http method '{req.method}'.")
        params = req.params
        aliases = {k: v for k, v in params.items() if k.startswith("@")}
        expand = parse_expand(params.get("$expand"))
        _, key = segments[0]
        if key is None:
            if len(segments) > 1:
                raise segment_not_found(segments[1][0])
            items = [entity_metadata(table) for table in self.tables.values()]
            items = _filter(items, params.get("$filter"), aliases)
            for item in items:
                self._expand_entity(item, self.tables[item["LogicalName"]], expand, aliases)
            sel = params.get("$select")
            items = [_select(i, sel, _ENTITY_KEYS, "EntityMetadata") for i in items]
            ctx = f"{self.api}$metadata#EntityDefinitions" + (f"({sel})" if sel else "")
            return ApiResponse.json(200, {"@odata.context": ctx, "value": items})

        table = self._find(key)
        rest = segments[1:]
        if not rest:
            item = entity_metadata(table)
            self._expand_entity(item, table, expand, aliases)
            sel = params.get("$select")
            item = _select(item, sel, _ENTITY_KEYS, "EntityMetadata")
            ctx = f"{self.api}$metadata#EntityDefinitions" + (f"({sel})" if sel else "") + "/$entity"
            return ApiResponse.json(200, {"@odata.context": ctx, **item})

        if rest[0][0] in ("Keys", "ManyToOneRelationships", "OneToManyRelationships") and len(rest) == 1:
            item = {"LogicalName": table.logical_name}
            self._expand_entity(item, table, {rest[0][0]: {}}, aliases)
            values = item[rest[0][0]]
            if rest[0][1] is not None:
                wanted = rest[0][1].strip("'")
                if "=" in wanted:
                    wanted = wanted.split("=", 1)[1].strip().strip("'")
                match = [v for v in values if v["MetadataId"] == wanted or v.get("LogicalName") == wanted
                         or v.get("SchemaName") == wanted]
                if not match:
                    raise ApiError(404, "0x80040217", f"Could not find {rest[0][0]} '{wanted}'.")
                ctx = f"{self.api}$metadata#EntityDefinitions('{table.logical_name}')/{rest[0][0]}/$entity"
                return ApiResponse.json(200, {"@odata.context": ctx, **match[0]})
            values = _filter(values, params.get("$filter"), aliases)
            sel = params.get("$select")
            if sel:
                values = [{k: v.get(k) for k in ["MetadataId", *sel.split(",")]} for v in values]
            ctx = f"{self.api}$metadata#EntityDefinitions('{table.logical_name}')/{rest[0][0]}"
            return ApiResponse.json(200, {"@odata.context": ctx, "value": values})
        if rest[0][0] != "Attributes":
            raise segment_not_found(rest[0][0])
        attr_key = rest[0][1]
        cast = None
        tail = rest[1:]
        if tail:
            name = tail[0][0]
            if not name.startswith(CRM) or name[len(CRM):] not in KNOWN_CASTS or len(tail) > 1:
                raise segment_not_found(name)
            cast = name[len(CRM):]
        base_ctx = f"{self.api}$metadata#EntityDefinitions('{table.logical_name}')/Attributes"
        if cast:
            base_ctx += f"/Microsoft.Dynamics.CRM.{cast}"
        sel = params.get("$select")
        if attr_key is not None:
            logical = attr_key.split("=", 1)[1].strip().strip("'") if "=" in attr_key else None
            col = table.column(logical) if logical else next(
                (c for c in table.columns if _id("attribute", table.logical_name, c.name) == attr_key.strip("'")),
                None)
            if col is None:
                raise ApiError(404, "0x80040217",
                               f"Could not find attribute with name '{logical or attr_key}' on entity "
                               f"'{table.logical_name}'.")
            if not self._cast_matches(cast, col):
                raise ApiError(400, "0x80060888",
                               f"The attribute '{col.name}' is not of type 'Microsoft.Dynamics.CRM.{cast}'.")
            match = self._attribute_items(table, cast, expand, {"$select": sel or ""}, aliases, only=col)
            ctx = base_ctx + (f"({sel})" if sel else "") + "/$entity"
            return ApiResponse.json(200, {"@odata.context": ctx, **match[0]})
        items = self._attribute_items(table, cast, expand, params, aliases)
        ctx = base_ctx + (f"({sel})" if sel else "")
        return ApiResponse.json(200, {"@odata.context": ctx, "value": items})


def csdl(tables: tuple[t.Table, ...]) -> bytes:
    """CSDL for the served entity sets: types, keys, alternate keys, navigation properties, actions, functions."""
    by_name = {tb.logical_name: tb for tb in tables}
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">',
        '<edmx:Reference Uri="http://vocabularies.odata.org/OData.Community.Keys.V1.xml">'
        '<edmx:Include Namespace="OData.Community.Keys.V1" Alias="Keys"/></edmx:Reference>',
        '<edmx:Reference Uri="http://vocabularies.odata.org/OData.Community.Display.V1.xml">'
        '<edmx:Include Namespace="OData.Community.Display.V1" Alias="Display"/></edmx:Reference>',
        '<edmx:Reference Uri="https://oasis-tcs.github.io/odata-vocabularies/vocabularies/Org.OData.Capabilities.V1.xml">'
        '<edmx:Include Namespace="Org.OData.Capabilities.V1" Alias="Capabilities"/></edmx:Reference>',
        "<edmx:DataServices>",
        '<Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm" xmlns="http://docs.oasis-open.org/odata/ns/edm">',
        '<EntityType Name="crmbaseentity" Abstract="true"/>',
        '<EntityType Name="principal" BaseType="mscrm.crmbaseentity" Abstract="true">'
        '<Property Name="ownerid" Type="Edm.Guid"/></EntityType>',
        '<EntityType Name="businessunit" BaseType="mscrm.crmbaseentity"><Key><PropertyRef Name="businessunitid"/>'
        '</Key><Property Name="businessunitid" Type="Edm.Guid"/><Property Name="name" Type="Edm.String"/>'
        '</EntityType>',
    ]
    for table in tables:
        base = "mscrm.principal" if table.logical_name in ("systemuser", "team") else "mscrm.crmbaseentity"
        lines.append(f"<EntityType Name={quoteattr(table.logical_name)} BaseType=\"{base}\">")
        key_name = "ownerid" if base == "mscrm.principal" else table.primary_id
        lines.append(f"<Key><PropertyRef Name={quoteattr(key_name)}/></Key>")
        for col in table.columns:
            if base == "mscrm.principal" and col.name == table.primary_id:
                continue
            extra = f' MaxLength="{col.max_length}"' if col.max_length and col.type in (t.STRING, t.MEMO) else ""
            if col.type in (t.MONEY, t.DECIMAL):
                extra = ' Scale="Variable"'
            lines.append(f"<Property Name={quoteattr(col.json_name)} Type=\"{edm_of(col)}\"{extra}/>")
        for col in table.columns:
            for nav, targets in col.nav_names().items():
                target = "principal" if len(targets) > 1 else targets[0]
                if target not in by_name and target not in ("principal", "businessunit"):
                    continue
                referenced = "ownerid" if target == "principal" else (
                    by_name[target].primary_id if target in by_name else target + "id")
                lines.append(f"<NavigationProperty Name={quoteattr(nav)} Type=\"mscrm.{target}\" "
                             f"Partner={quoteattr(f'{table.logical_name}_{col.name}')}>"
                             f"<ReferentialConstraint Property={quoteattr(col.json_name)} "
                             f"ReferencedProperty={quoteattr(referenced)}/></NavigationProperty>")
        if table.alternate_keys:
            lines.append('<Annotation Term="OData.Community.Keys.V1.AlternateKeys"><Collection>')
            for cols in table.alternate_keys:
                lines.append('<Record Type="OData.Community.Keys.V1.AlternateKey"><PropertyValue Property="Key">'
                             '<Collection>' + "".join(
                                 '<Record Type="OData.Community.Keys.V1.PropertyRef"><PropertyValue '
                                 f'Property="Alias" String={quoteattr(c)}/><PropertyValue Property="Name" '
                                 f'PropertyPath={quoteattr(c)}/></Record>' for c in cols)
                             + "</Collection></PropertyValue></Record>")
            lines.append("</Collection></Annotation>")
        lines.append("</EntityType>")
    lines.append('<ComplexType Name="WhoAmIResponse"><Property Name="BusinessUnitId" Type="Edm.Guid" '
                 'Nullable="false"/><Property Name="UserId" Type="Edm.Guid" Nullable="false"/>'
                 '<Property Name="OrganizationId" Type="Edm.Guid" Nullable="false"/></ComplexType>')
    for action in ("CreateMultiple", "UpsertMultiple"):
        lines.append(f'<ComplexType Name="{action}Response"><Property Name="Ids" Type="Collection(Edm.Guid)" '
                     'Nullable="false"/></ComplexType>')
    lines.append('<ComplexType Name="BulkDeleteResponse"><Property Name="JobId" Type="Edm.Guid" '
                 'Nullable="false"/></ComplexType>')
    lines.append('<ComplexType Name="QueryExpression"><Property Name="EntityName" Type="Edm.String"/>'
                 '<Property Name="Criteria" Type="Edm.Untyped"/><Property Name="ColumnSet" Type="Edm.Untyped"/>'
                 '</ComplexType>')
    lines.append('<Function Name="WhoAmI"><ReturnType Type="mscrm.WhoAmIResponse" Nullable="false"/></Function>')
    for action in ("CreateMultiple", "UpdateMultiple", "UpsertMultiple"):
        returns = "" if action == "UpdateMultiple" else \
            f'<ReturnType Type="mscrm.{action}Response" Nullable="false"/>'
        lines.append(f'<Action Name="{action}" IsBound="true"><Parameter Name="entityset" '
                     'Type="Collection(mscrm.crmbaseentity)" Nullable="false"/><Parameter Name="Targets" '
                     f'Type="Collection(mscrm.crmbaseentity)" Nullable="false"/>{returns}</Action>')
    lines.append('<Action Name="BulkDelete"><Parameter Name="QuerySet" Type="Collection(mscrm.QueryExpression)" '
                 'Nullable="false"/><Parameter Name="JobName" Type="Edm.String" Nullable="false"/>'
                 '<Parameter Name="SendEmailNotification" Type="Edm.Boolean" Nullable="false"/>'
                 '<Parameter Name="ToRecipients" Type="Collection(Edm.Guid)" Nullable="false"/>'
                 '<Parameter Name="CCRecipients" Type="Collection(Edm.Guid)" Nullable="false"/>'
                 '<Parameter Name="RecurrencePattern" Type="Edm.String" Nullable="false"/>'
                 '<Parameter Name="StartDateTime" Type="Edm.DateTimeOffset" Nullable="false"/>'
                 '<ReturnType Type="mscrm.BulkDeleteResponse" Nullable="false"/></Action>')
    if "lead" in by_name:
        lines.append('<Action Name="QualifyLead" IsBound="true"><Parameter Name="entity" Type="mscrm.lead" '
                     'Nullable="false"/><Parameter Name="CreateAccount" Type="Edm.Boolean" Nullable="false"/>'
                     '<Parameter Name="CreateContact" Type="Edm.Boolean" Nullable="false"/>'
                     '<Parameter Name="CreateOpportunity" Type="Edm.Boolean" Nullable="false"/>'
                     '<Parameter Name="OpportunityCurrencyId" Type="mscrm.crmbaseentity"/>'
                     '<Parameter Name="OpportunityCustomerId" Type="mscrm.crmbaseentity"/>'
                     '<Parameter Name="SourceCampaignId" Type="mscrm.crmbaseentity"/>'
                     '<Parameter Name="Status" Type="Edm.Int32" Nullable="false"/>'
                     '<Parameter Name="SuppressDuplicateDetection" Type="Edm.Boolean"/>'
                     '<ReturnType Type="Collection(mscrm.crmbaseentity)" Nullable="false"/></Action>')
    lines.append('<EntityContainer Name="System">')
    for table in tables:
        lines.append(f"<EntitySet Name={quoteattr(table.entity_set)} "
                     f"EntityType={quoteattr('Microsoft.Dynamics.CRM.' + table.logical_name)}>")
        for col in table.columns:
            for nav, targets in col.nav_names().items():
                if len(targets) == 1 and targets[0] in by_name:
                    lines.append(f"<NavigationPropertyBinding Path={quoteattr(nav)} "
                                 f"Target={quoteattr(by_name[targets[0]].entity_set)}/>")
        lines.append('<Annotation Term="Org.OData.Capabilities.V1.ChangeTracking"><Record>'
                     f'<PropertyValue Property="Supported" Bool="{str(table.change_tracking).lower()}"/>'
                     "</Record></Annotation></EntitySet>")
    lines.append('<FunctionImport Name="WhoAmI" Function="Microsoft.Dynamics.CRM.WhoAmI"/>')
    lines.append('<ActionImport Name="BulkDelete" Action="Microsoft.Dynamics.CRM.BulkDelete"/>')
    lines += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(lines).encode("utf-8")
