"""The backfill command as a user runs it: a CSV under its own column names loaded through a
TOML mapping file (and a bad mapping file refused naming its field), and the progress bar shown
on a terminal only."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import sys
import termios
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

from tests.integration.test_backfill import CONFIG, TEST_ENV, run_command

MAPPING = """
[backfill]
ignore = ["internal_note"]

[backfill.columns]
join_key = "request"
value = "thumbs"
timestamp = "rated_at"
"source.id" = "annotator"
rationale = "why"

[backfill.set]
metric = "haiku_rating"
"source.type" = "human"
"""


def _command(folder: Path, database_url: str, *args: str) -> list[str]:
    config = folder / "feedbackflow.toml"
    config.write_text(CONFIG)
    return [
        *(sys.executable, "-m", "workers.cli", "backfill", "--config", str(config)),
        *("--database-url", database_url, *args),
    ]


async def test_a_toml_mapping_file_loads_a_csv_under_other_column_names(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    at = (datetime.now(UTC) - timedelta(days=2)).replace(microsecond=0)
    source = tmp_path / "thumbs.csv"
    source.write_text(
        "request,thumbs,rated_at,annotator,why,internal_note\n"
        f"req-1,yes,{at.isoformat()},ann-1,good imagery,x\n"
        f"req-2,no,{(at + timedelta(minutes=1)).isoformat()},ann-2,,y\n"
    )
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    returncode, said = await run_command(
        _command(tmp_path, database_url, "--direct", "--mapping", str(mapping), str(source))
    )
    assert returncode == 0, said
    assert "2 rows ok (0 predictions, 2 feedback) written; 0 bad" in said
    rows = await db.fetch(
        "SELECT join_key, metric, value_bool, ts, source_type, source_id, rationale, status"
        " FROM feedbackflow.feedback ORDER BY join_key"
    )
    assert [tuple(r) for r in rows] == [
        ("req-1", "haiku_rating", True, at, "human", "ann-1", "good imagery", "pending"),
        (
            "req-2",
            "haiku_rating",
            False,
            at + timedelta(minutes=1),
            "human",
            "ann-2",
            None,
            "pending",
        ),
    ]


async def test_a_bad_mapping_file_is_refused_naming_its_field(
    database_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "thumbs.csv"
    source.write_text("request,thumbs\nreq-1,yes\n")
    for table, named in (
        ('[backfill.columns]\njoin_key = "request"\nvalue = 3\n', "backfill.columns.value: 3"),
        ('[backfill]\ncolums = {join_key = "request"}\n', "backfill.colums: unknown key"),
        ('[backfill]\nignore = "thumbs"\n', "backfill.ignore: must be a list"),
    ):
        mapping = tmp_path / "mapping.toml"
        mapping.write_text(table)
        returncode, said = await run_command(
            _command(tmp_path, database_url, "--dry-run", "--mapping", str(mapping), str(source))
        )
        assert returncode == 2, said
        assert f"{mapping}: {named}" in said


def _scores(path: Path, rows: int) -> None:
    at = datetime.now(UTC) - timedelta(days=1)
    pq.write_table(
        pa.table(
            {
                "join_key": [f"req-{i}" for i in range(rows)],
                "metric": ["haiku_score"] * rows,
                "value": [float(1 + i % 5) for i in range(rows)],
                "timestamp": pa.array([at] * rows, pa.timestamp("us", tz="UTC")),
            }
        ),
        path,
    )


async def _on_a_terminal(command: list[str]) -> tuple[int, str]:
    """The command's exit code and what a 160-column terminal showed of its output."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = await asyncio.create_subprocess_exec(
        *command, stdout=follower, stderr=follower, stdin=follower, env=TEST_ENV
    )
    os.close(follower)
    shown = bytearray()

    def read() -> bytes:
        try:
            return os.read(leader, 65536)
        except OSError:  # EIO: the terminal's last writer has closed it
            return b""

    try:
        while chunk := await asyncio.to_thread(read):
            shown += chunk
        await asyncio.wait_for(process.wait(), timeout=60)
    finally:
        os.close(leader)
        if process.returncode is None:
            process.kill()
    assert process.returncode is not None
    return process.returncode, shown.decode(errors="replace")


async def test_the_progress_bar_shows_rows_and_rate_on_a_terminal_only(
    database_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "scores.parquet"
    _scores(source, 1500)
    # --rate paces it over about a second and a half, so the bar is redrawn on the way.
    command = _command(tmp_path, database_url, "--dry-run", "--rate", "1000", str(source))

    returncode, shown = await _on_a_terminal(command)
    assert returncode == 0, shown
    assert "scores.parquet" in shown
    assert "1,500 rows" in shown  # the bar's row count, at its end
    rates = [float(r.replace(",", "")) for r in re.findall(r"([\d,]+) rows/s", shown)]
    assert rates, shown
    assert max(rates) > 0
    assert "1500 rows ok (0 predictions, 1500 feedback) checked; 0 bad" in shown

    returncode, said = await run_command(command)  # a pipe, not a terminal
    assert returncode == 0, said
    assert said.strip() == (f"{source}: 1500 rows ok (0 predictions, 1500 feedback) checked; 0 bad")
