"""Lead field catalogue of the sandbox and the value rules the real API applies to them.

One table drives describe, describe2, the schema endpoints, the SQLite columns, the ``fields`` parameter
of reads and the validation of Sync Leads input, so they can never disagree.

Field ids: the ids of ``company`` (2), ``firstName`` (48), ``lastName`` (50) and ``email`` (51) are the
ones seen in Adobe's documentation examples and public client fixtures; the others are sandbox choices
(field ids differ between real subscriptions anyway, clients must read them from describe). Ids once
given are never changed; new fields take new ids (55-67 for the company, link and lead owner fields).

Company fields (``company``, ``website``, ``mainPhone``, ``industry``, ``annualRevenue``,
``numberOfEmployees``, ``billingCity``, ``billingCountry``), the links ``externalCompanyId`` /
``externalSalesPersonId`` and the read-only Lead Owner fields are explained in :mod:`links`; the Lead
Owner fields are not stored (``stored=False``) but read from the linked sales person.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldDef:
    """One lead field as Marketo describes it."""

    id: int
    name: str
    display_name: str
    data_type: str
    length: int | None
    read_only: bool
    soap_name: str
    searchable: bool = False
    custom: bool = False
    description: str | None = None
    stored: bool = True  # False: computed on read (Lead Owner fields), no SQLite column

    def describe(self) -> dict[str, Any]:
        """Item of ``GET /rest/v1/leads/describe.json``."""
        item: dict[str, Any] = {"id": self.id, "displayName": self.display_name, "dataType": self.data_type}
        if self.length is not None:
            item["length"] = self.length
        item["rest"] = {"name": self.name, "readOnly": self.read_only}
        item["soap"] = {"name": self.soap_name, "readOnly": self.read_only}
        return item

    def describe2(self) -> dict[str, Any]:
        """Item of ``fields`` in ``GET /rest/v1/leads/describe2.json``."""
        item: dict[str, Any] = {"name": self.name, "displayName": self.display_name, "dataType": self.data_type}
        if self.length is not None:
            item["length"] = self.length
        item["updateable"] = not self.read_only
        item["crmManaged"] = False
        return item

    def schema(self) -> dict[str, Any]:
        """Item of ``GET /rest/v1/leads/schema/fields.json``."""
        item: dict[str, Any] = {
            "displayName": self.display_name,
            "name": self.name,
            "description": self.description,
            "dataType": self.data_type,
        }
        if self.length is not None:
            item["length"] = self.length
        item.update(
            {
                "isHidden": False,
                "isHtmlEncodingInEmail": self.data_type in {"string", "email", "phone", "text"},
                "isSensitive": False,
                "isCustom": self.custom,
            }
        )
        return item


LEAD_FIELDS: tuple[FieldDef, ...] = (
    FieldDef(1, "id", "Id", "integer", None, True, "Id", searchable=True),
    FieldDef(2, "company", "Company Name", "string", 255, False, "Company"),
    FieldDef(26, "createdAt", "Created At", "datetime", None, True, "CreatedAt"),
    FieldDef(27, "updatedAt", "Updated At", "datetime", None, True, "UpdatedAt"),
    FieldDef(45, "leadSource", "Person Source", "string", 255, False, "LeadSource"),
    FieldDef(48, "firstName", "First Name", "string", 255, False, "FirstName"),
    FieldDef(50, "lastName", "Last Name", "string", 255, False, "LastName"),
    FieldDef(51, "email", "Email Address", "email", 255, False, "Email", searchable=True),
    FieldDef(53, "title", "Job Title", "string", 255, False, "Title"),
    FieldDef(54, "phone", "Phone Number", "phone", 255, False, "Phone"),
    FieldDef(55, "website", "Website", "url", 255, False, "Website"),
    FieldDef(56, "mainPhone", "Main Phone", "phone", 255, False, "MainPhone"),
    FieldDef(57, "industry", "Industry", "string", 255, False, "Industry"),
    FieldDef(58, "annualRevenue", "Annual Revenue", "currency", None, False, "AnnualRevenue"),
    FieldDef(59, "numberOfEmployees", "Num Employees", "integer", None, False, "NumberOfEmployees"),
    FieldDef(60, "billingCity", "Billing City", "string", 255, False, "BillingCity"),
    FieldDef(61, "billingCountry", "Billing Country", "string", 255, False, "BillingCountry"),
    FieldDef(62, "externalCompanyId", "External Company Id", "string", 100, False, "ExternalCompanyId",
             searchable=True, description="externalCompanyId of the company (companies object) the person belongs to"),
    FieldDef(63, "externalSalesPersonId", "External Sales Person Id", "string", 100, False, "ExternalSalesPersonId",
             searchable=True, description="externalSalesPersonId of the sales person who owns the person"),
    FieldDef(64, "leadOwnerFirstName", "Lead Owner First Name", "string", 255, True, "LeadOwnerFirstName",
             stored=False),
    FieldDef(65, "leadOwnerLastName", "Lead Owner Last Name", "string", 255, True, "LeadOwnerLastName",
             stored=False),
    FieldDef(66, "leadOwnerEmail", "Lead Owner Email Address", "email", 255, True, "LeadOwnerEmail", stored=False),
    FieldDef(67, "leadOwnerPhone", "Lead Owner Phone Number", "phone", 255, True, "LeadOwnerPhone", stored=False),
    FieldDef(
        1001, "msdynLeadId", "MS Dynamics Lead Id", "string", 36, False, "msdynLeadId",
        searchable=True, custom=True, description="Dataverse leadid of the linked Dynamics lead",
    ),
    FieldDef(
        1002, "msdynContactId", "MS Dynamics Contact Id", "string", 36, False, "msdynContactId",
        searchable=True, custom=True, description="Dataverse contactid of the linked Dynamics contact",
    ),
    FieldDef(
        1003, "msdynType", "MS Dynamics Type", "string", 20, False, "msdynType",
        searchable=True, custom=True, description="lead or contact",
    ),
    FieldDef(
        1004, "msdynIsDeleted", "MS Dynamics Is Deleted", "boolean", None, False, "msdynIsDeleted",
        custom=True, description="The linked Dynamics record was deleted",
    ),
)

FIELDS_BY_NAME: dict[str, FieldDef] = {f.name: f for f in LEAD_FIELDS}
# Column order of the SQLite ``leads`` table (and of SELECT *); computed fields have no column.
COLUMNS: tuple[str, ...] = tuple(f.name for f in LEAD_FIELDS if f.stored)
WRITABLE: frozenset[str] = frozenset(f.name for f in LEAD_FIELDS if not f.read_only)
# Whether real Marketo accepts externalCompanyId / externalSalesPersonId as filterType is not documented
# (describe2 of the subscription decides); the sandbox allows both so a sync can find a company's people.
SEARCHABLE: tuple[str, ...] = (
    "email", "id", "msdynLeadId", "msdynContactId", "msdynType", "externalCompanyId", "externalSalesPersonId",
)
DEFAULT_READ_FIELDS: tuple[str, ...] = ("id", "email", "updatedAt", "createdAt", "firstName", "lastName")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL_RE = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})+$")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


class FieldValueError(ValueError):
    """A value that the API would refuse; carries the record-level reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def type_error(value: Any, data_type: str) -> FieldValueError:
    """Reason 1001 in the documented wording."""
    shown = "null" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
    return FieldValueError("1001", f"Invalid value '{shown}'. Required of type '{data_type}'")


