"""Run-scoped Parquet staging between steps: tasks pass paths and counts through XCom, never rows.

The root is an fsspec URL read through airflow.sdk.ObjectStoragePath (DYNAMICS_SYNC_STAGING, default a
local folder of the project), so workers on several machines can share s3://, gs:// or abfs:// staging
with no code change.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from airflow.sdk import ObjectStoragePath

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / ".local" / "staging"


def staging_root() -> ObjectStoragePath:
    root = os.environ.get("DYNAMICS_SYNC_STAGING") or DEFAULT_ROOT.as_uri()
    return ObjectStoragePath(root)


def run_dir(dag_id: str, run_id: str, entity: str) -> ObjectStoragePath:
    safe_run = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    return staging_root() / dag_id / safe_run / entity


def write_frame(frame: pd.DataFrame, path: ObjectStoragePath | str) -> str:
    """Write one frame as Parquet; returns the path as a string for XCom."""
    path = ObjectStoragePath(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        frame.to_parquet(handle, index=False)
    return str(path)


def read_frame(path: str | None) -> pd.DataFrame:
    """Read a staged frame; None (nothing was staged) reads as an empty frame."""
    if not path:
        return pd.DataFrame()
    with ObjectStoragePath(path).open("rb") as handle:
        frame = pd.read_parquet(handle)
    # Parquet keeps nulls as NaN/None by dtype; the merge wants None for "no value".
    return frame.astype(object).where(frame.notna(), None)
