"""The cyclic garbage collector, tuned for a process whose live objects come and go by window."""

from __future__ import annotations

import gc

# Live objects a window's event keeps (its row, ids): the young generation's threshold leaves
# room for the windows in memory (one filling, two being written) several times over.
GC_OBJECTS_PER_WINDOW_EVENT = 20
GC_MIN_YOUNG_THRESHOLD = 50_000


def tune_gc_for_windows(max_window_events: int) -> None:
    """Collect cyclic garbage only when it could be there: CPython counts a young collection's
    threshold in *net* new tracked objects (allocations minus deallocations), and what a window
    keeps -- rows of tuples and UUIDs, none in a cycle -- is freed by reference counting once it
    is written.  With CPython's default (700) the collector re-scanned each window as it grew,
    a large share of what an event cost; with 50,000 it still ran every so many events, for
    milliseconds each time (docs/performance.md).  A threshold above what three windows hold
    lets window churn never trigger it, while real cyclic garbage, which reference counting
    never frees, still does.  ``gc.freeze`` moves everything alive at start-up (faust, pydantic's
    schemas) out of the collector's way for good."""
    gc.freeze()
    young = max(GC_MIN_YOUNG_THRESHOLD, GC_OBJECTS_PER_WINDOW_EVENT * max_window_events)
    gc.set_threshold(young, 20, 100)


# A request's objects are freed by reference counting as it is answered; what reaches the
# collector is the odd cycle (an exception and its traceback), so it may wait for many.
GC_YOUNG_THRESHOLD_FOR_REQUESTS = 20_000


def tune_gc_for_requests() -> None:
    """The gateway: freeze what start-up made (FastAPI's routes, pydantic's schemas), and let
    the young generation fill with many requests' worth before a collection scans it: with
    CPython's default a collection ran every few requests (docs/performance.md)."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD_FOR_REQUESTS, 20, 100)
