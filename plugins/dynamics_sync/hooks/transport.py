"""HTTP plumbing both hooks share: sanitised transport errors, backoff, and a client-side rate limiter.

Transport exceptions from requests quote the full URL, and Marketo's identity call carries the client
secret in its query string; so every transport error is re-raised as ServiceUnavailable naming only the
host, and the original exception is dropped (never chained) so no log or traceback repeats the secret.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import fcntl
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from dynamics_sync.errors import ServiceUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class Retryable(Exception):
    """Raised inside a backoff loop for a failure worth another try; `delay` overrides the backoff."""

    def __init__(self, reason: str, delay: float | None = None):
        super().__init__(reason)
        self.reason, self.delay = reason, delay


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def send(
    session: requests.Session, method: str, url: str, *, system: str, timeout: float, **kwargs: Any
) -> requests.Response:
    """One HTTP call; transport failures become ServiceUnavailable without the URL's query string."""
    try:
        return session.request(method, url, timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        raise ServiceUnavailable(f"{system}: cannot reach {origin(url)} ({type(exc).__name__})") from None


def retry_after(response: requests.Response, default: float | None = None) -> float | None:
    """The seconds a server asks to wait before the next try (Retry-After, in seconds or as an HTTP date),
    or `default` when it does not say."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def with_backoff(
    call: Callable[[], T], *, system: str, attempts: int, base_s: float, cap_s: float = 60.0
) -> T:
    """Run `call`, retrying Retryable failures with exponential backoff and jitter (or their own delay)."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Retryable as exc:
            if attempt == attempts:
                raise ServiceUnavailable(f"{system}: {exc.reason} (gave up after {attempts} attempts)") from None
            delay = exc.delay if exc.delay is not None else min(cap_s, base_s * 2 ** (attempt - 1))
            delay *= 1 + random.random() * 0.1
            log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", system, exc.reason, delay, attempt, attempts)
            time.sleep(delay)
    raise AssertionError("unreachable")


class RateLimiter:
    """Sliding-window limiter plus a concurrency cap for the threads of one process.

    With `shared` (a file path) the window is kept in that file under an exclusive lock, so every task
    process on the machine that calls the same API account counts against one window: Airflow pools bound
    how many processes call at once, and this keeps their sum under the published rate.

    `priority` orders the callers of a shared window when it is full: a call waits while a caller of a higher
    priority is waiting (each waiter notes itself in the file and renews the note while it waits; a note
    older than WAITER_TTL_S, a process that died, no longer counts). An initial copy gives the window to
    the loads other entities wait on, so those entities can prepare while the rest of the loads use it.
    """

    WAITER_TTL_S = 1.5
    POLL_S = 0.5  # the longest a waiter sleeps between looks: its note is renewed well before it expires

    def __init__(self, calls: int, window_s: float, max_concurrent: int, shared: Path | None = None,
                 priority: int = 0):
        self.calls, self.window_s, self.shared, self.priority = calls, window_s, shared, priority
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def __enter__(self) -> RateLimiter:
        self._slots.acquire()
        while True:
            with self._lock:
                wait = self._take_shared() if self.shared else self._take_local()
            if wait <= 0:
                return self
            time.sleep(max(wait, 0.01))

    def _take_local(self) -> float:
        now = time.monotonic()
        while self._stamps and now - self._stamps[0] >= self.window_s:
            self._stamps.popleft()
        if len(self._stamps) < self.calls:
            self._stamps.append(now)
            return 0.0
        return self.window_s - (now - self._stamps[0])

    def _take_shared(self) -> float:
        """One look at the shared window: take a call (0) or say how long to wait before the next look.

        The file's first line holds the window's call times, the second the waiters as id:priority:seen.
        """
        assert self.shared is not None
        with self.shared.open("a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            now = time.time()
            stamps, waiters = _read_window(handle.read(), now, self.window_s, self.WAITER_TTL_S)
            me = f"{os.getpid()}.{threading.get_ident()}"
            waiters.pop(me, None)
            ahead = any(priority > self.priority for priority, _ in waiters.values())
            taken = len(stamps) < self.calls and not ahead
            if taken:
                stamps.append(now)
            else:
                waiters[me] = (self.priority, now)
            handle.seek(0)
            handle.truncate()
            handle.write(" ".join(f"{x:.3f}" for x in stamps) + "\n"
                         + " ".join(f"{k}:{p}:{t:.3f}" for k, (p, t) in waiters.items()))
            if taken:
                return 0.0
            full = self.window_s - (now - stamps[0]) if len(stamps) >= self.calls else 0.1
            return min(full, self.POLL_S)

    def __exit__(self, *_exc: object) -> None:
        self._slots.release()


def _read_window(text: str, now: float, window_s: float,
                 waiter_ttl_s: float) -> tuple[list[float], dict[str, tuple[int, float]]]:
    """The shared window's live call times and waiters; anything unreadable (an older format) is dropped."""
    lines = text.split("\n")
    stamps: list[float] = []
    for word in lines[0].split():
        try:
            if now - float(word) < window_s:
                stamps.append(float(word))
        except ValueError:
            continue
    waiters: dict[str, tuple[int, float]] = {}
    for word in (lines[1] if len(lines) > 1 else "").split():
        key, _, rest = word.partition(":")
        priority, _, seen = rest.partition(":")
        try:
            if now - float(seen) < waiter_ttl_s:
                waiters[key] = (int(priority), float(seen))
        except ValueError:
            continue
    return stamps, waiters
