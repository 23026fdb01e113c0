"""VM-rescheduling baselines on the bundled real snapshots and on production-shaped ones: final FR, bound, time.

For each snapshot and the MNL budget, runs the planners of ``agents.vm`` (random, first-fit
decreasing, best-improvement greedy, beam search) once, then the exact CP-SAT model and the
large-neighbourhood variant at each time limit, one after another, and prints one row per run: FR
before/after (replayed through the twin), proven lower bound and status (CP-SAT), migrations, wall
seconds, and for ``cpsat`` the size and build time of its first model.

Snapshots: the bundled real ones (``clear2``, ``big2``; budget 50 unless ``--budget``) and, with
``--production SEED ...``, :func:`digital_twin.vm.deployment_sets.production_like_snapshot` --
issue #12's production file in shape: two clusters of 254 and 1,010 hosts, 165 deployment sets
each (150 per host, 15 per rack), budget = its ``maximum_migration`` (10) unless ``--budget``.
``--no-sets`` adds the same snapshots without sets (``strip_deployment_sets``).

Run with ``OMP_NUM_THREADS=1`` on an otherwise idle machine (CP-SAT uses ``--workers`` threads)::

    python bench/vm_baselines.py                                  # both bundled snapshots, 60 s limits
    python bench/vm_baselines.py --limits 60 600 --snapshots big2 --planners cpsat cpsat_lns
    python bench/vm_baselines.py --production 0 --planners greedy cpsat cpsat_lns   # issue #12's check
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.vm import VM_PLANNERS, get_planner  # noqa: E402
from digital_twin.resources import bundled_path  # noqa: E402

SNAPSHOTS = {
    "clear2": "data/vmr2l_snapshots/reset_vm_pm_id_clear2.json",
    "big2": "data/vmr2l_snapshots/reset_vm_pm_id_clear_big2.json",
}
TIMED = ("cpsat", "cpsat_lns")
BUNDLED_BUDGET = 50


def _snapshots(args: argparse.Namespace) -> list[tuple[str, object, int]]:
    """``(label, snapshot, budget)`` for every snapshot asked for."""
    from digital_twin.vm import load_snapshot

    out = []
    names = args.snapshots if args.snapshots is not None else ([] if args.production else list(SNAPSHOTS))
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snap = load_snapshot(bundled_path(SNAPSHOTS[name]))
        out.append((name, snap, args.budget or BUNDLED_BUDGET))
    if args.production:
        from digital_twin.vm.deployment_sets import production_like_snapshot, strip_deployment_sets

        for seed in args.production:
            snap = production_like_snapshot(seed, hosts=tuple(args.hosts))
            budget = args.budget or snap.requirement.maximum_migration or BUNDLED_BUDGET
            out.append((f"prod:s{seed}", snap, budget))
            if args.no_sets:
                out.append((f"prod:s{seed}:nosets", strip_deployment_sets(snap), budget))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--snapshots", nargs="+", default=None, choices=list(SNAPSHOTS),
                        help="bundled snapshots (default: both, unless --production is given)")
    parser.add_argument("--production", type=int, nargs="+", default=[], metavar="SEED",
                        help="run production-like snapshots (issue #12's shape) of these seeds "
                             "(with --snapshots, in addition)")
    parser.add_argument("--hosts", type=int, nargs="+", default=[254, 1010],
                        help="hosts per cluster of the production-like snapshots (default 254 1010)")
    parser.add_argument("--no-sets", action="store_true",
                        help="also run each production-like snapshot with its deployment sets stripped")
    parser.add_argument("--planners", nargs="+", default=list(VM_PLANNERS), choices=list(VM_PLANNERS))
    parser.add_argument("--budget", type=int, default=None,
                        help=f"MNL: maximum number of migrations (default {BUNDLED_BUDGET} on the bundled "
                             "snapshots, the file's maximum_migration on production-like ones)")
    parser.add_argument("--limits", type=float, nargs="+", default=[60.0],
                        help="time limits (s) for the CP-SAT planners")
    parser.add_argument("--workers", type=int, default=2, help="CP-SAT search workers")
    parser.add_argument("--seed", type=int, default=0, help="planner seed")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    rows = []
    header = (f"{'snapshot':<14} {'planner':<10} {'budget':>6} {'limit s':>7} {'FR before':>9} {'FR after':>8} "
              f"{'bound':>7} {'status':<9} {'moves':>5} {'wall s':>7} {'vars':>8} {'cons':>8} {'build s':>7} source")
    print(header)
    print("-" * len(header))
    for snap_name, snapshot, budget in _snapshots(args):
        for planner in args.planners:
            limits = args.limits if planner in TIMED else [None]
            for limit in limits:
                kwargs = {"workers": args.workers} if planner in TIMED else {}
                r = get_planner(planner)(snapshot, budget, time_limit_s=limit, seed=args.seed, **kwargs)
                assert r.claimed_fr == r.fr_after, (planner, r.claimed_fr, r.fr_after)
                assert r.bound_fr is None or 0.0 <= r.bound_fr <= r.fr_after + 1e-12, (planner, r.bound_fr)
                bound = "-" if r.bound_fr is None else f"{r.bound_fr:.4f}"
                build = (r.stats.get("builds") or [{}])[0]
                size = (f"{build['variables']:>8} {build['constraints']:>8} {build['build_s']:>7.2f}" if build
                        else f"{'-':>8} {'-':>8} {'-':>7}")
                print(f"{snap_name:<14} {planner:<10} {budget:>6} {'-' if limit is None else f'{limit:g}':>7} "
                      f"{r.fr_before:>9.4f} {r.fr_after:>8.4f} {bound:>7} {r.status:<9} {r.num_moves:>5} "
                      f"{r.wall_s:>7.1f} {size} {r.stats.get('plan_source', '')}", flush=True)
                rows.append({"snapshot": snap_name, "planner": planner, "limit_s": limit, "budget": budget,
                             "fr_before": r.fr_before, "fr_after": r.fr_after, "bound_fr": r.bound_fr,
                             "status": r.status, "migrations": r.num_moves, "wall_s": r.wall_s,
                             "stats": {k: v for k, v in r.stats.items()
                                       if isinstance(v, (int, float, str, list, dict, type(None)))}})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
