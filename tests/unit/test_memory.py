"""A task holds one part's data at a time: nothing of a validated part outlives it, Arrow uses malloc."""

from __future__ import annotations

import subprocess
import sys
import weakref

import pandas as pd

from dynamics_sync import memory
from dynamics_sync.entities import load_entities
from dynamics_sync.validate import KEY, rules_for, run_suite


def test_nothing_keeps_a_validated_part_alive_once_it_is_released(tmp_path, monkeypatch):
    """GX keeps its last context (and the batch's frame) module-wide; a part's frame must die with the part,
    even after release() has frozen the survivors of its collection (a frozen leak is never collected)."""
    monkeypatch.setenv("DYNAMICS_SYNC_DATA_DOCS", str(tmp_path))
    rules = [r for r in rules_for(load_entities()["lead"], "dynamics") if r.column in ("lastName", "email")]
    dead = []
    with memory.part_by_part():
        for part in range(2):
            frame = pd.DataFrame({KEY: range(3), "lastName": ["A", None, "C"],
                                  "email": ["a@example.com", "b@example.com", "nope"]}).astype(object)
            failures = run_suite(frame, rules, "lead_memory_test", data_docs=False)
            assert sorted(failures) == [1, 2], part  # the suite really ran on this frame
            alive = weakref.ref(frame)
            del frame
            memory.release()
            dead.append(alive() is None)
    assert dead == [True, True]


def test_a_process_of_the_library_uses_the_system_allocator_for_arrow(tmp_path):
    """pyarrow's default pool (mimalloc) reserves about 100 MB in every task process; the library asks for
    the system allocator before pandas loads pyarrow, and a setting the deployment gives still wins."""
    code = ("import dynamics_sync.staging, pandas as pd, pyarrow as pa; "
            "pd.Series(['x', 'y'], dtype='string').str.upper(); print(pa.default_memory_pool().backend_name)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow")}

    def pool(**extra: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**env, **extra})
        return done.stdout.split()[-1]

    assert pool() == "system"
    assert pool(**{memory.ARROW_POOL_ENV: "mimalloc"}) == "mimalloc"


def test_a_step_unfreezes_what_its_parts_froze():
    """release() freezes the survivors of each part's collection; a process that outlives the step (dag.test(),
    the tests) must get them back, or garbage made of them later would never be collected."""
    import gc

    @memory.part_by_part()
    def step() -> int:
        memory.release()
        return gc.get_freeze_count()

    assert step() > 0
    assert gc.get_freeze_count() == 0