_DECIMAL = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")


def coerce(field: FieldDef, value: Any) -> str | int | float | None:
    """Turn a JSON input value into the stored value, or raise FieldValueError.

    Empty strings mean "empty field" in Marketo, so they are stored as NULL, like an explicit null.
    """
    if value is None:
        return None
    if field.data_type in ("float", "currency", "percent"):
        if isinstance(value, bool):
            raise type_error(value, field.data_type)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            if value.strip() == "":
                return None
            if _DECIMAL.match(value):
                return float(value)
        raise type_error(value, field.data_type)
    if field.data_type == "boolean":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int) and value in (0, 1):
            return value
        if isinstance(value, str):
            low = value.strip().lower()
            if low == "":
                return None
            if low in _TRUE:
                return 1
            if low in _FALSE:
                return 0
        raise type_error(value, "boolean")
    if field.data_type == "integer":
        if isinstance(value, bool):
            raise type_error(value, "integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
        raise type_error(value, "integer")
    # string-like types
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise type_error(value, field.data_type)
    if text == "":
        return None
    if field.data_type == "email" and not (text.isascii() and _EMAIL_RE.match(text)):
        raise FieldValueError("1003", "Invalid email address")
    if field.length is not None and len(text) > field.length:
        raise FieldValueError("1003", f"Value for field '{field.name}' exceeds max length {field.length}")
    return text


def to_json(field: FieldDef, stored: Any) -> Any:
    """Stored SQLite value → JSON value in a lead record."""
    if stored is None:
        return None
    if field.data_type == "boolean":
        return bool(stored)
    return stored


def to_text(field: FieldDef, stored: Any) -> str | None:
    """Stored value → the string form used in Change Data Value activities."""
    if stored is None:
        return None
    if field.data_type == "boolean":
        return "true" if stored else "false"
    return str(stored)
