"""Result tables: per-episode rows to CSV and JSON, means with bootstrap 95% intervals, Markdown tables.

Plain numpy and the standard library, so that evaluation reports need neither torch nor pandas.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval of the mean.

    Args:
        values: the samples (NaN ignored).
        confidence: interval coverage.
        resamples: bootstrap resamples.
        seed: resampling seed (fixed, so reports are reproducible).

    Returns:
        ``(mean, low, high)``; with one sample the interval is the sample itself; NaNs when empty.
    """
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) == 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return mean, float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def summarise(rows: Sequence[dict[str, Any]], group_by: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per group: ``{group keys..., "episodes": n, metric: {"mean", "ci95": [lo, hi]}}``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in group_by), []).append(row)
    out = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(group_by, key))
        entry["episodes"] = len(members)
        for metric in metrics:
            mean, lo, hi = bootstrap_ci([m.get(metric) for m in members])
            entry[metric] = {"mean": mean, "ci95": [lo, hi]}
        out.append(entry)
    return out


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows (dicts) to CSV with the union of their keys as columns, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented, valid JSON: numpy scalars and arrays become plain numbers and
    lists, and NaN or infinite numbers ``null`` (JSON has no NaN)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_finite(data), f, indent=2, default=_json_default, allow_nan=False)
        f.write("\n")


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def markdown_table(summary: Iterable[dict[str, Any]], group_by: Sequence[str], metrics: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table of a :func:`summarise` result.

    Args:
        summary: entries from :func:`summarise`.
        group_by: the group columns, shown first.
        metrics: ``(key, header, format)`` per metric column, e.g. ``("fr_after", "final FR", ".4f")``.
    """
    headers = [*group_by, "n", *(h for _, h, _ in metrics)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for entry in summary:
        cells = [str(entry[k]) for k in group_by] + [str(entry["episodes"])]
        for key, _, fmt in metrics:
            stat = entry[key]
            mean, (lo, hi) = stat["mean"], stat["ci95"]
            if math.isnan(mean):
                cells.append("-")
            elif lo == hi:
                cells.append(format(mean, fmt))
            else:
                cells.append(f"{format(mean, fmt)} [{format(lo, fmt)}, {format(hi, fmt)}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
