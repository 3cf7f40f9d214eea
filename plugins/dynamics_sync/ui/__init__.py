"""The "Dynamics Sync" page of the Airflow UI: per-entity health, API budget, activity log, Data Docs.

Airflow imports plugins in every process that loads them (api-server, scheduler, dag-processor, each task),
but only the api-server serves the page, so the plugin registers `app`, an ASGI stand-in that builds the
real FastAPI app (dynamics_sync.ui.app, with FastAPI, Jinja2 and the read model) on its first request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

URL_PREFIX = "/dynamics-sync"
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class LazyApp:
    """An ASGI app that is the page's FastAPI app, built when the api-server first routes a request to it."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            from dynamics_sync.ui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


app = LazyApp()
