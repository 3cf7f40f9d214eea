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

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

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

CUSTOMER = "Customer"
MONEY = "Money"
DECIMAL = "Decimal"
DOUBLE = "Double"

LOOKUP_TYPES = frozenset({LOOKUP, OWNER, CUSTOMER})
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
    nav: str | None = None  # single-valued navigation property (custom lookups: the SchemaName)
    grants: tuple[str, ...] = ()  # roles ("sync", "user") a field-security profile lets read/write a secured column
    min_value: float | None = None
    max_value: float | None = None
    behavior: str | None = None  # DateTimeBehavior: UserLocal, DateOnly, TimeZoneIndependent
    custom: bool = False

    def nav_names(self) -> dict[str, tuple[str, ...]]:
        """Navigation property name → target tables (customer lookups have one property per target)."""
        if not self.is_lookup:
            return {}
        if self.type == "Customer":
            return {f"{self.name}_{target}": (target,) for target in self.targets}
        return {self.nav or self.name: self.targets}

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
    alternate_keys: tuple[tuple[str, ...], ...] = ()  # column names of each alternate key
    custom: bool = False
    # Read-only tables (systemuser, team): the columns callers may still PATCH (as an administrator would),
    # and whether they may DELETE rows. Anything else stays 403, as for a caller without the privilege.
    admin_update: tuple[str, ...] = ()
    admin_delete: bool = False
    # Rows with statecode != 0 refuse updates other than a state change (qualified/disqualified leads).
    closed_read_only: bool = False
    _by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({c.name: c for c in self.columns})

    def column(self, name: str) -> Column | None:
        return self._by_name.get(name)

    def nav_column(self, nav: str) -> tuple[Column, tuple[str, ...]] | None:
        """The lookup column behind a navigation property, and the targets it may address."""
        for col in self.columns:
            targets = col.nav_names().get(nav)
            if targets is not None:
                return col, targets
        return None

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


def _sync_filter() -> Column:
    """The Marketo sync filter: a custom Two Options column with no default, so an unset value reads null.

    Why: Marketo's Dynamics sync excludes a record only when ``new_synctomkto`` is explicitly No
    (shared/reference/sync-semantics.md §6), so "empty" must stay distinguishable from No.
    """
    return Column("new_synctomkto", BOOLEAN, "new_SyncToMkto", "Sync to Marketo", custom=True,
                  options=(Option(0, "No"), Option(1, "Yes")))


def _originating_lead() -> Column:
    """The lead a row was created from by QualifyLead (contact, account, opportunity)."""
    return Column("originatingleadid", LOOKUP, "OriginatingLeadId", "Originating Lead", targets=("lead",))


def _active_inactive() -> tuple[Column, ...]:
    return (
        Column("statecode", STATE, "StateCode", "Status", required=SYSTEM_REQUIRED, create=False, default=0,
               options=(Option(0, "Active", default_status=1, invariant_name="Active"),
                        Option(1, "Inactive", default_status=2, invariant_name="Inactive"))),
        Column("statuscode", STATUS, "StatusCode", "Status Reason", default=1,
               options=(Option(1, "Active", state=0), Option(2, "Inactive", state=1))),
    )


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
        _sync_filter(),
        *_audit_columns(),
    ),
    closed_read_only=True,
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
        Column("parentcustomerid", CUSTOMER, "ParentCustomerId", "Company Name", targets=("account", "contact")),
        Column("birthdate", DATETIME, "BirthDate", "Birthday", behavior="DateOnly"),
        _originating_lead(),
        _sync_filter(),
        *_active_inactive(),
        *_audit_columns(),
    ),
)

