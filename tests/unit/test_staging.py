"""Staging through fsspec URLs: what workers on several machines rely on to hand rows to each other.

Each step writes its rows as Parquet under DYNAMICS_SYNC_STAGING and passes only the path (a string) through
XCom; the next task may run in another process or on another machine. These tests stage the frames the
steps stage (extract's Dynamics rows with a delete and blank fields, the activity rows) through an fsspec
memory filesystem and a local file:// root, read them back from a second root of the same URL and from
another process, and check that blanks come back as None (the merge's "no value").

Airflow's ObjectStoragePath only opens schemes a provider registered (file:// is built in; s3://, gs://,
abfs:// come with the amazon, google and microsoft-azure providers), so the memory filesystem is attached
the way a user attaches any filesystem, with airflow.sdk.io.attach.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "dynamics_incremental_sync"
RUN_ID = "scheduled__2026-12-01T10:05:00+00:00"  # what Airflow names a scheduled run: ':' and '+' in it
LEAD_IDS = ("6f1d6c1e-0000-4000-8000-000000000001", "6f1d6c1e-0000-4000-8000-000000000002",
            "6f1d6c1e-0000-4000-8000-000000000003")


def _dynamics_rows() -> pd.DataFrame:
    """Extract's frame of three Dataverse rows: a full one, one with blank fields, and a delete."""
    from dynamics_sync import extract
    from dynamics_sync.entities import load_entities

    spec = load_entities()["lead"]
    raw = [
        {"leadid": LEAD_IDS[0], "_modifiedby_value": "9a3e0000-0000-4000-8000-00000000000a",
         "emailaddress1": "ann.lee@example.com", "firstname": "Ann", "lastname": "Lee", "telephone1": "+1 555 0100",
         "jobtitle": "CTO", "companyname": "Contoso", "leadsourcecode": 3, "new_synctomkto": True,
         "_ownerid_value": "9a3e0000-0000-4000-8000-00000000000b"},
        {"leadid": LEAD_IDS[1], "_modifiedby_value": None, "emailaddress1": "bo@example.com", "firstname": None,
         "lastname": "Bo", "telephone1": None, "jobtitle": None, "companyname": None, "leadsourcecode": None,
         "new_synctomkto": None, "_ownerid_value": None},
        {"@odata.context": "https://org.crm.dynamics.com/api/data/v9.2/$metadata#leads/$deletedEntity",
         "id": LEAD_IDS[2], "reason": "deleted"},
    ]
    return extract.dynamics_frame(spec, raw, None).rows


def _activity_rows() -> pd.DataFrame:
    """The activity rows a step stages (steps.activities_frame): text values, many of them blank."""
    from dynamics_sync.state import Activity
    from dynamics_sync.steps import activities_frame

    return activities_frame([
        Activity("collision_resolved", entity="lead", direction="to_dynamics", dynamics_id=LEAD_IDS[0],
                 marketo_id=1001, email="ann.lee@example.com", field="jobtitle", old_value="CEO", new_value="CTO",
                 reason="marketo wins for leads"),
        Activity("unresolved_reference", entity="lead", dynamics_id=LEAD_IDS[1], field="ownerid", old_value=None,
                 new_value=12, reason="owner not synced yet"),
    ])


def _assert_lead_rows(frame: pd.DataFrame) -> None:
    rows = {row["dynamics_id"]: row for row in frame.to_dict("records")}
    assert list(rows) == list(LEAD_IDS)
    full, blank, deleted = (rows[i] for i in LEAD_IDS)
    assert (full["email"], full["lastName"], full["phone"], full["deleted"]) == (
        "ann.lee@example.com", "Lee", "+1 555 0100", False)
    assert bool(full["sync_filter"]) is True and full["leadSource"] == 3
    # Blanks are None, never NaN or "None": the three-way merge compares them with snapshot values.
    assert all(blank[col] is None for col in ("firstName", "phone", "title", "company", "leadSource", "modified_by"))
    assert blank["lastName"] == "Bo"
    assert deleted["deleted"] == True and deleted["email"] is None and deleted["lastName"] is None  # noqa: E712


@pytest.fixture
def memory_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """DYNAMICS_SYNC_STAGING on an fsspec memory filesystem of the test's own (a unique top folder)."""
    from airflow.sdk.io import attach

    fs = fsspec.filesystem("memory")
    attach("memory", fs=fs)
    top = f"dynamics-sync-{uuid.uuid4().hex[:8]}"
    root = f"memory://{top}/staging"
    monkeypatch.setenv("DYNAMICS_SYNC_STAGING", root)
    yield root
    if fs.exists(f"/{top}"):
        fs.rm(f"/{top}", recursive=True)


