"""The airflow-init service: ``python -m include.deploy.init --dir <path> ...``.

Why one step before every Airflow component starts: the components must find the metadata DB migrated,
the API pools in place (include/runtime/environment.py POOLS, the same pools `make run` and the bench
create) and the state store at its latest Alembic revision. Migrating the state store here, once, keeps
several Celery workers' first tasks from racing each other through the same migration.

Run as root (like the official compose file's init), it first gives the writable folders (the logs bind
mount, staging and Data Docs on the data volume) to AIRFLOW_UID with group 0, then drops to that user for
everything else, so no file the components use ends up owned by root. The checkout's own folders are
mounted read-only and never chowned.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from include.deploy.cli import airflow_cli
from include.runtime.environment import POOLS


def prepare_dirs(dirs: list[Path], uid: int) -> None:
    """Create `dirs`, owned by uid:0 and group-writable (any AIRFLOW_UID runs with group 0)."""
    for path in dirs:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(path, uid, 0)
        path.chmod(0o775)


def drop_privileges(uid: int) -> None:
    """Continue as uid:0, the user the other containers run as (a no-op unless running as root)."""
    if os.geteuid() != 0 or uid == 0:
        return
    os.setgroups([])
    os.setgid(0)
    os.setuid(uid)
    os.environ["HOME"] = os.environ.get("AIRFLOW_USER_HOME_DIR", "/home/airflow")


def airflow(*args: str) -> None:
    """One Airflow CLI command (in this process, see include/deploy/cli.py); its output goes to this log."""
    print(f"+ airflow {' '.join(args)}", flush=True)
    airflow_cli(*args)


def migrate_state_store() -> None:
    """Bring the state store (connection dynamics_sync_state) to the latest revision."""
    from dynamics_sync.state import STATE_CONN_ID, StateStore

    store = StateStore.from_connection()
    try:
        print(f"state store ({STATE_CONN_ID}) at the latest revision", flush=True)
    finally:
        store.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.deploy.init", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", dest="dirs", type=Path, action="append", default=[],
                        help="a folder the components write to (repeat): created and given to AIRFLOW_UID")
    parser.add_argument("--uid", type=int, default=int(os.environ.get("AIRFLOW_UID") or 50000),
                        help="the uid the Airflow containers run as (default $AIRFLOW_UID, else 50000)")
    args = parser.parse_args(argv)
    prepare_dirs(args.dirs, args.uid)
    drop_privileges(args.uid)
    airflow("db", "migrate")
    for name, (slots, description) in POOLS.items():
        airflow("pools", "set", name, str(slots), description)
    migrate_state_store()
    return 0


if __name__ == "__main__":
    sys.exit(main())
