"""Hooks: each owns one connection type, its credentials, its token cache and its HTTP client."""

from dynamics_sync.hooks.dynamics import DynamicsHook
from dynamics_sync.hooks.marketo import MarketoHook

__all__ = ["DynamicsHook", "MarketoHook"]
