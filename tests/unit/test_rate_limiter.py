"""Task processes on one machine share one Marketo rate window, so together they stay under the limit."""

from __future__ import annotations

import time

from dynamics_sync.hooks.transport import RateLimiter


def test_limiters_sharing_a_window_file_count_each_others_calls(tmp_path):
    shared = tmp_path / "window"
    first, second = (RateLimiter(calls=2, window_s=0.6, max_concurrent=2, shared=shared) for _ in range(2))
    started = time.monotonic()
    with first.call():
        pass
    with second.call():
        pass
    assert time.monotonic() - started < 0.3, "two calls fit the window"
    with first.call():
        waited = time.monotonic() - started
    assert waited >= 0.5, "the third call waits for the window, whichever limiter made the first two"


def test_a_full_window_serves_a_waiting_higher_priority_caller_first(tmp_path):
    """The load others wait on gets the next free slot; the lower one goes once nobody above it waits."""
    import threading

    shared = tmp_path / "window"
    low = RateLimiter(calls=2, window_s=1.0, max_concurrent=4, shared=shared, priority=0)
    high = RateLimiter(calls=2, window_s=1.0, max_concurrent=4, shared=shared, priority=2)
    with low.call(), low.call():  # the window is full for the next second
        pass
    order: list[str] = []

    def call(limiter: RateLimiter, name: str, delay: float) -> None:
        time.sleep(delay)
        with limiter.call():
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
    shared.write_text(f"\n\n999999.1:5:{time.time():.3f}")  # a priority-5 waiter that never comes back
    low = RateLimiter(calls=2, window_s=1.0, max_concurrent=2, shared=shared, priority=0)
    started = time.monotonic()
    with low.call():
        pass
    assert 1.0 <= time.monotonic() - started < 1.5 + 0.7


def test_a_server_stamping_calls_on_arrival_never_sees_more_than_the_limit(tmp_path):
    """The server counts a call when it arrives, anywhere between send and response; the window holds.

    Calls from threads and from two limiters (two processes' worth) take a random time and arrive at a
    random moment of it. Stamping calls when they were sent (the old way) lets the server see more than
    `calls` in some window here, because a call can arrive late and leave the server's window late.
    """
    import random
    import threading

    shared, calls, window_s = tmp_path / "window", 4, 0.5
    limiters = [RateLimiter(calls=calls, window_s=window_s, max_concurrent=3, shared=shared) for _ in range(2)]
    arrivals: list[float] = []
    guard = threading.Lock()
    rng = random.Random(7)

    def caller(limiter: RateLimiter, seed: int) -> None:
        mine = random.Random(seed)
        for _ in range(6):
            with limiter.call():
                took = mine.uniform(0.0, 0.2)
                arrive = mine.uniform(0.0, took)
                time.sleep(arrive)
                with guard:
                    arrivals.append(time.time())
                time.sleep(took - arrive)

    threads = [threading.Thread(target=caller, args=(limiters[i % 2], rng.random())) for i in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    arrivals.sort()
    assert len(arrivals) == 24
    busiest = max(sum(1 for t in arrivals[i:] if t - arrivals[i] < window_s) for i in range(len(arrivals)))
    assert busiest <= calls, f"the server saw {busiest} calls in one {window_s} s window (limit {calls})"
    # and the limit is used: 24 calls at 4 a window need about 5.5 windows, plus each call's own time
    assert elapsed < 24 / calls * (window_s + 0.2) + 1.0


def test_a_higher_callers_call_in_flight_keeps_its_place_for_the_next_one(tmp_path):
    """Near a full window a lower caller leaves a place for each call a higher one has in flight, and
    takes it once that caller no longer needs it."""
    import threading

    shared = tmp_path / "window"
    high = RateLimiter(calls=3, window_s=2.0, max_concurrent=2, shared=shared, priority=2)
    low = RateLimiter(calls=3, window_s=2.0, max_concurrent=2, shared=shared, priority=0)
    release = threading.Event()

    def hold() -> None:
        with high.call():
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)
    started = time.monotonic()
    with low.call():  # 1 in flight + 1 kept for it: one place left
        pass
    assert time.monotonic() - started < 0.3
    threading.Timer(0.6, release.set).start()
    with low.call():  # the last place is kept for the higher caller until its call is back
        waited = time.monotonic() - started
    holder.join(5)
    assert 0.55 <= waited < 1.5, waited
