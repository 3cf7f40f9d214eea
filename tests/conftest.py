"""One Airflow home, one state store and one pair of sandboxes per test session.

The environment is set at import, before anything imports airflow, so no test touches ~/airflow or the
checkout's own .airflow / .local folders. Retries are kept short so a test exercising one never idles.

The state store is SQLite by default; DYNAMICS_SYNC_TEST_STATE=postgres (`make test-postgres`) runs every
test that uses one against the PostgreSQL server at 127.0.0.1:5432 instead, each in a schema of its own.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

SESSION_DIR = Path(tempfile.mkdtemp(prefix="dynamics-sync-tests-"))
STATE_BACKEND = os.environ.get("DYNAMICS_SYNC_TEST_STATE", "sqlite")
PG_URL = os.environ.get("DYNAMICS_SYNC_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
if STATE_BACKEND not in ("sqlite", "postgres"):
    raise SystemExit(f"DYNAMICS_SYNC_TEST_STATE must be sqlite or postgres, not {STATE_BACKEND!r}")


def state_definition(name: str) -> dict[str, object]:
    """An empty state store of its own, as the Airflow connection the DAGs read (dynamics_sync_state).

    On PostgreSQL each store is a schema of the shared test database (created here, dropped with the
    session's schemas at exit), so stores never see each other's rows and the migrations run on each.
    """
    if STATE_BACKEND == "sqlite":
        path = SESSION_DIR / "stores" / f"{name}-{uuid.uuid4().hex[:8]}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return {"conn_type": "sqlite", "host": str(path)}
    schema = f"dsync_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(PG_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        raise SystemExit(f"DYNAMICS_SYNC_TEST_STATE=postgres but PostgreSQL is not reachable: {exc}") from None
    finally:
        engine.dispose()
    _PG_SCHEMAS.append(schema)
    return {"conn_type": "postgres", "extra": {"sqlalchemy_url": f"{PG_URL}?options=-csearch_path%3D{schema}"}}


_PG_SCHEMAS: list[str] = []
os.environ["AIRFLOW_HOME"] = str(SESSION_DIR / "airflow")
os.environ["DYNAMICS_SYNC_STAGING"] = (SESSION_DIR / "staging").as_uri()
os.environ["DYNAMICS_SYNC_DATA_DOCS"] = str(SESSION_DIR / "data_docs")
os.environ["AIRFLOW_CONN_DYNAMICS_SYNC_STATE"] = json.dumps(state_definition("session"))
os.environ["DYNAMICS_SYNC_RETRIES"] = "1"
os.environ["DYNAMICS_SYNC_RETRY_DELAY_S"] = "1"
for leaked in ("AIRFLOW_CONN_MARKETO_DEFAULT", "AIRFLOW_CONN_DYNAMICS_DEFAULT"):
    os.environ.pop(leaked, None)

from include.runtime.environment import configure  # noqa: E402

configure()


def pytest_report_header() -> str:
    return f"state store backend: {STATE_BACKEND}" + (f" ({PG_URL})" if STATE_BACKEND == "postgres" else "")


def pytest_sessionfinish() -> None:
    if not _PG_SCHEMAS:
        return
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        for schema in _PG_SCHEMAS:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="session")
def people_config() -> Path:
    """The shipped entity config cut to users, accounts, leads and contacts: the people's path, faster runs."""
    import yaml

    from dynamics_sync.entities import DEFAULT_CONFIG

    raw = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    raw["entities"] = {k: v for k, v in raw["entities"].items() if k in ("user", "account", "lead", "contact")}
    path = SESSION_DIR / "people-entities.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def new_state() -> Callable[[str], dict[str, object]]:
    """Makes an empty state store's connection definition (on the session's backend) for a module's world."""
    return state_definition


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """The session's Airflow metadata DB, migrated once, with the API pools."""
    from include.runtime.environment import prepare

    prepare()


@pytest.fixture(scope="session")
def sandboxes(airflow_db: None) -> Iterator[object]:
    """Both sandboxes on free ports for the whole session; connections point at them."""
    from include.runtime.connections import use_sandboxes
    from include.runtime.sandboxes import Sandboxes, free_port

    boxes = Sandboxes(marketo_port=free_port(), dynamics_port=free_port(), state_root=SESSION_DIR / "sandbox",
                      log_dir=SESSION_DIR / "sandbox-logs")
    boxes.start()
    # Tests exercise behaviour, not Marketo's published rate; bench/ measures against the real limits.
    boxes.post("marketo", "/_sandbox/limits", {"calls_per_20s": 100000, "daily_quota": 10_000_000})
    use_sandboxes(boxes, override=True)
    yield boxes
    boxes.stop()


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """An empty state store of the test's own, through the same Airflow connection id the DAGs use."""
    from dynamics_sync.state import StateStore

    definition = state_definition("test")
    monkeypatch.setenv("AIRFLOW_CONN_DYNAMICS_SYNC_STATE", json.dumps(definition))
    store = StateStore.from_connection()
    yield store
    store.dispose()
