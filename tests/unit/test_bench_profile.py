"""The bench's profile summary: shares of py-spy's on-CPU samples by process, library and product function."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.profile import Profile
from bench.run import profile_role

STACKS = [
    # a task process (child of a LocalExecutor worker) validating, then reading a part
    ('process 10:"airflow scheduler";process 11:"airflow worker -- LocalExecutor";process 12:"airflow worker -- '
     'LocalExecutor <idle>";run (dynamics_sync/steps.py:300);split_invalid (dynamics_sync/validate.py:'
     '80);Validator.validate (great_expectations/validator/validator.py:10) 30'),
    ('process 10:"airflow scheduler";process 11:"airflow worker -- LocalExecutor";process 12:"airflow worker -- '
     'dynamics_initial_sync lead.load";load_step (dynamics_sync/steps.py:380);read_frame (dynamics_sync/staging.py:'
     '40);read_table (pyarrow/parquet/core.py:5) 10'),
    'process 20:"python -m include.sandbox.marketo --port 1";handle (include/sandbox/marketo/store.py:9) 60',
]


def test_summary_splits_cpu_by_process_library_and_product_function(tmp_path):
    (tmp_path / "airflow-scheduler.txt").write_text("\n".join(STACKS[:2]) + "\n")
    (tmp_path / "sandbox-0.txt").write_text(STACKS[2] + "\n")
    summary = Profile({}, tmp_path).summary(profile_role)
    assert summary["samples"] == 100
    assert summary["by_process_pct"] == {"sandboxes": 60.0, "tasks": 40.0}
    assert summary["by_library_pct"] == {"include": 60.0, "great_expectations": 30.0, "pyarrow": 10.0}
    assert summary["under_product_functions_pct"] == {
        "dynamics_sync.steps.run": 30.0, "dynamics_sync.validate.split_invalid": 30.0,
        "dynamics_sync.steps.load_step": 10.0, "dynamics_sync.staging.read_frame": 10.0}


def test_py_spy_records_a_child_process_it_did_not_start(tmp_path):
    """The real tool, on a process tree like the scheduler's: a root whose child burns the CPU."""
    child = "import json; [json.dumps(list(range(300))) for _ in range(60000)]"
    root = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; time.sleep(0.3); "
                             f"subprocess.run([sys.executable, '-c', {child!r}])"])
    with Profile({"root": root.pid}, tmp_path) as spy:
        root.wait(timeout=120)
    summary = spy.summary(lambda chain: "child" if len(chain) > 1 else "root")
    assert summary["samples"] > 0
    assert max(summary["by_process_pct"], key=summary["by_process_pct"].get) == "child"
    assert "json" in summary["by_library_pct"]
    assert Path(tmp_path / "root.txt").exists()
