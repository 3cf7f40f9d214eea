"""Airflow connections for the sandboxes, used when the user has not defined their own.

Real deployments define marketo_default and dynamics_default in the Airflow UI, environment variables or
a secrets backend; `make run` and the demo fall back to the running sandboxes' /_sandbox/info. Secrets go
into environment variables of this process only, never into files or logs.
"""

from __future__ import annotations

import json
import os
from typing import Any

MARKETO_CONN, DYNAMICS_CONN = "marketo_default", "dynamics_default"


def marketo_connection(info: dict[str, Any]) -> dict[str, Any]:
    base = info["rest_url"].removesuffix("/rest")
    return {
        "conn_type": "marketo",
        "host": base,
        "login": info["client_id"],
        "password": info["client_secret"],
        "extra": {"munchkin_id": info.get("munchkin_id"), "identity_url": info["identity_url"],
                  "rest_url": info["rest_url"]},
    }


def dynamics_connection(info: dict[str, Any], *, as_user: bool = False) -> dict[str, Any]:
    """The sync app's connection; `as_user` gives the ordinary user's (people's edits, in tests and demo)."""
    prefix = "user_" if as_user else ""
    return {
        "conn_type": "dynamics",
        "host": info["resource_url"],
        "login": info[f"{prefix}client_id"],
        "password": info[f"{prefix}client_secret"],
        "extra": {"tenant_id": info["tenant_id"], "authority": info["authority"], "ca_file": info["ca_file"]},
    }


def _env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def is_defined(conn_id: str) -> bool:
    if _env_name(conn_id) in os.environ:
        return True
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    except Exception:  # no metadata DB yet, or no connection API: treat as undefined
        return False
    return True


def use(conn_id: str, definition: dict[str, Any]) -> None:
    os.environ[_env_name(conn_id)] = json.dumps(definition)


def use_sandboxes(boxes: Any, *, override: bool = False) -> None:
    """Point marketo_default and dynamics_default at `boxes` unless the user defined them (or override)."""
    if override or not is_defined(MARKETO_CONN):
        use(MARKETO_CONN, marketo_connection(boxes.marketo_info()))
    if override or not is_defined(DYNAMICS_CONN):
        use(DYNAMICS_CONN, dynamics_connection(boxes.dynamics_info()))
