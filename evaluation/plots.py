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


def save_figure(fig, path: Path, dpi: int = 120, bbox_inches: str | None = None) -> Path:
    """Lay out, write and close a matplotlib figure; returns its path (``bbox_inches="tight"`` keeps
    a legend placed outside the axes)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches=bbox_inches)
    plt.close(fig)
    return path


# Line styles that keep curves which lie on top of each other visible: the later ones thinner,
# dashed and marked at staggered steps, so the earlier shows around them.
_LINES = [dict(linestyle="-", linewidth=2.6), dict(linestyle="--", linewidth=1.8), dict(linestyle=":", linewidth=1.8),
          dict(linestyle="-.", linewidth=1.4), dict(linestyle=(0, (5, 1, 1, 1)), linewidth=1.2)]
_MARKERS = ["o", "s", "^", "D", "v", "P"]


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
        drawn: dict[str, np.ndarray] = {}
        for m in methods:
            runs = [c for r, c in tagged if r["method"] == m and (snap is None or r.get("snapshot") == snap)]
            if not runs:
                continue
            mean = np.mean(np.array(runs), axis=0)
            twin = next((o for o, c in drawn.items() if np.array_equal(c, mean)), None)
            drawn[m] = mean
            ax.plot(np.arange(len(mean)), mean, label=_label(m) + (f" (same as {_label(twin)})" if twin else ""),
                    drawstyle="steps-post", **styles[m])
        ax.set_xlabel("migrations")
        ax.set_ylabel("fragment rate (share of free vCPU not in 16-vCPU blocks)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"FR vs migrations: {snap}" if snap else f"FR vs migrations, mean of {len(rows) // max(len(methods), 1)} episodes")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)  # per panel: which curves coincide differs between snapshots
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

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

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
        # Times often span less than a decade: label 1-2-5 steps as plain seconds, none of the minor
        # ticks (matplotlib's own minor labels overlap there).
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("wall time per plan (s, log)")
        ax.set_ylabel("final FR (lower is better)")
        ax.set_title(f"quality vs time: {snap}" if snap else "quality vs time, mean over episodes")
        ax.grid(alpha=0.3, which="both")
    # Beside the panels, not over a panel's points.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 3))
    fig.suptitle(f"Final FR vs time per plan{where}")
    paths.append(save_figure(fig, run_dir / "quality_vs_time.png", bbox_inches="tight"))
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
        # Staggered markers and a line style each: curves on top of each other stay told apart.
        out[m] = {"color": colours[b % len(colours)], "marker": markers[i % len(markers)], "markevery": (i % 5, 5),
                  "markersize": 5, "alpha": 0.85, **_LINES[i % len(_LINES)]}
    return out


def _event_label(spec: dict) -> str:
    """A scenario entry in a few words, e.g. ``"DDoS pulse 60% of capacity"``, ``"node-2 lost"``."""
    kind = spec.get("kind")
    if kind == "ddos":
        size = (f"{spec['capacity_fraction']:.0%} of capacity" if "capacity_fraction" in spec
                else f"{spec.get('rate', 0):g} req/s")
        shape = spec.get("shape", "flood")
        if shape == "pulse":
            period = float(spec.get("period_seconds", 120.0))
            on = period * float(spec.get("duty", 0.5))
            return f"DDoS pulse {size}, {on:g} s on / {period - on:g} s off"
        return f"DDoS flood {size}"
    if kind == "pod_crash":
        services = ", ".join(spec.get("services", ["all services"]))
        parts = []
        if "rate_per_pod_per_hour" in spec:
            parts.append(f"crashes {spec['rate_per_pod_per_hour']:g}/pod/h")
        if "kill" in spec:
            parts.append(f"{spec['kill']} pods killed")
        return f"{' + '.join(parts)}: {services}"
    if kind == "node_loss":
        return f"{spec.get('node')} lost"
    if kind == "contention":
        return f"noisy neighbour on {spec.get('node')}: {spec.get('cpu')} CPU"
    if kind == "bottleneck":
        return f"{spec.get('service')} slowed to {float(spec.get('capacity_factor', 1)):.0%} capacity"
    return str(spec.get("name", kind))


def _events(specs: list[dict], end_minute: float) -> list[tuple[float, float | None, str]]:
    """``(start, end or None for an instant, label)`` of each scenario entry, in window minutes."""
    out = []
    for spec in specs:
        start = float(spec.get("start_minute", 0.0))
        duration = spec.get("duration_minutes")
        instant = spec.get("kind") == "pod_crash" and "kill" in spec and "rate_per_pod_per_hour" not in spec
        end = None if instant else (end_minute if duration is None else min(start + float(duration), end_minute))
        out.append((start, end, _event_label(spec)))
    return out




def _method_styles(methods: list[str], length: int) -> dict[str, dict]:
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    every = max(1, length // 12)
    return {m: {**_LINES[i % len(_LINES)], "color": colours[i % len(colours)], "marker": _MARKERS[i % len(_MARKERS)],
                "markersize": 4, "markevery": (i * every // max(len(methods), 1), every)}
            for i, m in enumerate(methods)}


def _same_as(series: dict[str, np.ndarray], methods: list[str]) -> dict[str, str]:
    """Method -> the earlier method whose curve it repeats exactly (said in the legend)."""
    out = {}
    for i, m in enumerate(methods):
        for earlier in methods[:i]:
            if earlier not in out and np.array_equal(series[m], series[earlier]):
                out[m] = earlier
                break
    return out


def plot_autoscaling(run_dir: Path, rows: list[dict], data: dict, title: str = "") -> list[Path]:
    """Load, p95 latency and replicas over time per scenario; SLO-violation minutes per scenario.

    Every time-series figure shades the scenario's events (failure and attack windows, an instant
    kill as a line) on all three panels and names them; the latency panel draws the SLO and the
    latency cap; load and replica axes start at 0; a method whose curve repeats another's exactly
    says so in the legend, and the line styles keep both visible. A pulsed DDoS is drawn as its
    envelope and its mean over a period, not as hundreds of on/off steps. Every title names the
    trace window(s) the episodes played (their first minute), and the time axis counts minutes
    from the drawn episode's first minute.

    Args:
        run_dir: where the PNGs go.
        rows: the per-episode rows of :func:`evaluation.autoscaling.evaluate_autoscaling`.
        data: its second return value (``series``, ``step_minutes``, ``scenarios``, ``methods``,
            ``specs``, ``slo_latency_s``, ``latency_cap_s``, ``split``, ``window_start``).
        title: what was evaluated (the config's name), shown in every title.

    Returns:
        The paths written: ``timeseries_<scenario>.png`` each, then ``slo_minutes_by_scenario.png``.
    """
    plt = _pyplot()
    paths = []
    methods = list(data["methods"])
    labels = {m: _label(m) for m in methods}
    slo, cap = data.get("slo_latency_s"), data.get("latency_cap_s")
    name = title or data.get("config", "")
    split = {"held_out": "held-out", "train": "train"}.get(data.get("split", "held_out"), data.get("split"))
    start = data.get("window_start")
    episode = f"first {split} episode" + (f", window from {start}" if start else "")
    for scenario in data["scenarios"]:
        series = {m: data["series"][(scenario, m)] for m in methods}
        first = series[methods[0]]
        steps = len(first["offered_rate"])
        minutes = np.arange(steps) * data["step_minutes"]
        end = steps * data["step_minutes"]
        styles = _method_styles(methods, steps)
        fig, axes = plt.subplots(3, 1, figsize=(13, 9), sharex=True)
        events = _events(data.get("specs", {}).get(scenario, []), end)

        # Load: every method sees the same load, drawn once. The attack is its own band.
        ax = axes[0]
        attack = np.asarray(first.get("attack_rate", np.zeros(steps)), dtype=float)
        legit = np.asarray(first["offered_rate"], dtype=float) - attack
        ax.plot(minutes, legit, color="black", linewidth=1.5, label="trace load (req/s)", drawstyle="steps-post")
        if attack.any():
            pulses = [e for e in data.get("specs", {}).get(scenario, []) if e.get("kind") == "ddos" and e.get("shape") == "pulse"]
            on = _active(pulses, minutes, end)
            if on.any():
                # A pulse switches every few steps: drawn step by step it paints a solid block. Its
                # envelope (the load while on) and its mean over the pulses say the same, readably.
                peak = np.where(on, attack[on].max(), 0.0)
                ax.fill_between(minutes, legit, legit + peak, where=on, color="tab:red", alpha=0.18, step="post",
                                linewidth=0, label="trace + DDoS while a pulse is on")
                ax.plot(minutes, legit + np.where(on, attack[on].mean(), 0.0), color="tab:red", linewidth=1.5,
                        drawstyle="steps-post", label="trace + DDoS, mean over the pulses")
                attack = np.where(on, 0.0, attack)  # the rest (a flood alongside) is drawn as it is
            if attack.any():
                ax.fill_between(minutes, legit, legit + attack, color="tab:red", alpha=0.3, step="post", linewidth=0,
                                label="DDoS requests (flood)")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("offered load (req/s)")

        # Latency: SLO line and the cap.
        ax = axes[1]
        same = _same_as({m: series[m]["e2e_latency_p95"] for m in methods}, methods)
        for m in methods:
            label = labels[m] + (f" (same as {labels[same[m]]})" if m in same else "")
            ax.plot(minutes, series[m]["e2e_latency_p95"], label=label, drawstyle="steps-post", **styles[m])
        if slo is not None:
            ax.axhline(slo, color="tab:red", linestyle="--", linewidth=1.2, label=f"SLO: p95 {slo:g} s")
        if cap is not None:
            ax.axhline(cap, color="grey", linestyle=":", linewidth=1.2,
                       label=f"cap {cap:g} s: the entry's timeout (callers give up, p95 reads no higher)")
        ax.set_yscale("log")
        low = min(float(np.min(series[m]["e2e_latency_p95"])) for m in methods)
        top = max([float(np.max(series[m]["e2e_latency_p95"])) for m in methods] + [slo or 0, cap or 0])
        ax.set_ylim(max(low, 1e-3) / 1.6, top * 1.4)
        ax.yaxis.set_major_formatter(_plain_numbers())
        ax.yaxis.set_minor_formatter(_plain_numbers(minor=True))
        ax.set_ylabel("end-to-end p95 (s, log scale)")

        ax = axes[2]
        same = _same_as({m: series[m]["replicas"] for m in methods}, methods)
        for m in methods:
            label = labels[m] + (f" (same as {labels[same[m]]})" if m in same else "")
            ax.plot(minutes, series[m]["replicas"], label=label, drawstyle="steps-post", **styles[m])
        ax.set_ylim(bottom=0)
        ax.set_ylabel("replicas (all services)")
        ax.set_xlabel(f"minutes since {start}" if start else f"minutes into the {split} window")

        _mark_events(axes, events)
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.set_xlim(0, end)
            # Beside the panel, not over the curves.
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.suptitle(f"{name}: scenario {scenario}, {episode}" if name else f"scenario {scenario}, {episode}")
        paths.append(save_figure(fig, run_dir / f"timeseries_{scenario}.png"))

    scenarios = data["scenarios"]
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(scenarios) * max(1, len(methods) / 3)), 4.8))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        means = [np.mean([r["slo_violation_minutes"] for r in rows if r["scenario"] == sc and r["method"] == method])
                 for sc in scenarios]
        bars = ax.bar(np.arange(len(scenarios)) + i * width, means, width, label=labels[method])
        # Every bar carries its value, so that a zero (no bar at all) reads "0", not "missing".
        ax.bar_label(bars, labels=[f"{v:.1f}" if v else "0" for v in means], fontsize=7, padding=2)
    ax.set_xticks(np.arange(len(scenarios)) + 0.4 - width / 2, scenarios, rotation=30, ha="right")
    ax.set_ylim(bottom=0, top=max([ax.get_ylim()[1], 1.0]) * 1.08)
    ax.set_ylabel("SLO-violation minutes (mean over episodes)")
    ax.set_title(f"SLO-violation minutes per scenario{f' ({name})' if name else ''}\n{_windows_label(rows, split)}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    paths.append(save_figure(fig, run_dir / "slo_minutes_by_scenario.png"))
    return paths


def _windows_label(rows: list[dict], split: str) -> str:
    """The trace windows the rows played, in a few words: one start, a few, or their range."""
    starts = sorted({r["window_start"] for r in rows if r.get("window_start")})
    if not starts:
        return f"{split} windows"
    if len(starts) == 1:
        return f"{split} window from {starts[0]}"
    if len(starts) <= 3:
        return f"{split} windows from {', '.join(starts)}"
    return f"{len(starts)} {split} windows from {starts[0]} to {starts[-1]}"


def _active(specs: list[dict], minutes: np.ndarray, end: float) -> np.ndarray:
    """Steps inside any of the entries' windows (start to start + duration, or to the end)."""
    on = np.zeros(len(minutes), bool)
    for start, stop, _ in _events(specs, end):
        on |= (minutes >= start) & (minutes < (stop if stop is not None else end))
    return on


def _plain_numbers(minor: bool = False):
    """Tick labels as plain numbers (0.5, 2), not powers of ten; minor ones only at 2 and 5."""
    from matplotlib.ticker import FuncFormatter

    def fmt(value, _):
        mantissa = value / 10 ** np.floor(np.log10(value)) if value > 0 else 0
        return "" if minor and round(mantissa) not in (2, 5) else f"{value:g}"
    return FuncFormatter(fmt)


def _mark_events(axes, events: list[tuple[float, float | None, str]]) -> None:
    """Shade each event's window (a line for an instant) on every panel, named in the first panel's legend."""
    colours = ["tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink"]
    for k, (start, end, label) in enumerate(events):
        colour = colours[k % len(colours)]
        for i, ax in enumerate(axes):
            if end is None:  # an instant (pods killed): a line
                ax.axvline(start, color=colour, linewidth=2, alpha=0.7,
                           label=f"at {start:g} min: {label}" if i == 0 else None)
            else:
                ax.axvspan(start, end, color=colour, alpha=0.12, linewidth=0,
                           label=f"{start:g}-{end:g} min: {label}" if i == 0 else None)
