"""HTTP plumbing both hooks share: sanitised transport errors, backoff, and a client-side rate limiter.

Transport exceptions from requests quote the full URL, and Marketo's identity call carries the client
secret in its query string; so every transport error is re-raised as ServiceUnavailable naming only the
host, and the original exception is dropped (never chained) so no log or traceback repeats the secret.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import fcntl
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
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
    """Sliding-window limiter shared by every task process on the machine, plus a concurrency cap per process.

    The window is kept in a file (`shared`) under an exclusive lock, so every task process that calls the
    same API account counts against one window: Airflow pools bound how many processes call at once, and
    this keeps their sum under the published rate.

    A call holds its place in the window from before it is sent until `window_s` after its response came
    back. The server stamps a call when it arrives, which is after the client sent it and before the
    response, so the server's window never holds a call the client's has already let go: the client can
    use the whole published rate with no margin for latency or jitter. (Stamping at send time, as before,
    needed a 5% margin and still relied on the latency being steady.)

    `priority` orders the callers of the window when it is full: a call waits while a caller of a higher
    priority is waiting (each waiter notes itself in the file and renews the note while it waits; a note
    older than WAITER_TTL_S, a process that died, no longer counts), and leaves a place in the window for
    each call a higher caller has in flight, since that caller sends its next call as soon as one returns.
    A lower caller still gets every place the higher ones cannot use, so the window stays busy. An initial
    copy gives the window to the loads other entities wait on, so those entities can prepare while the
    rest of the loads use it.
    """

    WAITER_TTL_S = 1.5
    POLL_S = 0.5  # the longest a waiter sleeps between looks: its note is renewed well before it expires

    def __init__(self, calls: int, window_s: float, max_concurrent: int, shared: Path, priority: int = 0,
                 max_call_s: float = 300.0):
        """`max_call_s`: how long a call still in flight holds its place if its process dies mid-call."""
        self.calls, self.window_s, self.shared, self.priority = calls, window_s, shared, priority
        self.max_call_s = max_call_s
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._keys = itertools.count(1)  # one key per call, so its finish finds its own entry

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Hold a place in the window for one call, from before it is sent until it has returned."""
        key = f"{os.getpid()}.{threading.get_ident()}.{next(self._keys)}"
        with self._slots:
            while True:
                with self._lock:
                    wait = self._take(key)
                if wait <= 0:
                    break
                time.sleep(max(wait, 0.01))
            try:
                yield
            finally:
                with self._lock:
                    self._update(lambda window: window.finish(key, time.time()))

    def _take(self, key: str) -> float:
        """One look at the window: take a place for `key` (0) or say how long to wait before the next look."""
        me = f"{os.getpid()}.{threading.get_ident()}"

        def look(window: _Window) -> float:
            window.waiters.pop(me, None)
            ahead = any(priority > self.priority for priority, _ in window.waiters.values())
            # A higher caller's call in flight is followed by its next one: keep it a place.
            kept = sum(1 for priority, _ in window.in_flight.values() if priority > self.priority)
            if window.used() + kept < self.calls and not ahead:
                window.in_flight[key] = (self.priority, window.now)
                return 0.0
            window.waiters[me] = (self.priority, window.now)
            full = window.frees_in() if window.used() >= self.calls else 0.1
            return min(full, self.POLL_S)

        return self._update(look)

    def _update(self, change: Callable[[_Window], T]) -> T:
        with self.shared.open("a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            window = _Window.read(handle.read(), time.time(), self)
            result = change(window)
            handle.seek(0)
            handle.truncate()
            handle.write(window.text())
            return result


class _Window:
    """The shared window file: line 1 the finish times of calls that still count, line 2 the calls in
    flight as key@priority@start, line 3 the waiters as id:priority:seen. Anything unreadable is dropped."""

    def __init__(self, now: float, limiter: RateLimiter):
        self.now, self.limiter = now, limiter
        self.finished: list[float] = []
        self.in_flight: dict[str, tuple[int, float]] = {}  # key -> (priority, start)
        self.waiters: dict[str, tuple[int, float]] = {}

    @classmethod
    def read(cls, text: str, now: float, limiter: RateLimiter) -> _Window:
        window = cls(now, limiter)
        lines = [*text.split("\n"), "", "", ""][:3]
        for word in lines[0].split():
            with contextlib.suppress(ValueError):
                if now - float(word) < limiter.window_s:
                    window.finished.append(float(word))
        for word in lines[1].split():
            key, _, rest = word.partition("@")
            priority, _, start = rest.partition("@")
            with contextlib.suppress(ValueError):
                if now - float(start) < limiter.max_call_s + limiter.window_s:
                    window.in_flight[key] = (int(priority), float(start))
        for word in lines[2].split():
            key, _, rest = word.partition(":")
            priority, _, seen = rest.partition(":")
            with contextlib.suppress(ValueError):
                if now - float(seen) < limiter.WAITER_TTL_S:
                    window.waiters[key] = (int(priority), float(seen))
        return window

    def used(self) -> int:
        return len(self.finished) + len(self.in_flight)

    def frees_in(self) -> float:
        """Seconds until the oldest finished call leaves the window (a call in flight frees nothing yet)."""
        if not self.finished:
            return self.limiter.POLL_S
        return self.limiter.window_s - (self.now - min(self.finished))

    def finish(self, key: str, at: float) -> None:
        if self.in_flight.pop(key, None) is not None:
            self.finished.append(at)

    def text(self) -> str:
        return "\n".join([
            " ".join(f"{x:.3f}" for x in self.finished),
            " ".join(f"{k}@{p}@{t:.3f}" for k, (p, t) in self.in_flight.items()),
            " ".join(f"{k}:{p}:{t:.3f}" for k, (p, t) in self.waiters.items()),
        ])
