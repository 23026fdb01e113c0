"""Command line for the VM-rescheduling twin.

    python -m digital_twin.vm demo                     # bundled real snapshot, greedy plan
    python -m digital_twin.vm demo --snapshot FILE --budget 50 --planner ffd
    python -m digital_twin.vm info FILE                # load, report disagreements, print metrics
    python -m digital_twin.vm replay --split dev --hosts 236 --fractions 0.75 1.0 --out-dir snaps/

The demo needs a planner to drive the twin; planners live in ``agents.vm`` and are looked up by name
only when ``demo`` runs (``info`` and ``replay`` need none).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from digital_twin.resources import bundled_path
from digital_twin.vm.cluster import Migration
from digital_twin.vm.snapshot import Snapshot, SnapshotConsistencyWarning, SnapshotError, load_snapshot, save_snapshot

DEFAULT_SNAPSHOT = bundled_path("data/vmr2l_snapshots/reset_vm_pm_id_clear2.json")


def _load(path: str, strict: bool) -> Snapshot:
    with warnings.catch_warnings():
        # The report is printed below in full; the warning would repeat it.
        warnings.simplefilter("ignore", SnapshotConsistencyWarning)
        return load_snapshot(path, strict=strict)


def _print_state(snapshot: Snapshot, title: str) -> None:
    m = snapshot.metrics()
    print(f"{title}: FR(16) {m['fragment_rate']:.4f}  FR(8) {m['fragment_rate_8']:.4f}  "
          f"FR(32) {m['fragment_rate_32']:.4f}  migrations {m['num_migrations']}  "
          f"memory moved {m['memory_moved_mb'] / 1024:.1f} GiB")
    for c in snapshot.clusters:
        print(f"  {c.name}: {c.num_hosts} hosts, {c.num_vms} VMs, FR(16) {c.fragment_rate():.4f}, "
              f"free vCPU {c.fragment_sums()[1]}")
    cap = ", ".join(f"{k} {v}" for k, v in m["new_vm_capacity"].items())
    print(f"  new VMs that fit (each type alone): {cap}")


def cmd_info(args: argparse.Namespace) -> int:
    snapshot = _load(args.snapshot, args.strict)
    print(snapshot.report.summary())
    _print_state(snapshot, "snapshot")
    return 0


def apply_plan(snapshot: Snapshot, moves: list[tuple[int, int, int, int]]) -> list[tuple[int, Migration]]:
    """Make a plan's ``(cluster index, vm, host, placement)`` moves on ``snapshot``, in order.

    Returns:
        ``(cluster index, migration)`` per move, with the source each VM left.
    """
    return [(ci, snapshot.clusters[ci].migrate(int(vm), int(host), int(place))) for ci, vm, host, place in moves]


def run_demo(args: argparse.Namespace, planner: Callable[..., Any], name: str, summary: str | None = None) -> int:
    """Plan on the snapshot with ``planner``, make the plan through the twin, and report before/after.

    Args:
        args: the ``demo`` arguments.
        planner: ``plan(snapshot, budget) -> PlanResult`` (any ``agents.vm`` planner).
        name: the planner's name in the report.
        summary: a few words on how it plans, for the report.
    """
    snapshot = _load(args.snapshot, args.strict)
    print(f"snapshot {args.snapshot}")
    print(snapshot.report.summary())
    _print_state(snapshot, "before")
    start = time.perf_counter()
    result = planner(snapshot, args.budget)
    elapsed = time.perf_counter() - start
    plan = apply_plan(snapshot, result.moves)
    about = f"{summary}, " if summary else ""
    print(f"{name} plan ({about}budget {args.budget}): {len(plan)} migrations in {elapsed:.2f} s")
    for i, (ci, move) in enumerate(plan[: args.show], 1):
        c = snapshot.clusters[ci]
        print(f"  {i:3d}. {c.name}: {c.vm_ids[move.vm]} {c.host_ids[move.from_host]}/numa{move.from_placement} "
              f"-> {c.host_ids[move.to_host]}/numa{move.to_placement}")
    if len(plan) > args.show:
        print(f"  ... {len(plan) - args.show} more")
    _print_state(snapshot, "after")
    for c in snapshot.clusters:
        if c.metrics() != c.recompute_metrics():
            print(f"error: incremental metrics of {c.name} disagree with a recompute", file=sys.stderr)
            return 1
    if args.save:
        save_snapshot(snapshot, args.save)
        print(f"saved the rescheduled snapshot to {args.save}")
    if args.json:
        print(json.dumps({"plan_length": len(plan), **snapshot.metrics()}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agents.vm.registry import PLANNER_SUMMARIES, get_planner

    try:
        planner = get_planner(args.planner)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_demo(args, planner, args.planner, PLANNER_SUMMARIES.get(args.planner))


def cmd_replay(args: argparse.Namespace) -> int:
    from digital_twin.vm.azure_replay import describe, replay
    from digital_twin.vm.azure_trace import TraceFormatError

    try:
        result = replay(args.split, num_hosts=args.hosts, fractions=args.fractions, seed=args.seed,
                        load_scale=args.load_scale, target_utilisation=args.target_utilisation)
    except TraceFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(describe(result))
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # One cut per file: the cuts are states of the same hosts, and host ids are unique per document.
        for fraction, cluster in zip(args.fractions, result.clusters):
            path = out / f"azure_v1_{args.split}_h{args.hosts}_s{args.seed}_f{fraction:g}.json"
            save_snapshot(Snapshot.from_clusters([cluster]), path)
            print(f"saved {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m digital_twin.vm",
        description="VM-rescheduling digital twin: load real VMR2L-schema snapshots, report, defragment.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fragment rate before/after a short migration plan (greedy unless --planner)")
    demo.add_argument("--snapshot", default=str(DEFAULT_SNAPSHOT), help="VMR2L-schema JSON file (default: bundled real snapshot)")
    demo.add_argument("--budget", type=int, default=50, help="maximum migrations (default 50)")
    demo.add_argument("--planner", default="greedy",
                      help="planner name from agents.vm (greedy, ffd, random, cpsat, ...) or agent:PATH (default greedy)")
    demo.add_argument("--show", type=int, default=20, help="migrations to list (default 20)")
    demo.add_argument("--save", help="write the rescheduled snapshot here (VMR2L schema)")
    demo.add_argument("--strict", action="store_true", help="refuse snapshots whose stored free values disagree")
    demo.add_argument("--json", action="store_true", help="also print final metrics as one JSON line")
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", help="load a snapshot, report disagreements and metrics")
    info.add_argument("snapshot", help="VMR2L-schema JSON file")
    info.add_argument("--strict", action="store_true", help="refuse snapshots whose stored free values disagree")
    info.set_defaults(func=cmd_info)
    rep = sub.add_parser("replay", help="replay the Azure V1 trace onto N hosts and cut snapshots")
    rep.add_argument("--split", choices=["dev", "test"], default="dev", help="dev (training) or test (held out)")
    rep.add_argument("--hosts", type=int, default=236, help="number of 88-vCPU two-NUMA hosts (default 236)")
    rep.add_argument("--fractions", type=float, nargs="+", default=[0.75, 1.0],
                     help="cut times as fractions of the trace span (default 0.75 1.0)")
    rep.add_argument("--seed", type=int, default=0, help="seed for thinning, arrival jitter and lifetimes")
    rep.add_argument("--load-scale", type=float, default=None, help="share of tenant batches kept (default: picked)")
    rep.add_argument("--target-utilisation", type=float, default=0.85, help="utilisation the picked load scale aims at")
    rep.add_argument("--out-dir", help="save each cut here in the VMR2L schema")
    rep.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SnapshotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
