"""Keep a task process at one part's worth of memory, not the sum of every part it has handled.

Why this is needed (measured on the 1M-record copy, where a contact validate reached 1.26 GB of RSS for
parts of 50,000 rows):

- pyarrow's default memory pool, mimalloc, reserves about 100 MB in every process that touches a string
  column, and pandas 3 keeps strings in Arrow arrays; the system allocator holds only what is in use.
- Great Expectations' validation results and batches form reference cycles, so a part's data stays alive
  until the cyclic garbage collector happens to run; each part then adds 60-100 MB.
- glibc keeps freed heap pages mapped unless it is asked to give them back.

`release()` runs between parts: the cycles are collected and the freed pages returned, so the next part
starts where the first one did. A full collection walks every object of the process (0.17 s with Airflow,
pandas and GX imported, once a part and step), so what survives it is frozen: the next collection walks
only what was made since, that is the next part's objects. Each step runs under `part_by_part()`, which
unfreezes when it ends: a process that goes on after the step (dag.test(), the tests) collects those
objects again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
from collections.abc import Iterator
from functools import cache

ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def use_system_arrow_pool() -> None:
    """Ask pyarrow for the system allocator; must run before pyarrow is imported (a setting given wins)."""
    os.environ.setdefault(ARROW_POOL_ENV, "system")


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)  # glibc only; musl and macOS have none


def release() -> None:
    """Free what the last part left behind: collect reference cycles, give freed heap pages back."""
    gc.collect()
    gc.freeze()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def part_by_part() -> Iterator[None]:
    """Around a step whose parts each end with `release()` (a decorator too); unfreezes what they froze.

    A task process of the LocalExecutor inherits objects Airflow froze before forking its workers; those
    stay frozen (a full collection would walk them and copy their shared pages), so nothing is unfrozen
    in a process that held frozen objects before the step.
    """
    frozen_before = gc.get_freeze_count()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()
