"""Exceptions that say which system failed and why, without ever carrying a secret.

Systemic failures (refused credentials, an API down, a spent quota) fail the task so Airflow retries it
and the UI shows it red; per-record refusals are not exceptions at all but activity_log rows. The retry
policy in dynamics_sync.retry decides per class whether a retry can help.
"""

from __future__ import annotations


class SyncError(Exception):
    """Base class for every failure the sync raises on purpose."""


class AuthError(SyncError):
    """Credentials were refused: retrying cannot help until someone fixes the connection."""


class RefusedToRun(SyncError):
    """A guard refused the run on purpose (e.g. the initial copy over a populated state store)."""


class ServiceUnavailable(SyncError):
    """The API could not be reached or kept failing after the hook's own retries."""


class QuotaExhausted(SyncError):
    """A daily quota is spent; the work resumes from the unchanged watermark once it resets."""


class BudgetSpent(QuotaExhausted):
    """This product's share of a daily quota is spent (the rest is left to the customer's other apps)."""


class ApiError(SyncError):
    """The API refused a whole request (not a single record) with a documented error."""

    def __init__(self, system: str, code: str, message: str, status: int | None = None):
        self.system, self.code, self.message, self.status = system, code, message, status
        where = f"HTTP {status} " if status else ""
        super().__init__(f"{system} API error {where}{code}: {message}")


class ChangeTrackingExpired(ApiError):
    """Dataverse no longer knows the change-tracking version a delta link stands for (the token is older than
    the organisation's change-tracking retention, 7 days by default): only a full read can tell what changed."""


class EntityLocked(Exception):
    """Another run is syncing this entity; this one waits (the task is retried) instead of racing it."""
