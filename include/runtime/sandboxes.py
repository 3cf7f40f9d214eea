"""Start and stop both API sandboxes as child processes, and wait until they answer.

`python -m include.runtime.sandboxes` (make sandboxes) runs both in the foreground until Ctrl-C. The demo
and the test session start their own pair through `Sandboxes`, on ports of their choosing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from include.runtime.environment import ROOT

STATE_ROOT = ROOT / ".sandbox"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Sandboxes:
    marketo_port: int = int(os.environ.get("MARKETO_SANDBOX_PORT", 8081))
    dynamics_port: int = int(os.environ.get("DYNAMICS_SANDBOX_PORT", 8082))
    state_root: Path = STATE_ROOT
    log_dir: Path | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def marketo_url(self) -> str:
        return f"http://127.0.0.1:{self.marketo_port}"

    @property
    def dynamics_url(self) -> str:
        return f"https://127.0.0.1:{self.dynamics_port}"

    @property
    def ca_file(self) -> Path:
        return self.state_root / "dynamics" / "ca.pem"

    def start(self, timeout: float = 60) -> Sandboxes:
        for name, port in (("marketo", self.marketo_port), ("dynamics", self.dynamics_port)):
            _refuse_taken(name, port)
            out = None
            if self.log_dir:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (lives as long as the child)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", f"include.sandbox.{name}", "--host", "127.0.0.1", "--port", str(port),
                 "--state-dir", str(self.state_root / name)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None,
            ))
        self.wait(timeout)
        return self

    def wait(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a sandbox exited with code {proc.returncode} while starting")
            try:
                self.marketo_info()
                self.dynamics_info()
                return
            except (requests.RequestException, OSError):
                time.sleep(0.3)
        raise TimeoutError(f"sandboxes did not answer within {timeout} s")

    def marketo_info(self) -> dict[str, Any]:
        return requests.get(f"{self.marketo_url}/_sandbox/info", timeout=5).json()

    def dynamics_info(self) -> dict[str, Any]:
        if not self.ca_file.exists():
            raise FileNotFoundError(self.ca_file)
        return requests.get(f"{self.dynamics_url}/_sandbox/info", timeout=5, verify=str(self.ca_file)).json()

    def post(self, side: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = (self.marketo_url if side == "marketo" else self.dynamics_url) + path
        verify = str(self.ca_file) if side == "dynamics" else True
        response = requests.post(url, json=body or {}, timeout=300, verify=verify)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()

    def __enter__(self) -> Sandboxes:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _refuse_taken(name: str, port: int) -> None:
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(
                f"port {port} for the {name} sandbox is taken (is `make sandboxes` already running?); "
                f"stop it or set {name.upper()}_SANDBOX_PORT"
            )


def _masked(info: dict[str, Any]) -> dict[str, Any]:
    """Connection details for the console, secrets left out: terminals end up in logs."""
    return {key: "***" if "secret" in key else value for key, value in info.items()}


def main() -> int:
    boxes = Sandboxes()
    try:
        boxes.start()
    except (RuntimeError, TimeoutError) as exc:
        boxes.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("Marketo sandbox: ", json.dumps(_masked(boxes.marketo_info()), indent=2))
    print("Dynamics sandbox:", json.dumps(_masked(boxes.dynamics_info()), indent=2))
    print(f"Credentials: GET {boxes.marketo_url}/_sandbox/info and {boxes.dynamics_url}/_sandbox/info "
          f"(CA file {boxes.ca_file}).")
    print("Both sandboxes are running; Ctrl-C stops them.", flush=True)
    try:
        while all(proc.poll() is None for proc in boxes.procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        boxes.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
