"""Beam-search planner: quality against time on the bundled real snapshots, on one core.

For each snapshot, runs :func:`agents.vm.beam.beam_plan` at each time limit (and seed) and prints
the fragment rate reached (replayed through the twin), the share of the reference gain it gets
(``(FR before - FR after) / (FR before - reference FR)``; the reference is the CP-SAT optimum at
budget 50 for ``clear2`` and the best known plan for ``big2``), migrations, wall seconds, beam
steps and searches. Greedy's row is printed first for scale.

Pins itself to one CPU core (``--core``) and wants ``OMP_NUM_THREADS=1`` and an otherwise idle
machine: the figures are wall-clock::

    OMP_NUM_THREADS=1 python bench/vm_beam.py
    OMP_NUM_THREADS=1 python bench/vm_beam.py --snapshots clear2 --limits 0.5 1 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.vm.beam import beam_plan  # noqa: E402
from agents.vm.heuristics import greedy_plan  # noqa: E402
from digital_twin.resources import bundled_path  # noqa: E402
from digital_twin.vm import load_snapshot  # noqa: E402

SNAPSHOTS = {
    "clear2": bundled_path("data/vmr2l_snapshots/reset_vm_pm_id_clear2.json"),
    "big2": bundled_path("data/vmr2l_snapshots/reset_vm_pm_id_clear_big2.json"),
}
REFERENCE_FR = {"clear2": 0.5753, "big2": 0.5713}
"""Reference FR at budget 50: CP-SAT's proven optimum (clear2), the best plan known (big2)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", nargs="+", default=list(SNAPSHOTS), choices=list(SNAPSHOTS))
    parser.add_argument("--limits", type=float, nargs="+", default=[0.1, 0.5, 1.0, 2.0, 5.0], help="time limits (s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=50, help="MNL: maximum number of migrations")
    parser.add_argument("--beam-width", type=int, default=16)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: do not pin)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})

    rows = []
    header = (f"{'snapshot':<8} {'planner':<7} {'limit s':>7} {'seed':>4} {'FR before':>9} {'FR after':>8} "
              f"{'gain %':>6} {'moves':>5} {'wall s':>6} {'steps':>5} {'searches':>8}")
    print(header)
    print("-" * len(header))
    for name in args.snapshots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snapshot = load_snapshot(SNAPSHOTS[name])
        reference = REFERENCE_FR[name]
        runs = [("greedy", None, 0, greedy_plan(snapshot, args.budget))]
        for limit in args.limits:
            for seed in args.seeds:
                runs.append(("beam", limit, seed, beam_plan(snapshot, args.budget, time_limit_s=limit, seed=seed,
                                                            beam_width=args.beam_width)))
        for planner, limit, seed, r in runs:
            share = (r.fr_before - r.fr_after) / (r.fr_before - reference)
            row = {"snapshot": name, "planner": planner, "limit_s": limit, "seed": seed, "fr_before": r.fr_before,
                   "fr_after": r.fr_after, "share_of_reference_gain": share, "moves": r.num_moves,
                   "wall_s": r.wall_s, "expansions": r.stats.get("expansions"), "searches": r.stats.get("searches")}
            rows.append(row)
            limit_text = "-" if limit is None else f"{limit:g}"
            steps = "-" if row["expansions"] is None else row["expansions"]
            searches = "-" if row["searches"] is None else row["searches"]
            print(f"{name:<8} {planner:<7} {limit_text:>7} {seed:>4} {r.fr_before:>9.4f} {r.fr_after:>8.4f} "
                  f"{100 * share:>6.1f} {r.num_moves:>5} {r.wall_s:>6.2f} {steps:>5} {searches:>8}")
        print(f"{name:<8} reference FR {reference:.4f} (budget {args.budget})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