ACCOUNT = Table(
    logical_name="account", entity_set="accounts", primary_id="accountid", primary_name="name",
    schema_name="Account", display="Account", display_collection="Accounts", object_type_code=1,
    indexes=("modifiedon", "versionnumber", "name"), alternate_keys=(("accountnumber",),),
    columns=(
        Column("accountid", UNIQUEIDENTIFIER, "AccountId", "Account", required=SYSTEM_REQUIRED, update=False),
        _s("name", "Name", "Account Name", 160, APPLICATION_REQUIRED),
        _s("accountnumber", "AccountNumber", "Account Number", 20),
        _s("emailaddress1", "EMailAddress1", "Email", 100, format="Email"),
        _s("telephone1", "Telephone1", "Main Phone", 50, format="Phone"),
        _s("websiteurl", "WebSiteURL", "Website", 200, format="Url"),
        _s("address1_city", "Address1_City", "Address 1: City", 80),
        _s("address1_country", "Address1_Country", "Address 1: Country/Region", 80),
        Column("industrycode", PICKLIST, "IndustryCode", "Industry", options=(
            Option(1, "Accounting"), Option(2, "Agriculture and Non-petrol Natural Resource Extraction"),
            Option(3, "Broadcasting Printing and Publishing"), Option(4, "Brokers"),
            Option(5, "Building Supply Retail"), Option(6, "Business Services"), Option(7, "Consulting"),
            Option(8, "Consumer Services"), Option(9, "Design, Direction and Creative Management"),
            Option(10, "Distributors, Dispatchers and Processors"), Option(11, "Doctor's Offices and Clinics"),
            Option(12, "Durable Manufacturing"), Option(13, "Eating and Drinking Places"),
            Option(14, "Entertainment Retail"), Option(15, "Equipment Rental and Leasing"),
            Option(16, "Financial"), Option(17, "Food and Tobacco Processing"),
            Option(18, "Inbound Capital Intensive Processing"), Option(19, "Inbound Repair and Services"),
            Option(20, "Insurance"), Option(21, "Legal Services"), Option(22, "Non-Durable Merchandise Retail"),
            Option(23, "Outbound Consumer Service"), Option(24, "Petrochemical Extraction and Distribution"),
            Option(25, "Service Retail"), Option(26, "SIG Affiliations"), Option(27, "Social Services"),
            Option(28, "Special Outbound Trade Contractors"), Option(29, "Specialty Realty"),
            Option(30, "Transportation"), Option(31, "Utility Creation and Distribution"),
            Option(32, "Vehicle Retail"), Option(33, "Wholesale"))),
        Column("revenue", MONEY, "Revenue", "Annual Revenue", min_value=0, max_value=100_000_000_000_000),
        Column("numberofemployees", INTEGER, "NumberOfEmployees", "Number of Employees",
               min_value=0, max_value=1_000_000_000),
        Column("primarycontactid", LOOKUP, "PrimaryContactId", "Primary Contact", targets=("contact",)),
        Column("parentaccountid", LOOKUP, "ParentAccountId", "Parent Account", targets=("account",)),
        _originating_lead(),
        _sync_filter(),
        *_active_inactive(),
        *_audit_columns(),
    ),
)

OPPORTUNITY = Table(
    logical_name="opportunity", entity_set="opportunities", primary_id="opportunityid", primary_name="name",
    schema_name="Opportunity", display="Opportunity", display_collection="Opportunities", object_type_code=3,
    indexes=("modifiedon", "versionnumber", "parentaccountid"),
    columns=(
        Column("opportunityid", UNIQUEIDENTIFIER, "OpportunityId", "Opportunity", required=SYSTEM_REQUIRED,
               update=False),
        _s("name", "Name", "Topic", 300, APPLICATION_REQUIRED),
        Column("description", MEMO, "Description", "Description", max_length=2000),
        Column("parentaccountid", LOOKUP, "ParentAccountId", "Account", targets=("account",)),
        Column("parentcontactid", LOOKUP, "ParentContactId", "Contact", targets=("contact",)),
        Column("customerid", CUSTOMER, "CustomerId", "Potential Customer", targets=("account", "contact")),
        Column("estimatedvalue", MONEY, "EstimatedValue", "Est. Revenue", min_value=-922337203685477,
               max_value=922337203685477),
        Column("estimatedclosedate", DATETIME, "EstimatedCloseDate", "Est. Close Date", behavior="DateOnly"),
        Column("closeprobability", INTEGER, "CloseProbability", "Probability", min_value=0, max_value=100),
        Column("statecode", STATE, "StateCode", "Status", required=SYSTEM_REQUIRED, create=False, default=0,
               options=(Option(0, "Open", default_status=1, invariant_name="Open"),
                        Option(1, "Won", default_status=3, invariant_name="Won"),
                        Option(2, "Lost", default_status=4, invariant_name="Lost"))),
        Column("statuscode", STATUS, "StatusCode", "Status Reason", default=1,
               options=(Option(1, "In Progress", state=0), Option(2, "On Hold", state=0),
                        Option(3, "Won", state=1), Option(4, "Canceled", state=2),
                        Option(5, "Out-Sold", state=2))),
        _originating_lead(),
        _sync_filter(),
        *_audit_columns(),
    ),
)

