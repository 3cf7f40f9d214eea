"""One Airflow home, one state store and one pair of sandboxes per test session.

The environment is set at import, before anything imports airflow, so no test touches ~/airflow or the
checkout's own .airflow / .local folders. Retries are kept short so a test exercising one never idles.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SESSION_DIR = Path(tempfile.mkdtemp(prefix="dynamics-sync-tests-"))
os.environ["AIRFLOW_HOME"] = str(SESSION_DIR / "airflow")
os.environ["DYNAMICS_SYNC_STAGING"] = (SESSION_DIR / "staging").as_uri()
os.environ["DYNAMICS_SYNC_DATA_DOCS"] = str(SESSION_DIR / "data_docs")
os.environ["AIRFLOW_CONN_DYNAMICS_SYNC_STATE"] = f'{{"conn_type": "sqlite", "host": "{SESSION_DIR / "state.db"}"}}'
os.environ["DYNAMICS_SYNC_RETRIES"] = "1"
os.environ["DYNAMICS_SYNC_RETRY_DELAY_S"] = "1"
for leaked in ("AIRFLOW_CONN_MARKETO_DEFAULT", "AIRFLOW_CONN_DYNAMICS_DEFAULT"):
    os.environ.pop(leaked, None)

from include.runtime.environment import configure  # noqa: E402

configure()


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
def fresh_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """An empty state store of the test's own, through the same Airflow connection id the DAGs use."""
    from dynamics_sync.state import StateStore

    definition = {"conn_type": "sqlite", "host": str(tmp_path / "state.db")}
    monkeypatch.setenv("AIRFLOW_CONN_DYNAMICS_SYNC_STATE", json.dumps(definition))
    store = StateStore.from_connection()
    yield store
    store.dispose()
