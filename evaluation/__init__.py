"""Evaluation: policies compared on held-out data, with the metrics, tables and plots they report.

Modules, in reading order:

* :mod:`~evaluation.metrics`: what is measured per episode (VM: FR curve, share of the best
  gain; autoscaling: SLO-violation minutes, success, recovery time, ...) and the table columns.
* :mod:`~evaluation.vm`, :mod:`~evaluation.autoscaling`: run every policy on every held-out
  episode of a config, one row per method and episode.
* :mod:`~evaluation.tables`: CSV/JSON output, means with bootstrap 95% intervals, Markdown tables.
* :mod:`~evaluation.plots`: the PNG plots of a run.
* :mod:`~evaluation.cli`: the command line (``python evaluate.py`` or ``python -m evaluation``): checks
  the config, the policies and the output folder before any episode, one ``error:`` line per mistake.

Nothing here imports torch, OR-Tools or the envs until a run asks for them.
"""
