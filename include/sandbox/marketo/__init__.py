"""Local stand-in for the Marketo Engage REST API (identity, leads, activities, usage, limits).

Why: the Dynamics sync must be developed and tested against something that answers exactly like
Marketo — same paths, envelopes, error codes, paging and limits — without a real subscription.
Run it with ``python -m include.sandbox.marketo --port 8081 --state-dir .sandbox/marketo`` (from the
project root) or build the app in-process with :func:`create_app`.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
