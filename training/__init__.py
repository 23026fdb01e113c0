"""Training runs for ``train.py``: configs, run folders and checkpoints, one module per algorithm."""
