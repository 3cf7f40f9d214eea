"""`make run DAG=<dag_id> [CONF='<json>']`: run one DAG once, like `airflow dags test`, in this project.

Uses the project's Airflow home, and whatever marketo_default / dynamics_default point at; when they are
not defined, the sandboxes started by `make sandboxes`. Exits non-zero if the run failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from include.runtime.environment import ROOT, configure, prepare


def load_dag(dag_id: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        problems = "\n".join(f"{path}: {error}" for path, error in bag.import_errors.items())
        raise SystemExit(f"DAG import errors:\n{problems}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise SystemExit(f"no DAG {dag_id!r}; known: {', '.join(sorted(bag.dag_ids))}")
    return dag


def run(dag_id: str, conf: dict[str, Any] | None = None) -> Any:
    """Run the DAG once in-process (dag.test) and return its DagRun."""
    return load_dag(dag_id).test(run_conf=conf or None)


def report(dag_run: Any) -> bool:
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    for task_id, state in sorted(states.items()):
        print(f"  {task_id:40s} {state}")
    ok = str(dag_run.state) == "success"
    print(f"{dag_run.dag_id} run {dag_run.run_id}: {dag_run.state}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id")
    parser.add_argument("conf", nargs="?", default="", help="JSON run conf, e.g. '{\"marketo_lead_id\": 1}'")
    args = parser.parse_args(argv)
    try:
        conf = json.loads(args.conf) if args.conf.strip() else None
    except json.JSONDecodeError as exc:
        print(f"error: CONF is not valid JSON: {exc}", file=sys.stderr)
        return 2
    configure()
    prepare()
    from include.runtime.connections import use_sandboxes
    from include.runtime.sandboxes import Sandboxes

    try:
        use_sandboxes(Sandboxes())
    except (OSError, ValueError) as exc:
        print(f"error: no marketo_default/dynamics_default connection defined and the sandboxes do not "
              f"answer ({type(exc).__name__}); start them with `make sandboxes`", file=sys.stderr)
        return 1
    return 0 if report(run(args.dag_id, conf)) else 1


if __name__ == "__main__":
    sys.exit(main())
