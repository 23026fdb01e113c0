"""Pod packing: the Alibaba openb replay, Pending pods over time per policy (research use only, never a default).

A replay config (``configs/pod_packing/openb_replay.yaml``) has ``pod_scenarios.source: openb_replay``.
The subset replayed: the pods that ask for no GPU (1,088 of the 8,152) on the first ``max_nodes``
CPU-only nodes of the node list (310 exist; openb's CPU pods peak at 15 at once and 256 cores, so
a few nodes make them contend); with ``max_gpu_nodes`` (default 0) also the first that many GPU
nodes of the list and the GPU pods that fit one of the subset's nodes when empty (the CP-SAT
fallback places them on GPUs as the twin does); optionally the first ``max_pods`` of them by creation. Each pod arrives at its
``creation_time`` and leaves at its ``deletion_time`` (running or still Pending).

Events are taken in time order; at each instant, departures first, then arrivals. The queue is
kube-scheduler's: arrivals join the active queue, which is emptied in ``PrioritySort`` order
(:func:`agents.pods.queue_order`), each pod bound where the default scheduler's filter and
score put it (no preemption); a pod that fits nowhere waits, unschedulable, until a running pod
leaves (NodeResourcesFit's queueing hint), when every waiting pod goes back to the active queue.
Policies:

* ``default``: that alone;
* ``default+cpsat@Ts``: after the default's pass, while pods stay Pending and something arrived or
  left since the last solve, the CP-SAT fallback (:func:`agents.pods.fallback_steps`) re-places
  the live pods within ``T`` s; its steps (evictions, moves, binds) are applied through the twin,
  each checked; a pod it evicts and leaves Pending waits like any other.

With ``cpsat.neighbourhood: K``, each solve re-places on at most ``K`` nodes (:func:`agents.pods.neighbourhood`:
the nodes nearest to taking the Pending pods and the roomiest), so that the model is built within the window
on a large cluster (the policy is then ``default+cpsat@Ts/Knodes``); ``all`` (the default) re-places on every
node, and a list (``[all, 64]``) runs the fallback once per entry.

Outputs: ``pending_over_time.csv`` (one row per policy and event instant: Pending pods per tier,
running pods, solves and the fallback's evictions and moves so far, the longest solve and the solves
whose window ended before any stage ran), ``summary.json`` /
``table.md`` (per policy: Pending pod-hours and the peak per tier, solves, disruption, those two) and
``pending_over_time.png`` (Pending pods per tier, their pod-hours so far, running pods; the time
axis starts where the pods arrive, :func:`plot_start`).
"""

from __future__ import annotations

import argparse
import textwrap
import sys
from pathlib import Path
from typing import Any

import numpy as np

from digital_twin.cli import ConfigError, did_you_mean
from evaluation.pods import cpsat_settings

REPLAY_KEYS = ("source", "trace_dir", "max_nodes", "max_gpu_nodes", "max_pods")
TIER_NAMES = {3: "LS", 2: "Guaranteed", 1: "Burstable", 0: "BE"}
"""The openb QoS class of each priority (:data:`digital_twin.pods.QOS_PRIORITY` inverted)."""
NODE_FILE, POD_FILE = "openb_node_list_all_node.csv", "openb_pod_list_default.csv"