TEAM = Table(
    logical_name="team", entity_set="teams", primary_id="teamid", primary_name="name",
    schema_name="Team", display="Team", display_collection="Teams", object_type_code=9, read_only=True,
    admin_update=("name", "description"), admin_delete=True,
    columns=(
        Column("teamid", UNIQUEIDENTIFIER, "TeamId", "Team", required=SYSTEM_REQUIRED, update=False),
        _s("name", "Name", "Team Name", 160, SYSTEM_REQUIRED),
        Column("teamtype", PICKLIST, "TeamType", "Team Type", required=SYSTEM_REQUIRED, default=0,
               options=(Option(0, "Owner"), Option(1, "Access"), Option(2, "Security Group"),
                        Option(3, "Office Group"))),
        Column("isdefault", BOOLEAN, "IsDefault", "Is Default", default=0, create=False, update=False),
        Column("businessunitid", LOOKUP, "BusinessUnitId", "Business Unit", required=SYSTEM_REQUIRED,
               targets=("businessunit",)),
        Column("administratorid", LOOKUP, "AdministratorId", "Administrator", required=SYSTEM_REQUIRED,
               targets=("systemuser",)),
        Column("description", MEMO, "Description", "Description", max_length=2000),
        *_audit_columns(owned=False),
    ),
)

ASYNCOPERATION = Table(
    logical_name="asyncoperation", entity_set="asyncoperations", primary_id="asyncoperationid",
    primary_name="name", schema_name="AsyncOperation", display="System Job", display_collection="System Jobs",
    object_type_code=4700, read_only=True, change_tracking=False,
    columns=(
        Column("asyncoperationid", UNIQUEIDENTIFIER, "AsyncOperationId", "System Job", required=SYSTEM_REQUIRED,
               update=False),
        _s("name", "Name", "System Job Name", 256),
        Column("operationtype", PICKLIST, "OperationType", "System Job Type", options=(
            Option(13, "Bulk Delete"), Option(94, "Bulk Delete Subprocess"))),
        Column("statecode", STATE, "StateCode", "Status", required=SYSTEM_REQUIRED, create=False, default=0,
               options=(Option(0, "Ready", default_status=0, invariant_name="Ready"),
                        Option(1, "Suspended", default_status=10, invariant_name="Suspended"),
                        Option(2, "Locked", default_status=20, invariant_name="Locked"),
                        Option(3, "Completed", default_status=30, invariant_name="Completed"))),
        Column("statuscode", STATUS, "StatusCode", "Status Reason", default=0,
               options=(Option(0, "Waiting For Resources", state=0), Option(10, "Waiting", state=1),
                        Option(20, "In Progress", state=2), Option(21, "Pausing", state=2),
                        Option(22, "Canceling", state=2), Option(30, "Succeeded", state=3),
                        Option(31, "Failed", state=3), Option(32, "Canceled", state=3))),
        Column("message", MEMO, "Message", "Message", max_length=1073741823),
        Column("completedon", DATETIME, "CompletedOn", "Completed On", create=False, update=False),
        *_audit_columns(),
    ),
)

