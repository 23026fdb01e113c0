"""Pod packing: the Alibaba openb replay, Pending pods over time per policy (research use only, never a default).

A replay config (``configs/pod_packing/openb_replay.yaml``) has ``pod_scenarios.source: openb_replay``.
The subset replayed, because the CP-SAT model and preemption cover CPU and memory only: the pods
that ask for no GPU (1,088 of the 8,152) on the first ``max_nodes`` CPU-only nodes of the node
list (310 exist; openb's CPU pods peak at 15 at once and 256 cores, so a few nodes make them
contend), optionally the first ``max_pods`` of them by creation. Each pod arrives at its
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

Outputs: ``pending_over_time.csv`` (one row per policy and event instant: Pending pods per tier,
running pods, solves and the fallback's evictions and moves so far), ``summary.json`` /
``table.md`` (per policy: Pending pod-hours and the peak per tier, solves, disruption) and
``pending_over_time.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from digital_twin.cli import ConfigError, did_you_mean
from evaluation.pods import cpsat_settings

REPLAY_KEYS = ("source", "trace_dir", "max_nodes", "max_pods")
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
    for key, default in (("max_nodes", 4), ("max_pods", None)):
        value = sc.get(key, default)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{path}: pod_scenarios.{key} must be a whole number >= 1, got {value!r}")
        out[key] = value
    sched, cp = dict(doc.get("scheduler") or {}), dict(doc.get("cpsat") or {})
    for section, value, allowed in (("scheduler", sched, ("scoring_strategy",)), ("cpsat", cp, ("time_limits_s", "workers"))):
        for key in value:
            if key not in allowed:
                raise ConfigError(f"{path}: unknown key '{section}.{key}'{did_you_mean(key, allowed)}; "
                                  f"allowed under {section} for a replay: {', '.join(allowed)}")
    try:
        out["default_scheduler"] = DefaultScheduler(strategy=sched.get("scoring_strategy", "LeastAllocated"))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    out.update(cpsat_settings(path, cp, default_limits=[1]))
    return out


def replay_cluster(config: dict[str, Any]):
    """The subset the module states, every pod Pending: ``(cluster, creation, deletion)`` (seconds, per pod)."""
    from digital_twin.pods import PodCluster, load_openb, load_openb_lifetimes

    trace = config["trace_dir"]
    full = load_openb(trace / NODE_FILE, trace / POD_FILE)
    times = load_openb_lifetimes(trace / POD_FILE)
    nodes = np.flatnonzero(full.gpu_count == 0)[:config["max_nodes"]]
    cpu_pods = np.flatnonzero(full.pod_num_gpu == 0)
    cpu_pods = cpu_pods[np.argsort(full.pod_start[cpu_pods], kind="stable")][:config["max_pods"]]
    created = np.array([times[full.pod_names[i]][0] for i in cpu_pods])
    deleted = np.array([times[full.pod_names[i]][1] for i in cpu_pods])
    cluster = PodCluster([full.node_names[j] for j in nodes], full.cpu_capacity[nodes], full.memory_capacity[nodes],
                         [full.pod_names[i] for i in cpu_pods], full.pod_cpu[cpu_pods], full.pod_memory[cpu_pods],
                         full.pod_priority[cpu_pods], pod_start=created, name="openb-cpu")
    return cluster, created, deleted


def run_policy(cluster, created: np.ndarray, deleted: np.ndarray, scheduler, time_limit_s: float | None,
               workers: int = 1, progress: bool = False, label: str = "") -> list[dict[str, Any]]:
    """Replay on a copy of ``cluster``; ``time_limit_s`` None is the default alone. One row per event instant."""
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
            steps, _ = fallback_steps(c, np.flatnonzero(live), time_limit_s, workers=workers)
            for step in steps:                       # every step through the twin's checks
                if step.kind == "evict":
                    c.evict(step.pod)
                    evictions += 1
                elif step.kind == "move":
                    c.move(step.pod, step.node)
                    moves += 1
                else:
                    c.bind(step.pod, step.node)
            solves += 1
            changed = False
        pending = live & c.pending
        row = {"policy": "default" if time_limit_s is None else f"default+cpsat@{time_limit_s:g}s",
               "time_s": float(t), "day": round(float(t) / 86400, 5), "live": int(live.sum()),
               "running": int((live & c.running).sum()), "pending": int(pending.sum())}
        for tier in tiers:
            row[f"pending_{TIER_NAMES.get(tier, tier)}"] = int((pending & (c.pod_priority == tier)).sum())
        row.update(solves=solves, evictions=evictions, moves=moves)
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
    out.update(solves=rows[-1]["solves"], evictions=rows[-1]["evictions"], moves=rows[-1]["moves"])
    return out


def plot_replay(run_dir: Path, rows: list[dict[str, Any]], tiers: list[str], title: str) -> Path:
    """One panel per tier (Pending pods over trace days), one line per policy, plus the running pods."""
    from evaluation.plots import _pyplot, save_figure

    plt = _pyplot()
    shown = [n for n in tiers if any(r[f"pending_{n}"] for r in rows)] or tiers[:1]
    fig, axes = plt.subplots(len(shown) + 1, 1, figsize=(11, 2.4 * (len(shown) + 1)), sharex=True)
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy]
        day = [r["day"] for r in mine]
        for ax, name in zip(axes, shown):
            ax.step(day, [r[f"pending_{name}"] for r in mine], where="post", label=policy, linewidth=1)
        axes[-1].step(day, [r["running"] for r in mine], where="post", label=policy, linewidth=1)
    for ax, name in zip(axes, shown):
        ax.set_ylabel(f"Pending {name}\npods")
        ax.legend(fontsize=8, loc="upper left")
    axes[-1].set_ylabel("running pods")
    axes[-1].set_xlabel("trace time (days)")
    fig.suptitle(title)
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
    for limit in [None] + limits:
        rows += run_policy(cluster, created, deleted, config["default_scheduler"], limit, workers=config["workers"],
                           progress=not args.no_progress, label="default" if limit is None else f"cpsat@{limit:g}s")
    summary = [summarise_policy([r for r in rows if r["policy"] == p], tiers) for p in dict.fromkeys(r["policy"] for r in rows)]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_csv(run_dir / "pending_over_time.csv", rows)
    keys = ["pending_pod_hours", "pending_peak"] + [f"pending_{n}_pod_hours" for n in tiers] + ["solves", "evictions", "moves"]
    table = "| policy | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n" + "".join(
        f"| {s['policy']} | " + " | ".join(str(s[k]) for k in keys) + " |\n" for s in summary)
    subset = (f"openb CPU-only pods ({cluster.num_pods}) on the first {cluster.num_nodes} CPU-only nodes "
              f"({cluster.cpu_capacity[0]} m, {cluster.memory_capacity[0]} MiB each); research-use trace")
    (run_dir / "table.md").write_text(table + "\n" + subset + "\n")
    plot = plot_replay(run_dir, rows, tiers, f"{config_path.stem}: {subset}")
    write_json(run_dir / "summary.json", {"command": command, "config": str(config_path), "subset": subset,
                                          "nodes": cluster.node_names, "pods": cluster.num_pods, "summary": summary})
    print(table)
    print(subset)
    print(f"\nresults in {run_dir}: pending_over_time.csv, summary.json, table.md, {plot.name}")
    return 0
