"""Provider metadata: lets Airflow list the Marketo and Dynamics connection types in its connection form."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "dynamics-sync",
        "name": "Marketo <-> Dynamics sync",
        "description": "Hooks for the Marketo Engage REST API and the Dataverse Web API.",
        "versions": ["0.1.0"],
        "connection-types": [
            {"connection-type": "marketo", "hook-class-name": "dynamics_sync.hooks.marketo.MarketoHook"},
            {"connection-type": "dynamics", "hook-class-name": "dynamics_sync.hooks.dynamics.DynamicsHook"},
        ],
    }