SYSTEMUSER = Table(
    logical_name="systemuser", entity_set="systemusers", primary_id="systemuserid", primary_name="fullname",
    schema_name="SystemUser", display="User", display_collection="Users", object_type_code=8,
    read_only=True, admin_update=("firstname", "lastname", "internalemailaddress", "isdisabled"),
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

CONFIG_FILE = Path(__file__).with_name("custom_tables.json")
_TYPES = {STRING, MEMO, INTEGER, BIGINT, BOOLEAN, DATETIME, PICKLIST, LOOKUP, CUSTOMER, MONEY, DECIMAL, DOUBLE}


def load_custom_tables(path: Path | None = None) -> tuple[Table, ...]:
    """Custom tables declared in ``custom_tables.json`` (or ``$DYNAMICS_SANDBOX_TABLES``), as ``Table`` records.

    Each table gets what Dataverse gives every custom user-owned table: ``<name>id`` primary key, owner,
    statecode/statuscode (Active/Inactive) and the audit columns. A lookup's navigation property is its
    SchemaName, as for real custom lookups.
    """
    path = path or Path(os.environ.get("DYNAMICS_SANDBOX_TABLES", CONFIG_FILE))
    if not path.exists():
        return ()
    spec = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, item in enumerate(spec.get("tables", [])):
        logical = item["logical_name"]
        cols = [Column(f"{logical}id", UNIQUEIDENTIFIER, f"{item['schema_name']}Id", item["display"],
                       required=SYSTEM_REQUIRED, update=False, custom=True)]
        for c in item["columns"]:
            ctype = c["type"]
            if ctype not in _TYPES:
                raise ValueError(f"{path}: column {c['name']}: unsupported type {ctype}")
            options = tuple(Option(int(v), str(label)) for v, label in c.get("options", []))
            if ctype == BOOLEAN and not options:
                options = (Option(0, "No"), Option(1, "Yes"))
            cols.append(Column(
                c["name"], ctype, c.get("schema_name", c["name"]), c.get("display", c["name"]),
                max_length=c.get("max_length", 100 if ctype == STRING else 2000 if ctype == MEMO else None),
                required=c.get("required", NONE), secured=bool(c.get("secured", False)),
                grants=tuple(c.get("grants", ())), options=options, targets=tuple(c.get("targets", ())),
                default=c.get("default"), format=c.get("format"), min_value=c.get("min_value"),
                max_value=c.get("max_value"), behavior=c.get("behavior"), custom=True,
                nav=c.get("schema_name") if ctype == LOOKUP else None,
            ))
        cols += [*_active_inactive(), *_audit_columns()]
        out.append(Table(
            logical_name=logical, entity_set=item.get("entity_set", logical + "s"), primary_id=f"{logical}id",
            primary_name=item["primary_name"], schema_name=item["schema_name"], display=item["display"],
            display_collection=item.get("display_collection", item["display"] + "s"),
            object_type_code=int(item.get("object_type_code", 10000 + i)), columns=tuple(cols),
            indexes=("modifiedon", "versionnumber", *item.get("indexes", ())),
            alternate_keys=tuple(tuple(k) for k in item.get("alternate_keys", ())), custom=True,
            change_tracking=bool(item.get("change_tracking", True)),
        ))
    return tuple(out)


CUSTOM_TABLES = load_custom_tables()
TABLES: tuple[Table, ...] = (LEAD, CONTACT, ACCOUNT, OPPORTUNITY, SYSTEMUSER, TEAM, ASYNCOPERATION, *CUSTOM_TABLES)

# Tables that /_sandbox/reset empties and /_sandbox/seed fills.
DATA_TABLES: tuple[str, ...] = ("lead", "contact", "account", "opportunity", "asyncoperation",
                                *(tb.logical_name for tb in CUSTOM_TABLES))

# Principal tables: /_sandbox/reset puts them back to the two application users and the default team.
PRINCIPAL_TABLES: tuple[str, ...] = ("systemuser", "team")
