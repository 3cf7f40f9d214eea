"""Scale figures of the Marketo sandbox at one million leads (run by hand, not part of the test suite).

    .venv/bin/python -m bench.marketo_sandbox_scale [--leads 1000000] [--workers 8]

Starts ``python -m include.sandbox.marketo`` on a free port with a temporary state dir, turns the limits
off, then measures: seeding N leads; reading them all through bulk export (create → Completed →
download) and through paged REST (Get Leads by Filter Type, ``filterType=id``, 300 ids a call); writing
N leads through Sync Leads (300 a call, new e-mails) and N through bulk import (CSV files under 10 MB);
calls per second with limits off; the sandbox's resident memory (current and peak, from /proc).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from include.runtime.sandboxes import SandboxProcess, free_port


def _rss_mib(pid: int) -> tuple[float, float]:
    cur = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cur, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    n = args.leads
    figures: dict[str, Any] = {"leads": n, "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        box = SandboxProcess("marketo", free_port(), Path(tmp), None, ("--log-level", "warning"))
        try:
            box.start().wait(60)
            proc, base, info = box.proc, box.url, box.info()
            requests.post(f"{base}/_sandbox/limits", json={
                "calls_per_20s": 10**9, "max_concurrent": 10**6, "daily_quota": 10**9, "bulk_step_ms": 0,
                "export_daily_quota_bytes": 10**12, "reset_counters": True}, timeout=10).raise_for_status()
            token = requests.get(f"{base}/identity/oauth/token", params={
                "grant_type": "client_credentials", "client_id": info["client_id"],
                "client_secret": info["client_secret"]}, timeout=10).json()["access_token"]
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"

            t = time.monotonic()
            seeded = requests.post(f"{base}/_sandbox/seed", json={"entity": "lead", "count": n, "seed": 1},
                                   timeout=600).json()
            figures["seed_s"] = round(time.monotonic() - t, 1)
            assert seeded["created"] == n, seeded
            figures["rss_after_seed_mib"] = _rss_mib(proc.pid)

            # bulk export of every lead
            now = dt.datetime.now(dt.UTC)
            window = {"startAt": (now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      "endAt": (now + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
            t = time.monotonic()
            job = session.post(f"{base}/bulk/v1/leads/export/create.json", json={
                "fields": ["id", "email", "firstName", "lastName", "company", "updatedAt"],
                "filter": {"createdAt": window}}, timeout=30).json()["result"][0]
            eid = job["exportId"]
            session.post(f"{base}/bulk/v1/leads/export/{eid}/enqueue.json", timeout=30)
            while True:
                status = session.get(f"{base}/bulk/v1/leads/export/{eid}/status.json", timeout=30).json()["result"][0]
                if status["status"] in ("Completed", "Failed"):
                    break
                time.sleep(0.2)
            figures["export_job_s"] = round(time.monotonic() - t, 1)
            size = 0
            rows = 0
            with session.get(f"{base}/bulk/v1/leads/export/{eid}/file.json", stream=True, timeout=600) as reply:
                for chunk in reply.iter_content(1 << 20):
                    size += len(chunk)
                    rows += chunk.count(b"\n")
            figures["export_total_s"] = round(time.monotonic() - t, 1)
            figures["export_rows"] = rows - 1
            figures["export_mib"] = round(size / 2**20, 1)
            figures["rss_after_export_mib"] = _rss_mib(proc.pid)

            # paged REST read of every lead, 300 ids per call
            ids = list(range(1, n + 1))
            chunks = [ids[i:i + 300] for i in range(0, n, 300)]

            def read(chunk: list[int]) -> int:
                body = session.post(f"{base}/rest/v1/leads.json", data={
                    "_method": "GET", "filterType": "id", "filterValues": ",".join(map(str, chunk)),
                    "fields": "email,firstName,lastName,updatedAt"}, timeout=60).json()
                assert body["success"], body
                return len(body["result"])

            t = time.monotonic()
            with ThreadPoolExecutor(args.workers) as pool:
                got = sum(pool.map(read, chunks))
            secs = time.monotonic() - t
            figures["rest_read"] = {"leads": got, "calls": len(chunks), "s": round(secs, 1),
                                    "calls_per_s": round(len(chunks) / secs, 1)}
            figures["rss_after_rest_read_mib"] = _rss_mib(proc.pid)

            # Sync Leads: n new leads, 300 per call
            def sync(start: int) -> int:
                recs = [{"email": f"sync{i:07d}@example.com", "firstName": "Sync", "lastName": str(i)}
                        for i in range(start, min(start + 300, n))]
                body = session.post(f"{base}/rest/v1/leads.json", json={"input": recs}, timeout=120).json()
                assert body["success"], body
                return sum(1 for r in body["result"] if r["status"] == "created")

            t = time.monotonic()
            with ThreadPoolExecutor(args.workers) as pool:
                made = sum(pool.map(sync, range(0, n, 300)))
            secs = time.monotonic() - t
            figures["rest_sync"] = {"created": made, "calls": (n + 299) // 300, "s": round(secs, 1),
                                    "records_per_s": round(made / secs)}
            figures["rss_after_sync_mib"] = _rss_mib(proc.pid)

            # bulk import: n more leads in CSV files under 10 MB
            t = time.monotonic()
            per_file = 120_000
            batches = []
            for start in range(0, n, per_file):
                buf = io.StringIO()
                buf.write("email,firstName,lastName,company\n")
                for i in range(start, min(start + per_file, n)):
                    buf.write(f"imp{i:07d}@example.com,Imp,{i},Bulk Co\n")
                data = buf.getvalue().encode()
                assert len(data) < 10 * 1024 * 1024
                while True:
                    body = session.post(f"{base}/bulk/v1/leads.json", params={"format": "csv"},
                                        files={"file": ("leads.csv", data, "text/csv")}, timeout=120).json()
                    if body["success"]:
                        batches.append(body["result"][0]["batchId"])
                        break
                    assert body["errors"][0]["code"] == "1016", body
                    time.sleep(0.5)
            imported = 0
            for batch in batches:
                while True:
                    st = session.get(f"{base}/bulk/v1/leads/batch/{batch}.json", timeout=30).json()["result"][0]
                    if st["status"] in ("Complete", "Failed"):
                        imported += st.get("numOfLeadsProcessed", 0)
                        break
                    time.sleep(0.5)
            secs = time.monotonic() - t
            figures["bulk_import"] = {"imported": imported, "files": len(batches), "s": round(secs, 1),
                                      "records_per_s": round(imported / secs)}
            figures["rss_end_mib"] = _rss_mib(proc.pid)
            stats = requests.get(f"{base}/_sandbox/stats", timeout=60).json()
            figures["records"] = stats["records"]
            # cheap call rate with limits off (describe, 8 workers)
            t = time.monotonic()
            with ThreadPoolExecutor(args.workers) as pool:
                list(pool.map(lambda _: session.get(f"{base}/rest/v1/leads/describe.json", timeout=30).json(),
                              range(2000)))
            figures["describe_calls_per_s"] = round(2000 / (time.monotonic() - t), 1)
        finally:
            box.stop()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
