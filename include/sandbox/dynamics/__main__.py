"""Command line: serve the Dynamics sandbox over HTTPS in the foreground until SIGINT/SIGTERM.

Why: developers, the demo and integration tests start the sandbox the same way::

    python -m include.sandbox.dynamics --host 127.0.0.1 --port 8082 --state-dir .sandbox/dynamics

The port defaults to $DYNAMICS_SANDBOX_PORT, else 8082. Credentials, CA file and URLs are then
available from ``GET https://<host>:<port>/_sandbox/info`` (verify with ``<state-dir>/ca.pem``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvicorn

from .app import create_app
from .tls import ensure_tls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.sandbox.dynamics", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DYNAMICS_SANDBOX_PORT", "8082")),
                        help="TCP port (default $DYNAMICS_SANDBOX_PORT or 8082)")
    parser.add_argument("--state-dir", type=Path, default=Path(".sandbox/dynamics"),
                        help="directory for TLS files, credentials and the SQLite database")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)

    _, cert, key = ensure_tls(args.state_dir)
    app = create_app(args.state_dir, host=args.host, port=args.port)
    print(f"Dynamics sandbox on https://{args.host}:{args.port} (state in {args.state_dir.resolve()}; "
          f"info at /_sandbox/info)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, ssl_certfile=str(cert), ssl_keyfile=str(key),
                timeout_graceful_shutdown=2,
                log_level=args.log_level, access_log=args.log_level in ("info", "debug"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
