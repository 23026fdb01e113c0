"""Microservice autoscaling: every policy on trace windows of one split under each scenario variant.

Each episode is a window of the trace's held-out split (or, for model selection during training,
its train split), played under one of the config's scenario variants. Every scenario and method
of one seed sees the same windows and the same stream of random draws (one generator per seed,
fresh for each scenario and method), so the rows of one episode differ only by the failure and
the policy. B episodes of one seed, scenario and method run as B clusters of one
:class:`~envs.microservice.MicroserviceCore`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from evaluation.metrics import autoscaling_episode_metrics

if TYPE_CHECKING:
    from agents.autoscaling import AutoscalingPolicy
    from envs.microservice import MicroserviceConfig

StepObserver = Callable[..., None]
"""``observer(policy, core, desired, *, scenario, seed, step, onset, end)``: see :func:`evaluate_autoscaling`."""

SERIES_KEYS = ("slo_violated", "e2e_latency_p95", "dropped_requests", "pod_seconds", "offered_rate", "attack_rate")
"""Per-step ``info`` entries recorded for every episode (plus the total desired replicas and the reward)."""

SPLIT_WORDS = {"held_out": "held-out", "train": "train"}
"""How titles and notes name each split ``evaluate_autoscaling`` takes."""


def failure_steps(specs: Sequence[dict], window_steps: int, step_seconds: float) -> tuple[int, int] | None:
    """``(onset, end)``: the first step any scenario entry acts on and the first step after the last
    one acts (its ``duration_minutes``, to the window's end without one; one step for a kill
    alone), as :func:`~digital_twin.microservices.scenarios.compile_scenarios` schedules them.
    None for a variant without an entry acting inside the window.
    """
    step_time = np.arange(window_steps) * step_seconds
    onset, end = None, None
    for spec in specs:
        start = float(spec.get("start_minute", 0.0)) * 60.0
        duration = spec.get("duration_minutes")
        stop = np.inf if duration is None else start + float(duration) * 60.0
        active = np.flatnonzero((step_time >= start) & (step_time < stop))
        if not len(active):
            continue
        instant = spec.get("kind") == "pod_crash" and "rate_per_pod_per_hour" not in spec
        last = active[0] if instant else active[-1]
        onset = int(active[0]) if onset is None else min(onset, int(active[0]))
        end = int(last) + 1 if end is None else max(end, int(last) + 1)
    return None if onset is None else (onset, end)


def window_note(rows: Sequence[dict], split: str | None = None) -> str | None:
    """The line under a table that names the windows the episodes played, e.g. ``"held-out windows
    (160 steps each; the same for every scenario and method) start at: seed 0 1998-06-30 09:06,
    1998-06-28 12:00; seed 1 ..."`` (a seed's episodes in order)."""
    seen: dict[tuple[Any, Any], str] = {}
    for r in rows:
        if "window_start" in r:
            seen.setdefault((r["seed"], r["episode"]), r["window_start"])
    if not seen:
        return None
    split = split or (rows[0].get("split") if rows else None) or "held_out"
    steps = rows[0].get("steps")
    length = f"{steps} steps each; " if steps else ""
    by_seed: dict[Any, list[str]] = {}
    for (seed, _), start in seen.items():
        by_seed.setdefault(seed, []).append(start)
    parts = [f"seed {seed} " + ", ".join(starts) for seed, starts in by_seed.items()]
    return (f"{SPLIT_WORDS.get(split, split)} windows ({length}the same for every scenario and method) start at: "
            + "; ".join(parts))


