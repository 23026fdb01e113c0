"""VM-rescheduling baselines on the bundled real snapshots: final FR, migrations, wall time.

For each snapshot and the MNL budget, runs the planners of ``agents.vm`` (random, first-fit
decreasing, best-improvement greedy, beam search) once, then the exact CP-SAT model and the
large-neighbourhood variant at each time limit, one after another, and prints one row per run: FR before/after (replayed through
the twin), proven lower bound and status (CP-SAT), migrations, wall seconds.

Run with ``OMP_NUM_THREADS=1`` on an otherwise idle machine (CP-SAT uses ``--workers`` threads)::

    python bench/vm_baselines.py                                  # both snapshots, 60 s limits
    python bench/vm_baselines.py --limits 60 600 --snapshots big2 --planners cpsat cpsat_lns
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
from digital_twin.vm import load_snapshot  # noqa: E402

SNAPSHOTS = {
    "clear2": bundled_path("data/vmr2l_snapshots/reset_vm_pm_id_clear2.json"),
    "big2": bundled_path("data/vmr2l_snapshots/reset_vm_pm_id_clear_big2.json"),
}
TIMED = ("cpsat", "cpsat_lns")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", nargs="+", default=list(SNAPSHOTS), choices=list(SNAPSHOTS))
    parser.add_argument("--planners", nargs="+", default=list(VM_PLANNERS), choices=list(VM_PLANNERS))
    parser.add_argument("--budget", type=int, default=50, help="MNL: maximum number of migrations")
    parser.add_argument("--limits", type=float, nargs="+", default=[60.0], help="time limits (s) for the CP-SAT planners")
    parser.add_argument("--workers", type=int, default=2, help="CP-SAT search workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    rows = []
    header = f"{'snapshot':<8} {'planner':<10} {'limit s':>7} {'FR before':>9} {'FR after':>8} {'bound':>7} " \
             f"{'status':<9} {'moves':>5} {'wall s':>7}"
    print(header)
    print("-" * len(header))
    for snap_name in args.snapshots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snapshot = load_snapshot(SNAPSHOTS[snap_name])
        for planner in args.planners:
            limits = args.limits if planner in TIMED else [None]
            for limit in limits:
                kwargs = {"workers": args.workers} if planner in TIMED else {}
                r = get_planner(planner)(snapshot, args.budget, time_limit_s=limit, seed=args.seed, **kwargs)
                assert r.claimed_fr == r.fr_after, (planner, r.claimed_fr, r.fr_after)
                bound = "-" if r.bound_fr is None else f"{r.bound_fr:.4f}"
                print(f"{snap_name:<8} {planner:<10} {'-' if limit is None else f'{limit:g}':>7} {r.fr_before:>9.4f} "
                      f"{r.fr_after:>8.4f} {bound:>7} {r.status:<9} {r.num_moves:>5} {r.wall_s:>7.1f}", flush=True)
                rows.append({"snapshot": snap_name, "planner": planner, "limit_s": limit, "budget": args.budget,
                             "fr_before": r.fr_before, "fr_after": r.fr_after, "bound_fr": r.bound_fr,
                             "status": r.status, "migrations": r.num_moves, "wall_s": r.wall_s,
                             "stats": {k: v for k, v in r.stats.items() if isinstance(v, (int, float, str, list))}})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
