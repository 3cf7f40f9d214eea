"""Run guards: checks a DAG makes before it touches either system."""

from __future__ import annotations

from dynamics_sync.errors import RefusedToRun
from dynamics_sync.state import StateStore


def refuse_populated_store(force: bool) -> str:
    """The initial copy must not silently re-copy over links and watermarks that already exist."""
    store = StateStore.from_connection()
    try:
        populated = store.is_populated()
        if populated and not force:
            raise RefusedToRun(
                f"the state store already holds {store.count_links()} links and watermarks: the initial copy "
                "has run before. Trigger with {\"force\": true} to run it again on purpose."
            )
    finally:
        store.dispose()
    return "state store populated; running anyway (force)" if populated else "state store empty"
