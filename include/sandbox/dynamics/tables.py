"""Dataverse table definitions served by the sandbox, kept as plain data.

Why: everything the Web API does with a table (SQL schema, $select/$filter checks, payload
validation, MaxLength and RequiredLevel rules, metadata under EntityDefinitions, $metadata CSDL,
formatted values) is derived from these records. Adding ``account`` or a custom table means
adding one ``Table(...)`` entry to ``TABLES``; no handler code changes.

Column facts follow the standard Dataverse metadata (see shared/reference/dynamics-api.md §9, §12).
``auto`` marks columns the platform fills in itself:
  ``createdon``/``modifiedon``  stamped with the current UTC time,
  ``createdby``/``modifiedby``  stamped with the calling user's systemuserid,
  ``version``                   the global row version (like a SQL rowversion),
  ``caller``                    defaulted to the caller when not supplied (ownerid).
``compute`` names the columns whose non-empty values, joined with a space, make the column
(``fullname`` = firstname + lastname).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# AttributeType values used below (Dataverse AttributeTypeCode names).
STRING = "String"
MEMO = "Memo"
INTEGER = "Integer"
BIGINT = "BigInt"
BOOLEAN = "Boolean"
DATETIME = "DateTime"
PICKLIST = "Picklist"
STATE = "State"
STATUS = "Status"
LOOKUP = "Lookup"
OWNER = "Owner"
UNIQUEIDENTIFIER = "Uniqueidentifier"

# RequiredLevel values.
NONE = "None"
SYSTEM_REQUIRED = "SystemRequired"
APPLICATION_REQUIRED = "ApplicationRequired"
RECOMMENDED = "Recommended"

LOOKUP_TYPES = frozenset({LOOKUP, OWNER, "Customer"})
CHOICE_TYPES = frozenset({PICKLIST, STATE, STATUS})


@dataclass(frozen=True)
class Option:
    """One choice value. ``state`` is set for Status options, ``default_status`` for State options."""

    value: int
    label: str
    state: int | None = None
    default_status: int | None = None
    invariant_name: str | None = None


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    schema_name: str
    display: str
    max_length: int | None = None
    required: str = NONE
    create: bool = True
    update: bool = True
    read: bool = True
    secured: bool = False
    options: tuple[Option, ...] = ()
    targets: tuple[str, ...] = ()
    default: object = None
    auto: str | None = None
    compute: tuple[str, ...] = ()
    format: str | None = None

    @property
    def is_lookup(self) -> bool:
        return self.type in LOOKUP_TYPES

    @property
    def json_name(self) -> str:
        """Property name in Web API payloads (lookups read as ``_<name>_value``)."""
        return f"_{self.name}_value" if self.is_lookup else self.name


@dataclass(frozen=True)
class Table:
    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str
    schema_name: str
    display: str
    display_collection: str
    object_type_code: int
    columns: tuple[Column, ...]
    change_tracking: bool = True
    read_only: bool = False
    indexes: tuple[str, ...] = ()
    _by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({c.name: c for c in self.columns})

    def column(self, name: str) -> Column | None:
        return self._by_name.get(name)

    def column_by_json_name(self, json_name: str) -> Column | None:
        """Resolve a payload/query property name (``firstname``, ``_ownerid_value``)."""
        if json_name.startswith("_") and json_name.endswith("_value"):
            col = self._by_name.get(json_name[1:-6])
            return col if col is not None and col.is_lookup else None
        col = self._by_name.get(json_name)
        return col if col is not None and not col.is_lookup else None

    @property
    def edm_type(self) -> str:
        return f"Microsoft.Dynamics.CRM.{self.logical_name}"


def _s(name: str, schema: str, display: str, length: int, required: str = NONE, **kw: object) -> Column:
    return Column(name, STRING, schema, display, max_length=length, required=required, **kw)  # type: ignore[arg-type]


def _audit_columns(owned: bool = True) -> tuple[Column, ...]:
    """Columns every user-owned Dataverse table carries."""
    cols = [
        Column("createdon", DATETIME, "CreatedOn", "Created On", create=False, update=False, auto="createdon"),
        Column("modifiedon", DATETIME, "ModifiedOn", "Modified On", create=False, update=False, auto="modifiedon"),
        Column("createdby", LOOKUP, "CreatedBy", "Created By", create=False, update=False,
               targets=("systemuser",), auto="createdby"),
        Column("modifiedby", LOOKUP, "ModifiedBy", "Modified By", create=False, update=False,
               targets=("systemuser",), auto="modifiedby"),
        Column("versionnumber", BIGINT, "VersionNumber", "Version Number", create=False, update=False, auto="version"),
    ]
    if owned:
        cols.insert(0, Column("ownerid", OWNER, "OwnerId", "Owner", required=SYSTEM_REQUIRED,
                              targets=("systemuser", "team"), auto="caller"))
    return tuple(cols)


LEAD_SOURCE = (
    Option(1, "Advertisement"), Option(2, "Employee Referral"), Option(3, "External Referral"),
    Option(4, "Partner"), Option(5, "Public Relations"), Option(6, "Seminar"), Option(7, "Trade Show"),
    Option(8, "Web"), Option(9, "Word of Mouth"), Option(10, "Other"),
)

LEAD = Table(
    logical_name="lead", entity_set="leads", primary_id="leadid", primary_name="fullname",
    schema_name="Lead", display="Lead", display_collection="Leads", object_type_code=4,
    indexes=("modifiedon", "versionnumber", "emailaddress1"),
    columns=(
        Column("leadid", UNIQUEIDENTIFIER, "LeadId", "Lead", required=SYSTEM_REQUIRED, update=False),
        _s("firstname", "FirstName", "First Name", 50, RECOMMENDED),
        _s("lastname", "LastName", "Last Name", 50, APPLICATION_REQUIRED),
        _s("fullname", "FullName", "Name", 160, create=False, update=False, compute=("firstname", "lastname")),
        _s("emailaddress1", "EMailAddress1", "Email", 100, format="Email"),
        _s("telephone1", "Telephone1", "Business Phone", 50, format="Phone"),
        _s("mobilephone", "MobilePhone", "Mobile Phone", 20, format="Phone"),
        _s("jobtitle", "JobTitle", "Job Title", 100),
        _s("companyname", "CompanyName", "Company Name", 100),
        _s("subject", "Subject", "Topic", 300, APPLICATION_REQUIRED),
        Column("leadsourcecode", PICKLIST, "LeadSourceCode", "Lead Source", options=LEAD_SOURCE),
        Column("leadqualitycode", PICKLIST, "LeadQualityCode", "Rating",
               options=(Option(1, "Hot"), Option(2, "Warm"), Option(3, "Cold"))),
        Column("statecode", STATE, "StateCode", "Status", required=SYSTEM_REQUIRED, create=False, default=0,
               options=(Option(0, "Open", default_status=1, invariant_name="Open"),
                        Option(1, "Qualified", default_status=3, invariant_name="Qualified"),
                        Option(2, "Disqualified", default_status=4, invariant_name="Disqualified"))),
        Column("statuscode", STATUS, "StatusCode", "Status Reason", default=1,
               options=(Option(1, "New", state=0), Option(2, "Contacted", state=0),
                        Option(3, "Qualified", state=1), Option(4, "Lost", state=2),
                        Option(5, "Cannot Contact", state=2), Option(6, "No Longer Interested", state=2),
                        Option(7, "Canceled", state=2))),
        *_audit_columns(),
    ),
)

CONTACT = Table(
    logical_name="contact", entity_set="contacts", primary_id="contactid", primary_name="fullname",
    schema_name="Contact", display="Contact", display_collection="Contacts", object_type_code=2,
    indexes=("modifiedon", "versionnumber", "emailaddress1"),
    columns=(
        Column("contactid", UNIQUEIDENTIFIER, "ContactId", "Contact", required=SYSTEM_REQUIRED, update=False),
        _s("firstname", "FirstName", "First Name", 50, RECOMMENDED),
        _s("lastname", "LastName", "Last Name", 50, APPLICATION_REQUIRED),
        _s("fullname", "FullName", "Full Name", 160, create=False, update=False, compute=("firstname", "lastname")),
        _s("emailaddress1", "EMailAddress1", "Email", 100, format="Email"),
        _s("telephone1", "Telephone1", "Business Phone", 50, format="Phone"),
        _s("mobilephone", "MobilePhone", "Mobile Phone", 20, format="Phone"),
        _s("jobtitle", "JobTitle", "Job Title", 100),
        Column("statecode", STATE, "StateCode", "Status", required=SYSTEM_REQUIRED, create=False, default=0,
               options=(Option(0, "Active", default_status=1, invariant_name="Active"),
                        Option(1, "Inactive", default_status=2, invariant_name="Inactive"))),
        Column("statuscode", STATUS, "StatusCode", "Status Reason", default=1,
               options=(Option(1, "Active", state=0), Option(2, "Inactive", state=1))),
        *_audit_columns(),
    ),
)

SYSTEMUSER = Table(
    logical_name="systemuser", entity_set="systemusers", primary_id="systemuserid", primary_name="fullname",
    schema_name="SystemUser", display="User", display_collection="Users", object_type_code=8,
    read_only=True,
    columns=(
        Column("systemuserid", UNIQUEIDENTIFIER, "SystemUserId", "User", required=SYSTEM_REQUIRED, update=False),
        _s("firstname", "FirstName", "First Name", 64),
        _s("lastname", "LastName", "Last Name", 64),
        _s("fullname", "FullName", "Full Name", 200, create=False, update=False, compute=("firstname", "lastname")),
        _s("domainname", "DomainName", "User Name", 1024, SYSTEM_REQUIRED),
        _s("internalemailaddress", "InternalEMailAddress", "Primary Email", 100, format="Email"),
        Column("applicationid", UNIQUEIDENTIFIER, "ApplicationId", "Application ID"),
        Column("isdisabled", BOOLEAN, "IsDisabled", "Status", default=0),
        Column("accessmode", PICKLIST, "AccessMode", "Access Mode", required=SYSTEM_REQUIRED, default=0,
               options=(Option(0, "Read-Write"), Option(1, "Administrative"), Option(2, "Read"),
                        Option(3, "Support User"), Option(4, "Non-interactive"), Option(5, "Delegated Admin"))),
        Column("businessunitid", LOOKUP, "BusinessUnitId", "Business Unit", required=SYSTEM_REQUIRED,
               targets=("businessunit",)),
        *_audit_columns(owned=False),
    ),
)

TABLES: tuple[Table, ...] = (LEAD, CONTACT, SYSTEMUSER)

# Tables that /_sandbox/reset empties and /_sandbox/seed fills.
DATA_TABLES: tuple[str, ...] = ("lead", "contact")
