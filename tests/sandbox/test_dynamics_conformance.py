"""Conformance: a third-party Dataverse client from PyPI, unchanged, against the sandbox.

PowerPlatform-Dataverse-Client (Microsoft's Python SDK) signs in through azure-identity's
ClientSecretCredential (MSAL inside) and drives the Web API with ``requests``. Only its base URL and
credential are ours. Trust: azure-identity takes the CA through its own ``connection_verify``; the SDK
has no verify option and this machine exports REQUESTS_CA_BUNDLE (which overrides a Session's
``verify``), so the test points that variable at the sandbox CA for its duration — the bundle the
process trusts, chosen on purpose, never verification turned off.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sandbox import test_dynamics_sandbox as base
from tests.sandbox.test_dynamics_sandbox import Sandbox

sandbox = base.sandbox  # the module-scoped sandbox process and the per-test reset, by fixture name
sb = base.sb

dataverse = pytest.importorskip("PowerPlatform.Dataverse.client")
identity = pytest.importorskip("azure.identity")


@pytest.fixture
def client(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sb.ca)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    authority_host, _, _ = sb.info["authority"].rpartition("/")
    credential = identity.ClientSecretCredential(
        sb.info["tenant_id"], sb.info["client_id"], sb.info["client_secret"], authority=authority_host,
        connection_verify=sb.ca, disable_instance_discovery=True)
    with dataverse.DataverseClient(sb.info["resource_url"], credential) as c:
        yield c


def test_third_party_client_crud_bulk_and_queries(sb: Sandbox, client) -> None:
    info = client.tables.get("account")
    assert info is not None
    one = client.records.create("account", {"name": "Contoso", "accountnumber": "C-1", "telephone1": "555"})
    many = client.records.create("account", [{"name": f"Bulk {i}", "accountnumber": f"B-{i}"} for i in range(5)])
    assert len(many) == 5 and all(len(x) == 36 for x in many)

    client.records.update("account", one, {"name": "Contoso Ltd"})
    got = client.records.get("account", one, select=["name", "accountnumber"])
    assert got["name"] == "Contoso Ltd" and got["accountnumber"] == "C-1"

    client.records.upsert("account", [{"alternate_key": {"accountnumber": "C-1"}, "record": {"name": "Upserted"}}])
    client.records.upsert("account", [
        {"alternate_key": {"accountnumber": "C-1"}, "record": {"name": "Upserted twice"}},
        {"alternate_key": {"accountnumber": "N-1"}, "record": {"name": "New by key"}},
    ])
    assert client.records.get("account", one, select=["name"])["name"] == "Upserted twice"

    result = client.records.list("account", select=["name", "accountnumber"], filter="startswith(name,'Bulk')",
                                 orderby=["accountnumber desc"], page_size=2)
    names = [r["name"] for r in result]
    assert names == [f"Bulk {i}" for i in range(4, -1, -1)]
    top = client.records.list("account", select=["name"], top=3)
    assert len(list(top)) == 3

    client.records.delete("account", one)
    job = client.records.delete("account", many[:3])
    assert job is None or isinstance(job, str)
    remaining = sb.get("/_sandbox/stats").json()["accounts"]
    assert remaining == 3  # 6 created + 1 upserted by key - 1 deleted - 3 bulk-deleted
