"""OData ``$batch`` for the Dataverse sandbox: multipart/mixed in, multipart/mixed out.

Why: Dataverse clients group writes in ``$batch`` bodies (up to 1,000 requests) and use change
sets for atomic groups with ``Content-ID`` / ``$n`` references. Each inner request is turned into
an ``ApiRequest`` and handed to the very same dispatcher as a plain HTTPS request, so batch parts
behave exactly like their stand-alone twins. A change set runs inside one store transaction that
is rolled back when any part fails. Format and error behaviour follow
https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api
(CRLF line endings; without ``Prefer: odata.continue-on-error`` the first failure ends the batch
and becomes the batch status; with it every part gets its own answer and the batch is 200).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from .protection import ServiceProtection
from .protocol import API_PREFIX, ApiError, ApiRequest, ApiResponse, reason
from .store import Store

MAX_BATCH_REQUESTS = 1000
_BOUNDARY_RE = re.compile(r'boundary\s*=\s*"?([^";]+)"?', re.I)


class _ChangeSetFailed(Exception):
    def __init__(self, response: ApiResponse, content_id: str | None) -> None:
        super().__init__("change set failed")
        self.response, self.content_id = response, content_id


def _batch_error(message: str) -> ApiError:
    return ApiError(400, "0x80048d19", message)


def _boundary(content_type: str) -> str | None:
    if not content_type.lower().startswith("multipart/mixed"):
        return None
    m = _BOUNDARY_RE.search(content_type)
    return m.group(1).strip() if m else None


def _split_multipart(body: bytes, boundary: str) -> list[bytes]:
    delimiter = b"--" + boundary.encode("latin-1")
    parts: list[bytes] = []
    current: list[bytes] | None = None
    for line in body.split(b"\r\n"):
        stripped = line.rstrip(b" \t")
        if stripped == delimiter:
            if current is not None:
                parts.append(b"\r\n".join(current))
            current = []
        elif stripped == delimiter + b"--":
            if current is not None:
                parts.append(b"\r\n".join(current))
            return parts
        elif current is not None:
            current.append(line)
    raise _batch_error(f"The multipart body is missing its closing boundary '--{boundary}--'.")


def _headers_and_body(part: bytes) -> tuple[dict[str, str], bytes]:
    head, sep, rest = part.partition(b"\r\n\r\n")
    if not sep:
        head, rest = part, b""
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers, rest


class BatchProcessor:
    def __init__(self, dispatch: Callable[[ApiRequest], ApiResponse], store: Store,
                 protection: ServiceProtection, api_url: str) -> None:
        self.dispatch = dispatch
        self.store = store
        self.protection = protection
        self.api = api_url

    # ------------------------------------------------------------------ parsing
    def _inner_request(self, outer: ApiRequest, content: bytes, refs: dict[str, str]) -> ApiRequest:
        text = content.lstrip(b"\r\n")
        head, _, body = text.partition(b"\r\n\r\n")
        lines = head.decode("utf-8").split("\r\n")
        method, _, target = lines[0].strip().partition(" ")
        url, _, version = target.rpartition(" ")
        if not version.upper().startswith("HTTP/"):
            url = target  # no protocol version given
        url = url.strip()
        if not method or not url:
            raise _batch_error(f"The request line '{lines[0]}' of a batch part is not valid.")
        method = method.upper()
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers.setdefault(name.strip().lower(), []).append(value.strip())
        if url.startswith("$"):
            m = re.match(r"\$(\w+)(.*)$", url)
            ref = refs.get(m.group(1)) if m else None
            if ref is None or m is None:
                raise _batch_error(f"Content-ID Reference: '{url.split('/')[0]}' does not exist in the batch context.")
            url = ref + m.group(2)
        parts = urlsplit(url)
        path = parts.path
        if path.startswith(API_PREFIX):
            path = path[len(API_PREFIX):]
        elif path.startswith("/") or parts.scheme:
            raise ApiError(404, "0x8006088a", f"Resource not found for the segment '{path.lstrip('/')}'.")
        body = body.rstrip(b"\r\n")
        if refs and body.strip().startswith(b"{"):
            body = self._resolve_body_refs(body, refs)
        return ApiRequest(method=method, path=unquote(path).lstrip("/"), query=parts.query, headers=headers,
                          body=body, caller=outer.caller, in_batch=True)

    @staticmethod
    def _resolve_body_refs(body: bytes, refs: dict[str, str]) -> bytes:
        try:
            data = json.loads(body)
        except ValueError:
            return body
        if not isinstance(data, dict):
            return body
        for key, value in list(data.items()):
            if (key.endswith("@odata.bind") or key.endswith("@odata.id")) and isinstance(value, str) \
                    and value.startswith("$"):
                name, _, tail = value[1:].partition("/")
                if name not in refs:
                    raise _batch_error(f"Content-ID Reference: '${name}' does not exist in the batch context.")
                data[key] = refs[name] + (f"/{tail}" if tail else "")
        return json.dumps(data).encode("utf-8")

    # ------------------------------------------------------------------ execution
    def _run(self, outer: ApiRequest, content: bytes, refs: dict[str, str]) -> ApiResponse:
        try:
            return self.dispatch(self._inner_request(outer, content, refs))
        except ApiError as exc:
            return exc.response()

    def _run_change_set(self, outer: ApiRequest, parts: list[tuple[dict[str, str], bytes]]
                        ) -> list[tuple[str | None, ApiResponse]]:
        refs: dict[str, str] = {}
        results: list[tuple[str | None, ApiResponse]] = []
        with self.store.transaction():
            for headers, content in parts:
                content_id = headers.get("content-id")
                first_line = content.lstrip(b"\r\n").split(b"\r\n", 1)[0].upper()
                if first_line.startswith(b"GET "):
                    raise _ChangeSetFailed(
                        _batch_error("GET requests are not allowed inside a change set.").response(), content_id)
                response = self._run(outer, content, refs)
                if response.status >= 400:
                    raise _ChangeSetFailed(response, content_id)
                if content_id:
                    target = response.headers.get("OData-EntityId") or response.headers.get("Location")
                    if target:
                        refs[content_id] = target
                results.append((content_id, response))
        return results

    def handle(self, req: ApiRequest) -> ApiResponse:
        boundary = _boundary(req.header("Content-Type") or "")
        if boundary is None:
            raise _batch_error("The batch request must have a 'Content-Type' of 'multipart/mixed' with a boundary.")
        if b"\r\n" not in req.body:
            raise _batch_error(
                "Error identified in Payload provided by the user for Entity :'', For more information on this error "
                "please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ----> "
                "InnerException : System.ArgumentException: Stream was not readable.")
        items: list[Any] = []
        total = 0
        for part in _split_multipart(req.body, boundary):
            headers, content = _headers_and_body(part)
            inner_boundary = _boundary(headers.get("content-type", ""))
            if inner_boundary is not None:
                sub = [_headers_and_body(p) for p in _split_multipart(content, inner_boundary)]
                items.append(("changeset", sub))
                total += len(sub)
            else:
                items.append(("request", headers, content))
                total += 1
        if total > MAX_BATCH_REQUESTS:
            raise _batch_error(f"The number of requests in a batch exceeded the limit of {MAX_BATCH_REQUESTS}.")
        self.protection.count_extra(req.caller.user_id, total - 1)

        continue_on_error = req.prefer.has("odata.continue-on-error")
        boundary_out = f"batchresponse_{uuid.uuid4()}"
        chunks: list[bytes] = []
        status = 200
        for item in items:
            failed: ApiResponse | None = None
            if item[0] == "request":
                _, headers, content = item
                response = self._run(req, content, {})
                chunks.append(self._part(response, headers.get("content-id")))
                failed = response if response.status >= 400 else None
            else:
                try:
                    results = self._run_change_set(req, item[1])
                except _ChangeSetFailed as exc:
                    chunks.append(self._part(exc.response, exc.content_id))
                    failed = exc.response
                else:
                    chunks.append(self._change_set(results))
            if failed is not None and not continue_on_error:
                status = failed.status
                break
        body = b"".join(b"--" + boundary_out.encode() + b"\r\n" + chunk + b"\r\n" for chunk in chunks)
        body += b"--" + boundary_out.encode() + b"--\r\n"
        headers = {"Content-Type": f"multipart/mixed; boundary={boundary_out}", "OData-Version": "4.0"}
        if continue_on_error:
            headers["Preference-Applied"] = "odata.continue-on-error"
        return ApiResponse(status, headers, body)

    # ------------------------------------------------------------------ rendering
    @staticmethod
    def _part(response: ApiResponse, content_id: str | None) -> bytes:
        head = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
        if content_id:
            head.append(f"Content-ID: {content_id}")
        lines = [f"HTTP/1.1 {response.status} {reason(response.status)}"]
        lines += [f"{k}: {v}" for k, v in response.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + response.body

    def _change_set(self, results: list[tuple[str | None, ApiResponse]]) -> bytes:
        boundary = f"changesetresponse_{uuid.uuid4()}"
        out = f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
        for content_id, response in results:
            out += b"--" + boundary.encode() + b"\r\n" + self._part(response, content_id) + b"\r\n"
        out += b"--" + boundary.encode() + b"--"
        return out
