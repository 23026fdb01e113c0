"""PNG plots of an evaluation run (matplotlib, headless Agg backend, imported on first use)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    """matplotlib.pyplot on the Agg backend, so that plotting needs no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Lay out, write and close a matplotlib figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_vm(run_dir: Path, rows: list[dict], curves: dict[str, list[list[float]]]) -> list[Path]:
    """FR vs migrations (mean curve per method) and wall time per plan.

    Args:
        run_dir: where the PNGs go.
        rows: the per-episode rows of :func:`evaluation.vm.evaluate_vm` (``method``, ``wall_s``).
        curves: per method, its FR-vs-migrations curves (one per episode, all of one length).

    Returns:
        The paths written: ``fr_vs_migrations.png``, ``time_per_plan.png``.
    """
    plt = _pyplot()
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, runs in curves.items():
        mean = np.mean(np.array(runs), axis=0)
        ax.plot(np.arange(len(mean)), mean, label=method, drawstyle="steps-post")
    ax.set_xlabel("migrations")
    ax.set_ylabel("fragment rate (16 vCPU)")
    ax.set_title("FR vs migrations (mean over held-out episodes)")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(save_figure(fig, run_dir / "fr_vs_migrations.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = list(curves)
    times = [[r["wall_s"] for r in rows if r["method"] == m] for m in methods]
    ax.bar(methods, [np.mean(t) for t in times], color="tab:blue", alpha=0.8)
    for i, t in enumerate(times):
        ax.scatter([i] * len(t), t, color="black", s=10, zorder=3)
    ax.set_yscale("log")
    ax.set_ylabel("wall time per plan (s)")
    ax.set_title("Time per plan")
    ax.grid(alpha=0.3, axis="y")
    paths.append(save_figure(fig, run_dir / "time_per_plan.png"))
    return paths


def plot_autoscaling(run_dir: Path, rows: list[dict], data: dict) -> list[Path]:
    """Load, p95 latency and replicas over time per scenario; SLO-violation minutes per scenario.

    Args:
        run_dir: where the PNGs go.
        rows: the per-episode rows of :func:`evaluation.autoscaling.evaluate_autoscaling`.
        data: its second return value (``series``, ``step_minutes``, ``scenarios``, ``methods``).

    Returns:
        The paths written: ``timeseries_<scenario>.png`` each, then ``slo_minutes_by_scenario.png``.
    """
    plt = _pyplot()
    paths = []
    minutes = None
    for scenario in data["scenarios"]:
        fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
        for method in data["methods"]:
            s = data["series"][(scenario, method)]
            minutes = np.arange(len(s["offered_rate"])) * data["step_minutes"]
            axes[1].plot(minutes, s["e2e_latency_p95"], label=method)
            axes[2].plot(minutes, s["replicas"], label=method, drawstyle="steps-post")
        # Every method sees the same load: draw it once, from the last method's series.
        axes[0].plot(minutes, s["offered_rate"], color="black")
        axes[0].set_ylabel("offered load (req/s)")
        axes[1].set_ylabel("end-to-end p95 (s)")
        axes[2].set_ylabel("replicas (all services)")
        axes[2].set_xlabel("minutes into the held-out window")
        axes[1].legend(fontsize=8)
        axes[0].set_title(f"scenario {scenario}: first held-out episode")
        for ax in axes:
            ax.grid(alpha=0.3)
        paths.append(save_figure(fig, run_dir / f"timeseries_{scenario}.png"))

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(data["scenarios"])), 4.5))
    width = 0.8 / len(data["methods"])
    for i, method in enumerate(data["methods"]):
        means = [np.mean([r["slo_violation_minutes"] for r in rows if r["scenario"] == sc and r["method"] == method])
                 for sc in data["scenarios"]]
        ax.bar(np.arange(len(data["scenarios"])) + i * width, means, width, label=method)
    ax.set_xticks(np.arange(len(data["scenarios"])) + 0.4 - width / 2, data["scenarios"], rotation=30, ha="right")
    ax.set_ylabel("SLO-violation minutes (mean)")
    ax.set_title("SLO-violation minutes per scenario")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    paths.append(save_figure(fig, run_dir / "slo_minutes_by_scenario.png"))
    return paths
