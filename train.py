"""Train an agent from a YAML config; resume an interrupted run.

    python train.py configs/train/vm_quick.yaml
    python train.py configs/train/vm_quick.yaml ppo.learning_rate=1e-4 total_timesteps=8192 --run-name lr1e-4
    python train.py --resume runs/vm_quick__s0__20261201-193000

See ``python train.py --help`` for the bundled configs and what they train.
"""

from __future__ import annotations

import sys

from training.cli import main

if __name__ == "__main__":
    sys.exit(main())
