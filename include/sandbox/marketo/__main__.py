"""Command line entry: ``python -m include.sandbox.marketo [--host H] [--port P] [--state-dir DIR]``.

Serves in the foreground with uvicorn until SIGINT/SIGTERM. The port defaults to ``$MARKETO_SANDBOX_PORT``
or 8081; the state directory (credentials, tokens, SQLite) defaults to ``.sandbox/marketo``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from . import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m include.sandbox.marketo", description="Marketo Engage REST API sandbox"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("MARKETO_SANDBOX_PORT", "8081")),
        help="port (default $MARKETO_SANDBOX_PORT or 8081)",
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".sandbox/marketo"), help="state directory")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    app = create_app(args.state_dir, host=args.host, port=args.port)
    # Clients keep connections alive; do not let them hold a shutdown up for more than a moment.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
