"""CatchUp: windows close early only while a backlog drains."""

from __future__ import annotations

from workers.stream.catch_up import CatchUp

CAP = 1_000


def test_live_traffic_never_closes_a_window_early() -> None:
    catch_up = CatchUp(CAP)
    for lag, events in [(0, 10), (5, 300), (999, 900), (0, 999), (None, 500)]:
        assert not catch_up.close_now(lag, events)


def test_a_drained_backlog_closes_its_last_window_at_once() -> None:
    catch_up = CatchUp(CAP)
    assert not catch_up.close_now(5_000, 0)  # behind: a window's worth or more to read
    assert not catch_up.close_now(600, 100)
    assert catch_up.close_now(0, 100)  # read it all
    assert not catch_up.close_now(0, 5)  # and live again: the next window keeps its length


def test_the_tail_of_a_backlog_is_split_off_once() -> None:
    catch_up = CatchUp(CAP)
    assert not catch_up.close_now(3_000, 0)
    assert not catch_up.close_now(500, 800)  # the rest is more than half of the window
    assert catch_up.close_now(400, 800)  # now less: this window goes, the rest makes another
    assert not catch_up.close_now(100, 300)  # not again for this backlog
    assert catch_up.close_now(0, 400)
    # A new backlog may be split again.
    assert not catch_up.close_now(2_000, 0)
    assert catch_up.close_now(300, 600)


def test_an_empty_window_is_not_closed_and_an_unknown_lag_changes_nothing() -> None:
    catch_up = CatchUp(CAP)
    assert not catch_up.close_now(None, 0)
    assert not catch_up.close_now(2_000, 0)
    assert not catch_up.close_now(None, 900)
    assert catch_up.behind
    assert not catch_up.close_now(0, 0)
