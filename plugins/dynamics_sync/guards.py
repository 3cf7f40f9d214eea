"""Run guards: checks a DAG makes before it touches either system."""

from __future__ import annotations

from dynamics_sync.entities import load_entities
from dynamics_sync.errors import RefusedToRun
from dynamics_sync.state import StateStore


def select_for_initial_copy(requested: list[str] | None, force: bool) -> list[str]:
    """The entities this initial copy may run for.

    None or [] means every configured entity. An entity whose links or watermarks already exist is refused
    (a second copy would re-copy everything) unless the run says force; naming only new entities is how a
    new entity is onboarded without flooding the 5-minute cycle with its whole history.
    """
    configured = list(load_entities())
    selected = list(dict.fromkeys(requested or configured))
    unknown = [name for name in selected if name not in configured]
    if unknown:
        raise RefusedToRun(f"unknown entities {unknown}; configured: {configured}")
    store = StateStore.from_connection()
    try:
        populated = [name for name in selected if store.is_populated(name)]
        if populated and not force:
            raise RefusedToRun(
                f"the state store already holds links or watermarks for {populated}: their initial copy has run "
                "before. Name only new entities in the 'entities' param, or trigger with {\"force\": true} to "
                "copy them again on purpose."
            )
    finally:
        store.dispose()
    return selected
