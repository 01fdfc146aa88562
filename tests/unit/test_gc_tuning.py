"""The worker's collector leaves window churn alone but still runs for real cyclic garbage."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from workers.host.gc_tuning import tune_gc_for_windows


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_the_young_threshold_is_above_what_three_full_windows_keep() -> None:
    tune_gc_for_windows(50_000)
    young = gc.get_threshold()[0]
    assert young > 3 * 50_000 * 3  # three windows, a row and an id or two per event
    assert young == 1_000_000


@pytest.mark.usefixtures("restore_gc")
def test_cyclic_garbage_is_still_collected_without_being_asked() -> None:
    tune_gc_for_windows(1_000)  # the smallest threshold: 50,000 net new objects
    collected: list[int] = []
    gc.callbacks.append(lambda phase, info: collected.append(info["generation"]))
    try:
        for _ in range(60_000):  # cycles: reference counting alone never frees them
            cycle: list[object] = []
            cycle.append(cycle)
    finally:
        gc.callbacks.pop()
    assert collected  # the collector ran by itself
