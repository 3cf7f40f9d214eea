"""The project's own Airflow environment, so nothing touches the user's ~/airflow.

`configure()` must run before airflow is imported: it points AIRFLOW_HOME, the metadata DB, the DAG and
plugin folders and the staging root at ignored folders of the checkout, unless the caller already set
them (then theirs win). `prepare()` then migrates the metadata DB and creates the API pools.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".local"
POOLS = {
    # Marketo allows 10 concurrent calls per instance, shared with the customer's other apps; Dataverse 52.
    "marketo_api": (4, "Marketo REST calls in flight (Marketo allows 10 per instance, shared)"),
    "dynamics_api": (8, "Dataverse Web API calls in flight (service protection allows 52 per user)"),
    # An initial copy's extracts all start at once; two at a time leave the other executor slots to the
    # steps on the way to the first loads (each extract makes one Marketo call, its describe).
    "sync_extracts": (2, "initial-copy extracts reading Dynamics at once (the rest wait their turn)"),
}


def configure(home: Path | None = None) -> Path:
    """Set the project's Airflow environment defaults; returns AIRFLOW_HOME."""
    home = Path(os.environ.get("AIRFLOW_HOME") or home or ROOT / ".airflow")
    home.mkdir(parents=True, exist_ok=True)
    LOCAL.mkdir(parents=True, exist_ok=True)
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "DYNAMICS_SYNC_STAGING": (LOCAL / "staging").as_uri(),
        "GX_ANALYTICS_ENABLED": "False",
        "TQDM_DISABLE": "1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault(
        "AIRFLOW_CONN_DYNAMICS_SYNC_STATE", f'{{"conn_type": "sqlite", "host": "{LOCAL / "state.db"}"}}'
    )
    return home


def prepare() -> None:
    """Migrate the metadata DB (a no-op when current) and make sure the API pools exist."""
    from airflow.models.pool import Pool
    from airflow.utils import db

    logging.getLogger("alembic").setLevel(logging.WARNING)
    db.upgradedb()
    for name, (slots, description) in POOLS.items():
        Pool.create_or_update_pool(name, slots=slots, description=description, include_deferred=False)
