"""People editing records: the ordinary Dynamics user and a second Marketo API user, through the real APIs.

The demo and the end-to-end tests make their edits through these, so the sync meets changes exactly as
it would meet a salesperson's edit in Dynamics or a marketer's in Marketo (not writes into a sandbox's
database), and reads both systems back through the same public APIs.
"""

from __future__ import annotations

from typing import Any

from dynamics_sync.entities import load_entities
from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import MarketoHook
from include.runtime import connections

DYNAMICS_PEOPLE, MARKETO_PEOPLE = "dynamics_people", "marketo_people"


class People:
    """Edits by people, and reads of both systems, for one pair of sandboxes."""

    def __init__(self, boxes: Any):
        dynamics_info, marketo_info = boxes.dynamics_info(), boxes.marketo_info()
        connections.use(DYNAMICS_PEOPLE, connections.dynamics_connection(dynamics_info, as_user=True))
        marketo_user = {**marketo_info, "client_id": marketo_info["user_client_id"],
                        "client_secret": marketo_info["user_client_secret"]}
        connections.use(MARKETO_PEOPLE, connections.marketo_connection(marketo_user))
        self.dynamics = DynamicsHook(DYNAMICS_PEOPLE)
        self.marketo = MarketoHook(MARKETO_PEOPLE)

    @property
    def entities(self) -> dict[str, Any]:
        return load_entities()  # the config in effect now (tests may point DYNAMICS_SYNC_CONFIG elsewhere)

    # ---- Dynamics -----------------------------------------------------------------------------------

    def edit_dynamics(self, entity: str, row_id: str, values: dict[str, Any]) -> None:
        self.dynamics.update(self.entities[entity].entity_set, row_id, values)

    def delete_dynamics(self, entity: str, row_id: str) -> None:
        self.dynamics.request("DELETE", f"{self.entities[entity].entity_set}({row_id})", headers={"If-Match": "*"})

    def create_dynamics(self, entity: str, values: dict[str, Any]) -> str:
        return self.dynamics.create(self.entities[entity].entity_set, values)

    def read_dynamics(self, entity: str, row_id: str) -> dict[str, Any]:
        spec = self.entities[entity]
        select = ",".join([*[f.read_column for f in spec.fields], "_modifiedby_value"])
        return self.dynamics.request("GET", f"{spec.entity_set}({row_id})", params={"$select": select}).json()

    def list_dynamics(self, entity: str, select: list[str], filter_: str | None = None) -> list[dict[str, Any]]:
        spec = self.entities[entity]
        params = {"$select": ",".join([spec.key, *select]), **({"$filter": filter_} if filter_ else {})}
        return [row for rows, _ in self.dynamics.pages(spec.entity_set, params=params) for row in rows]

    def find_dynamics(self, entity: str, email: str) -> list[dict[str, Any]]:
        spec = self.entities[entity]
        escaped = email.replace("'", "''")
        return self.list_dynamics(entity, [f.read_column for f in spec.fields], f"emailaddress1 eq '{escaped}'")

    def qualify_lead(self, lead_id: str, create_contact: bool = True, create_account: bool = False) -> list[dict]:
        """A salesperson qualifies a lead (the out-of-the-box Qualify process): returns the created records."""
        body = {"CreateAccount": create_account, "CreateContact": create_contact, "CreateOpportunity": False,
                "Status": 3}
        answer = self.dynamics.request("POST", f"leads({lead_id})/Microsoft.Dynamics.CRM.QualifyLead", json=body)
        return answer.json().get("value") or []

    # ---- Marketo ------------------------------------------------------------------------------------

    def edit_marketo(self, marketo_id: int, values: dict[str, Any]) -> None:
        [result] = self.marketo.sync_leads([{"id": marketo_id, **values}], action="updateOnly", lookup_field="id")
        if result.get("status") != "updated":
            raise RuntimeError(f"Marketo did not update person {marketo_id}: {result}")

    def merge_marketo(self, winner: int, loser: int) -> None:
        self.marketo.call("POST", f"/v1/leads/{winner}/merge.json", params={"leadId": loser})

    def delete_marketo(self, marketo_id: int) -> None:
        [result] = self.marketo.call("POST", "/v1/leads/delete.json", json={"input": [{"id": marketo_id}]})["result"]
        if result.get("status") != "deleted":
            raise RuntimeError(f"Marketo did not delete person {marketo_id}: {result}")

    def create_marketo(self, values: dict[str, Any]) -> int:
        [result] = self.marketo.sync_leads([values], action="createOnly", lookup_field="email")
        if result.get("status") != "created":
            raise RuntimeError(f"Marketo did not create the person: {result}")
        return int(result["id"])

    def read_marketo(self, marketo_id: int) -> dict[str, Any]:
        fields = ["id", "email", "firstName", "lastName", "phone", "title", "company",
                  "msdynLeadId", "msdynContactId", "msdynType", "msdynIsDeleted"]
        people = self.marketo.get_leads("id", [marketo_id], fields)
        return people[0] if people else {}

    def find_marketo(self, email: str) -> list[dict[str, Any]]:
        return self.marketo.get_leads("email", [email], ["id", "email", "firstName", "lastName", "msdynLeadId"])

    def read_object(self, entity: str, key: str) -> dict[str, Any]:
        """The Marketo company, opportunity, sales person or custom object of a Dynamics record ({} if none)."""
        spec = self.entities[entity]
        fields = ",".join(dict.fromkeys([spec.key_field, *spec.marketo_fields, *dict(spec.constants)]))
        body = self.marketo.call("GET", f"/v1/{spec.marketo_object}.json",
                                 params={"filterType": spec.key_field, "filterValues": key, "fields": fields})
        result = body.get("result") or []
        return result[0] if result else {}