def load_replay_config(path: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The checked replay config (``pod_scenarios`` with ``source: openb_replay``, ``scheduler``, ``cpsat``).

    Raises:
        ConfigError: an unknown key (with did-you-mean) or a bad value, naming the file.
    """
    from agents.pods import DefaultScheduler

    allowed_top = ("name", "description", "pod_scenarios", "scheduler", "cpsat")
    for key in doc:
        if key not in allowed_top:
            raise ConfigError(f"{path}: unknown key {key!r}{did_you_mean(key, allowed_top)}; allowed: {', '.join(allowed_top)}")
    sc = dict(doc["pod_scenarios"])
    for key in sc:
        if key not in REPLAY_KEYS:
            raise ConfigError(f"{path}: unknown key 'pod_scenarios.{key}'{did_you_mean(key, REPLAY_KEYS)}; "
                              f"allowed under pod_scenarios with source openb_replay: {', '.join(REPLAY_KEYS)}")
    trace = Path(str(sc.get("trace_dir", "../shared/traces/alibaba_openb")))
    if not (trace / NODE_FILE).is_file() or not (trace / POD_FILE).is_file():
        raise ConfigError(f"{path}: pod_scenarios.trace_dir {trace} does not hold {NODE_FILE} and {POD_FILE} "
                          "(the Alibaba openb lists)")
    out: dict[str, Any] = {"name": doc.get("name", path.stem), "trace_dir": trace}
    for key, default, low in (("max_nodes", 4, 1), ("max_gpu_nodes", 0, 0), ("max_pods", None, 1)):
        value = sc.get(key, default)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise ConfigError(f"{path}: pod_scenarios.{key} must be a whole number >= {low}, got {value!r}")
        out[key] = value
    sched, cp = dict(doc.get("scheduler") or {}), dict(doc.get("cpsat") or {})
    for section, value, allowed in (("scheduler", sched, ("scoring_strategy",)),
                                    ("cpsat", cp, ("time_limits_s", "workers", "neighbourhood"))):
        for key in value:
            if key not in allowed:
                raise ConfigError(f"{path}: unknown key '{section}.{key}'{did_you_mean(key, allowed)}; "
                                  f"allowed under {section} for a replay: {', '.join(allowed)}")
    try:
        out["default_scheduler"] = DefaultScheduler(strategy=sched.get("scoring_strategy", "LeastAllocated"))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    out.update(cpsat_settings(path, {k: v for k, v in cp.items() if k != "neighbourhood"}, default_limits=[1]))
    given = cp.get("neighbourhood", "all")
    hoods = given if isinstance(given, list) and given else [given]
    if not all(h == "all" or (isinstance(h, int) and not isinstance(h, bool) and h >= 1) for h in hoods):
        raise ConfigError(f"{path}: cpsat.neighbourhood must be 'all', a whole number >= 1 (the most nodes CP-SAT "
                          f"re-places on) or a list of those (one fallback policy each), got {given!r}")
    out["neighbourhoods"] = [None if h == "all" else h for h in hoods]
    return out


def replay_cluster(config: dict[str, Any]):
    """The subset the module states, every pod Pending: ``(cluster, creation, deletion)`` (seconds, per pod)."""
    from digital_twin.pods import PodCluster, load_openb, load_openb_lifetimes

    trace = config["trace_dir"]
    full = load_openb(trace / NODE_FILE, trace / POD_FILE)
    times = load_openb_lifetimes(trace / POD_FILE)
    nodes = np.flatnonzero(full.gpu_count == 0)[:config["max_nodes"]]
    gpu_nodes = np.flatnonzero(full.gpu_count > 0)[:config.get("max_gpu_nodes", 0)]
    nodes = np.concatenate([nodes, gpu_nodes])
    # a pod joins if it fits some node of the subset when empty (CPU-only pods always do on openb's nodes)
    fits_empty = full.fits_empty()[:, nodes].any(axis=1)
    pods = np.flatnonzero((full.pod_num_gpu == 0) | (fits_empty & (len(gpu_nodes) > 0)))
    pods = pods[np.argsort(full.pod_start[pods], kind="stable")][:config["max_pods"]]
    created = np.array([times[full.pod_names[i]][0] for i in pods])
    deleted = np.array([times[full.pod_names[i]][1] for i in pods])
    cluster = PodCluster([full.node_names[j] for j in nodes], full.cpu_capacity[nodes], full.memory_capacity[nodes],
                         [full.pod_names[i] for i in pods], full.pod_cpu[pods], full.pod_memory[pods],
                         full.pod_priority[pods], node_gpus=full.gpu_count[nodes], pod_num_gpu=full.pod_num_gpu[pods],
                         pod_gpu_milli=full.pod_gpu_milli[pods], pod_start=created,
                         name="openb-gpu" if len(gpu_nodes) else "openb-cpu")
    return cluster, created, deleted


def run_policy(cluster, created: np.ndarray, deleted: np.ndarray, scheduler, time_limit_s: float | None,
               workers: int = 1, progress: bool = False, label: str = "", max_nodes: int | None = None) -> list[dict[str, Any]]:
    """Replay on a copy of ``cluster``; ``time_limit_s`` None is the default alone; ``max_nodes``: the fallback's
    neighbourhood (:func:`agents.pods.fallback_steps`). One row per event instant."""
    from tqdm import tqdm

    from agents.pods import fallback_steps, queue_order

    c = cluster.copy()
    tiers = c.tiers
    instants = np.unique(np.concatenate([created, deleted]))
    by_arrival, by_departure = np.argsort(created, kind="stable"), np.argsort(deleted, kind="stable")
    arrive_at = np.searchsorted(created[by_arrival], instants, side="right")
    depart_at = np.searchsorted(deleted[by_departure], instants, side="right")
    live = np.zeros(c.num_pods, dtype=bool)
    rows, solves, evictions, moves, changed = [], 0, 0, 0, False
    solve_max_s, unsolved = 0.0, 0
    a0 = d0 = 0
    for k, t in enumerate(tqdm(instants, desc=label or "replay", disable=not progress, file=sys.stderr)):
        leaving = by_departure[d0:depart_at[k]]
        arriving = by_arrival[a0:arrive_at[k]]
        a0, d0 = arrive_at[k], depart_at[k]
        freed = False
        for pod in leaving:
            if c.pod_node[pod] >= 0:
                c.evict(int(pod))                    # the pod is deleted: its room is free
                freed = True
        live[leaving] = False
        live[arriving] = True
        changed |= len(leaving) > 0 or len(arriving) > 0
        active = (live & c.pending) if freed else np.zeros_like(live)
        active[arriving] = True
        for pod in queue_order(c, np.flatnonzero(active & live)):
            node = scheduler.select_node(c, int(pod))
            if node is not None:   # else it waits, unschedulable, until a running pod leaves
                c.bind(int(pod), node)
        if time_limit_s is not None and changed and (live & c.pending).any():
            steps, result = fallback_steps(c, np.flatnonzero(live), time_limit_s, workers=workers, max_nodes=max_nodes)
            solve_max_s = max(solve_max_s, result.wall_s)
            unsolved += all(s.status == "NOT_RUN" for s in result.stages)   # the window spent building the model
            for step in steps:                       # every step through the twin's checks
                if step.kind == "evict":
                    c.evict(step.pod)
                    evictions += 1
                elif step.kind == "move":
                    c.move(step.pod, step.node, step.gpus)
                    moves += 1
                else:
                    c.bind(step.pod, step.node, step.gpus)
            solves += 1
            changed = False
        pending = live & c.pending
        row = {"policy": "default" if time_limit_s is None else f"default+cpsat@{time_limit_s:g}s"
                         + (f"/{max_nodes}nodes" if max_nodes is not None and max_nodes < c.num_nodes else ""),
               "time_s": float(t), "day": round(float(t) / 86400, 5), "live": int(live.sum()),
               "running": int((live & c.running).sum()), "pending": int(pending.sum())}
        for tier in tiers:
            row[f"pending_{TIER_NAMES.get(tier, tier)}"] = int((pending & (c.pod_priority == tier)).sum())
        row.update(solves=solves, evictions=evictions, moves=moves, solve_max_s=round(solve_max_s, 3),
                   solves_no_stage=unsolved)
        rows.append(row)
    if c.capacity_violations():
        raise RuntimeError(f"replay {label}: capacity exceeded: {c.capacity_violations()[0]}")
    return rows


def summarise_policy(rows: list[dict[str, Any]], tiers: list[str]) -> dict[str, Any]:
    """Pending pod-hours (the step curve's integral) and peak per tier, solves and disruption."""
    t = np.array([r["time_s"] for r in rows])
    dt = np.diff(t, append=t[-1]) / 3600
    out: dict[str, Any] = {"policy": rows[0]["policy"]}
    for name in ["pending"] + [f"pending_{n}" for n in tiers]:
        values = np.array([r[name] for r in rows])
        out[f"{name}_pod_hours"] = round(float((values * dt).sum()), 2)
        out[f"{name}_peak"] = int(values.max())
    out.update({k: rows[-1][k] for k in ("solves", "evictions", "moves", "solve_max_s", "solves_no_stage")})
    return out


QUIET_SHARE, LEAD_SHARE = 0.1, 0.05
"""The plot leaves off a lead-in of the replay (at most ``LEAD_SHARE`` of its event instants, nothing
Pending) that ends in a stretch with no arrival or departure for over ``QUIET_SHARE`` of the
replayed span (:func:`plot_start`)."""


def plot_start(rows: list[dict[str, Any]]) -> float:
    """Seconds where the plot's time axis starts: where the pods arrive.

    That is the first creation time of the replayed pods, unless the replay opens with a few
    early events and then a quiet stretch (:data:`QUIET_SHARE`, :data:`LEAD_SHARE`), nothing
    Pending under any policy: then it is the first event after the last such stretch. Nothing
    changes during a quiet stretch, so nothing Pending is left off. (openb: the first CPU pod
    arrives at day 31.9, the next at day 103.7, the other 1,086 from day 115.6.)
    """
    times = np.array([r["time_s"] for r in rows])
    instants = np.unique(times)
    pending = np.zeros(len(instants), dtype=bool)
    pending[np.searchsorted(instants, times[[r["pending"] > 0 for r in rows]])] = True
    span = instants[-1] - instants[0]
    start = instants[0]
    for k in range(1, len(instants)):
        if pending[k - 1] or k > LEAD_SHARE * len(instants):
            break
        if instants[k] - instants[k - 1] > QUIET_SHARE * span:
            start = instants[k]
    return float(start)


def plot_replay(run_dir: Path, rows: list[dict[str, Any]], tiers: list[str], title: str) -> Path:
    """Pending pods over trace days, per tier and policy, their pod-hours so far, and the running pods.

    The time axis runs from :func:`plot_start` to the last event; an early lead-in left off is
    named under the axis. Each policy's legend entry gives its Pending pod-hours in that tier.
    """
    from matplotlib.ticker import MaxNLocator

    from evaluation.plots import _pyplot, save_figure

    plt = _pyplot()
    shown = [n for n in tiers if any(r[f"pending_{n}"] for r in rows)] or tiers[:1]
    fig, axes = plt.subplots(len(shown) + 2, 1, figsize=(11, 2.2 * (len(shown) + 2)), sharex=True)
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    tier_lines = ["-", "--", ":", "-."]
    for i, policy in enumerate(policies):
        mine = [r for r in rows if r["policy"] == policy]
        day = np.array([r["day"] for r in mine])
        hours = np.diff(np.array([r["time_s"] for r in mine]), append=mine[-1]["time_s"]) / 3600
        # The first policy drawn thicker and behind, so that where the curves agree both show.
        style = dict(color=colours[i % len(colours)], linewidth=1.6 if i == 0 else 0.9, zorder=2 + i)
        for k, (ax, name) in enumerate(zip(axes, shown)):
            values = np.array([r[f"pending_{name}"] for r in mine])
            total = float((values * hours).sum())
            ax.step(day, values, where="post", label=f"{policy} ({total:.1f} pod-h)", **style)
            # Pod-hours so far: the integral of the step curve up to each instant.
            cumulative = np.concatenate([[0.0], np.cumsum(values * hours)[:-1]])
            axes[-2].plot(day, cumulative, label=f"{policy}, {name}", linestyle=tier_lines[k % len(tier_lines)],
                          **style)
        axes[-1].step(day, [r["running"] for r in mine], where="post", label=policy, **style)
    for ax, name in zip(axes, shown):
        ax.set_ylabel(f"Pending {name}\npods")
        ax.legend(fontsize=8, loc="upper left", framealpha=0.9)
    axes[-2].set_ylabel("Pending\npod-hours so far")
    axes[-2].legend(fontsize=8, loc="upper left", framealpha=0.9, ncol=len(policies))
    axes[-1].set_ylabel("running pods")
    axes[-1].legend(fontsize=8, loc="upper left", framealpha=0.9)
    for ax in axes:
        ax.set_ylim(0, max(ax.get_ylim()[1], 1) * 1.3)   # headroom for the legend
        ax.grid(alpha=0.3)
        if ax is not axes[-2]:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))   # pod counts
    start, end = plot_start(rows), max(r["time_s"] for r in rows)
    axes[-1].set_xlim(start / 86400, max(end, start + 1) / 86400)
    label = "trace time (days)"
    lead = [r for r in rows if r["policy"] == policies[0] and r["time_s"] < start]
    if lead:
        label += (f"; left off: day {lead[0]['day']:.4g} (the first arrival) to {start / 86400:.4g}, "
                  f"at most {max(r['live'] for r in lead)} pod(s) live, none Pending")
    axes[-1].set_xlabel(label)
    fig.suptitle(textwrap.fill(title, 110))   # a long subset line would run off the figure
    return save_figure(fig, run_dir / "pending_over_time.png")


