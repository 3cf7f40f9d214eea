"""Generate the deployment's secrets once, into the airflow-secrets volume: ``python -m include.deploy.secrets_init``.

Why: the compose file must hold no secret, the image neither, and `docker compose up` must work without
anyone choosing passwords. So the first service to start writes random ones into a volume only the
deployment's containers mount, and every component reads them from there:

- ``postgres_password``: PostgreSQL reads it at its first start (POSTGRES_PASSWORD_FILE);
- ``pgpass``: the same password in libpq's password-file format (PGPASSFILE), which psycopg2 (metadata DB,
  Celery results, state store) and asyncpg (Airflow's async engine) read when a URL has no password, so no
  URL or environment variable carries it;
- ``fernet_key`` (connections encrypted in the metadata DB), ``jwt_secret`` (task tokens the api-server
  checks) and ``api_secret_key`` (log fetching between api-server and workers): every component must hold
  the same ones, read through Airflow's ``*_CMD`` settings;
- ``simple_auth_manager_passwords.json``: the UI password of each configured user, written before the
  api-server starts so that Airflow does not print a generated one to its log.

Existing files are kept (PostgreSQL only takes its password when it initialises its volume); owner and
modes are set on every run. Only file names are printed, never values.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from pathlib import Path

PG_PASSWORD, PGPASS, FERNET, JWT, API_KEY, UI_PASSWORDS = (
    "postgres_password", "pgpass", "fernet_key", "jwt_secret", "api_secret_key", "simple_auth_manager_passwords.json"
)
# Users of Airflow's SimpleAuthManager (its default: one admin called admin), as "name:role,name:role".
DEFAULT_UI_USERS = "admin:admin"


def _fernet_key() -> str:
    """A Fernet key: 32 random bytes, url-safe base64 (what cryptography.fernet.Fernet.generate_key makes)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _write(path: Path, text: str, mode: int, uid: int | None) -> None:
    """Write atomically with `mode` from the start (never briefly readable by others), then set the owner."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    _own(path, mode, uid)


def _own(path: Path, mode: int, uid: int | None) -> None:
    if uid is not None and os.geteuid() == 0:
        os.chown(path, uid, 0)
    os.chmod(path, mode)


def ensure_secrets(
    directory: Path, *, uid: int | None = None, pg_host: str = "postgres", pg_port: int = 5432,
    pg_user: str = "airflow", ui_users: str = DEFAULT_UI_USERS,
) -> list[str]:
    """Create whatever secret is missing under `directory`; returns the names of the files created."""
    directory.mkdir(parents=True, exist_ok=True)
    created: list[str] = []
    generators = {PG_PASSWORD: lambda: secrets.token_hex(24), FERNET: _fernet_key,
                  JWT: lambda: secrets.token_urlsafe(32), API_KEY: lambda: secrets.token_urlsafe(32)}
    for name, make in generators.items():
        path = directory / name
        # The PostgreSQL entrypoint reads its file as root before it drops to the postgres user; 0644 keeps
        # that working whatever uid the postgres image uses. Every container that mounts this volume may
        # already reach the database through pgpass, so this exposes nothing more.
        mode = 0o644 if name == PG_PASSWORD else 0o600
        if path.exists() and path.read_text().strip():
            _own(path, mode, uid)
            continue
        _write(path, make(), mode, uid)
        created.append(name)

    password = (directory / PG_PASSWORD).read_text().strip()
    # libpq ignores a password file that group or others may read: 0600, owned by the user that runs Airflow.
    _write(directory / PGPASS, f"{pg_host}:{pg_port}:*:{pg_user}:{password}\n", 0o600, uid)

    ui_file = directory / UI_PASSWORDS
    known: dict[str, str] = json.loads(ui_file.read_text() or "{}") if ui_file.exists() else {}
    users = [entry.split(":", 1)[0].strip() for entry in ui_users.split(",") if entry.strip()]
    missing = [user for user in users if user not in known]
    if missing or not ui_file.exists():
        known.update({user: secrets.token_urlsafe(12) for user in missing})
        created.append(UI_PASSWORDS)
    # Written (and owned) on every run: the api-server opens it for appending to take its lock.
    _write(ui_file, json.dumps(known) + "\n", 0o600, uid)

    if uid is not None and os.geteuid() == 0:
        os.chown(directory, uid, 0)
    os.chmod(directory, 0o750)
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.deploy.secrets_init", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="where the secrets live (the airflow-secrets volume)")
    parser.add_argument("--uid", type=int, default=int(os.environ.get("AIRFLOW_UID") or 50000),
                        help="owner of the files: the uid the Airflow containers run as (default $AIRFLOW_UID)")
    parser.add_argument("--pg-host", default="postgres", help="PostgreSQL host as the URLs name it")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="airflow")
    args = parser.parse_args(argv)
    ui_users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS") or DEFAULT_UI_USERS
    created = ensure_secrets(args.directory, uid=args.uid, pg_host=args.pg_host, pg_port=args.pg_port,
                             pg_user=args.pg_user, ui_users=ui_users)
    print(f"secrets in {args.directory}: " + (f"created {', '.join(created)}" if created else "all present"),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
