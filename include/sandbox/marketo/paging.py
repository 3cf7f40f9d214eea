"""Paging tokens: date-based activity tokens and position tokens for lead reads.

Why this shape: the token in Adobe's paging-token example, ``GIYDAOBNGEYS2MBWKQYDAORQGA5DAMBOGAYDAKZQGAYDALBQ``,
is base32 of ``2008-11-06T00:00:00.000+0000,0`` and the next one of ``…+0000,1078``: a datetime plus a
position in the activity log. The sandbox builds its activity tokens the same way (base32, may end in
``=``), so they look and behave like the real ones; clients must still treat them as opaque.
Lead-read tokens (``nextPageToken`` of Get Leads by Filter Type) are base32 too and carry the last id.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from .envelope import MarketoError

_LEADS_PREFIX = "L1,"
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$")


def _b32(text: str) -> str:
    return base64.b32encode(text.encode("ascii")).decode("ascii")


def _unb32(token: str) -> str | None:
    token = token.strip()
    padded = token + "=" * (-len(token) % 8)
    try:
        return base64.b32decode(padded, casefold=True).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def parse_since(value: str) -> dt.datetime | None:
    """ISO 8601 datetime with ``Z`` or an offset (``+05:00``/``+0500``); a date alone means midnight.

    Values without a zone are taken as UTC (sandbox choice; the docs recommend always sending one).
    """
    value = value.strip()
    if not _ISO_RE.match(value):
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


def activity_token(since: dt.datetime, position: int) -> str:
    stamp = since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{since.microsecond // 1000:03d}+0000"
    return _b32(f"{stamp},{position}")


def parse_activity_token(token: str) -> tuple[dt.datetime, int] | None:
    text = _unb32(token)
    if text is None or "," not in text:
        return None
    stamp, _, pos = text.rpartition(",")
    try:
        when = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z")
        position = int(pos)
    except ValueError:
        return None
    if position < 0:
        return None
    return when.astimezone(dt.UTC), position


def since_key(since: dt.datetime) -> str:
    """The stored ``activityDate`` form to compare with (second resolution, floor)."""
    return since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def leads_token(last_id: int) -> str:
    return _b32(f"{_LEADS_PREFIX}{last_id}")


def parse_leads_token(token: str) -> int | None:
    text = _unb32(token)
    if text is None or not text.startswith(_LEADS_PREFIX):
        return None
    try:
        value = int(text[len(_LEADS_PREFIX):])
    except ValueError:
        return None
    return value if value >= 0 else None


def position_after(params: Mapping[str, Any]) -> int:
    """Where a filtered read resumes: 0 without a nextPageToken, else the position the token encodes."""
    token = params.get("nextPageToken")
    if token is None:
        return 0
    parsed = parse_leads_token(token)
    if parsed is None:
        raise MarketoError("1003", "Invalid nextPageToken")
    return parsed
