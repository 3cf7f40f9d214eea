"""The demo profile's setup: sandbox credentials into Airflow connections, and a small data set to sync.

``python -m include.deploy.demo_connections --marketo http://marketo-sandbox:8081
--dynamics https://dynamics-sandbox:8082 --sandbox-ca <state>/ca.pem --ca-copy /opt/airflow/data/demo/ca.pem``

Why: each sandbox generates its credentials into its own state volume and publishes them at
GET /_sandbox/info, so `docker compose --profile demo up` needs nobody to type one. This reads both,
copies the Dynamics sandbox's CA certificate (public; the sandbox's own volume, with its keys, stays
mounted here only) to the data volume every worker mounts, and creates marketo_default and
dynamics_default with `airflow connections add` (the CLI, run in this process): they live in the
metadata DB, encrypted with the deployment's Fernet key, never in a file of the image. Then, when
both sandboxes are empty, it seeds a small data set shaped like `make demo`'s (users, teams, leads, contacts, accounts
with an opportunity each, projects; Marketo people of whom some share an email with a Dynamics person), so the first
`dynamics_initial_sync` a user triggers in the UI has something to move. Running it again replaces the
two connections (the sandboxes may have new credentials) and seeds nothing twice.

Credentials go to the Airflow CLI only, in this process (never on a command line; the CLI masks them in
what it prints and logs); this prints connection ids, hosts and counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import requests

from include.deploy.cli import airflow_cli
from include.runtime.connections import DYNAMICS_CONN, MARKETO_CONN, dynamics_connection, marketo_connection

SEED_ENV = "DYNAMICS_SYNC_DEMO_SEED"
DYNAMICS_SEED: list[dict[str, Any]] = [
    {"entity": "systemuser", "count": 12, "seed": 42},
    {"entity": "team", "count": 3, "seed": 42},
    {"entity": "lead", "count": 300, "seed": 42, "owners": "users", "owner_teams": 10},
    {"entity": "contact", "count": 200, "seed": 42, "owners": "users"},
    {"entity": "account", "count": 30, "seed": 42, "owners": "users", "contacts_per_account": 1,
     "contact_start": 200, "opportunities_per_account": 1},
    {"entity": "new_project", "count": 12, "seed": 42},
]
MARKETO_SEED: dict[str, Any] = {"people": 40, "overlap_leads": 12, "overlap_contacts": 8, "seed": 42}


class Sandbox:
    """One sandbox's control surface (/_sandbox/...), verified with its CA when it serves https."""

    def __init__(self, url: str, verify: str | bool = True):
        self.url, self.verify = url.rstrip("/"), verify

    def get(self, path: str) -> dict[str, Any]:
        response = requests.get(f"{self.url}{path}", timeout=30, verify=self.verify)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{self.url}{path}", json=body, timeout=600, verify=self.verify)
        response.raise_for_status()
        return response.json()

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("/_sandbox/limits")
                return
            except (requests.RequestException, OSError) as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.url} did not answer in {timeout:.0f} s: {type(exc).__name__}") from None
                time.sleep(1)


def put_connection(conn_id: str, definition: dict[str, Any]) -> None:
    """Replace `conn_id` in the metadata DB with `definition` (the JSON shape include.runtime.connections builds)."""
    # The Airflow CLI in this process (include/deploy/cli.py): the credentials never are a command line.
    airflow_cli("connections", "delete", conn_id, missing_ok=True)  # absent the first time
    airflow_cli("connections", "add", conn_id, "--conn-json", json.dumps(definition))
    print(f"connection {conn_id} ({definition['conn_type']}, {definition['host']}) stored in the metadata DB",
          flush=True)
    if os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}"):
        print(f"warning: AIRFLOW_CONN_{conn_id.upper()} is set and wins over the demo connection", flush=True)


def seed_if_empty(marketo: Sandbox, dynamics: Sandbox) -> bool:
    """Seed both sandboxes unless either holds people already; True when it seeded."""
    dyn_stats, mkt_stats = dynamics.get("/_sandbox/stats"), marketo.get("/_sandbox/stats")
    held = dyn_stats.get("leads", 0) + dyn_stats.get("contacts", 0) + mkt_stats["records"].get("leads", 0)
    if held:
        print(f"sandboxes hold {held} people already; not seeding", flush=True)
        return False
    for body in DYNAMICS_SEED:
        dynamics.post("/_sandbox/seed", body)
    marketo.post("/_sandbox/seed", MARKETO_SEED)
    counts = ", ".join(f"{b['count']} {b['entity']}" for b in DYNAMICS_SEED)
    print(f"seeded Dynamics ({counts}) and Marketo ({MARKETO_SEED['people']} people)", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.deploy.demo_connections",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--marketo", required=True, help="the Marketo sandbox's URL, e.g. http://marketo-sandbox:8081")
    parser.add_argument("--dynamics", required=True, help="the Dynamics sandbox's URL (https)")
    parser.add_argument("--sandbox-ca", type=Path, required=True, help="ca.pem in the Dynamics sandbox's state dir")
    parser.add_argument("--ca-copy", type=Path, required=True,
                        help="where the workers find the CA (the connection's ca_file)")
    parser.add_argument("--seed", choices=["small", "none"], default=os.environ.get(SEED_ENV) or "small",
                        help=f"seed empty sandboxes (default ${SEED_ENV} or small)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the sandboxes")
    args = parser.parse_args(argv)

    marketo = Sandbox(args.marketo)
    marketo.wait(args.timeout)
    deadline = time.monotonic() + args.timeout
    while not args.sandbox_ca.exists():  # the sandbox writes it at its first start
        if time.monotonic() > deadline:
            raise TimeoutError(f"no CA file at {args.sandbox_ca}")
        time.sleep(1)
    dynamics = Sandbox(args.dynamics, verify=str(args.sandbox_ca))
    dynamics.wait(args.timeout)

    args.ca_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.sandbox_ca, args.ca_copy)
    args.ca_copy.chmod(0o644)

    dynamics_definition = dynamics_connection(dynamics.get("/_sandbox/info"))
    dynamics_definition["extra"]["ca_file"] = str(args.ca_copy)
    put_connection(MARKETO_CONN, marketo_connection(marketo.get("/_sandbox/info")))
    put_connection(DYNAMICS_CONN, dynamics_definition)
    if args.seed == "small":
        seed_if_empty(marketo, dynamics)
    print("demo ready: trigger dynamics_initial_sync in the Airflow UI, then unpause dynamics_incremental_sync",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
