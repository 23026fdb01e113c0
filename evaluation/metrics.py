"""What an evaluation measures, per problem: the per-episode metrics and their table columns.

Pure functions of an episode's record (a plan and its snapshot, or an autoscaling episode's
per-step arrays), so that evaluation and training report the same numbers.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

MetricColumn = tuple[str, str, str]
"""``(row key, table header, format spec)`` of one metric column."""

VM_METRICS: list[MetricColumn] = [
    ("fr_before", "FR before", ".4f"), ("fr_after", "final FR", ".4f"), ("best_share", "share of best gain", ".3f"),
    ("migrations", "migrations", ".1f"), ("wall_s", "s per plan", ".3g"),
]
AUTOSCALING_METRICS: list[MetricColumn] = [
    ("slo_violation_minutes", "SLO-violation min", ".2f"), ("success", "success rate", ".2f"),
    ("p95_latency_s", "mean p95 s", ".3f"), ("dropped_requests", "dropped requests", ".0f"),
    ("pod_hours", "pod-hours", ".2f"), ("recovery_minutes", "recovery min", ".2f"),
    ("episode_return", "return", ".1f"),
]
"""Per autoscaling episode: minutes with the SLO broken; success (no breach longer than the breach
limit); mean end-to-end p95; dropped requests; pod-hours; recovery time, minutes from the failure's
onset until the SLO holds through the hold time after the failure's end (:func:`recovery_minutes`;
blank without a failure or if it never recovers); the env's return (its reward summed over the episode)."""


# ---------------------------------------------------------------------- VM rescheduling
def fr_curve(snapshot, moves, budget: int) -> list[float]:
    """FR after 0, 1, ..., budget migrations of the plan (held at its last value after the plan ends).

    Args:
        snapshot: the episode's :class:`~digital_twin.vm.Snapshot` (left unchanged: a copy is replayed).
        moves: the plan's ``(cluster, vm, host, placement)`` migrations, in order.
        budget: the migration budget, which sets the curve's length.

    Returns:
        ``budget + 1`` fragment rates.
    """
    snap = snapshot.copy()
    curve = [snap.fragment_rate()]
    for ci, vm, host, placement in moves:
        snap.clusters[ci].migrate(vm, host, placement)
        curve.append(snap.fragment_rate())
    return curve + [curve[-1]] * (budget + 1 - len(curve))


def add_best_share(episode_rows: Sequence[dict[str, Any]], known: tuple[float, str] | None = None) -> None:
    """Set each row's ``best_share`` ``(FR0 - FR) / (FR0 - FR_best)`` and ``reference``, in place.

    ``FR_best`` is the lowest final FR of any method on the episode, or the snapshot's best known
    plan (``known``: its FR and a label saying where it comes from) if that is lower; ``reference``
    names it. A plan equal to the reference has share 1; NaN when nothing gained.

    Args:
        episode_rows: one row per method of one episode, with ``method``, ``fr_before``, ``fr_after``.
        known: ``(fr, label)`` of the best plan known for this snapshot and budget, if any.
    """
    if not episode_rows:
        return
    best = min(episode_rows, key=lambda r: r["fr_after"])
    ref_fr, ref = best["fr_after"], best["method"]
    if known is not None and known[0] < ref_fr - 1e-12:
        ref_fr, ref = known
    for r in episode_rows:
        gain = r["fr_before"] - ref_fr
        r["best_share"] = (r["fr_before"] - r["fr_after"]) / gain if gain > 1e-12 else float("nan")
        r["reference"] = ref


def best_known_fr(snapshot, budget: int) -> tuple[float, str] | None:
    """The best known FR for a bundled snapshot file at ``budget``, from ``best_known.json`` beside it.

    The entry applies only to the very file it was measured on (its SHA-256 is checked) and to its
    budget; ``None`` for generated snapshots or files without an entry.
    """
    import hashlib
    import json
    from pathlib import Path

    path = Path(str(getattr(snapshot, "source", "")))
    table = path.parent / "best_known.json"
    if not path.is_file() or not table.is_file():
        return None
    entry = json.loads(table.read_text()).get(path.name, {}).get(str(budget))
    if entry is None or entry["sha256"] != hashlib.sha256(path.read_bytes()).hexdigest():
        return None
    return float(entry["fr"]), f"best known ({entry['by']})"


