"""Resume a backfill where it stopped: a small JSON file beside the input.

Written (atomically: a temporary file renamed over it) only after a batch is durable -- acked by
the broker, or committed by Postgres -- so after Ctrl-C or SIGKILL a run resumes at the first row
that may not be.  The rows between that checkpoint and the kill are sent again, and their ids,
stable across runs (``ingest.backfill.stable_ids``), make the second copy a no-op in Postgres.
The reject file's length at the checkpoint is kept too, so its rows are not written twice.

The checkpoint names the file's size and modification time: a changed file starts over.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.backfill.report import Report


@dataclass
class Checkpoint:
    path: Path
    source_size: int
    source_mtime_ns: int
    rows_done: int = 0  # rows of the file (good and bad) that are durable
    rejects_bytes: int = 0
    report: Report | None = None

    @classmethod
    def beside(cls, source: Path) -> Checkpoint:
        """The checkpoint of ``source``: the saved one if it is of this very file, else new."""
        stat = source.stat()
        path = source.with_name(source.name + ".backfill-checkpoint.json")
        fresh = cls(path, stat.st_size, stat.st_mtime_ns, report=Report())
        try:
            saved: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return fresh
        if (saved.get("source_size"), saved.get("source_mtime_ns")) != (
            stat.st_size,
            stat.st_mtime_ns,
        ):
            return fresh
        return cls(
            path,
            stat.st_size,
            stat.st_mtime_ns,
            int(saved["rows_done"]),
            int(saved["rejects_bytes"]),
            Report.from_dict(saved["report"]),
        )

    def save(self, rows_done: int, rejects_bytes: int) -> None:
        self.rows_done, self.rejects_bytes = rows_done, rejects_bytes
        data = {
            "source_size": self.source_size,
            "source_mtime_ns": self.source_mtime_ns,
            "rows_done": rows_done,
            "rejects_bytes": rejects_bytes,
            "report": (self.report or Report()).as_dict(),
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(self.path)

    def remove(self) -> None:
        """The file is done: a later run of it starts over (and adds nothing new)."""
        self.path.unlink(missing_ok=True)
