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
class SandboxProcess:
    """One sandbox server as a child process: started, waited for until it answers, stopped."""

    name: str  # "marketo" or "dynamics"
    port: int
    state_dir: Path
    log_path: Path | None = None
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.name == 'dynamics' else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        return self.state_dir / "ca.pem" if self.name == "dynamics" else None

    @property
    def verify(self) -> str | bool:
        return str(self.ca_file) if self.ca_file else True

    def info(self) -> dict[str, Any]:
        if self.ca_file and not self.ca_file.exists():
            raise FileNotFoundError(self.ca_file)
        return requests.get(f"{self.url}/_sandbox/info", timeout=5, verify=self.verify).json()

    def start(self) -> SandboxProcess:
        _refuse_taken(self.name, self.port)
        out = None
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")  # noqa: SIM115 (lives as long as the child)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"include.sandbox.{self.name}", "--host", "127.0.0.1", "--port", str(self.port),
             "--state-dir", str(self.state_dir), *self.extra_args],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None,
        )
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = f"; log: {self.log_path}" if self.log_path else ""
            raise RuntimeError(f"the {self.name} sandbox exited with code {self.proc.returncode} while starting{log}")
        try:
            self.info()
        except (requests.RequestException, OSError, ValueError):
            return False
        return True

    def wait(self, timeout: float = 60) -> SandboxProcess:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.name} sandbox did not answer within {timeout} s")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> SandboxProcess:
        try:
            return self.start().wait()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@dataclass
class Sandboxes:
    """Both sandboxes, for the demo, `make sandboxes` and the test session."""

    marketo_port: int = int(os.environ.get("MARKETO_SANDBOX_PORT", 8081))
    dynamics_port: int = int(os.environ.get("DYNAMICS_SANDBOX_PORT", 8082))
    state_root: Path = STATE_ROOT
    log_dir: Path | None = None
    boxes: list[SandboxProcess] = field(default_factory=list)

    @property
    def marketo_url(self) -> str:
        return self.box("marketo").url

    @property
    def dynamics_url(self) -> str:
        return self.box("dynamics").url

    @property
    def ca_file(self) -> Path:
        return self.state_root / "dynamics" / "ca.pem"

    @property
    def procs(self) -> list[subprocess.Popen]:
        return [box.proc for box in self.boxes if box.proc is not None]

    def start(self, timeout: float = 60) -> Sandboxes:
        for name, port in (("marketo", self.marketo_port), ("dynamics", self.dynamics_port)):
            log = self.log_dir / f"{name}.log" if self.log_dir else None
            self.boxes.append(SandboxProcess(name, port, self.state_root / name, log).start())
        for box in self.boxes:
            box.wait(timeout)
        return self

    def box(self, side: str) -> SandboxProcess:
        """One side, whether this object started it or it was already running (e.g. `make sandboxes`)."""
        port = self.marketo_port if side == "marketo" else self.dynamics_port
        return SandboxProcess(side, port, self.state_root / side)

    def marketo_info(self) -> dict[str, Any]:
        return self.box("marketo").info()

    def dynamics_info(self) -> dict[str, Any]:
        return self.box("dynamics").info()

    def post(self, side: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        box = self.box(side)
        response = requests.post(box.url + path, json=body or {}, timeout=300, verify=box.verify)
        response.raise_for_status()
        return response.json()

    def get(self, side: str, path: str) -> dict[str, Any]:
        box = self.box(side)
        response = requests.get(box.url + path, timeout=60, verify=box.verify)
        response.raise_for_status()
        return response.json()

    def delete(self, side: str, path: str) -> dict[str, Any]:
        box = self.box(side)
        response = requests.delete(box.url + path, timeout=60, verify=box.verify)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        for box in self.boxes:
            box.stop()
        self.boxes.clear()

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
