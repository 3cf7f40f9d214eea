"""Task processes on one machine share one Marketo rate window, so together they stay under the limit."""

from __future__ import annotations

import time

from dynamics_sync.hooks.transport import RateLimiter


def test_limiters_sharing_a_window_file_count_each_others_calls(tmp_path):
    shared = tmp_path / "window"
    first, second = (RateLimiter(calls=2, window_s=0.6, max_concurrent=2, shared=shared) for _ in range(2))
    started = time.monotonic()
    with first:
        pass
    with second:
        pass
    assert time.monotonic() - started < 0.3, "two calls fit the window"
    with first:
        waited = time.monotonic() - started
    assert waited >= 0.5, "the third call waits for the window, whichever limiter made the first two"
