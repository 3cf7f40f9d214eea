"""Credentials and access tokens, the way Marketo's identity service hands them out.

Why a separate module: both the identity endpoint and the request gate need the same view of tokens.

- Two custom services exist: the sync's own API user (``client_id``/``client_secret``) and a second
  user (``user_client_id``/``user_client_secret``) standing for a person's own integration or the
  Marketo UI. Both are generated once and kept in ``state_dir/credentials.json``.
- ``GET|POST /identity/oauth/token`` returns the *same* token per client id until it expires, with the
  remaining lifetime in ``expires_in`` (documented behaviour). Tokens look like ``<uuid>:ab``.
- Tokens are kept in memory and in ``state_dir/tokens.json`` so that a restarted sandbox still accepts
  them. Lowering ``token_ttl_s`` also shortens tokens already issued (a test switch).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import string
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

POD_SUFFIX = "ab"


@dataclass
class Credentials:
    munchkin_id: str
    client_id: str
    client_secret: str
    api_user_email: str
    user_client_id: str
    user_client_secret: str
    user_email: str

    def email_for(self, client_id: str, client_secret: str) -> str | None:
        """The API user's e-mail for a valid id/secret pair, else None."""
        if secrets.compare_digest(client_id, self.client_id) and secrets.compare_digest(
            client_secret, self.client_secret
        ):
            return self.api_user_email
        if secrets.compare_digest(client_id, self.user_client_id) and secrets.compare_digest(
            client_secret, self.user_client_secret
        ):
            return self.user_email
        return None


def _secret() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(32))


def _munchkin() -> str:
    rng = random.SystemRandom()
    digits = "".join(rng.choice(string.digits) for _ in range(3))
    letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(3))
    digits2 = "".join(rng.choice(string.digits) for _ in range(3))
    return f"{digits}-{letters}-{digits2}"


def _write_private(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def load_or_create_credentials(state_dir: Path) -> Credentials:
    """Reuse ``credentials.json`` if present, else generate and persist a new set."""
    path = state_dir / "credentials.json"
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(**{k: data[k] for k in Credentials.__dataclass_fields__})
    munchkin = _munchkin()
    host = munchkin.lower().replace("-", "")
    creds = Credentials(
        munchkin_id=munchkin,
        client_id=str(uuid.uuid4()),
        client_secret=_secret(),
        api_user_email=f"dynamics-sync@{host}.sandbox.example.com",
        user_client_id=str(uuid.uuid4()),
        user_client_secret=_secret(),
        user_email=f"marketing-user@{host}.sandbox.example.com",
    )
    _write_private(path, asdict(creds))
    return creds


@dataclass
class Token:
    token: str
    client_id: str
    email: str
    issued_at: float
    expires_at: float


class TokenStore:
    """Issued tokens: one live token per client id, expired ones remembered (→ 602, not 601)."""

    def __init__(self, state_dir: Path, creds: Credentials) -> None:
        self._path = state_dir / "tokens.json"
        self._creds = creds
        self._lock = threading.Lock()
        self._tokens: dict[str, Token] = {}
        self._current: dict[str, str] = {}
        if self._path.exists():
            try:
                for item in json.loads(self._path.read_text(encoding="utf-8")):
                    tok = Token(**item)
                    if tok.client_id not in (creds.client_id, creds.user_client_id):
                        continue  # credentials were regenerated: old tokens are void
                    self._tokens[tok.token] = tok
                    self._current[tok.client_id] = tok.token
            except (ValueError, TypeError, KeyError):
                self._tokens.clear()
                self._current.clear()

    def _persist(self) -> None:
        now = time.time()
        # keep a day of expired tokens so that late callers still get 602
        keep = [asdict(t) for t in self._tokens.values() if t.expires_at > now - 86400]
        _write_private(self._path, keep)

    def issue(self, client_id: str, client_secret: str, ttl_s: int) -> tuple[Token, int] | None:
        """The live token of this client (new one if none), and its remaining whole seconds."""
        email = self._creds.email_for(client_id, client_secret)
        if email is None:
            return None
        now = time.time()
        with self._lock:
            current = self._tokens.get(self._current.get(client_id, ""))
            if current is None or current.expires_at - now < 1:
                current = Token(f"{uuid.uuid4()}:{POD_SUFFIX}", client_id, email, now, now + ttl_s)
                self._tokens[current.token] = current
                self._current[client_id] = current.token
                self._persist()
            return current, max(0, int(current.expires_at - time.time()))

    def check(self, token: str) -> tuple[str | None, str | None]:
        """(error code, api user e-mail): ("601", None) unknown, ("602", None) expired, (None, email)."""
        tok = self._tokens.get(token)
        if tok is None:
            return "601", None
        if time.time() >= tok.expires_at:
            return "602", None
        return None, tok.email

    def clamp_ttl(self, ttl_s: int) -> None:
        """Apply a shorter lifetime to tokens already issued."""
        with self._lock:
            for tok in self._tokens.values():
                tok.expires_at = min(tok.expires_at, tok.issued_at + ttl_s)
            self._persist()