def test_round_trip_through_memory_url_keeps_values_and_blanks(memory_root: str) -> None:
    from dynamics_sync import staging

    directory = staging.run_dir(DAG_ID, RUN_ID, "lead")
    rows_path = staging.write_frame(_dynamics_rows(), directory / "dynamics_rows.parquet")
    activities_path = staging.write_frame(_activity_rows(), directory / "extract_activities.parquet")

    # What goes through XCom: plain strings under the configured root, one folder per run and entity,
    # with the run id made path-safe.
    assert rows_path == f"{memory_root}/{DAG_ID}/scheduled__2026-12-01T10_05_00_00_00/lead/dynamics_rows.parquet"
    assert isinstance(activities_path, str) and activities_path.startswith(memory_root)
    _assert_lead_rows(staging.read_frame(rows_path))
    activities = staging.read_frame(activities_path).to_dict("records")
    assert [a["activity_type"] for a in activities] == ["collision_resolved", "unresolved_reference"]
    assert activities[0]["old_value"] == "CEO" and activities[0]["marketo_id"] == 1001
    assert activities[1]["old_value"] is None and activities[1]["direction"] is None
    assert activities[1]["new_value"] == "12"  # activity values are text, as activity_log stores them


def test_a_second_root_of_the_same_url_sees_the_first_ones_files(memory_root: str) -> None:
    """Two workers configured with the same URL: one stages, the other lists and reads what it staged."""
    from airflow.sdk import ObjectStoragePath

    from dynamics_sync import staging

    writer = staging.staging_root()
    path = staging.write_frame(_dynamics_rows(), writer / DAG_ID / "run_1" / "lead" / "dynamics_rows.parquet")
    reader = ObjectStoragePath(memory_root)
    assert reader is not writer
    listed = [str(p) for p in (reader / DAG_ID / "run_1" / "lead").iterdir()]
    assert listed == [path]
    _assert_lead_rows(staging.read_frame(listed[0]))


def test_file_root_is_shared_with_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """file:// staging (the compose default, a volume every worker of a host mounts) across processes.

    The parent stages extract's rows; a separate Python process, configured only by DYNAMICS_SYNC_STAGING,
    reads them by the XCom string and stages a frame of its own under the same run; the parent reads that.
    """
    from dynamics_sync import staging

    root = (tmp_path / "staging").as_uri()
    monkeypatch.setenv("DYNAMICS_SYNC_STAGING", root)
    rows_path = staging.write_frame(_dynamics_rows(), staging.run_dir(DAG_ID, RUN_ID, "lead") / "dynamics_rows.parquet")
    assert rows_path.startswith("file://") and (tmp_path / "staging" / DAG_ID).is_dir()

    worker = textwrap.dedent("""
        import json, sys
        import pandas as pd
        from dynamics_sync import staging
        frame = staging.read_frame(sys.argv[1])
        blanks = int(frame["phone"].isna().sum())
        out = staging.write_frame(
            pd.DataFrame({"dynamics_id": frame["dynamics_id"], "phone_blank": frame["phone"].isna()}),
            staging.run_dir(sys.argv[2], sys.argv[3], "lead") / "plan.parquet")
        print(json.dumps({"rows": len(frame), "blanks": blanks, "path": out}))
    """)
    env = {"DYNAMICS_SYNC_STAGING": root, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", worker, rows_path, DAG_ID, RUN_ID], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rows"] == 3 and report["blanks"] == 2
    assert report["path"] == str(staging.run_dir(DAG_ID, RUN_ID, "lead") / "plan.parquet")
    plan = staging.read_frame(report["path"])
    assert plan.set_index("dynamics_id")["phone_blank"].to_dict() == dict(zip(LEAD_IDS, (False, True, True),
                                                                             strict=True))


def test_nothing_staged_reads_as_an_empty_frame() -> None:
    from dynamics_sync import staging

    assert staging.read_frame(None).empty and staging.read_frame("").empty


def test_a_scheme_no_provider_registered_fails_at_the_first_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo or a missing provider (say s3:// without the amazon provider) fails the task, naming the
    scheme, instead of staging somewhere else."""
    from dynamics_sync import staging

    monkeypatch.setenv("DYNAMICS_SYNC_STAGING", "nosuchfs://bucket/staging")
    with pytest.raises(ValueError, match="nosuchfs"):
        staging.write_frame(_activity_rows(), staging.run_dir(DAG_ID, RUN_ID, "lead") / "plan.parquet")
