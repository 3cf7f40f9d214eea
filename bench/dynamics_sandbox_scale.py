"""Scale figures for the Dynamics sandbox (issue 5): seed, paging, change tracking, $batch upserts, memory.

Starts ``python -m include.sandbox.dynamics`` on a free port with a temporary state directory, then:

1. seeds N contacts (default 1,000,000) with ``POST /_sandbox/seed {"entity": "contact", ...}``;
2. pages through all of them with ``Prefer: odata.maxpagesize=5000`` and ``@odata.nextLink``;
3. takes a change-tracking deltaLink, changes C rows (default 100,000) with UpsertMultiple (1,000 per call),
   and follows the delta until its new deltaLink;
4. sends B ``$batch`` calls (default 1,000) of S upserts each (default 1,000, PATCH by id in one change set);
5. reports elapsed times, rates and the sandbox's peak and current RSS (``/proc/<pid>/status``).

Usage: ``.venv/bin/python -m bench.dynamics_sandbox_scale [--contacts 1000000] [--changes 100000]
[--batches 1000] [--batch-size 1000]``. Prints one JSON document of figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from include.runtime.sandboxes import SandboxProcess, free_port

NS = uuid.UUID("3b0f6d55-8f0e-4f47-9a0e-7d6c1c7f2a10")  # include/sandbox/dynamics/seed.py _NS




def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            out[key] = int(value.split()[0]) // 1024
    return out


class Bench:
    def __init__(self, base: str, ca: str, pid: int) -> None:
        self.base, self.ca, self.pid = base, ca, pid
        self.info = requests.get(base + "/_sandbox/info", verify=ca, timeout=30).json()
        self.api = self.info["api_url"]
        self.http = requests.Session()
        self.token = self._token()
        self.peak_rss = 0
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, _proc_status(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            time.sleep(0.2)

    def _token(self) -> str:
        r = requests.post(f"{self.base}/{self.info['tenant_id']}/oauth2/v2.0/token", verify=self.ca, timeout=30,
                          data={"client_id": self.info["client_id"], "client_secret": self.info["client_secret"],
                                "grant_type": "client_credentials", "scope": self.info["resource_url"] + "/.default"})
        return r.json()["access_token"]

    def call(self, method: str, url: str, headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        h = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", "OData-Version": "4.0"}
        h.update(headers or {})
        r = self.http.request(method, url if url.startswith("https://") else self.api + url, headers=h,
                              verify=self.ca, timeout=600, **kw)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {url[:120]} -> {r.status_code} {r.text[:300]}")
        return r

    def page_all(self, url: str, prefer: str) -> tuple[int, int, dict[str, Any]]:
        rows = pages = 0
        while True:
            body = self.call("GET", url, {"Prefer": prefer}).json()
            rows += len(body["value"])
            pages += 1
            if "@odata.nextLink" not in body:
                return rows, pages, body
            url = body["@odata.nextLink"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="dynamics-bench-"))
    box = SandboxProcess("dynamics", free_port(), state, state / "server.log")
    figures: dict[str, Any] = {"contacts": args.contacts, "changes": args.changes, "batches": args.batches,
                               "batch_size": args.batch_size}
    try:
        box.start().wait(60)
        proc = box.proc
        base, ca = box.url, str(box.ca_file)
        b = Bench(base, ca, proc.pid)
        figures["rss_mb_idle"] = _proc_status(proc.pid)["VmRSS"]
        # A bench measures throughput, not the per-user service-protection limits.
        requests.post(base + "/_sandbox/limits", verify=ca, timeout=30,
                      json={"requests_per_300s": 10**9, "execution_time_s_per_300s": 10**9, "max_concurrent": 1000})

        t0 = time.monotonic()
        r = requests.post(base + "/_sandbox/seed", verify=ca, timeout=3600,
                          json={"entity": "contact", "count": args.contacts, "seed": 1})
        r.raise_for_status()
        figures["seed_s"] = round(time.monotonic() - t0, 1)
        figures["rss_mb_after_seed"] = _proc_status(proc.pid)["VmRSS"]

        t0 = time.monotonic()
        rows, pages, _ = b.page_all("contacts?$select=firstname,lastname,emailaddress1,modifiedon",
                                    "odata.maxpagesize=5000")
        elapsed = time.monotonic() - t0
        figures.update({"paging_rows": rows, "paging_pages": pages, "paging_s": round(elapsed, 1),
                        "paging_rows_per_s": int(rows / elapsed)})

        # change tracking: initial full load of a small table is not the point; take the deltaLink after paging
        t0 = time.monotonic()
        _, _, last = b.page_all("contacts?$select=emailaddress1,lastname",
                                             "odata.track-changes,odata.maxpagesize=5000")
        figures["tracking_initial_s"] = round(time.monotonic() - t0, 1)
        delta = last["@odata.deltaLink"]
        t0 = time.monotonic()
        step = 1000
        for start in range(0, args.changes, step):
            targets = [{"@odata.type": "Microsoft.Dynamics.CRM.contact",
                        "contactid": str(uuid.uuid5(NS, f"1:contact:{i}")), "lastname": f"Changed{i}"}
                       for i in range(start, min(args.changes, start + step))]
            b.call("POST", "contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": targets})
        write_s = time.monotonic() - t0
        figures.update({"upsertmultiple_rows": args.changes, "upsertmultiple_s": round(write_s, 1),
                        "upsertmultiple_rows_per_s": int(args.changes / write_s)})
        t0 = time.monotonic()
        changed, delta_pages, _ = b.page_all(delta, "odata.track-changes,odata.maxpagesize=5000")
        figures.update({"delta_rows": changed, "delta_pages": delta_pages,
                        "delta_s": round(time.monotonic() - t0, 1)})

        t0 = time.monotonic()
        for n in range(args.batches):
            boundary, changeset = f"batch_{n}", f"changeset_{n}"
            parts = []
            for k in range(args.batch_size):
                i = (n * args.batch_size + k) % max(1, args.contacts)
                row_id = uuid.uuid5(NS, f"1:contact:{i}")
                parts.append(f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary"
                             f"\r\nContent-ID: {k + 1}\r\n\r\nPATCH {b.api}contacts({row_id}) HTTP/1.1\r\n"
                             f"Content-Type: application/json; type=entry\r\n\r\n"
                             f'{{"jobtitle":"Batch {n}"}}\r\n')
            body = (f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
                    + "".join(parts) + f"--{changeset}--\r\n--{boundary}--\r\n")
            r = b.call("POST", "$batch", {"Content-Type": f"multipart/mixed; boundary={boundary}"},
                       data=body.encode())
            if r.text.count("HTTP/1.1 204") != args.batch_size:
                raise RuntimeError(f"batch {n}: not every part answered 204")
        elapsed = time.monotonic() - t0
        figures.update({"batch_calls": args.batches, "batch_upserts": args.batches * args.batch_size,
                        "batch_s": round(elapsed, 1), "batch_s_per_call": round(elapsed / max(1, args.batches), 3),
                        "batch_upserts_per_s": int(args.batches * args.batch_size / elapsed)})
        status = _proc_status(proc.pid)
        b._stop.set()
        stats = requests.get(base + "/_sandbox/stats", verify=ca, timeout=30).json()
        figures.update({"rss_mb_end": status["VmRSS"], "rss_mb_peak": max(status["VmHWM"], b.peak_rss),
                        "db_mb": stats["db_mb"], "sandbox_requests": stats["requests"]})
        return figures
    finally:
        box.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1000)
    print(json.dumps(run(parser.parse_args()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
