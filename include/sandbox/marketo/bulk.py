"""Bulk extract and bulk import jobs: queue limits, state machine over time, files.

Export (``/bulk/v1/leads/export/...`` and ``/bulk/v1/activities/export/...``), documented behaviour:
- a job is created (``Created``), enqueued (``Queued``), picked up when fewer than 2 jobs are
  ``Processing``, and ends ``Completed`` (file written whole, never partially) or ``Failed``; ``cancel``
  answers ``Cancelled`` (later status reads say ``Canceled``, the OpenAPI enum spelling).
- the queue (Queued + Processing, all export types together) holds 10 jobs → ``1029`` "Too many jobs in
  queue"; enqueuing a job that is already queued → ``1029`` "Job already queued"; the daily allocation
  (500 MB by default, ``export_daily_quota_bytes``) spent → ``1029`` "Export daily quota exceeded" on
  create and enqueue, until midnight US Central.
- status changes at most once per ``bulk_step_ms`` (default 60 s, the documented minimum poll interval):
  a job stays Queued at least one step and Processing at least one step (longer when the file takes
  longer to write).
- files: CSV/TSV/SSV with a header row (REST names, or ``columnHeaderNames``), empty values written as
  ``null``; company and Lead Owner fields show the linked company / sales person (see :mod:`links`) as
  they are when the file is written; ``fileSize`` in bytes and ``fileChecksum`` ``"sha256:<hex>"``; the
  file endpoint serves ``Range: bytes=a-b`` with 206; before completion or for an unknown id it answers
  404 with a plain-text body.

Import (``POST /bulk/v1/leads.json``): FIFO queue, 2 importing at a time, 10 in the queue → ``1016``
"Too many imports"; ``Queued`` → ``Importing`` → ``Complete``/``Failed`` on the same step clock.

Sandbox choices (not documented): jobs live in memory (a restart forgets them; their files stay in
``state_dir/bulk``); an unknown export id on status/enqueue/cancel → ``1003`` "Export id not found",
an unknown batch id → ``1003`` "Batch id not found"; import rows are upserts with ``lookupField``
(``id`` = update only) in blocks of 300 through the same code as Sync Leads, so they log the same
activities; empty cells leave the field unchanged; an unknown column fails the whole job; a value for a
read-only column is ignored with a warning for that row.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import links
from .activities import render_activity
from .envelope import MarketoError
from .fields import FIELDS_BY_NAME, WRITABLE
from .limits import LimitSettings, marketo_day
from .store import Actor, Store, select_cols

MAX_PROCESSING = 2
MAX_QUEUED = 10  # including the processing ones
MAX_RANGE_DAYS = 31
DELIMS = {"CSV": ",", "TSV": "\t", "SSV": ";"}
ACTIVITY_EXPORT_FIELDS = (
    "marketoGUID", "leadId", "activityDate", "activityTypeId", "campaignId", "primaryAttributeValueId",
    "primaryAttributeValue", "attributes", "actionResult",
)
DEFAULT_ACTIVITY_FIELDS = (
    "marketoGUID", "leadId", "activityDate", "activityTypeId", "campaignId", "primaryAttributeValueId",
    "primaryAttributeValue", "attributes",
)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_filter_date(value: Any, name: str) -> dt.datetime:
    if not isinstance(value, str) or not value.strip():
        raise MarketoError("1003", f"Invalid filter: '{name}' cannot be blank")
    text = value.strip()
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MarketoError("1003", f"Invalid date format for '{name}': '{value}'") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def date_range(spec: Any, name: str) -> tuple[str, str]:
    """``{"startAt", "endAt"}`` → stored-form bounds; at most 31 days apart."""
    if not isinstance(spec, dict):
        raise MarketoError("1003", f"Invalid filter '{name}'")
    start = _parse_filter_date(spec.get("startAt"), f"{name}.startAt")
    end = _parse_filter_date(spec.get("endAt"), f"{name}.endAt")
    if end < start:
        raise MarketoError("1003", f"Invalid filter '{name}': endAt is before startAt")
    if end - start > dt.timedelta(days=MAX_RANGE_DAYS):
        raise MarketoError("1003", f"Invalid filter '{name}': date range exceeds {MAX_RANGE_DAYS} days")
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return start.strftime(fmt), end.strftime(fmt)


@dataclass
class ExportJob:
    export_id: str
    kind: str  # "leads" | "activities"
    api_user: str
    fields: list[str]
    headers: list[str]
    fmt: str
    where: str
    params: tuple[Any, ...]
    created: float = field(default_factory=time.time)
    status: str = "Created"
    queued: float | None = None
    started: float | None = None
    finished: float | None = None
    records: int | None = None
    size: int | None = None
    checksum: str | None = None
    error_msg: str | None = None
    path: Path | None = None
    future: Future[tuple[int, int, str]] | None = None

    def view(self, cancel_reply: bool = False) -> dict[str, Any]:
        status = self.status
        if status == "Cancelled" and not cancel_reply:
            status = "Canceled"
        out: dict[str, Any] = {"exportId": self.export_id, "format": self.fmt, "status": status,
                               "createdAt": _iso(self.created)}
        if self.queued is not None:
            out["queuedAt"] = _iso(self.queued)
        if self.started is not None:
            out["startedAt"] = _iso(self.started)
        if self.status in ("Completed", "Failed", "Cancelled"):
            out["finishedAt"] = _iso(self.finished)
        if self.status == "Completed":
            out["numberOfRecords"] = self.records
            out["fileSize"] = self.size
            out["fileChecksum"] = self.checksum
        if self.error_msg:
            out["errorMsg"] = self.error_msg
        return out


@dataclass
class ImportJob:
    batch_id: int
    api_user: str
    lookup: str
    fmt: str
    data: bytes
    created: float = field(default_factory=time.time)
    status: str = "Queued"
    started: float | None = None
    processed: int = 0
    failed: int = 0
    warned: int = 0
    message: str | None = None
    header: list[str] = field(default_factory=list)
    failures: list[list[str]] = field(default_factory=list)
    warnings: list[list[str]] = field(default_factory=list)
    future: Future[None] | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"batchId": self.batch_id, "importId": str(self.batch_id), "status": self.status}
        if self.status in ("Importing", "Complete", "Failed"):
            out.update({"numOfLeadsProcessed": self.processed, "numOfRowsFailed": self.failed,
                        "numOfRowsWithWarning": self.warned})
        if self.message:
            out["message"] = self.message
        return out


class BulkJobs:
    def __init__(self, store: Store, settings: LimitSettings, state_dir: Path) -> None:
        self.store = store
        self.settings = settings
        self.dir = state_dir / "bulk"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.exports: dict[str, ExportJob] = {}
        self.imports: dict[int, ImportJob] = {}
        self._next_batch = 1000 + int(time.time()) % 1000
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="marketo-bulk")
        self._export_bytes: dict[str, int] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def reset(self) -> None:
        with self._lock:
            self.exports.clear()
            self.imports.clear()
            self._export_bytes.clear()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"export_jobs": len(self.exports), "import_jobs": len(self.imports)}

    def export_bytes_today(self) -> int:
        return self._export_bytes.get(marketo_day(), 0)

    @property
    def step(self) -> float:
        return self.settings.bulk_step_ms / 1000.0

    # ----------------------------------------------------------------------------------- clock
    def tick(self) -> None:
        """Advance every job whose step has elapsed (called on each bulk request)."""
        now = time.time()
        step = self.step
        with self._lock:
            for job in self.exports.values():
                if job.status == "Processing" and job.future is not None and job.future.done():
                    if now - (job.started or now) < step:
                        continue
                    job.finished = now
                    try:
                        job.records, job.size, job.checksum = job.future.result()
                        job.status = "Completed"
                        day = marketo_day()
                        self._export_bytes[day] = self._export_bytes.get(day, 0) + (job.size or 0)
                    except Exception as exc:
                        job.status = "Failed"
                        job.error_msg = f"Export failed: {exc}"
            running = sum(1 for j in self.exports.values() if j.status == "Processing")
            for job in sorted(self.exports.values(), key=lambda j: j.queued or 0):
                if running >= MAX_PROCESSING:
                    break
                if job.status == "Queued" and now - (job.queued or now) >= step:
                    job.status = "Processing"
                    job.started = now
                    job.path = self.dir / f"{job.export_id}.{job.fmt.lower()}"
                    job.future = self._pool.submit(self._write_export, job)
                    running += 1
            for ijob in self.imports.values():
                if ijob.status == "Importing" and ijob.future is not None and ijob.future.done():
                    if now - (ijob.started or now) < step:
                        continue
                    exc = ijob.future.exception()
                    if exc is not None:
                        ijob.status, ijob.message = "Failed", f"Import failed: {exc}"
                    elif ijob.status == "Importing" and ijob.message and ijob.message.startswith("Failed:"):
                        ijob.status, ijob.message = "Failed", ijob.message[len("Failed: "):]
                    else:
                        ijob.status = "Complete"
                    ijob.data = b""
            importing = sum(1 for j in self.imports.values() if j.status == "Importing")
            for ijob in sorted(self.imports.values(), key=lambda j: j.batch_id):
                if importing >= MAX_PROCESSING:
                    break
                if ijob.status == "Queued" and now - ijob.created >= step:
                    ijob.status = "Importing"
                    ijob.started = now
                    ijob.future = self._pool.submit(self._run_import, ijob)
                    importing += 1

    # ----------------------------------------------------------------------------------- export
    def create_export(self, kind: str, api_user: str, body: dict[str, Any]) -> ExportJob:
        if self.export_bytes_today() >= self.settings.export_daily_quota_bytes:
            raise MarketoError("1029", "Export daily quota exceeded")
        fmt = body.get("format") or "CSV"
        if not isinstance(fmt, str) or fmt.upper() not in DELIMS:
            raise MarketoError("1003", f"Invalid format '{fmt}'")
        fmt = fmt.upper()
        flt = body.get("filter")
        if not isinstance(flt, dict) or not flt:
            raise MarketoError("1003", "filter cannot be blank")
        raw_fields = body.get("fields")
        if kind == "leads":
            if not isinstance(raw_fields, list) or not raw_fields:
                raise MarketoError("1003", "fields cannot be blank")
            fields = [str(f) for f in raw_fields]
            for name in fields:
                if name not in FIELDS_BY_NAME:
                    raise MarketoError("1006", f"Field '{name}' not found")
            keys = list(flt)
            if len(keys) != 1:
                raise MarketoError("1003", "Only one filter type is allowed per job")
            key = keys[0]
            if key in ("createdAt", "updatedAt"):
                lo, hi = date_range(flt[key], key)
                where, params = f'"{key}" >= ? AND "{key}" <= ?', (lo, hi)
            elif key in ("staticListId", "staticListName", "smartListId", "smartListName"):
                raise MarketoError("1013", f"{'Static' if key.startswith('static') else 'Smart'} list not found")
            else:
                raise MarketoError("1035", "Unsupported filter type for target subscription")
        else:
            fields = [str(f) for f in raw_fields] if isinstance(raw_fields, list) and raw_fields else list(
                DEFAULT_ACTIVITY_FIELDS)
            for name in fields:
                if name not in ACTIVITY_EXPORT_FIELDS:
                    raise MarketoError("1006", f"Field '{name}' not found")
            if "createdAt" not in flt:
                raise MarketoError("1003", "createdAt filter is required")
            lo, hi = date_range(flt["createdAt"], "createdAt")
            where, params = "activityDate >= ? AND activityDate <= ? AND activityTypeId <> 37", (lo, hi)
            type_ids = flt.get("activityTypeIds")
            if type_ids is not None:
                if not isinstance(type_ids, list) or not all(isinstance(t, int) for t in type_ids):
                    raise MarketoError("1003", "Invalid activityTypeIds")
                where += f" AND activityTypeId IN ({','.join('?' * len(type_ids)) or 'NULL'})"
                params = (*params, *type_ids)
            unknown = set(flt) - {"createdAt", "activityTypeIds", "primaryAttributeValueIds", "primaryAttributeValues"}
            if unknown:
                raise MarketoError("1003", f"Invalid filter '{sorted(unknown)[0]}'")
        names = body.get("columnHeaderNames") or {}
        if not isinstance(names, dict):
            raise MarketoError("1003", "Invalid columnHeaderNames")
        headers = [str(names.get(f, f)) for f in fields]
        job = ExportJob(str(uuid.uuid4()), kind, api_user, fields, headers, fmt, where, params)
        with self._lock:
            self.exports[job.export_id] = job
        return job

    def get_export(self, kind: str, export_id: str, api_user: str) -> ExportJob:
        self.tick()
        job = self.exports.get(export_id)
        if job is None or job.kind != kind or job.api_user != api_user:
            raise MarketoError("1003", "Export id not found")
        return job

    def enqueue(self, kind: str, export_id: str, api_user: str) -> ExportJob:
        with self._lock:
            job = self.get_export(kind, export_id, api_user)
            if job.status in ("Queued", "Processing"):
                raise MarketoError("1029", "Job already queued")
            if job.status != "Created":
                raise MarketoError("1003", f"Job status is '{job.status}', only a 'Created' job can be enqueued")
            if self.export_bytes_today() >= self.settings.export_daily_quota_bytes:
                raise MarketoError("1029", "Export daily quota exceeded")
            queued = sum(1 for j in self.exports.values() if j.status in ("Queued", "Processing"))
            if queued >= MAX_QUEUED:
                raise MarketoError("1029", "Too many jobs in queue")
            job.status = "Queued"
            job.queued = time.time()
            return job

    def cancel(self, kind: str, export_id: str, api_user: str) -> ExportJob:
        with self._lock:
            job = self.get_export(kind, export_id, api_user)
            if job.status in ("Created", "Queued", "Processing"):
                job.status = "Cancelled"
                job.finished = time.time()
            return job

    def list_exports(self, kind: str, api_user: str, statuses: list[str]) -> list[ExportJob]:
        self.tick()
        cutoff = time.time() - 7 * 86400
        wanted = {s.lower().replace("cancelled", "canceled") for s in statuses}
        out = []
        for job in sorted(self.exports.values(), key=lambda j: j.created):
            if job.kind != kind or job.api_user != api_user or job.created < cutoff:
                continue
            if wanted and job.view()["status"].lower() not in wanted:
                continue
            out.append(job)
        return out

    def _write_export(self, job: ExportJob) -> tuple[int, int, str]:
        assert job.path is not None
        conn = sqlite3.connect(f"file:{self.store.path}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        tmp = job.path.with_suffix(".part")
        digest = hashlib.sha256()
        count = 0
        size = 0
        try:
            with open(tmp, "wb") as fh:
                buf = io.StringIO()
                writer = csv.writer(buf, delimiter=DELIMS[job.fmt], lineterminator="\n")

                def flush() -> None:
                    nonlocal size
                    data = buf.getvalue().encode("utf-8")
                    buf.seek(0)
                    buf.truncate()
                    fh.write(data)
                    digest.update(data)
                    size += len(data)

                writer.writerow(job.headers)
                render: Callable[[sqlite3.Row], list[Any]]
                if job.kind == "leads":
                    sql = f"SELECT {select_cols(job.fields)} FROM leads WHERE {job.where} ORDER BY id"
                    linked = links.load_all(conn, job.fields)

                    def render(row: sqlite3.Row) -> list[Any]:
                        out = []
                        for name in job.fields:
                            value = linked.value(row, name)
                            if value is None:
                                out.append("null")
                            elif FIELDS_BY_NAME[name].data_type == "boolean":
                                out.append("true" if value else "false")
                            else:
                                out.append(value)
                        return out
                else:
                    sql = f"SELECT * FROM activities WHERE {job.where} ORDER BY id"

                    def render(row: sqlite3.Row) -> list[Any]:
                        item = render_activity(row)
                        item["marketoGUID"] = str(row["id"])
                        item["attributes"] = json.dumps({a["name"]: a["value"] for a in item.get("attributes", [])})
                        return ["null" if item.get(f) is None else item.get(f) for f in job.fields]

                for row in conn.execute(sql, job.params):
                    if job.status == "Cancelled":
                        raise RuntimeError("cancelled")
                    writer.writerow(render(row))
                    count += 1
                    if count % 5000 == 0:
                        flush()
                flush()
        finally:
            conn.close()
        tmp.replace(job.path)
        return count, size, f"sha256:{digest.hexdigest()}"

    # ----------------------------------------------------------------------------------- import
    def create_import(self, api_user: str, data: bytes, fmt: str, lookup: str) -> ImportJob:
        with self._lock:
            queued = sum(1 for j in self.imports.values() if j.status in ("Queued", "Importing"))
            if queued >= MAX_QUEUED:
                raise MarketoError("1016", "Too many imports")
            self._next_batch += 1
            job = ImportJob(self._next_batch, api_user, lookup, fmt.upper(), data)
            self.imports[job.batch_id] = job
            return job

    def get_import(self, batch_id: int, api_user: str) -> ImportJob:
        self.tick()
        job = self.imports.get(batch_id)
        if job is None or job.api_user != api_user:
            raise MarketoError("1003", "Batch id not found")
        return job

    def _run_import(self, job: ImportJob) -> None:
        text = job.data.decode("utf-8-sig", errors="replace")
        reader = csv.reader(io.StringIO(text), delimiter=DELIMS.get(job.fmt, ","))
        header = next(reader, None)
        if not header:
            job.message = "Failed: Import file is empty"
            return
        header = [h.strip() for h in header]
        job.header = header
        unknown = [h for h in header if h not in FIELDS_BY_NAME]
        if unknown:
            job.message = f"Failed: Unknown field '{unknown[0]}' in the header row"
            return
        if job.lookup not in header:
            job.message = f"Failed: Lookup field '{job.lookup}' is not a column of the file"
            return
        action = "updateOnly" if job.lookup == "id" else "createOrUpdate"
        actor = Actor(api_user=job.api_user)
        block: list[tuple[list[str], dict[str, Any], list[str]]] = []

        def run_block() -> None:
            results = self.store.sync_leads(action, job.lookup, [b[1] for b in block], None, actor)
            for (row, _rec, warns), res in zip(block, results, strict=True):
                if res.get("status") == "skipped":
                    reason = "; ".join(r["message"] for r in res.get("reasons", []))
                    job.failures.append([*row, reason])
                    job.failed += 1
                else:
                    job.processed += 1
                    if warns:
                        job.warnings.append([*row, "; ".join(warns)])
                        job.warned += 1
            block.clear()

        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            rec: dict[str, Any] = {}
            warns: list[str] = []
            for name, cell in zip(header, row, strict=False):
                if cell == "":
                    continue
                if name != "id" and name not in WRITABLE:
                    warns.append(f"Field '{name}' is read-only, value ignored")
                    continue
                rec[name] = cell
            if len(row) != len(header):
                warns.append(f"Row has {len(row)} columns, header has {len(header)}")
            block.append((row, rec, warns))
            if len(block) >= 300:
                run_block()
        if block:
            run_block()
        members = f"{job.processed} records imported ({job.processed} members)"
        if job.failed:
            job.message = f"Import completed with errors, {members}, {job.failed} failed"
        else:
            job.message = f"Import succeeded, {members}"
        if job.warned:
            job.message += f", {job.warned} with warnings"

    def report(self, job: ImportJob, which: str) -> str:
        rows = job.failures if which == "failures" else job.warnings
        column = "Import Failure Reason" if which == "failures" else "Import Warning Reason"
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter=DELIMS.get(job.fmt, ","), lineterminator="\n")
        writer.writerow([*job.header, column])
        writer.writerows(rows)
        return buf.getvalue()
