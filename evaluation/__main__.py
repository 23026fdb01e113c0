"""``python -m evaluation CONFIG --policies ...``: the same command as ``python evaluate.py``."""

import sys

from evaluation.cli import main

sys.exit(main(prog="python -m evaluation"))
