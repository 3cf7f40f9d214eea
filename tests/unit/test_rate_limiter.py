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


def test_a_full_window_serves_a_waiting_higher_priority_caller_first(tmp_path):
    """The load others wait on gets the next free slot; the lower one goes once nobody above it waits."""
    import threading

    shared = tmp_path / "window"
    low = RateLimiter(calls=2, window_s=1.0, max_concurrent=4, shared=shared, priority=0)
    high = RateLimiter(calls=2, window_s=1.0, max_concurrent=4, shared=shared, priority=2)
    with low, low:  # the window is full for the next second
        pass
    order: list[str] = []

    def call(limiter: RateLimiter, name: str, delay: float) -> None:
        time.sleep(delay)
        with limiter:
            order.append(name)

    threads = [threading.Thread(target=call, args=(low, "low", 0.0)),
               threading.Thread(target=call, args=(high, "high-1", 0.2)),
               threading.Thread(target=call, args=(high, "high-2", 0.2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(order[:2]) == ["high-1", "high-2"] and order[2] == "low"


def test_a_waiter_that_died_no_longer_holds_the_window(tmp_path):
    """A note left by a process that is gone expires: lower callers are not blocked by it for long."""
    shared = tmp_path / "window"
    shared.write_text(f"\n999999.1:5:{time.time():.3f}")  # a priority-5 waiter that never comes back
    low = RateLimiter(calls=2, window_s=1.0, max_concurrent=2, shared=shared, priority=0)
    started = time.monotonic()
    with low:
        pass
    assert 1.0 <= time.monotonic() - started < 1.5 + 0.7
