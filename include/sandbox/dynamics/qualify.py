"""The ``QualifyLead`` bound action: ``POST leads(<id>)/Microsoft.Dynamics.CRM.QualifyLead``.

Why: Marketo's Dynamics sync follows leads that salespeople qualify into contacts
(shared/reference/sync-semantics.md §6, §9), so the sandbox must leave behind what the real action
does: an account, a contact and/or an opportunity carrying ``originatingleadid``, and the lead closed
as Qualified (statecode 1). Everything is written as the caller in one transaction through the same
row-building code as POST/PATCH, so stamps, row versions (hence change-tracking deltas) and status
validation are the ordinary ones; any failure leaves nothing behind.

Request body: ``CreateAccount``, ``CreateContact``, ``CreateOpportunity`` (Edm.Boolean) and
``Status`` (Edm.Int32, a lead status reason of the Qualified state, normally 3) are required;
``OpportunityCurrencyId``, ``OpportunityCustomerId``, ``SourceCampaignId``, ``SuppressDuplicateDetection``
and ``ProcessInstanceId`` are accepted and ignored. Answer: 200 with the created rows as
``Collection(Microsoft.Dynamics.CRM.crmbaseentity)`` (``@odata.type`` + primary key each).

Field copying follows the standard lead mappings as far as the sandbox's tables go: the account gets
``name`` = companyname (only when companyname is set) and becomes the contact's parent customer; the
contact gets the person columns, the sync filter and the lead's owner; the opportunity gets the topic
(or the full name) and points at the new account/contact. Other rows are owned by the caller.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from .protocol import ApiError, ApiRequest, ApiResponse, payload_error
from .records import not_found

if TYPE_CHECKING:
    from .webapi import WebApi

REQUIRED = {"CreateAccount": bool, "CreateContact": bool, "CreateOpportunity": bool, "Status": int}
IGNORED = {"OpportunityCurrencyId", "OpportunityCustomerId", "SourceCampaignId", "SuppressDuplicateDetection",
           "ProcessInstanceId"}
CONTACT_COLUMNS = ("firstname", "lastname", "emailaddress1", "telephone1", "mobilephone", "jobtitle",
                   "new_synctomkto", "ownerid")
QUALIFIED = 1


def lead_closed() -> ApiError:
    # LeadAlreadyInClosedState (0x80040519); message as shown to users who qualify a closed lead.
    return ApiError(400, "0x80040519",
                    "The lead is closed. You cannot convert or qualify a lead that is already closed.")


def _parameters(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise payload_error("leads", "Microsoft.OData.ODataException: A resource was expected in the payload.")
    for name in body:
        if not name.startswith("@") and name not in REQUIRED and name not in IGNORED:
            raise payload_error("leads", f"Microsoft.OData.ODataException: The parameter '{name}' in the request "
                                "payload is not a valid parameter for the operation 'QualifyLead'.")
    out: dict[str, Any] = {}
    for name, kind in REQUIRED.items():
        if name not in body or body[name] is None:
            # Exact Dataverse text for a missing non-nullable action parameter is unconfirmed.
            raise ApiError(400, "0x80040203", f"The parameter '{name}' of the operation 'QualifyLead' is required.")
        value = body[name]
        if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
            edm = "Edm.Boolean" if kind is bool else "Edm.Int32"
            shown = str(value).lower() if isinstance(value, bool) else value
            raise payload_error("leads", f"Microsoft.OData.ODataException: Cannot convert the literal '{shown}' "
                                f"to the expected type '{edm}'.")
        out[name] = value
    return out


def qualify_lead(web: WebApi, req: ApiRequest, lead_id: str) -> ApiResponse:
    params = _parameters(req.json_body("leads"))
    store, caller = web.store, req.caller
    strict = bool(web.limits["strict_required"])
    leads = store.tables["lead"]
    created: list[tuple[str, str]] = []
    with store.transaction():
        lead = store.get(leads, lead_id)
        if lead is None:
            raise not_found(leads, lead_id)
        if lead.get("statecode") not in (None, 0):
            raise lead_closed()
        # Close the lead first: an invalid Status fails before anything is created (all rolled back anyway).
        changes = web.codec.changed_row(leads, lead, {"statecode": QUALIFIED, "statuscode": params["Status"]},
                                        caller.user_id, strict)
        account_id = str(uuid.uuid4()) if params["CreateAccount"] and lead.get("companyname") else None
        contact_id = str(uuid.uuid4()) if params["CreateContact"] else None
        if account_id:
            web.insert_values(store.tables["account"], {
                "accountid": account_id, "name": lead["companyname"], "originatingleadid": lead_id,
                "primarycontactid": contact_id}, caller)
            created.append(("account", account_id))
        if contact_id:
            values = {c: lead.get(c) for c in CONTACT_COLUMNS if lead.get(c) is not None}
            values.update({"contactid": contact_id, "originatingleadid": lead_id, "parentcustomerid": account_id})
            web.insert_values(store.tables["contact"], values, caller)
            created.append(("contact", contact_id))
        if params["CreateOpportunity"]:
            opp = web.insert_values(store.tables["opportunity"], {
                "name": lead.get("subject") or lead.get("fullname"), "originatingleadid": lead_id,
                "parentaccountid": account_id, "parentcontactid": contact_id,
                "customerid": account_id or contact_id}, caller)
            created.append(("opportunity", opp["opportunityid"]))
        changes["versionnumber"] = store.allocate_versions(1)  # the lead's change comes after the new rows
        store.update(leads, lead_id, changes)
    return ApiResponse.json(200, {
        "@odata.context": f"{web.api}$metadata#Collection(Microsoft.Dynamics.CRM.crmbaseentity)",
        "value": [{"@odata.type": f"#Microsoft.Dynamics.CRM.{logical}", f"{logical}id": row_id}
                  for logical, row_id in created],
    })
