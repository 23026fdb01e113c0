"""Command line for the VM-rescheduling twin.

    python -m digital_twin.vm demo                     # bundled real snapshot, greedy plan
    python -m digital_twin.vm demo --snapshot FILE --budget 50 --planner ffd
    python -m digital_twin.vm info FILE                # load, report disagreements, print metrics
    python -m digital_twin.vm replay --split dev --hosts 236 --fractions 0.75 1.0 --out-dir snaps/

The demo needs a planner to drive the twin; planners live in ``agents.vm`` and are looked up by name
only when ``demo`` runs (``info`` and ``replay`` need none).

User mistakes (a missing file, a flag out of range, an output path that cannot be written) end in
one ``error:`` line and exit status 2 (:mod:`digital_twin.cli`); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from digital_twin.cli import (
    ArgumentParser, UsageError, add_debug_flag, check_writable_dir, check_writable_file, existing_file, fraction,
    non_negative_int, positive_int, run_cli, unit_interval,
)
from digital_twin.resources import bundled_path
from digital_twin.vm.cluster import Migration, fleet_fragment_sums
from digital_twin.vm.snapshot import (
    ConsistencyReport, Snapshot, SnapshotConsistencyWarning, SnapshotError, load_snapshot, save_snapshot,
    snapshot_to_document,
)

DEFAULT_SNAPSHOT = bundled_path("data/vmr2l_snapshots/reset_vm_pm_id_clear2.json")

FR_IN_WORDS = ("FR(k), the fragment rate: the share of free vCPU left in pieces smaller than k vCPU on their "
               "NUMA node (sum(free mod k) / sum(free) over active hosts), so not usable by a k-vCPU VM; "
               "lower is better, FR(16) is VMR2L's headline figure")


def _load(path: str | Path, strict: bool) -> Snapshot:
    with warnings.catch_warnings():
        # The report is printed below; the warning would repeat it.
        warnings.simplefilter("ignore", SnapshotConsistencyWarning)
        try:
            return load_snapshot(path, strict=strict)
        except UnicodeDecodeError:
            raise UsageError(f"{path}: not a JSON text file (expected a VMR2L-schema snapshot)") from None


def report_line(report: ConsistencyReport | None) -> str:
    """The stored-vs-recomputed free values of a snapshot in one line (:meth:`ConsistencyReport.summary` has the details)."""
    if report is None:
        return "stored free values: none (snapshot built in memory)"
    total = report.numa_nodes_checked
    if report.ok:
        return f"stored free CPU and memory agree with the placed VMs on all {total} NUMA nodes"
    parts = []
    for fname in ("free_cpu", "memory_huge_free_mb"):
        n = report.count(field_name=fname)
        if not n:
            parts.append(f"{fname} agrees on all {total} NUMA nodes")
            continue
        per = ", ".join(f"{c} {report.count(cluster=c, field_name=fname)} of {k}"
                        for c, k in report.numa_nodes_by_cluster.items() if report.count(cluster=c, field_name=fname))
        parts.append(f"{fname} disagrees on {n} of {total} NUMA nodes ({per})")
    if report.anti_affinity_violations:
        parts.append(f"anti-affinity already violated {len(report.anti_affinity_violations)} times")
    return ("stored free values vs the placed VMs: " + "; ".join(parts)
            + "; the twin uses the recomputed values" + ("" if report.ok else " (--verbose lists each NUMA node)"))


def _print_report(snapshot: Snapshot, verbose: bool) -> None:
    print(report_line(snapshot.report))
    if verbose and snapshot.report is not None and not snapshot.report.ok:
        print(snapshot.report.summary(examples=len(snapshot.report.free_disagreements)))


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
    print(f"snapshot {args.snapshot}")
    _print_report(snapshot, args.verbose)
    print(FR_IN_WORDS)
    _print_state(snapshot, "snapshot")
    return 0


def apply_plan(snapshot: Snapshot, moves: list[tuple[int, int, int, int]]) -> list[tuple[int, Migration]]:
    """Make a plan's ``(cluster index, vm, host, placement)`` moves on ``snapshot``, in order.

    Returns:
        ``(cluster index, migration)`` per move, with the source each VM left.
    """
    return [(ci, snapshot.clusters[ci].migrate(int(vm), int(host), int(place))) for ci, vm, host, place in moves]


def best_single_move_fr(snapshot: Snapshot, size: int = 16) -> float | None:
    """The lowest fleet FR(``size``) one more feasible migration reaches, or None when no VM can move."""
    from digital_twin.vm.what_if import fragment_after_each_move

    frag, free = fleet_fragment_sums(snapshot.clusters, size)
    best = None
    for cluster in snapshot.clusters:
        feasible, d_frag, d_free = fragment_after_each_move(cluster, size)
        if not feasible.any():
            continue
        value = float(np.where(feasible, (frag + d_frag) / np.maximum(free + d_free, 1), np.inf).min())
        best = value if best is None else min(best, value)
    return best


def stop_reason(snapshot: Snapshot, result: Any, made: int, budget: int) -> str | None:
    """Why a plan of ``made`` migrations stopped before ``budget`` (None when it used the budget)."""
    if made >= budget:
        return None
    head = f"stopped after {made} of {budget} migrations"
    status = getattr(result, "status", "HEURISTIC")
    solver = "" if status == "HEURISTIC" else f" (solver status {status})"
    best = best_single_move_fr(snapshot)
    current = snapshot.fragment_rate()
    if best is None:
        return f"{head}: no feasible migration left (no VM fits anywhere else){solver}"
    if best >= current - 1e-12:
        return (f"{head}: no improving move left (no single feasible migration lowers FR(16) below "
                f"{current:.4f}){solver}")
    return (f"{head}: the planner took no further move{solver}, although one more migration could still "
            f"lower FR(16) to {best:.4f}")


def _negative_stored_values(snapshot: Snapshot) -> list[str]:
    """NUMA nodes whose *stored* free value, carried through the plan, would be impossible (< 0)."""
    bad = []
    for cdoc in snapshot_to_document(snapshot, free_values="stored")["cluster_list"]:
        for host in cdoc["host_info"]:
            for numa in host["numa"]:
                for key in ("free_cpu", "memory_huge_free_mb"):
                    if isinstance(numa.get(key), (int, float)) and numa[key] < 0:
                        bad.append(f"{host['node_id']} NUMA {numa['node']} {key} {numa[key]:g}")
    return bad


def save_rescheduled(snapshot: Snapshot, path: str | Path) -> str:
    """Write ``snapshot`` with free values consistent with its placements; return the line that says so.

    The file's own stored free values may disagree with its VMs (the report says where); carried
    through a plan they can go negative, so a saved snapshot gets the recomputed ones.
    """
    report = snapshot.report
    impossible = _negative_stored_values(snapshot) if report is not None and not report.ok else []
    save_snapshot(snapshot, path, free_values="recomputed")
    line = f"saved the rescheduled snapshot to {path} (free CPU and memory written as the placed VMs leave them"
    if report is not None and not report.ok:
        line += f"; the input's stored values differed in {len(report.free_disagreements)} free values, see above"
        if impossible:
            shown = ", ".join(impossible[:3]) + (f", ... {len(impossible) - 3} more" if len(impossible) > 3 else "")
            line += f", and carried through the plan would have gone negative on {len(impossible)}: {shown}"
    return line + ")"


def run_demo(args: argparse.Namespace, planner: Callable[..., Any], name: str, summary: str | None = None) -> int:
    """Plan on the snapshot with ``planner``, make the plan through the twin, and report before/after.

    Args:
        args: the ``demo`` arguments.
        planner: ``plan(snapshot, budget) -> PlanResult`` (any ``agents.vm`` planner).
        name: the planner's name in the report.
        summary: a few words on how it plans, for the report.
    """
    if args.save:
        check_writable_file(args.save, "--save", create_parents=False)
    snapshot = _load(args.snapshot, args.strict)
    print(f"snapshot {args.snapshot}")
    _print_report(snapshot, getattr(args, "verbose", False))
    print(FR_IN_WORDS)
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
    reason = stop_reason(snapshot, result, len(plan), args.budget)
    if reason:
        print(reason)
    _print_state(snapshot, "after")
    for c in snapshot.clusters:
        if c.metrics() != c.recompute_metrics():
            print(f"error: incremental metrics of {c.name} disagree with a recompute", file=sys.stderr)
            return 1
    if args.save:
        print(save_rescheduled(snapshot, args.save))
    if args.json:
        print(json.dumps({"plan_length": len(plan), **snapshot.metrics()}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agents.vm.registry import PLANNER_SUMMARIES, get_planner

    if args.save:  # before a model is loaded or anything planned
        check_writable_file(args.save, "--save", create_parents=False)
    try:
        planner = get_planner(args.planner)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(f"--planner: {e}") from None
    return run_demo(args, planner, args.planner, PLANNER_SUMMARIES.get(args.planner))


def _cut_file(out: Path, args: argparse.Namespace, fraction_value: float) -> Path:
    return out / f"azure_v1_{args.split}_h{args.hosts}_s{args.seed}_f{fraction_value:g}.json"


def cmd_replay(args: argparse.Namespace) -> int:
    from digital_twin.vm.azure_replay import describe, replay

    if args.out_dir:
        check_writable_dir(args.out_dir, "--out-dir")
        names = [_cut_file(Path(args.out_dir), args, f).name for f in args.fractions]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UsageError(f"--fractions {' '.join(f'{f:g}' for f in args.fractions)}: two cuts would be saved "
                             f"to the same file ({', '.join(twice)}); give each fraction once")
    result = replay(args.split, num_hosts=args.hosts, fractions=args.fractions, seed=args.seed,
                    load_scale=args.load_scale, target_utilisation=args.target_utilisation)
    print(describe(result))
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # One cut per file: the cuts are states of the same hosts, and host ids are unique per document.
        for fraction_value, cluster in zip(args.fractions, result.clusters):
            path = _cut_file(out, args, fraction_value)
            save_snapshot(Snapshot.from_clusters([cluster]), path)
            print(f"saved {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m digital_twin.vm",
        description="VM-rescheduling digital twin: load real VMR2L-schema snapshots, report, defragment.",
    )
    common = argparse.ArgumentParser(add_help=False)
    add_debug_flag(common)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", parents=[common],
                          help="fragment rate before/after a short migration plan (greedy unless --planner)")
    demo.add_argument("--snapshot", type=existing_file, default=str(DEFAULT_SNAPSHOT),
                      help="VMR2L-schema JSON file (default: bundled real snapshot)")
    demo.add_argument("--budget", type=non_negative_int, default=50, help="maximum migrations, >= 0 (default 50)")
    demo.add_argument("--planner", default="greedy",
                      help="planner name from agents.vm (greedy, ffd, random, cpsat, ...) or agent:PATH (default greedy)")
    demo.add_argument("--show", type=non_negative_int, default=20, help="migrations to list (default 20)")
    demo.add_argument("--save", help="write the rescheduled snapshot here (VMR2L schema; free values recomputed "
                                     "from the placements); the folder must exist")
    demo.add_argument("--strict", action="store_true", help="refuse snapshots whose stored free values disagree")
    demo.add_argument("--verbose", action="store_true", help="list every stored free value that disagrees")
    demo.add_argument("--json", action="store_true", help="also print final metrics as one JSON line")
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", parents=[common], help="load a snapshot, report disagreements and metrics")
    info.add_argument("snapshot", type=existing_file, help="VMR2L-schema JSON file")
    info.add_argument("--strict", action="store_true", help="refuse snapshots whose stored free values disagree")
    info.add_argument("--verbose", action="store_true", help="list every stored free value that disagrees")
    info.set_defaults(func=cmd_info)
    rep = sub.add_parser("replay", parents=[common], help="replay the Azure V1 trace onto N hosts and cut snapshots")
    rep.add_argument("--split", choices=["dev", "test"], default="dev", help="dev (training) or test (held out)")
    rep.add_argument("--hosts", type=positive_int, default=236, help="number of 88-vCPU two-NUMA hosts, >= 1 (default 236)")
    rep.add_argument("--fractions", type=fraction, nargs="+", default=[0.75, 1.0],
                     help="cut times as fractions of the trace span, each in [0, 1] (default 0.75 1.0)")
    rep.add_argument("--seed", type=non_negative_int, default=0, help="seed for thinning, arrival jitter and lifetimes")
    rep.add_argument("--load-scale", type=unit_interval, default=None,
                     help="share of tenant batches kept, in (0, 1] (default: picked for --target-utilisation)")
    rep.add_argument("--target-utilisation", type=unit_interval, default=0.85,
                     help="utilisation the picked load scale aims at, in (0, 1] (default 0.85)")
    rep.add_argument("--out-dir", help="save each cut here in the VMR2L schema (created if missing)")
    rep.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    from digital_twin.vm.azure_trace import TraceFormatError

    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args), debug=args.debug, user_errors=(SnapshotError, TraceFormatError))


if __name__ == "__main__":
    sys.exit(main())
