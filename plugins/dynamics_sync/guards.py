"""Run guards: checks a DAG makes before it touches either system."""

from __future__ import annotations

import logging

from dynamics_sync.entities import load_entities
from dynamics_sync.errors import RefusedToRun
from dynamics_sync.state import StateStore

log = logging.getLogger(__name__)


def select_for_initial_copy(requested: list[str] | None, force: bool) -> list[str]:
    """The entities this initial copy may run for.

    None or [] means every configured entity whose copy has not finished. An entity whose copy finished
    (its Dynamics watermark exists) is refused unless the run says force: a second copy would re-read
    everything. A copy that stopped part-way (a killed worker, the daily budget) holds links but no
    watermark: it is resumed, and records it copied already are left alone. Naming only new entities is
    how a new entity is onboarded without flooding the 5-minute cycle with its whole history.
    """
    configured = list(load_entities())
    selected = list(dict.fromkeys(requested or configured))
    unknown = [name for name in selected if name not in configured]
    if unknown:
        raise RefusedToRun(f"unknown entities {unknown}; configured: {configured}")
    if force:
        return selected
    store = StateStore.from_connection()
    try:
        finished = [name for name in selected if store.watermark(name, "dynamics") is not None]
        resumed = [name for name in selected if name not in finished and store.is_populated(name)]
    finally:
        store.dispose()
    if finished and (requested or len(finished) == len(selected)):
        raise RefusedToRun(
            f"the initial copy of {finished} has finished before (the state store holds their watermarks). "
            "Name only new entities in the 'entities' param, or trigger with {\"force\": true} to copy them "
            "again on purpose."
        )
    if finished:
        log.warning("skipping %s: their initial copy finished before", finished)
    if resumed:
        log.warning("resuming the copy of %s where it stopped: records already copied are left alone", resumed)
    return [name for name in selected if name not in finished]


def select_for_replay(params: dict) -> list[str]:
    """The entities a replay runs for: the named one, or every entity with open failures matching the params."""
    from dynamics_sync.replay import selected_failures

    configured = list(load_entities())
    requested = params.get("entity")
    if requested and requested not in configured:
        raise RefusedToRun(f"unknown entity {requested!r}; configured: {configured}")
    store = StateStore.from_connection()
    try:
        chosen = [name for name in ([requested] if requested else configured)
                  if selected_failures(store, name, params)]
    finally:
        store.dispose()
    log.info("replaying the open failures of %s", chosen or "no entity (nothing matches)")
    return chosen
