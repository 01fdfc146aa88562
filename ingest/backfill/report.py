"""What a backfill did with a file: rows ok by kind, rows bad by reason with the first line
numbers of each, and how many were past retention (counted, never silently dropped).

A report is plain data, saved in the checkpoint, so a resumed run ends with the counts of the
whole file, not of its last part.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ingest.backfill.checking import PAST_RETENTION, CheckedBatch, reason_group

FIRST_LINES = 5


@dataclass
class Report:
    predictions: int = 0
    feedback: int = 0
    # reason -> [count, first line numbers]
    bad: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.predictions + self.feedback

    @property
    def bad_rows(self) -> int:
        return sum(count for count, _ in self.bad.values())

    @property
    def past_retention(self) -> int:
        return sum(count for key, (count, _) in self.bad.items() if key.endswith(PAST_RETENTION))

    def add(self, batch: CheckedBatch, predictions_topic: str) -> None:
        for accepted in batch.accepted:
            if accepted.topic == predictions_topic:
                self.predictions += 1
            else:
                self.feedback += 1
        for reject in batch.rejects:
            entry = self.bad.setdefault(reason_group(reject.field, reject.reason), [0, []])
            entry[0] += 1
            if len(entry[1]) < FIRST_LINES:
                entry[1].append(reject.line)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(**data)

    def render(self, name: str, action: str) -> str:
        lines = [
            f"{name}: {self.ok} rows ok ({self.predictions} predictions, {self.feedback} "
            f"feedback) {action}; {self.bad_rows} bad"
        ]
        for reason, (count, first) in sorted(self.bad.items(), key=lambda kv: -kv[1][0]):
            where = ", ".join(map(str, first)) + (", ..." if count > len(first) else "")
            lines.append(f"  {count} bad: {reason} (line {where})")
        if self.past_retention:
            lines.append(
                f"  {self.past_retention} rows are older than the retention: the worker would "
                "dead-letter them too; they are in the reject file"
            )
        return "\n".join(lines)
