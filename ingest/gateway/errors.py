"""What the gateway answers when it will not take a request: a status, the field, the reason.

Every refusal names the field at fault (``value``, ``Authorization``, ``(body)``) and why, in the
body ``{"error": "<field>: <reason>", "field": "<field>"}``: TensorZero's client carries that body
in its ``TensorZeroError``, and a person reading a browser's console or a curl reply sees the
same sentence the worker would have written into a dead letter.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ingest.wire.events import error_text


class Refusal(Exception):
    """A request (or one item of a batch) the gateway will not take."""

    def __init__(
        self, status: int, field: str, reason: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{field}: {reason}")
        self.status = status
        self.field = field
        self.reason = reason
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": f"{self.field}: {self.reason}", "field": self.field}

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}


def bad_request(field: str, reason: str) -> Refusal:
    return Refusal(400, field, reason)


def from_validation(exc: ValidationError, prefix: str = "") -> Refusal:
    """The first error of a pydantic validation, with its place, as a 400."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = _place(first["loc"])
    reason = error_text(first)
    if len(errors) > 1:
        others = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {error_text(e)}"
            for e in errors[1:4]
        )
        reason = f"{reason} (also {others})"
    return Refusal(400, prefix + where, reason)


def _place(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(body)"
