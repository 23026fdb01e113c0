"""Microservice autoscaling: every policy on held-out trace windows under each scenario variant.

Each episode is a window of the trace's held-out split, played under one of the config's scenario
variants; all methods see the same windows and draws (same seed -> same generator). B episodes of
one seed, scenario and method run as B clusters of one :class:`~envs.microservice.MicroserviceCore`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from evaluation.metrics import autoscaling_episode_metrics

if TYPE_CHECKING:
    from agents.autoscaling import AutoscalingPolicy
    from envs.microservice import MicroserviceConfig

SERIES_KEYS = ("slo_violated", "e2e_latency_p95", "dropped_requests", "pod_seconds", "offered_rate", "attack_rate")
"""Per-step ``info`` entries recorded for every episode (plus the total desired replicas)."""


def evaluate_autoscaling(config_path: str | Path | MicroserviceConfig, policies: Sequence[AutoscalingPolicy], seeds: Sequence[int], episodes: int = 1,
                         scenarios: Sequence[str] | None = None, window_index: int | None = None,
                         breach_limit_minutes: float = 2.0, recovery_hold_minutes: float = 5.0,
                         progress: bool = True, split: str = "held_out") -> tuple[list[dict], dict]:
    """Every policy on every held-out window and scenario.

    Args:
        config_path: an autoscaling config (``configs/microservice_autoscaling/*.yaml``), or a loaded
            :class:`~envs.microservice.MicroserviceConfig` (e.g. with a training run's overrides).
        policies: :class:`~agents.autoscaling.AutoscalingPolicy` objects (e.g. from
            :func:`agents.autoscaling.make_policy`), reported under their ``name``.
        seeds: evaluation seeds.
        episodes: episodes (held-out windows) per seed, scenario and method.
        scenarios: the variants to run (default: all of the config's).
        window_index: play this held-out window in every episode instead of drawing at random.
        breach_limit_minutes: an episode succeeds if no SLO breach lasts longer than this.
        recovery_hold_minutes: recovered once the SLO has held this long after the failure's onset.
        progress: show a progress bar on stderr.
        split: ``"held_out"`` (evaluation) or ``"train"`` (model selection during training: it never
            sees the held-out days).

    Returns:
        ``(rows, data)``: one row per scenario, method and episode (the
        :data:`~evaluation.metrics.AUTOSCALING_METRICS` and the episode's window), and ``data`` with
        ``series[(scenario, method)]`` (the first seed's first episode, each (T,)), ``step_minutes``,
        ``scenarios`` and ``methods`` for the plots.

    Raises:
        ConfigError: a malformed config (a ``ValueError``).
        UsageError: an unknown scenario, or a window index beyond the held-out split's windows.
    """
    from tqdm import tqdm

    from agents.autoscaling import deltas_for
    from digital_twin.cli import UsageError, did_you_mean
    from envs.microservice import MicroserviceCore, load_config

    config = load_config(config_path)
    variants = {v.name: v for v in config.scenarios}
    names = list(scenarios or variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise UsageError(f"--scenarios: unknown scenario {unknown[0]!r}{did_you_mean(unknown[0], variants)}; "
                         f"{config.source} has {', '.join(variants)}")
    if window_index is not None:
        windows = len(MicroserviceCore(config, num_clusters=1, split="held_out").window_starts["heldout"])
        if window_index >= windows:
            raise UsageError(f"--window-index {window_index}: the held-out split of {config.source} has {windows} "
                             f"windows of {config.window_steps} steps; give 0-{windows - 1}")
    step_minutes = config.step_seconds / 60.0
    hold_steps = max(1, int(round(recovery_hold_minutes / step_minutes)))
    rows: list[dict] = []
    series: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    bar = tqdm(total=len(names) * len(seeds) * len(policies), desc="evaluating", disable=not progress,
               file=sys.stderr)
    for v_index, name in enumerate(names):
        starts = [spec["start_minute"] for spec in variants[name].specs if "start_minute" in spec]
        onset = int(round(min(starts) / step_minutes)) if starts else None
        for seed in seeds:
            for policy in policies:
                bar.set_postfix_str(f"{name} seed {seed} {policy.name}")
                # Same seed -> same held-out windows and draws for every method.
                rng = np.random.default_rng([seed, v_index])
                core = MicroserviceCore(config, num_clusters=episodes, split=split)
                options: dict[str, Any] = {"scenario": name, "split": split}
                if window_index is not None:
                    options["window_index"] = window_index
                core.reset(rng, options=options)
                policy.reset(core)
                log: dict[str, list[np.ndarray]] = {k: [] for k in (*SERIES_KEYS, "replicas")}
                episode_return = np.zeros(episodes)
                for t in range(core.window_steps):
                    desired = policy.desired_replicas(core, now_s=t * config.step_seconds)
                    reward, _, info = core.step(deltas_for(core, desired), rng)
                    episode_return += reward
                    for k in SERIES_KEYS:
                        log[k].append(np.asarray(info[k], dtype=np.float64))
                    log["replicas"].append(core.desired.sum(axis=1).astype(np.float64))
                arrays = {k: np.stack(v, axis=1) for k, v in log.items()}  # (B, T)
                for b in range(episodes):
                    rows.append({
                        "scenario": name, "method": policy.name, "seed": seed, "episode": b, "split": split,
                        "window_start_step": int(core.window_start[b]), "steps": core.window_steps,
                        "episode_return": float(episode_return[b]),
                        **autoscaling_episode_metrics({k: v[b] for k, v in arrays.items()}, step_minutes, onset,
                                                      breach_limit_minutes, hold_steps),
                    })
                if seed == seeds[0]:
                    series[(name, policy.name)] = {k: v[0] for k, v in arrays.items()}
                bar.update()
    bar.close()
    return rows, {"series": series, "step_minutes": step_minutes, "scenarios": names,
                  "methods": [p.name for p in policies], "specs": {n: list(variants[n].specs) for n in names},
                  # What the latency plots mark: the SLO, and the cap of the end-to-end p95 (the entry
                  # service's timeout: callers give up after it, so latency never reads higher).
                  "slo_latency_s": float(core.topology.slo_latency_p95_seconds),
                  "latency_cap_s": float(core.topology.timeout_seconds[core.topology.entry_index]),
                  "config": config.name}
