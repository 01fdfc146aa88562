"""Plain steps for tests: a chain can end in one to show what reached that point."""

from __future__ import annotations

import sys
from typing import Generic, TypeVar

T = TypeVar("T")


class Collect(Generic[T]):
    """A last step that keeps what it is given."""

    def __init__(self) -> None:
        self.received: list[T] = []
        self.terminated = False

    def submit(self, message: T) -> None:
        self.received.append(message)

    def demand(self) -> int:
        return sys.maxsize

    async def poll(self, wait: float = 0.0) -> None:
        return None

    async def join(self, deadline: float | None) -> None:
        return None

    def terminate(self) -> None:
        self.terminated = True
