"""The report's one figure: six panels over the same time axis, drawn from ``ReportData``.

matplotlib's Agg backend, chosen explicitly: the report runs on servers and in CI, where no
display exists.  The PNG carries no creation time or software version, so the same data draw
the same bytes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from workers.report.data import ReportData

Series = dict[str, tuple[list[datetime], list[float]]]


def _series(rows: Iterable[Any], label: Callable[[Any], str], value: str) -> Series:
    """Rows of any of the queries (in time order) as one line per label, skipping rows
    without a value."""
    lines: Series = defaultdict(lambda: ([], []))
    for row in rows:
        y = getattr(row, value)
        if y is None:
            continue
        times, values = lines[label(row)]
        times.append(row.time)
        values.append(float(y))
    return dict(sorted(lines.items()))


def _plot(axes: Axes, lines: Series, title: str, ylabel: str) -> None:
    axes.set_title(title, fontsize=11, loc="left")
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    if not lines:
        axes.text(
            0.5,
            0.5,
            "no data in this range",
            ha="center",
            va="center",
            transform=axes.transAxes,
            color="0.5",
        )
        return
    for label, (times, values) in lines.items():
        x = date2num(times)  # type: ignore[no-untyped-call]
        axes.plot(x, values, marker="o", markersize=3, linewidth=1.5, label=label)
    axes.legend(fontsize=8, loc="best")


def _label(*fields: str) -> Callable[[Any], str]:
    return lambda row: " ".join(str(getattr(row, f) or "(none)") for f in fields)


def draw(data: ReportData, title: str) -> Figure:
    figure = Figure(figsize=(15, 9), layout="constrained")
    figure.suptitle(title, fontsize=14)
    (shares, means, delays), (coverage, agreement, backlog) = figure.subplots(2, 3)
    values = data.values
    _plot(
        shares,
        _series(
            [r for r in values if r.metric_type == "boolean"], _label("metric", "model"), "value"
        ),
        "Share positive per model",
        "share of joined feedback",
    )
    shares.set_ylim(-0.02, 1.02)
    _plot(
        means,
        _series(
            [r for r in values if r.metric_type == "float"], _label("metric", "model"), "value"
        ),
        "Mean rating per model",
        "mean of joined feedback",
    )
    delay_lines: Series = {}
    for percentile in ("p50_seconds", "p90_seconds"):
        for label, line in _series(data.delays, _label("metric"), percentile).items():
            hours = [seconds / 3600 for seconds in line[1]]
            delay_lines[f"{label} {percentile.split('_')[0]}"] = (line[0], hours)
    _plot(delays, delay_lines, "Feedback delay (prediction to feedback)", "hours")
    if delay_lines:
        delays.set_yscale("log")
    _plot(
        coverage,
        _series(data.coverage, _label("model"), "coverage"),
        "Coverage: predictions with feedback, by prediction time",
        "share of predictions",
    )
    coverage.set_ylim(-0.02, 1.02)
    kappas = _series(
        data.cohen, lambda r: f"{r.metric} Cohen {r.source_type_a}/{r.source_type_b}", "kappa"
    )
    kappas.update(_series(data.fleiss, lambda r: f"{r.metric} Fleiss", "kappa"))
    _plot(agreement, kappas, "Agreement between annotators (kappa)", "kappa")
    agreement.set_ylim(-1.05, 1.05)
    pending = _series(data.backlog, _label("metric"), "pending_count")
    expired = _series(data.backlog, _label("metric"), "expired_count")
    _plot(
        backlog,
        {f"{k} pending": v for k, v in pending.items()}
        | {f"{k} expired": v for k, v in expired.items()},
        "Pending and expired feedback",
        "feedback",
    )
    return figure


def save_png(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No Software or creation-time chunk: the same report draws the same bytes.
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
