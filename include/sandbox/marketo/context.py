"""The sandbox's shared state, hung on ``app.state.ctx`` so routes and the request gate see one copy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from .auth import Credentials, TokenStore
from .faults import Faults
from .limits import Counters, LimitSettings
from .store import Actor, Store


@dataclass
class SandboxContext:
    state_dir: Path
    host: str
    port: int
    creds: Credentials
    tokens: TokenStore
    store: Store
    settings: LimitSettings = field(default_factory=LimitSettings)
    counters: Counters = field(default_factory=Counters)
    faults: Faults = field(default_factory=Faults)
    jobs: Any = None  # bulk.BulkJobs, set by create_app
    objects: Any = None  # objects.ObjectStore, set by create_app

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def ctx_of(request: Request) -> SandboxContext:
    ctx: SandboxContext = request.app.state.ctx
    return ctx


def actor_of(request: Request) -> Actor:
    """The API user the request gate authenticated (its e-mail goes into activity attributes)."""
    return Actor(api_user=request.scope.get("state", {}).get("api_user", "unknown"))