def evaluate_autoscaling(config: str | Path | MicroserviceConfig, policies: Sequence[AutoscalingPolicy],
                         seeds: Sequence[int], episodes: int = 1, scenarios: Sequence[str] | None = None,
                         window_index: int | None = None, breach_limit_minutes: float = 2.0,
                         recovery_hold_minutes: float = 5.0, progress: bool = True,
                         split: str = "held_out", observer: StepObserver | None = None) -> tuple[list[dict], dict]:
    """Every policy on every window and scenario.

    Args:
        config: an autoscaling config: a path (``configs/microservice_autoscaling/*.yaml``), a
            built-in name, or a :class:`~envs.microservice.MicroserviceConfig` (e.g. with a
            training run's env overrides applied), as :func:`envs.microservice.load_config` takes.
        policies: :class:`~agents.autoscaling.AutoscalingPolicy` objects (e.g. from
            :func:`agents.autoscaling.make_policy`), reported under their ``name``.
        seeds: evaluation seeds; each one draws its own windows.
        episodes: episodes (windows) per seed, scenario and method.
        scenarios: the variants to run (default: all of the config's).
        window_index: play this window of the split in every episode instead of drawing at random.
        breach_limit_minutes: an episode succeeds if no SLO breach lasts longer than this.
        recovery_hold_minutes: recovered once the SLO holds this long after both the recovery and
            the failure's end (:func:`~evaluation.metrics.recovery_minutes`).
        progress: show a progress bar on stderr.
        split: ``"held_out"`` (reported results) or ``"train"`` (model selection while training,
            which must never see held-out data).
        observer: called at every step, before the decision is applied, with the policy, the
            core, the (B, S) desired replicas and ``scenario``, ``seed``, ``step``, ``onset`` and
            ``end`` (the failure's steps, None without one) as keywords: what
            :mod:`evaluation.explain` records. It must not change the core.

    Returns:
        ``(rows, data)``: one row per scenario, method and episode (the
        :data:`~evaluation.metrics.AUTOSCALING_METRICS`, with ``episode_return`` the env's reward
        summed over the episode, and the episode's window: ``window_start_step`` into the trace
        and ``window_start``, its first minute as ``"YYYY-MM-DD HH:MM"``), and ``data`` with
        ``series[(scenario, method)]`` (the first seed's first episode, each (T,)),
        ``window_start`` (that episode's first minute), ``split``, ``step_minutes``,
        ``scenarios`` and ``methods`` for the plots.

    Raises:
        ConfigError: a malformed config (a ``ValueError``).
        UsageError: an unknown scenario, or a window index beyond the split's windows.
        ValueError: a split other than ``"held_out"`` or ``"train"``.
    """
    from tqdm import tqdm

    from agents.autoscaling import deltas_for
    from digital_twin.cli import UsageError, did_you_mean
    from envs.microservice import MicroserviceCore, load_config

    if split not in SPLIT_WORDS:
        raise ValueError(f"split must be 'held_out' or 'train', got {split!r}")
    config = load_config(config)
    variants = {v.name: v for v in config.scenarios}
    names = list(scenarios or variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise UsageError(f"--scenarios: unknown scenario {unknown[0]!r}{did_you_mean(unknown[0], variants)}; "
                         f"{config.source} has {', '.join(variants)}")
    probe = MicroserviceCore(config, num_clusters=1, split=split)
    if window_index is not None:
        windows = len(probe.window_starts[probe.split])
        if window_index >= windows:
            raise UsageError(f"--window-index {window_index}: the {SPLIT_WORDS[split]} split of {config.source} has "
                             f"{windows} windows of {config.window_steps} steps; give 0-{windows - 1}")
    step_minutes = config.step_seconds / 60.0
    hold_steps = max(1, int(round(recovery_hold_minutes / step_minutes)))
    rows: list[dict] = []
    series: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    first_window = None
    bar = tqdm(total=len(names) * len(seeds) * len(policies), desc="evaluating", disable=not progress,
               file=sys.stderr)
    for name in names:
        failure = failure_steps(variants[name].specs, config.window_steps, config.step_seconds)
        onset, end = failure if failure else (None, None)
        for seed in seeds:
            for policy in policies:
                bar.set_postfix_str(f"{name} seed {seed} {policy.name}")
                # One generator per seed, fresh for every scenario and method: the reset draws the
                # same windows first, then the same warm-up and arrival draws.
                rng = np.random.default_rng(seed)
                core = MicroserviceCore(config, num_clusters=episodes, split=split)
                options: dict[str, Any] = {"scenario": name, "split": split}
                if window_index is not None:
                    options["window_index"] = window_index
                core.reset(rng, options=options)
                policy.reset(core)
                log: dict[str, list[np.ndarray]] = {k: [] for k in (*SERIES_KEYS, "replicas", "reward")}
                for t in range(core.window_steps):
                    desired = policy.desired_replicas(core, now_s=t * config.step_seconds)
                    if observer is not None:
                        observer(policy, core, desired, scenario=name, seed=seed, step=t, onset=onset, end=end)
                    reward, _, info = core.step(deltas_for(core, desired), rng)
                    for k in SERIES_KEYS:
                        log[k].append(np.asarray(info[k], dtype=np.float64))
                    log["replicas"].append(core.desired.sum(axis=1).astype(np.float64))
                    log["reward"].append(np.asarray(reward, dtype=np.float64))
                arrays = {k: np.stack(v, axis=1) for k, v in log.items()}  # (B, T)
                starts = [minute_text(core.step_minutes[s]) for s in core.window_start]
                for b in range(episodes):
                    rows.append({
                        "scenario": name, "method": policy.name, "seed": seed, "episode": b, "split": split,
                        "window_start_step": int(core.window_start[b]), "window_start": starts[b],
                        "steps": core.window_steps,
                        **autoscaling_episode_metrics({k: v[b] for k, v in arrays.items()}, step_minutes, onset,
                                                      breach_limit_minutes, hold_steps, end),
                    })
                if seed == seeds[0]:
                    series[(name, policy.name)] = {k: v[0] for k, v in arrays.items()}
                    first_window = starts[0]
                bar.update()
    bar.close()
    return rows, {"series": series, "step_minutes": step_minutes, "scenarios": names, "split": split,
                  "window_start": first_window,
                  "methods": [p.name for p in policies], "specs": {n: list(variants[n].specs) for n in names},
                  # What the latency plots mark: the SLO, and the cap of the end-to-end p95 (the entry
                  # service's timeout: callers give up after it, so latency never reads higher).
                  "slo_latency_s": float(probe.topology.slo_latency_p95_seconds),
                  "latency_cap_s": float(probe.topology.timeout_seconds[probe.topology.entry_index]),
                  "config": config.name}


def minute_text(minute: np.datetime64) -> str:
    """A trace minute as ``"YYYY-MM-DD HH:MM"``."""
    return str(np.datetime_as_string(np.datetime64(minute, "m"), unit="m")).replace("T", " ")
