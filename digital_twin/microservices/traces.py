"""Real request traces -> entry request-rate curves for the twin.

Three bundled sources (small copies under ``data/``, each with its licence and ``SOURCE.md``):

* **worldcup98**: 1998 World Cup web site, requests per minute, 16 days (1998-06-15..30).
  Split by day: train = 06-15..06-26, held out = 06-27..06-30.
* **huawei_serverless**: Huawei private cloud, day 0, requests per minute for 12 functions
  (plus mean execution time, used by :mod:`calibration`). Split by hour: train = hours 0-17,
  held out = hours 18-23.
* **azure_llm_inference**: Azure LLM inference arrivals (one row per request), binned per
  minute; ``conv`` and ``code`` services, about an hour each. Split by time: train = first
  40 minutes, held out = the rest.

Scaling rule (:func:`build_load_curve`): the trace's 99th-percentile per-minute rate on its
*train* split is mapped to ``peak_utilisation`` x the topology's entry capacity at maximum
replicas (:meth:`Topology.entry_capacity`). The same factor applies to every split, so held-out
days keep their real size relative to the training days (and may exceed the reference).
Within a minute the rate is constant (the traces' resolution); control steps read the minute
they start in.

Malformed rows raise :class:`TraceError` naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from digital_twin.microservices.topology import Topology
from digital_twin.resources import bundled_path

DATA_DIR = bundled_path("data")
WORLDCUP98_FILE = DATA_DIR / "worldcup98" / "invocation_count_1998-06-15_to_06-30.csv"
HUAWEI_DIR = DATA_DIR / "huawei_serverless"
AZURE_LLM_DIR = DATA_DIR / "azure_llm_inference"

WORLDCUP98_TRAIN_DAYS = tuple(f"1998-06-{d:02d}" for d in range(15, 27))
WORLDCUP98_HELDOUT_DAYS = ("1998-06-27", "1998-06-28", "1998-06-29", "1998-06-30")
HUAWEI_TRAIN_HOURS = tuple(range(0, 18))
HUAWEI_HELDOUT_HOURS = tuple(range(18, 24))
AZURE_LLM_TRAIN_MINUTES = 40
DEFAULT_PEAK_UTILISATION = 0.7
"""Share of the entry capacity at max replicas that the train split's 99th-percentile minute is
mapped to, unless a caller says otherwise: the twin's command line and the env configs' default."""


class TraceError(ValueError):
    """A trace file is malformed; the message names the file, the line and the field."""

    def __init__(self, path: Path | str, line: int, field: str, reason: str):
        super().__init__(f"{path}:{line}: field '{field}': {reason}")
        self.path, self.line, self.field, self.reason = str(path), line, field, reason


@dataclass(frozen=True)
class LoadTrace:
    """Requests per minute from one source, with its fixed train / held-out split.

    Attributes:
        source: Short name, e.g. ``"worldcup98"``.
        minutes: (T,) datetime64[m] start of each minute (consecutive).
        counts: (T,) float64 requests in that minute.
        split_of_minute: (T,) ``"train"`` or ``"heldout"`` per minute.
        filled_minutes: Minutes absent from the file and filled by linear interpolation.
    """

    source: str
    minutes: np.ndarray
    counts: np.ndarray
    split_of_minute: np.ndarray
    filled_minutes: int = 0

    def select(self, split: str | None = None, day: str | None = None, hours: tuple[int, int] | None = None) -> "LoadTrace":
        """Sub-trace by split (``"train"``/``"heldout"``), calendar day, and/or hour range.

        Args:
            split: Keep only minutes of this split.
            day: ``"YYYY-MM-DD"``; keep only that day.
            hours: ``(first, last_exclusive)`` hours of the day to keep.

        Returns:
            The selected :class:`LoadTrace` (raises ValueError if empty).
        """
        keep = np.ones(len(self.counts), dtype=bool)
        if split is not None:
            if split not in ("train", "heldout"):
                raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
            keep &= self.split_of_minute == split
        if day is not None:
            keep &= self.minutes.astype("datetime64[D]") == np.datetime64(day)
        if hours is not None:
            hour = (self.minutes - self.minutes.astype("datetime64[D]")).astype(int) // 60
            keep &= (hour >= hours[0]) & (hour < hours[1])
        if not keep.any():
            raise ValueError(f"{self.source}: no minutes match split={split!r} day={day!r} hours={hours!r}")
        return LoadTrace(self.source, self.minutes[keep], self.counts[keep], self.split_of_minute[keep], 0)


@dataclass(frozen=True)
class LoadCurve:
    """Entry request rate per control step, ready for the twin.

    Attributes:
        rates: (T,) float64 requests/s at the topology's entry, one per control step.
        step_seconds: Control-step length the curve was built for.
        start: datetime64[m] of the first step.
        source: Trace source name.
        scale: Requests/s at the entry per trace request/s (the scaling rule's factor).
        reference_rate: Trace's train-split 99th-percentile rate (requests/s) mapped to
            ``peak_utilisation`` x entry capacity.
    """

    rates: np.ndarray
    step_seconds: float
    start: np.datetime64
    source: str
    scale: float
    reference_rate: float

    def __len__(self) -> int:
        return len(self.rates)


def _open_rows(path: Path, expected_header: list[str]):
    if not path.exists():
        raise FileNotFoundError(f"{path}: trace file not found")
    handle = path.open(newline="")
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None or [h.strip().lstrip("\ufeff") for h in header[: len(expected_header)]] != expected_header:
        handle.close()
        raise TraceError(path, 1, "<header>", f"expected columns {expected_header}, got {header}")
    return handle, reader, header


def _parse_number(path: Path, line: int, field: str, text: str, integer: bool = False, allow_empty: bool = False) -> float:
    text = text.strip()
    if text == "" and allow_empty:
        return math.nan
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise TraceError(path, line, field, f"expected {'an integer' if integer else 'a number'}, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(path, line, field, f"expected a finite value >= 0, got {text!r}")
    return float(value)


def _fill_minutes(path: Path, minute_index: np.ndarray, counts: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Make minutes consecutive; linear interpolation over gaps (the count of filled minutes is kept)."""
    steps = np.diff(minute_index)
    if np.any(steps <= 0):
        bad = int(np.argmax(steps <= 0)) + 1
        raise TraceError(path, int(lines[bad]), "period", "timestamps must strictly increase")
    full = np.arange(minute_index[0], minute_index[-1] + 1)
    filled = np.interp(full, minute_index, counts)
    return full, filled, int(len(full) - len(minute_index))


def load_worldcup98(path: Path | str = WORLDCUP98_FILE) -> LoadTrace:
    """Load the worldcup98 per-minute request counts (``period,count``).

    Args:
        path: CSV with header ``period,count``; ``period`` is ``YYYY-MM-DD HH:MM:SS`` on a
            minute boundary, ``count`` a non-negative integer.

    Returns:
        The :class:`LoadTrace`, split by day (:data:`WORLDCUP98_TRAIN_DAYS` /
        :data:`WORLDCUP98_HELDOUT_DAYS`; other days are labelled ``"other"``).

    Raises:
        TraceError: On a malformed row (file, line, field).
    """
    path = Path(path)
    handle, reader, _ = _open_rows(path, ["period", "count"])
    minutes, counts, lines = [], [], []
    with handle:
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise TraceError(path, line, "<row>", f"expected 2 fields, got {len(row)}")
            try:
                stamp = datetime.strptime(row[0].strip(), "%Y-%m-%d %H:%M:%S")
            except ValueError:
                raise TraceError(path, line, "period", f"expected YYYY-MM-DD HH:MM:SS, got {row[0]!r}") from None
            if stamp.second != 0:
                raise TraceError(path, line, "period", f"not on a minute boundary: {row[0]!r}")
            minutes.append(np.datetime64(stamp, "m").astype(np.int64))
            counts.append(_parse_number(path, line, "count", row[1], integer=True))
            lines.append(line)
    if not minutes:
        raise TraceError(path, 2, "<row>", "no data rows")
    full, filled, n_filled = _fill_minutes(path, np.array(minutes), np.array(counts), np.array(lines))
    stamps = full.astype("datetime64[m]")
    day = stamps.astype("datetime64[D]").astype(str)
    split = np.where(np.isin(day, WORLDCUP98_TRAIN_DAYS), "train",
                     np.where(np.isin(day, WORLDCUP98_HELDOUT_DAYS), "heldout", "other"))
    return LoadTrace("worldcup98", stamps, filled, split, n_filled)


@dataclass(frozen=True)
class HuaweiTable:
    """One Huawei serverless per-function table (day 0, one row a minute).

    Attributes:
        path: The CSV read.
        minutes: (T,) int64 minute of the trace (``day * 1440 + time / 60``).
        function_ids: (F,) int function ids (column names).
        values: (T, F) float64; NaN where the cell is empty (no data).
    """

    path: Path
    minutes: np.ndarray
    function_ids: np.ndarray
    values: np.ndarray

    def column(self, function_id: int) -> np.ndarray:
        """Values of one function, shape (T,); KeyError names the available ids."""
        hits = np.flatnonzero(self.function_ids == function_id)
        if len(hits) == 0:
            raise KeyError(f"{self.path}: no function {function_id}; available: {self.function_ids.tolist()}")
        return self.values[:, hits[0]]


def load_huawei_table(name: str, directory: Path | str = HUAWEI_DIR) -> HuaweiTable:
    """Load ``request_call``, ``request_delay``, ``cpu`` or ``memory`` from the Huawei copy.

    Args:
        name: Table name (file stem).
        directory: Folder holding the CSVs.

    Returns:
        The :class:`HuaweiTable`.

    Raises:
        TraceError: On a malformed row (file, line, field).
    """
    path = Path(directory) / f"{name}.csv"
    handle, reader, header = _open_rows(path, ["day", "time"])
    function_cols = header[2:]
    for col in function_cols:
        if not col.strip().isdigit():
            raise TraceError(path, 1, col, "function column names must be integer ids")
    minutes, rows = [], []
    with handle:
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise TraceError(path, line, "<row>", f"expected {len(header)} fields, got {len(row)}")
            day = _parse_number(path, line, "day", row[0], integer=True)
            seconds = _parse_number(path, line, "time", row[1], integer=True)
            if seconds % 60 != 0 or seconds >= 86400:
                raise TraceError(path, line, "time", f"expected seconds of the day on a minute boundary, got {row[1]!r}")
            minutes.append(int(day) * 1440 + int(seconds) // 60)
            rows.append([_parse_number(path, line, col, cell, allow_empty=True) for col, cell in zip(function_cols, row[2:])])
    minutes_arr = np.array(minutes, dtype=np.int64)
    if len(minutes_arr) > 1 and np.any(np.diff(minutes_arr) <= 0):
        bad = int(np.argmax(np.diff(minutes_arr) <= 0)) + 3
        raise TraceError(path, bad, "time", "rows must be in strictly increasing time order")
    return HuaweiTable(path, minutes_arr, np.array([int(c) for c in function_cols]), np.array(rows, dtype=np.float64))


def load_huawei_requests(function_id: int | None = None, directory: Path | str = HUAWEI_DIR) -> LoadTrace:
    """Huawei serverless requests per minute as a :class:`LoadTrace`.

    Args:
        function_id: One function's column, or None for the sum over the bundled functions.
        directory: Folder holding ``request_call.csv``.

    Returns:
        The trace; empty cells (no data) are filled by interpolation over time, split by
        hour (:data:`HUAWEI_TRAIN_HOURS` / :data:`HUAWEI_HELDOUT_HOURS`).
    """
    table = load_huawei_table("request_call", directory)
    values = table.values if function_id is None else table.column(function_id)[:, None]
    counts = np.zeros(len(table.minutes))
    n_filled = 0
    for col in values.T:  # a dozen columns at load time; not the hot path
        missing = np.isnan(col)
        if missing.all():
            raise TraceError(table.path, 2, "<column>", "a requested function column has no data")
        n_filled += int(missing.sum())
        counts += np.interp(table.minutes, table.minutes[~missing], col[~missing])
    full, filled, gap = _fill_minutes(table.path, table.minutes, counts, np.arange(2, len(counts) + 2))
    hour = (full % 1440) // 60
    split = np.where(np.isin(hour, HUAWEI_TRAIN_HOURS), "train", "heldout")
    # Day 0 of the trace has no calendar date; anchor it at 1970-01-01 for datetime arithmetic.
    stamps = full.astype("datetime64[m]")
    name = "huawei_serverless" + ("" if function_id is None else f"[{function_id}]")
    return LoadTrace(name, stamps, filled, split, n_filled + gap)


def load_azure_llm(service: str = "conv", directory: Path | str = AZURE_LLM_DIR) -> LoadTrace:
    """Azure LLM inference arrivals binned to requests per minute.

    Args:
        service: ``"conv"`` (conversation) or ``"code"`` (coding assistant).
        directory: Folder holding ``AzureLLMInferenceTrace_{service}.csv``.

    Returns:
        The trace over the whole minutes covered (the partial first and last minutes are
        dropped); minutes with no arrival count 0. Train = first
        :data:`AZURE_LLM_TRAIN_MINUTES` minutes, held out = the rest.

    Raises:
        TraceError: On a malformed row (file, line, field).
    """
    if service not in ("conv", "code"):
        raise ValueError(f"service must be 'conv' or 'code', got {service!r}")
    path = Path(directory) / f"AzureLLMInferenceTrace_{service}.csv"
    handle, reader, _ = _open_rows(path, ["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
    stamps = []
    with handle:
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 3:
                raise TraceError(path, line, "<row>", f"expected 3 fields, got {len(row)}")
            text = row[0].strip()
            try:
                # numpy parses up to nanoseconds; the files carry 7 fractional digits.
                stamp = np.datetime64(text.replace(" ", "T"), "us")
            except ValueError:
                raise TraceError(path, line, "TIMESTAMP", f"expected YYYY-MM-DD HH:MM:SS.fffffff, got {text!r}") from None
            if stamps and stamp < stamps[-1]:
                raise TraceError(path, line, "TIMESTAMP", "timestamps must not decrease")
            _parse_number(path, line, "ContextTokens", row[1], integer=True)
            _parse_number(path, line, "GeneratedTokens", row[2], integer=True)
            stamps.append(stamp)
    if len(stamps) < 2:
        raise TraceError(path, 2, "<row>", "fewer than two arrivals")
    minute = np.array(stamps).astype("datetime64[m]").astype(np.int64)
    first, last = minute[0] + 1, minute[-1] - 1  # drop the partial edge minutes
    if last < first:
        raise TraceError(path, len(stamps) + 1, "TIMESTAMP", "arrivals span less than one whole minute")
    inside = (minute >= first) & (minute <= last)
    counts = np.bincount(minute[inside] - first, minlength=last - first + 1).astype(np.float64)
    full = np.arange(first, last + 1)
    split = np.where(np.arange(len(full)) < AZURE_LLM_TRAIN_MINUTES, "train", "heldout")
    return LoadTrace(f"azure_llm_{service}", full.astype("datetime64[m]"), counts, split, 0)


def load_trace(source: str) -> LoadTrace:
    """Load a bundled trace by name: ``worldcup98``, ``huawei_serverless[:<function id>]``,
    ``azure_llm_conv`` or ``azure_llm_code``."""
    if source == "worldcup98":
        return load_worldcup98()
    if source.startswith("huawei_serverless"):
        _, _, fid = source.partition(":")
        return load_huawei_requests(int(fid) if fid else None)
    if source in ("azure_llm_conv", "azure_llm_code"):
        return load_azure_llm(source.rsplit("_", 1)[1])
    raise ValueError(f"unknown trace {source!r}; known: worldcup98, huawei_serverless[:id], azure_llm_conv, azure_llm_code")


def build_load_curve(
    trace: LoadTrace,
    topology: Topology,
    selection: LoadTrace | None = None,
    step_seconds: float = 15.0,
    peak_utilisation: float = DEFAULT_PEAK_UTILISATION,
) -> LoadCurve:
    """Turn a trace into the entry request-rate curve of ``topology`` (scaling rule above).

    Args:
        trace: The whole trace; its train split sets the scale.
        topology: Target topology; its entry capacity at max replicas is the reference.
        selection: The minutes to replay (e.g. ``trace.select(day="1998-06-30")``); default
            the whole trace.
        step_seconds: Control-step length.
        peak_utilisation: Entry utilisation (at max replicas) the train split's
            99th-percentile minute is mapped to.

    Returns:
        The :class:`LoadCurve`.
    """
    if not 0 < peak_utilisation:
        raise ValueError(f"peak_utilisation must be > 0, got {peak_utilisation}")
    if not step_seconds > 0:
        raise ValueError(f"step_seconds must be > 0, got {step_seconds}")
    train = trace.counts[trace.split_of_minute == "train"]
    reference_rate = float(np.percentile(train, 99)) / 60.0
    if reference_rate <= 0:
        raise ValueError(f"{trace.source}: train split has no load")
    scale = peak_utilisation * topology.entry_capacity() / reference_rate
    chosen = trace if selection is None else selection
    seconds = len(chosen.counts) * 60.0
    step_start = np.arange(0.0, seconds, step_seconds)
    minute_of_step = (step_start // 60.0).astype(np.int64)
    rates = chosen.counts[minute_of_step] / 60.0 * scale
    return LoadCurve(rates, float(step_seconds), chosen.minutes[0], trace.source, float(scale), reference_rate)
