"""Entra ID (Azure AD) stand-in: tenant, app registrations, OIDC discovery and client-credentials tokens.

Why: our hook signs in exactly as it would against login.microsoftonline.com, through MSAL's
ConfidentialClientApplication (shared/reference/dynamics-api.md §1-2, clients.md). MSAL first reads
``{authority}/v2.0/.well-known/openid-configuration`` and then posts a form to the advertised
``token_endpoint``. This module answers both, issues RS256 JWT access tokens (verifiable through the
advertised jwks_uri) and checks them on every Web API call.

Everything generated on first start (tenant id, two app registrations, their systemusers, the
signing key) is persisted in the state directory so that restarts keep working credentials.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import secrets
import string
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CREDENTIALS_FILE = "credentials.json"
SIGNING_KEY_FILE = "token-signing-key.pem"

SYNC_APP_NAME = "Marketo Sync"
USER_APP_NAME = "Dana Seller"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _new_secret() -> str:
    """A string shaped like an Entra client secret value (40 chars, with the ``8Q~`` marker)."""
    alphabet = string.ascii_letters + string.digits + "_-.~"
    head = "".join(secrets.choice(alphabet) for _ in range(3))
    tail = "".join(secrets.choice(alphabet) for _ in range(34))
    return f"{head}8Q~{tail}"


def _utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class Principal:
    """The caller behind a token: an app registration and its Dataverse application user."""

    client_id: str
    user_id: str
    fullname: str
    object_id: str
    privileged: bool
    role: str = "sync"  # "sync" (the sync's app user) or "user" (a person editing in Dynamics)


class AuthError(Exception):
    """A bearer token that Dataverse would reject (kind: 'expired' or 'invalid')."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class TokenError(Exception):
    """An AADSTS error from the token endpoint."""

    def __init__(self, status: int, error: str, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.code, self.message = status, error, code, message


def load_or_create_credentials(state_dir: Path) -> dict[str, str]:
    path = state_dir / CREDENTIALS_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    defaults = {
        "tenant_id": lambda: str(uuid.uuid4()),
        "client_id": lambda: str(uuid.uuid4()),
        "client_secret": _new_secret,
        "client_object_id": lambda: str(uuid.uuid4()),
        "user_client_id": lambda: str(uuid.uuid4()),
        "user_client_secret": _new_secret,
        "user_client_object_id": lambda: str(uuid.uuid4()),
        "sync_user_id": lambda: str(uuid.uuid4()),
        "user_id": lambda: str(uuid.uuid4()),
        "business_unit_id": lambda: str(uuid.uuid4()),
        "organization_id": lambda: str(uuid.uuid4()),
    }
    changed = False
    for key, make in defaults.items():
        if key not in data:
            data[key] = make()
            changed = True
    if changed:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    return data


def _load_or_create_signing_key(state_dir: Path) -> rsa.RSAPrivateKey:
    path = state_dir / SIGNING_KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tmp = path.with_suffix(".pem.tmp")
    tmp.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return key


class Identity:
    """Tenant, app registrations and token issue/verification for one sandbox instance."""

    def __init__(self, state_dir: Path, base_url: str, token_ttl: Callable[[], int]) -> None:
        self.creds = load_or_create_credentials(state_dir)
        self.base_url = base_url.rstrip("/")
        self.tenant_id: str = self.creds["tenant_id"]
        self.resource_url = self.base_url
        self._token_ttl = token_ttl
        self._key = _load_or_create_signing_key(state_dir)
        public_der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = _b64url(hashlib.sha1(public_der).digest())
        self.apps: dict[str, tuple[str, Principal]] = {
            self.creds["client_id"]: (
                self.creds["client_secret"],
                Principal(self.creds["client_id"], self.creds["sync_user_id"], SYNC_APP_NAME,
                          self.creds["client_object_id"], True),
            ),
            self.creds["user_client_id"]: (
                self.creds["user_client_secret"],
                Principal(self.creds["user_client_id"], self.creds["user_id"], USER_APP_NAME,
                          self.creds["user_client_object_id"], False, "user"),
            ),
        }
        # Loopback aliases name the same resource: a token asked for with either host works.
        parts = urlsplit(self.base_url)
        aliases = {self.base_url}
        if parts.hostname in ("127.0.0.1", "localhost"):
            for host in ("127.0.0.1", "localhost"):
                aliases.add(f"{parts.scheme}://{host}:{parts.port}")
        self.resource_aliases = frozenset(aliases)

    # ---------------------------------------------------------------- discovery
    @property
    def issuer(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/v2.0"

    def knows_tenant(self, tenant: str) -> bool:
        return tenant.lower() == self.tenant_id.lower()

    def openid_configuration(self) -> dict[str, object]:
        root = f"{self.base_url}/{self.tenant_id}"
        return {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.issuer,
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
                "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
                "name", "tid", "ver", "at_hash", "c_hash", "email",
            ],
            "kerberos_endpoint": f"{root}/kerberos",
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def jwks(self) -> dict[str, object]:
        numbers = self._key.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return {"keys": [{
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
            "n": _b64url(n), "e": _b64url(e), "issuer": self.issuer,
        }]}

    # ---------------------------------------------------------------- token endpoint
    def error_body(self, err: TokenError, correlation_id: str | None = None) -> dict[str, object]:
        trace = str(uuid.uuid4())
        corr = correlation_id or str(uuid.uuid4())
        stamp = _utc_stamp()
        return {
            "error": err.error,
            "error_description": (
                f"AADSTS{err.code}: {err.message}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [err.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": f"{self.base_url}/error?code={err.code}",
        }

    def issue_token(self, tenant: str, form: dict[str, str], authorization: str | None) -> dict[str, object]:
        """Run the client-credentials grant; raise TokenError with the AADSTS code Entra would send."""
        if not self.knows_tenant(tenant):
            raise TokenError(
                400, "invalid_request", 90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
                "into the correct cloud. Check with your subscription administrator, this may happen if there are "
                "no active subscriptions for the tenant.",
            )
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                raw = base64.b64decode(authorization[6:].strip()).decode("utf-8")
                basic_id, _, basic_secret = raw.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                basic_id, basic_secret = "", ""
            client_id = client_id or basic_id
            secret = secret or basic_secret
        grant_type = form.get("grant_type")
        if not grant_type:
            raise TokenError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'grant_type'.")
        if grant_type != "client_credentials":
            raise TokenError(400, "unsupported_grant_type", 70003,
                             "The app requested an unsupported grant type.")
        if not client_id:
            raise TokenError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'client_id'.")
        app = self.apps.get(client_id.lower())
        if app is None:
            raise TokenError(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.tenant_id}'. "
                "This can happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant. You may have sent your authentication request to the "
                "wrong tenant.",
            )
        expected_secret, principal = app
        if not secret:
            raise TokenError(401, "invalid_client", 7000218,
                             "The request body must contain the following parameter: 'client_assertion' or "
                             "'client_secret'.")
        if not secrets.compare_digest(secret.encode(), expected_secret.encode()):
            raise TokenError(
                401, "invalid_client", 7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                f"value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        scope = form.get("scope", "")
        scopes = [s for s in scope.split() if s not in ("openid", "profile", "offline_access")]
        if not scopes:
            raise TokenError(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'scope'.")
        resource = None
        if len(scopes) == 1 and scopes[0].endswith("/.default"):
            candidate = scopes[0][: -len("/.default")].rstrip("/")
            if candidate in self.resource_aliases:
                resource = candidate
        if resource is None:
            raise TokenError(
                400, "invalid_scope", 70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid.",
            )
        ttl = int(self._token_ttl())
        return {
            "token_type": "Bearer",
            "expires_in": ttl,
            "ext_expires_in": ttl,
            "access_token": self._sign(principal, resource, ttl),
        }

    def _sign(self, principal: Principal, audience: str, ttl: int) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5t": self.kid, "kid": self.kid}
        payload = {
            "aud": audience,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "aio": _b64url(secrets.token_bytes(24)),
            "appid": principal.client_id,
            "appidacr": "1",
            "azp": principal.client_id,
            "azpacr": "1",
            "idp": self.issuer,
            "idtyp": "app",
            "oid": principal.object_id,
            "rh": "0.AAAA" + _b64url(secrets.token_bytes(12)) + ".",
            "sub": principal.object_id,
            "tid": self.tenant_id,
            "uti": _b64url(secrets.token_bytes(16)),
            "ver": "2.0",
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(payload, separators=(",", ":")).encode())
        )
        signature = self._key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    # ---------------------------------------------------------------- verification
    def verify(self, token: str) -> Principal:
        """Check signature, tenant, audience and expiry of a bearer token."""
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthError("invalid", "The access token is malformed.")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            payload = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error):
            raise AuthError("invalid", "The access token is malformed.") from None
        if not isinstance(header, dict) or not isinstance(payload, dict) or header.get("alg") != "RS256":
            raise AuthError("invalid", "The access token signature algorithm is not supported.")
        try:
            self._key.public_key().verify(
                signature, f"{parts[0]}.{parts[1]}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise AuthError("invalid", "The access token signature is invalid.") from None
        if payload.get("tid") != self.tenant_id or str(payload.get("aud", "")).rstrip("/") not in self.resource_aliases:
            raise AuthError("invalid", "The access token was issued for another tenant or resource.")
        if int(payload.get("exp", 0)) <= time.time():
            raise AuthError("expired", "The access token is expired.")
        app = self.apps.get(str(payload.get("appid", "")).lower())
        if app is None:
            raise AuthError("invalid", "The application of the access token is unknown.")
        return app[1]
