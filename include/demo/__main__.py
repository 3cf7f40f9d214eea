"""`make demo`: the whole product end to end on local sandboxes, with a short report.

Starts both sandboxes (on free ports, with their own state, so a running `make sandboxes` is left alone),
seeds them, runs the initial full copy, makes people's changes on both sides (plain edits, a collision on
a lead field and on a contact field, a record missing a required field, a new Dynamics lead), runs one
incremental cycle and the sync-person DAG twice, prints what moved, and checks the outcome on both sides
through their APIs. Exits non-zero if a run failed or a check did not hold.
"""

from __future__ import annotations

import shutil
import sys
import time

from include.runtime.environment import LOCAL, configure

DEMO = LOCAL / "demo"
LEADS, CONTACTS, PEOPLE, OVERLAP_LEADS, OVERLAP_CONTACTS = 3000, 2000, 400, 120, 80


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    import os

    os.environ["AIRFLOW_CONN_DYNAMICS_SYNC_STATE"] = f'{{"conn_type": "sqlite", "host": "{DEMO / "state.db"}"}}'
    os.environ["DYNAMICS_SYNC_STAGING"] = (DEMO / "staging").as_uri()
    os.environ["DYNAMICS_SYNC_DATA_DOCS"] = str(DEMO / "data_docs")
    os.environ.setdefault("DYNAMICS_SYNC_RETRIES", "1")
    os.environ.setdefault("DYNAMICS_SYNC_RETRY_DELAY_S", "5")
    configure()
    from include.demo.scenario import Scenario
    from include.runtime.environment import prepare
    from include.runtime.sandboxes import Sandboxes, free_port

    prepare()
    boxes = Sandboxes(marketo_port=free_port(), dynamics_port=free_port(), state_root=DEMO / "sandbox",
                      log_dir=DEMO / "logs")
    print(f"Starting sandboxes: Marketo {boxes.marketo_url}, Dynamics {boxes.dynamics_url}", flush=True)
    try:
        boxes.start()
        ok = Scenario(boxes).run(LEADS, CONTACTS, PEOPLE, OVERLAP_LEADS, OVERLAP_CONTACTS)
    finally:
        boxes.stop()
    print(f"\nDemo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s "
          f"(state store: {DEMO / 'state.db'}; Great Expectations Data Docs: {DEMO / 'data_docs'}/<suite>/gx/"
          "uncommitted/data_docs/local_site/index.html)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