def evaluate_replay_command(config_path: Path, doc: dict[str, Any], args: argparse.Namespace, run_dir: Path,
                            command: str) -> int:
    """``evaluate.py`` on an openb replay config: every policy, then the CSV, summary, table and plot."""
    from evaluation.tables import write_csv, write_json

    config = load_replay_config(config_path, doc)
    cluster, created, deleted = replay_cluster(config)
    tiers = [TIER_NAMES.get(t, str(t)) for t in cluster.tiers]
    limits = list(args.time_limits or config["time_limits_s"])
    rows = []
    policies = [(None, None)] + [(limit, hood) for limit in limits for hood in config["neighbourhoods"]]
    for limit, hood in policies:
        rows += run_policy(cluster, created, deleted, config["default_scheduler"], limit, workers=config["workers"],
                           progress=not args.no_progress, max_nodes=hood,
                           label="default" if limit is None else f"cpsat@{limit:g}s" + (f"/{hood}nodes" if hood else ""))
    summary = [summarise_policy([r for r in rows if r["policy"] == p], tiers) for p in dict.fromkeys(r["policy"] for r in rows)]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_csv(run_dir / "pending_over_time.csv", rows)
    keys = (["pending_pod_hours", "pending_peak"] + [f"pending_{n}_pod_hours" for n in tiers]
            + ["solves", "evictions", "moves", "solve_max_s", "solves_no_stage"])
    table = "| policy | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n" + "".join(
        f"| {s['policy']} | " + " | ".join(str(s[k]) for k in keys) + " |\n" for s in summary)
    subset = (f"openb CPU-only pods ({cluster.num_pods}) on the first {cluster.num_nodes} CPU-only nodes "
              f"({cluster.cpu_capacity[0]} m, {cluster.memory_capacity[0]} MiB each); research-use trace")
    if cluster.max_gpus:
        cpu_nodes = int((cluster.gpu_count == 0).sum())
        subset = (f"openb pods ({cluster.num_pods}, {int((cluster.pod_num_gpu > 0).sum())} with GPUs) on the first "
                  f"{cpu_nodes} CPU-only and first {cluster.num_nodes - cpu_nodes} GPU nodes "
                  f"({int(cluster.gpu_count.sum())} GPUs); research-use trace")
    (run_dir / "table.md").write_text(table + "\n" + subset + "\n")
    plot = plot_replay(run_dir, rows, tiers, f"{config_path.stem}: {subset}")
    write_json(run_dir / "summary.json", {"command": command, "config": str(config_path), "subset": subset,
                                          "nodes": cluster.node_names, "pods": cluster.num_pods, "summary": summary})
    print(table)
    print(subset)
    print(f"\nresults in {run_dir}: pending_over_time.csv, summary.json, table.md, {plot.name}")
    return 0