# ---------------------------------------------------------------------- autoscaling
def longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D bool array."""
    padded = np.concatenate([[0], flags.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


def recovery_minutes(violated: np.ndarray, onset_step: int | None, step_minutes: float, hold_steps: int,
                     end_step: int | None = None) -> float:
    """Minutes from the failure's onset until the SLO holds again for good: over the failure's whole effect.

    Recovered at the first step ``r >= onset_step`` from which the SLO holds on every step until
    ``hold_steps`` after both ``r`` and the failure's end (``max(r, end_step) + hold_steps``), so
    a breach that starts while the failure acts, or within ``hold_steps`` after it ends, delays
    recovery until that breach is over, however quiet the first minutes after the onset were. The
    episode's end cuts that stretch short only where the failure's end plus ``hold_steps`` lies
    beyond it (a failure that lasts to the end: recovered once the SLO holds until the end).
    A breach that starts later than ``hold_steps`` after the failure ended is not its effect.

    Args:
        violated: (T,) bool, the SLO broken on each step.
        onset_step: the step the failure starts on; None without a failure.
        step_minutes: minutes per step.
        hold_steps: steps the SLO must hold, after recovery and after the failure's end.
        end_step: the first step after the failure's active period (``onset_step`` or
            ``onset_step + 1`` for an instant event such as a kill; default ``onset_step``).

    Returns:
        0 when the SLO holds from the onset through ``hold_steps`` after the failure's end; NaN
        without a failure, or when it never holds that long before the episode ends.
    """
    if onset_step is None:
        return float("nan")
    total = len(violated)
    end = onset_step if end_step is None else max(int(end_step), onset_step)
    r = np.arange(onset_step, total)
    if len(r) == 0:
        return float("nan")
    need = np.maximum(r, end) + hold_steps  # exclusive end of the stretch that must hold
    if end + hold_steps >= total:
        need = np.minimum(need, total)
    # next_bad[i]: the first violated step >= i (T if none), a reversed running minimum.
    steps = np.where(violated, np.arange(total), total)
    next_bad = np.minimum.accumulate(steps[::-1])[::-1]
    ok = (need <= total) & (next_bad[r] >= need)
    first = np.flatnonzero(ok)
    return float(first[0] * step_minutes) if len(first) else float("nan")


def autoscaling_episode_metrics(arrays: dict[str, np.ndarray], step_minutes: float, onset_step: int | None,
                                breach_limit_minutes: float, hold_steps: int,
                                end_step: int | None = None) -> dict[str, float]:
    """The :data:`AUTOSCALING_METRICS` of one episode.

    Args:
        arrays: the episode's per-step ``slo_violated``, ``e2e_latency_p95`` (s),
            ``dropped_requests``, ``pod_seconds`` and ``reward``, each of shape (T,).
        step_minutes: minutes per control step.
        onset_step: the step the first failure starts on; None for a variant without failure.
        breach_limit_minutes: the episode succeeds if no SLO breach lasts longer than this.
        hold_steps: see :func:`recovery_minutes`.
        end_step: the first step after the failure's active period (:func:`recovery_minutes`).

    Returns:
        ``{metric key: value}``, keys as in :data:`AUTOSCALING_METRICS`.
    """
    violated = arrays["slo_violated"] > 0
    return {
        "slo_violation_minutes": float(violated.sum() * step_minutes),
        "success": float(longest_run(violated) * step_minutes <= breach_limit_minutes),
        "p95_latency_s": float(arrays["e2e_latency_p95"].mean()),
        "dropped_requests": float(arrays["dropped_requests"].sum()),
        "pod_hours": float(arrays["pod_seconds"].sum() / 3600.0),
        "recovery_minutes": recovery_minutes(violated, onset_step, step_minutes, hold_steps, end_step),
        "episode_return": float(arrays["reward"].sum()),
    }
