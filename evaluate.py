"""Compare policies (saved agents and named baselines) on a config's held-out split.

    python evaluate.py configs/vm_rescheduling/real_small.yaml --policies random ffd greedy cpsat --time-limit 60
    python evaluate.py configs/microservice_autoscaling/online_boutique_failures.yaml --policies static threshold k8s_hpa

The command lives in :mod:`evaluation.cli` (also ``python -m evaluation``); run from here, results
go to this checkout's ``results/`` by default.
"""

from __future__ import annotations

import sys
from pathlib import Path

from evaluation.cli import main as _main

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    """``python evaluate.py`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return _main(argv, prog="evaluate.py", default_out_dir=RESULTS_DIR)


if __name__ == "__main__":
    sys.exit(main())
