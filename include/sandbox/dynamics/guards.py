"""Write rules that belong to particular tables rather than to every write.

Why: most tables accept any valid create/update/delete, but a few do not, and a sync must meet the
same refusals it would meet in Dataverse:

* ``systemuser`` and ``team`` rows are maintained by administrators. Both sandbox callers act as one
  here (the sync's application user, and the human user who stands for the people running Dynamics,
  its administrator included), so either may PATCH a few business columns (``Table.admin_update``)
  and delete non-default teams that own no records. Creating users or teams and deleting users stay
  refused with the 403 ``prvCreate…``/``prvDelete…`` privilege error; application users themselves
  cannot be updated.
* Leads that are no longer Open (qualified or disqualified) are read-only until reactivated
  (shared/reference/dynamics-api.md §12): only a state change (or an assignment) is accepted.

Error codes and messages are the documented Dataverse ones (web service error codes), except where
marked unconfirmed.
"""

from __future__ import annotations

import uuid
from typing import Any

from . import tables as t
from .identity import Principal
from .protocol import ApiError
from .store import Store

# Columns a closed (qualified/disqualified) lead still accepts: reactivation and assignment.
_STATE_CHANGE = frozenset({"statecode", "statuscode", "ownerid"})


def privilege_error(table: t.Table, caller: Principal, verb: str) -> ApiError:
    privilege = f"prv{verb}{table.schema_name.replace('System', '')}"
    return ApiError(
        403, "0x80040220",
        f"Principal user (Id={caller.user_id}, type=8, roleCount=1, privilegeCount=0, accessMode=4), is missing "
        f"{privilege} privilege (Id={uuid.uuid5(uuid.NAMESPACE_OID, privilege)}) on OTC={table.object_type_code} "
        f"for entity '{table.logical_name}'. context.Caller={caller.user_id}",
    )


def may_update(table: t.Table) -> bool:
    """Whether rows of ``table`` may be updated through the Web API at all."""
    return not table.read_only or bool(table.admin_update)


def may_delete(table: t.Table) -> bool:
    """Whether rows of ``table`` may be deleted through the Web API at all."""
    return not table.read_only or table.admin_delete


def check_update(table: t.Table, existing: dict[str, Any], values: dict[str, Any], caller: Principal) -> None:
    """Raise the error Dataverse gives for this update, if any (``values`` by column name)."""
    if table.read_only:
        _check_admin_update(table, existing, values, caller)
    closed = table.closed_read_only and existing.get("statecode") not in (None, 0)
    if closed and set(values) - _STATE_CHANGE and not _reopens(table, values):
        # Code documented as CannotUpdateObjectBecauseItIsInactive; that Dataverse answers it for a
        # closed lead's columns is unconfirmed.
        raise ApiError(400, "0x80040230", f"This {table.logical_name} is closed and cannot be edited. "
                       "The object cannot be updated because it is inactive.")


def _reopens(table: t.Table, values: dict[str, Any]) -> bool:
    if "statecode" in values:
        return values["statecode"] == 0
    status_col = table.column("statuscode")
    if "statuscode" in values and status_col is not None:
        return any(o.value == values["statuscode"] and o.state == 0 for o in status_col.options)
    return False


def _check_admin_update(table: t.Table, existing: dict[str, Any], values: dict[str, Any],
                        caller: Principal) -> None:
    if not may_update(table):
        raise privilege_error(table, caller, "Write")
    if table.logical_name == "systemuser" and existing.get("applicationid"):
        raise ApiError(400, "0x80041d48", "The user representing an OAuth application cannot not be updated")
    if table.logical_name == "team" and existing.get("isdefault") and "name" in values \
            and values["name"] != existing.get("name"):
        raise ApiError(400, "0x8004830A", "The default business unit team name can't be updated "
                       f"(TeamId = {existing['teamid']}).")
    other = sorted(set(values) - set(table.admin_update))
    if other:
        # A limitation of the sandbox, not of Dataverse: say so plainly.
        raise ApiError(400, "0x80040203", f"The sandbox lets callers update only "
                       f"{', '.join(table.admin_update)} on {table.logical_name}; not: {', '.join(other)}.")


def check_delete(store: Store, table: t.Table, existing: dict[str, Any], caller: Principal) -> None:
    """Raise the error Dataverse gives for deleting ``existing``, if any."""
    if not table.read_only:
        return
    if not may_delete(table):
        raise privilege_error(table, caller, "Delete")
    if table.logical_name == "team":
        team_id = existing["teamid"]
        if existing.get("isdefault"):
            raise ApiError(400, "0x80048307", f"The default business unit team can't be deleted (TeamId = {team_id}).")
        for other in store.tables.values():
            owner = other.column("ownerid")
            if owner is not None and "team" in owner.targets and \
                    store.count(other, '"ownerid" = ?', [team_id], 1):
                raise ApiError(400, "0x8004830E", "Can't delete a team which owns records. Reassign the records "
                               f"and try again (TeamId = {team_id}).")
