"""Local Entra ID + Dataverse Web API sandbox served over TLS (see ``app.create_app``).

Why: the Marketo ⇄ Dynamics sync and its tests must run on one machine with no Microsoft account,
yet exercise the same client code (MSAL's ConfidentialClientApplication, an OData/Dataverse
client) that talks to the real service. ``python -m include.sandbox.dynamics`` serves it.
"""

from .app import create_app
from .tls import ensure_tls

__all__ = ["create_app", "ensure_tls"]
