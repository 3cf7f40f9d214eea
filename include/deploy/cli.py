"""Airflow CLI commands run inside the calling process: ``airflow_cli("pools", "set", ...)``.

Why not a subprocess per command: each `airflow` process pays Airflow's start-up (seconds) again, and a
command line is visible to every user of the host (`ps`), so credentials passed to `connections add` would
be too. In-process, the same CLI code runs (its argument checks, its masking of passwords in what it prints
and in the audit log, which records this process's own command line), once started.
"""

from __future__ import annotations


def airflow_cli(*args: str, missing_ok: bool = False) -> None:
    """Run one Airflow CLI command; raise RuntimeError when it fails (unless `missing_ok` and it found nothing).

    The CLI reports failures as SystemExit with a message; the message is the CLI's own (it holds no
    password), the arguments are never part of the error.
    """
    from airflow.cli.cli_parser import get_parser

    namespace = get_parser().parse_args(list(args))
    try:
        namespace.func(namespace)
    except SystemExit as exc:
        if exc.code in (None, 0):
            return
        if missing_ok and "Did not find" in str(exc.code):
            return
        raise RuntimeError(f"airflow {' '.join(args[:2])} failed: {exc.code}") from None
