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


def plot_vm(run_dir: Path, rows: list[dict], curves: dict[str, list[list[float]]], title: str = "") -> list[Path]:
    """FR vs migrations, wall time per plan, and final FR vs time per plan (quality vs time).

    With a few distinct snapshots (files) each gets its own panel; with many, the curves are
    averaged over episodes.

    Args:
        run_dir: where the PNGs go.
        rows: the per-episode rows of :func:`evaluation.vm.evaluate_vm` (``method``, ``snapshot``,
            ``wall_s``, ``fr_after``, in the order the curves were recorded).
        curves: per method, its FR-vs-migrations curves (one per episode, all of one length).
        title: what was evaluated (the config's name), shown in every title.

    Returns:
        The paths written: ``fr_vs_migrations.png``, ``time_per_plan.png``, ``quality_vs_time.png``.
    """
    from evaluation.vm import base_method

    plt = _pyplot()
    paths = []
    methods = list(curves)
    snapshots = list(dict.fromkeys(r.get("snapshot", "") for r in rows))
    panels = snapshots if 1 < len(snapshots) <= 4 else [None]
    styles = _styles(methods)
    where = f" ({title})" if title else ""

    # Row k of a method is its k-th curve.
    index: dict[str, int] = {}
    tagged = []
    for r in rows:
        k = index.get(r["method"], 0)
        index[r["method"]] = k + 1
        tagged.append((r, curves[r["method"]][k]))

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, snap in zip(axes[0], panels):
        for m in methods:
            runs = [c for r, c in tagged if r["method"] == m and (snap is None or r.get("snapshot") == snap)]
            if not runs:
                continue
            mean = np.mean(np.array(runs), axis=0)
            ax.plot(np.arange(len(mean)), mean, label=m, drawstyle="steps-post", **styles[m])
        ax.set_xlabel("migrations")
        ax.set_ylabel("fragment rate (share of free vCPU not in 16-vCPU blocks)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"FR vs migrations: {snap}" if snap else f"FR vs migrations, mean of {len(rows) // max(len(methods), 1)} episodes")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"FR vs migrations{where}")
    paths.append(save_figure(fig, run_dir / "fr_vs_migrations.png"))

    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(methods)), 4.5))
    times = [[r["wall_s"] for r in rows if r["method"] == m] for m in methods]
    ax.bar(range(len(methods)), [np.mean(t) for t in times], color="tab:blue", alpha=0.8)
    for i, t in enumerate(times):
        ax.scatter([i] * len(t), t, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(methods)), [_label(m) for m in methods], rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("wall time per plan (s)")
    ax.set_title(f"Time per plan{where}")
    ax.grid(alpha=0.3, axis="y")
    paths.append(save_figure(fig, run_dir / "time_per_plan.png"))

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, snap in zip(axes[0], panels):
        mine = [r for r in rows if snap is None or r.get("snapshot") == snap]
        bases = list(dict.fromkeys(base_method(r["method"]) for r in mine))
        for b in bases:
            ms = [m for m in methods if base_method(m) == b]
            pts = sorted((np.mean([r["wall_s"] for r in mine if r["method"] == m]),
                          np.mean([r["fr_after"] for r in mine if r["method"] == m])) for m in ms)
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=_label(b), color=styles[ms[0]]["color"], alpha=0.85)
        ax.set_xscale("log")
        ax.set_xlabel("wall time per plan (s, log)")
        ax.set_ylabel("final FR (lower is better)")
        ax.set_title(f"quality vs time: {snap}" if snap else "quality vs time, mean over episodes")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Final FR vs time per plan{where}")
    paths.append(save_figure(fig, run_dir / "quality_vs_time.png"))
    return paths


def _label(method: str) -> str:
    """A legend label: an agent's model folder or file name instead of its full path."""
    if not method.startswith("agent:"):
        return method
    path, _, rest = method[len("agent:"):].partition("?")
    p = Path(path)
    name = p.parent.name + "/" + p.name if p.name in ("best", "last", "model.zip") else p.name
    return "agent:" + name + (f"?{rest}" if rest else "")


def _styles(methods: list[str]) -> dict[str, dict]:
    """One colour per base method and a marker each, so that curves that coincide stay visible."""
    from evaluation.vm import base_method

    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:gray", "tab:olive", "tab:cyan"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    bases = list(dict.fromkeys(base_method(m) for m in methods))
    out = {}
    for i, m in enumerate(methods):
        b = bases.index(base_method(m))
        out[m] = {"color": colours[b % len(colours)], "marker": markers[i % len(markers)], "markevery": 5,
                  "markersize": 4, "alpha": 0.85}
    return out


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
