"""Project-wide test settings: quiet threads and no wandb network, as CI runs."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
