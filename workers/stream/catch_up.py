"""CatchUp: how windows close while the worker drains a backlog.

A window's length batches live traffic, whose events are young.  After a restart, a deploy or a
backfill the worker is behind, reads in full windows (the size cap), and two rules shorten the
wait for the backlog's last events, which are late already:

- Once it has read everything, the window closes at once instead of when its time is up (the
  wait for the timer was a large part of a drain; docs/performance.md).
- Just before that, once the rest of the backlog is less than half of what the window already
  holds, the window closes too (once per backlog): the backlog's tail is then written as two
  windows side by side (two are written at once) instead of one big one alone while the worker
  waits.  The last window's write was a sizeable part of a drain (docs/performance.md).

"Behind" means a window's worth or more was waiting: live traffic never is, so its windows keep
their length and their size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CatchUp:
    window_cap: int
    behind: bool = False
    split: bool = False  # this backlog's tail has been split off already

    def close_now(self, lag: int | None, events: int) -> bool:
        """Whether the window, holding ``events``, closes now; ``lag`` is what remains to be
        read on the worker's partitions (None while unknown)."""
        if lag is None:
            return False
        if lag >= self.window_cap:
            self.behind, self.split = True, False
            return False
        if not self.behind:
            return False
        if lag == 0:
            self.behind = False
            return events > 0
        if not self.split and events >= 2 * lag:
            self.split = True
            return True
        return False
