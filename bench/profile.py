"""`make bench PROFILE=1`: where a scenario's CPU goes, sampled with py-spy across every process of the run.

py-spy samples running processes from outside (no code in the product changes, nothing slows down
noticeably at 25 samples a second) and follows the subprocesses a root starts: the scheduler's
LocalExecutor workers and their task processes, and the sandboxes, which stand in for the vendors'
servers but share this machine's two cores. Only samples of a thread on the CPU are kept (idle and
waiting threads are not), so the shares below are shares of CPU time, not of wall time.

The summary answers three questions: which processes burn the CPU, in which libraries (the innermost
frame's package), and which of the product's own functions the time is spent under.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

RATE = 25
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


class Profile:
    """py-spy recording every process under `roots` while the block runs; `summary()` after it."""

    def __init__(self, roots: dict[str, int], out: Path):
        self.roots, self.out = roots, out
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Profile:
        beside = Path(sys.executable).with_name("py-spy")  # the venv's, when its bin/ is not on PATH
        spy = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
        if spy is None:
            raise RuntimeError("--profile needs py-spy (pip install -r requirements.txt)")
        self.out.mkdir(parents=True, exist_ok=True)
        for name, pid in self.roots.items():
            self.procs.append(subprocess.Popen(
                [spy, "record", "--subprocesses", "--nonblocking", "--rate", str(RATE), "--format", "raw",
                 "--output", str(self.out / f"{name}.txt"), "--pid", str(pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def __exit__(self, *_exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()

    def summary(self, role: Callable[[list[str]], str], top: int = 15) -> dict[str, Any]:
        """Shares of the CPU samples by process role, by library, and under the product's functions.

        `role` names a process from its command line and its ancestors' (outermost first): py-spy keeps
        the command line it first saw, and a task process is first seen with its worker's.
        """
        by_role: Counter[str] = Counter()
        by_library: Counter[str] = Counter()
        under: Counter[str] = Counter()
        total = 0
        for path in sorted(self.out.glob("*.txt")):
            for line in path.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if not count.isdigit():
                    continue
                n = int(count)
                parts = stack.split(";")
                processes = [p for p in parts if p.startswith("process ")]
                frames = [m for m in (FRAME.match(p) for p in parts if not p.startswith(("process ", "thread ")))
                          if m]
                total += n
                by_role[role([p.split(":", 1)[-1].strip('"') for p in processes]) if processes else "other"] += n
                by_library[_library(frames[-1]["file"]) if frames else "other"] += n
                for name in dict.fromkeys(f"{_module(m['file'])}.{m['func']}" for m in frames
                                          if _library(m["file"]) == "dynamics_sync"):
                    under[name] += n

        def shares(counter: Counter[str], limit: int | None = None) -> dict[str, float]:
            return {k: round(100 * v / total, 1) for k, v in counter.most_common(limit)} if total else {}

        return {"samples": total, "rate_hz": RATE, "cpu_s": round(total / RATE, 1),
                "by_process_pct": shares(by_role), "by_library_pct": shares(by_library, top),
                "under_product_functions_pct": shares(under, top)}


def _library(file: str) -> str:
    """The package a frame's file belongs to, as py-spy prints it (relative to its sys.path entry)."""
    if file.startswith("<frozen importlib") or "importlib/" in file:
        return "imports"
    head = file.split("/", 1)[0]
    if head in ("site-packages", "lib"):
        head = file.split("/")[1]
    return head.removesuffix(".py") or "other"


def _module(file: str) -> str:
    return file.removesuffix(".py").replace("/", ".")


def render(title: str, summary: dict[str, Any]) -> str:
    """The summary as the text file kept beside the results."""
    lines = [f"# {title}", f"CPU samples: {summary['samples']} at {summary['rate_hz']} Hz "
             f"(~{summary['cpu_s']} CPU s; on-CPU samples only)", ""]
    for key, heading in (("by_process_pct", "by process"), ("by_library_pct", "by library (innermost frame)"),
                         ("under_product_functions_pct", "under the product's functions (inclusive)")):
        lines.append(f"## {heading}")
        lines += [f"{pct:6.1f}%  {name}" for name, pct in summary[key].items()]
        lines.append("")
    return "\n".join(lines)
