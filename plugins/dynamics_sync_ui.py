"""Airflow plugin: the "Dynamics Sync" page, a menu entry of the Airflow UI (nav) showing the sync's health.

The page itself lives in the sync package (dynamics_sync.ui): a FastAPI app the api-server mounts under
/dynamics-sync, behind Airflow's own login and the sync DAGs' read access, which the UI renders in an
iframe at /plugin/dynamics-sync. This file only registers it (Airflow imports every module of the
plugins folder in every component, so it stays this small).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dynamics_sync.ui import URL_PREFIX, app


class DynamicsSyncUIPlugin(AirflowPlugin):
    """Mounts the page's app and adds it to the UI's navigation."""

    name = "dynamics_sync_ui"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Dynamics Sync"}]
    external_views = [{
        "name": "Dynamics Sync",
        # Relative, like every link of the page: the UI resolves it against its own base URL (a subpath too).
        "href": f"{URL_PREFIX.lstrip('/')}/",
        "icon": f"{URL_PREFIX.lstrip('/')}/static/icon.svg",
        "url_route": "dynamics-sync",
        "destination": "nav",
        "nav_top_level": True,
    }]
