"""PipelineHealth: what the steps report of their state, and the verdict ``/health`` gives.

The steps say when writing or committing fails and when it works again, and when offsets were
last committed; the loop says which partitions it holds and how far behind they are.  A worker
is unhealthy while it cannot write or commit, while it holds no partitions, or when it has
committed nothing for several windows although records are waiting: each with the reason and
the last commit's age, so that an operator reads what is wrong, not just that something is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reason: str
    last_commit_age_seconds: float | None
    lag: int | None
    partitions: int

    def as_json(self) -> dict[str, object]:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "detail": self.reason,
            "last_commit_age_seconds": (
                None
                if self.last_commit_age_seconds is None
                else round(self.last_commit_age_seconds, 1)
            ),
            "lag": self.lag,
            "partitions": self.partitions,
        }


@dataclass
class PipelineHealth:
    # A commit older than this many windows (and never less than the floor) while records are
    # waiting means the pipeline is stuck, whatever each step says of itself.
    stuck_after_windows: float = 3.0
    stuck_floor_seconds: float = 30.0
    window_seconds: float = 300.0
    monotonic: Callable[[], float] = time.monotonic
    started_at: float | None = None
    partitions: int = 0
    lag: int | None = None
    last_commit: float | None = None
    # How long a failure must last before it counts: the coordinator is looked up again after
    # a rebalance or a broker's restart, which is not an outage.
    grace_seconds: dict[str, float] = field(default_factory=lambda: {"broker": 5.0})
    _failing: dict[str, tuple[float, str]] = field(default_factory=dict)

    def failing(self, what: str, reason: str) -> None:
        """``what`` ("write", "commit", "dead-letter topic") fails; the first time is kept."""
        since = self._failing.get(what, (self.monotonic(), reason))[0]
        self._failing[what] = (since, reason)

    def working(self, what: str) -> None:
        self._failing.pop(what, None)

    def start(self) -> None:
        self.started_at = self.monotonic()

    def committed(self) -> None:
        self.last_commit = self.monotonic()
        self.working("commit")

    def verdict(self, *, needs_partitions: bool = True) -> Verdict:
        now = self.monotonic()
        age = None if self.last_commit is None else now - self.last_commit
        since_progress = (
            age if age is not None else (None if self.started_at is None else now - self.started_at)
        )

        def verdict(healthy: bool, reason: str) -> Verdict:
            return Verdict(healthy, reason, age, self.lag, self.partitions)

        if self.started_at is None:
            return verdict(False, "starting")
        for what, (since, reason) in sorted(self._failing.items()):
            if now - since >= self.grace_seconds.get(what, 0.0):
                return verdict(False, f"{what} failing for {now - since:.0f}s: {reason}")
        if needs_partitions and not self.partitions:
            return verdict(False, "no partitions assigned")
        stuck_after = max(self.stuck_after_windows * self.window_seconds, self.stuck_floor_seconds)
        waiting = self.lag is not None and self.lag > 0
        if waiting and since_progress is not None and since_progress > stuck_after:
            return verdict(
                False, f"no commit for {since_progress:.0f}s with {self.lag} records waiting"
            )
        return verdict(True, "ok")
