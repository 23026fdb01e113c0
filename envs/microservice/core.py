"""``MicroserviceCore``: B clusters of one config over the twin's batched dynamics.

Per-cluster trace windows, scenario variants, partial resets, normalised observations, action
masks and rewards. No Gym code: the single-agent env (B = 1, :mod:`envs.microservice.single`),
the native vector env (:mod:`envs.microservice.vector`) and the PettingZoo env
(:mod:`envs.microservice.parallel`) are thin shells over it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from digital_twin.microservices import dynamics
from digital_twin.microservices.metrics import METRIC_INDEX, NUM_METRICS
from digital_twin.microservices.scenarios import compile_scenarios
from digital_twin.microservices.topology import Topology, load_topology
from digital_twin.microservices.traces import build_load_curve, load_trace
from digital_twin.microservices.twin import warm_start
from envs.microservice.config import SPLITS, MicroserviceConfig
from envs.microservice.rewards import RewardConstants, global_reward, global_terms


# Parsed traces and topologies are immutable: parse each once per process (a SyncVectorEnv of
# 256 single envs would otherwise parse the worldcup98 CSV 256 times).
_load_trace = functools.lru_cache(maxsize=8)(load_trace)


@functools.lru_cache(maxsize=16)
def _topology(name: str, calibration: str | None, max_replicas: int | None) -> Topology:
    """The config's topology: loaded, calibrated, replica bounds capped (cached; immutable)."""
    topology = load_topology(name)
    if calibration:
        from digital_twin.microservices.calibration import apply_calibration

        topology = apply_calibration(topology, calibration)
    if max_replicas is not None:
        topology = dataclasses.replace(
            topology,
            max_replicas=np.minimum(topology.max_replicas, max_replicas),
            min_replicas=np.minimum(topology.min_replicas, max_replicas),
        )
    return topology


@functools.lru_cache(maxsize=16)
def _load_plan(trace_name: str, topology: str, calibration: str | None, max_replicas: int | None,
               step_seconds: float, peak_utilisation: float, window_steps: int, stride: int):
    """Entry rate per step over the whole trace, the minute each step starts in, and the window
    starts lying wholly inside each split (cached, read-only: shared by every env in a process).

    Returns:
        ``(rates (T,) float64, step_minutes (T,) datetime64[m], {"train": starts, "heldout": starts})``.
    """
    trace = _load_trace(trace_name)
    curve = build_load_curve(trace, _topology(topology, calibration, max_replicas), step_seconds=step_seconds,
                             peak_utilisation=peak_utilisation)
    rates = curve.rates
    step_minute = (np.arange(len(rates)) * step_seconds // 60.0).astype(np.int64)
    step_minutes = trace.minutes[step_minute]
    label = trace.split_of_minute[step_minute]
    starts_all = np.arange(0, max(len(rates) - window_steps + 1, 0), stride)
    window_starts = {}
    for name in ("train", "heldout"):
        inside = np.concatenate([[0], np.cumsum(label == name)])
        window_starts[name] = starts_all[inside[starts_all + window_steps] - inside[starts_all] == window_steps]
    for arr in (rates, step_minutes, *window_starts.values()):
        arr.flags.writeable = False
    return rates, step_minutes, window_starts

#: Keys of the per-cluster ``info`` arrays the core produces (all (B,) arrays).
INFO_KEYS = (
    "step", "window_start_step", "scenario", "slo_violated", "slo_violation_seconds", "e2e_latency_p95",
    "e2e_latency_mean", "e2e_error_rate", "offered_rate", "attack_rate", "entry_requests", "failed_requests",
    "dropped_requests", "pod_seconds", "ready_pod_seconds", "cpu_request_core_seconds", "crashes", "oom_kills",
    "cost_fraction", "reward_slo", "reward_drop", "reward_cost",
)


class MicroserviceCore:
    """B independent clusters of one config, stepped by the twin's batched dynamics in one call.

    Each cluster replays its own trace window (drawn at reset from the config's split) under its
    own scenario variant; clusters reset independently (``mask``). Only the ``rng`` passed in is
    used, so a seeded generator gives identical trajectories.

    Args:
        config: The episode recipe.
        num_clusters: B.
        split: ``"train"`` / ``"held_out"``; default the config's.

    Shapes: B clusters, S services, M metrics, D action deltas, W window steps, V variants.
    """

    def __init__(self, config: MicroserviceConfig, num_clusters: int = 1, split: str | None = None):
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        self.config = config
        self.num_clusters = b = int(num_clusters)
        self.split = self._check_split(split or config.split)
        topology = _topology(config.topology, config.calibration, config.max_replicas)
        self.topology: Topology = topology
        self.params = dynamics.make_params(topology, dynamics.TwinConfig(step_seconds=config.step_seconds,
                                                                         substeps=config.substeps))
        s, n = topology.num_services, topology.num_nodes
        self.num_services, self.num_metrics = s, NUM_METRICS
        self.service_names = topology.service_names
        self.deltas = np.asarray(config.action_deltas, dtype=np.int64)  # (D,)
        counts = np.arange(int(topology.max_replicas.max()) + 1)
        target = counts[None, :, None] + self.deltas[None, None, :]  # (1, R, D)
        lo, hi = topology.min_replicas[:, None, None], topology.max_replicas[:, None, None]
        self._mask_rows = ((target >= lo) & (target <= hi)).reshape(-1, len(self.deltas))  # (S*R, D): by count
        self._mask_row_offset = np.arange(topology.num_services) * len(counts)  # row of (service, 0)
        self.num_deltas = len(self.deltas)
        self.low = topology.min_replicas.astype(np.int64)  # (S,)
        self.high = topology.max_replicas.astype(np.int64)  # (S,)
        self.window_steps = w = config.window_steps
        # Load: the whole trace as one curve (T_trace steps); a window is a slice of it.
        self.rates, self.step_minutes, self.window_starts = _load_plan(
            config.trace, config.topology, config.calibration, config.max_replicas, config.step_seconds,
            config.peak_utilisation, w, config.window_stride_steps)
        for name, starts in self.window_starts.items():
            if len(starts) == 0:
                raise ValueError(f"{config.source}: no {w}-step window lies inside the {name!r} split of {config.trace}")

        # Scenario variants, stacked: (V, W, ...).
        self.variant_names = tuple(v.name for v in config.scenarios)
        weights = np.array([v.weight for v in config.scenarios], dtype=np.float64)
        self.variant_p = weights / weights.sum()
        compiled = [compile_scenarios([dict(e) for e in v.specs], topology, w, config.step_seconds, source=config.source)
                    for v in config.scenarios]
        self.sched = {key: np.stack([getattr(c, key) for c in compiled]) for key in
                      ("attack_rate", "crash_rate", "kills", "noisy_cpu", "capacity_factor", "node_up")}
        self._calm = {"attack_rate": np.zeros(b), "crash_rate": np.zeros((b, s)), "kills": np.zeros((b, s), np.int64),
                      "noisy_cpu": np.zeros((b, n)), "capacity_factor": np.ones((b, s)), "node_up": np.ones((b, n), bool)}
        self.has_scenarios = any(v.specs for v in config.scenarios)

        # Observation normalisation: value / scale, bounds in [0, high] (see the env docstring).
        self.obs_scale, self.obs_high = self._normalisation()
        self._scale32 = self.obs_scale.astype(np.float32)  # (the per-step work is in float32)
        self.calls = topology.calls.astype(np.float32)  # (S, S)
        src, dst = np.nonzero(topology.calls)
        self.edge_index = np.stack([src, dst]).astype(np.int64)  # (2, E)
        self.reward_weights = config.reward
        self.reward_consts = RewardConstants(config.step_seconds, topology.entry_index, self.high.astype(np.float64),
                                             topology.slo_latency_p95_seconds, topology.timeout_seconds)

        # Per-cluster episode state.
        self.state: dynamics.ClusterState | None = None
        self.window_start = np.zeros(b, dtype=np.int64)
        self.variant = np.zeros(b, dtype=np.int64)
        self.raw_obs = np.zeros((b, s, NUM_METRICS), dtype=np.float32)
        self.metrics = np.zeros((b, s, NUM_METRICS), dtype=np.float32)
        self._attack = np.zeros(b)  # (B,) attack requests/s of the last step

    # ------------------------------------------------------------------ setup helpers
    @staticmethod
    def _check_split(split: str) -> str:
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
        return SPLITS[split]

    def _normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """Per (service, metric) scale and upper bound of the normalised observation."""
        topo, p = self.topology, self.params
        cap = self.high.astype(np.float64)
        slots = cap + p.config.slot_headroom  # pod slots per service: a hard bound on any pod count
        pods = slots / cap
        scale = np.ones((self.num_services, NUM_METRICS))
        high = np.ones((self.num_services, NUM_METRICS))
        col = METRIC_INDEX
        for name in ("replicas_desired", "replicas_ready", "replicas_pending", "replicas_crashloop"):
            scale[:, col[name]], high[:, col[name]] = cap, pods
        scale[:, col["cpu_usage_cores"]], high[:, col["cpu_usage_cores"]] = cap * topo.cpu_limit, pods
        scale[:, col["cpu_requests_cores"]], high[:, col["cpu_requests_cores"]] = cap * topo.cpu_request, pods
        mem = cap * topo.memory_limit_bytes
        scale[:, col["memory_working_set_bytes"]] = mem
        high[:, col["memory_working_set_bytes"]] = slots * np.maximum(topo.memory_limit_bytes, topo.memory_base_bytes) / mem
        scale[:, col["request_rate"]] = cap * topo.throughput_per_replica
        high[:, col["request_rate"]] = self.config.rate_clip
        for name in ("latency_p50_seconds", "latency_p95_seconds", "latency_p99_seconds"):
            scale[:, col[name]] = topo.slo_latency_p95_seconds
            high[:, col[name]] = topo.timeout_seconds / topo.slo_latency_p95_seconds
        scale[:, col["pending_requests"]], high[:, col["pending_requests"]] = cap * topo.queue_limit_per_pod, pods
        return (1.0 / scale), high.astype(np.float32)

    def window_minutes(self, split: str) -> np.ndarray:
        """Every trace minute some window of ``split`` covers (sorted datetime64[m]); for split checks."""
        starts = self.window_starts[self._check_split(split)]
        diff = np.zeros(len(self.rates) + 1, dtype=np.int64)
        np.add.at(diff, starts, 1)
        np.add.at(diff, starts + self.window_steps, -1)
        covered = np.cumsum(diff[:-1]) > 0
        return np.unique(self.step_minutes[covered])

    # ------------------------------------------------------------------ reset
    def reset(self, rng: np.random.Generator, mask: np.ndarray | None = None,
              options: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Start new episodes on the clusters in ``mask`` (default all).

        Each drawn from ``rng``: a window of the split, a scenario variant, initial replicas.
        The cluster then runs the twin's warm-up step at the window's first load with no
        scenario effect (it was running before the episode; :func:`~digital_twin.microservices.twin.warm_start`).

        Args:
            rng: The only source of randomness.
            mask: (B,) bool clusters to reset.
            options: ``split``, ``window_index`` (into ``window_starts[split]``, modulo its
                length), ``scenario`` (variant name), ``initial_replicas`` (as in the config);
                other keys are ignored (PettingZoo's API test passes its own).

        Returns:
            The info arrays of all B clusters (reset ones from their warm-up step).
        """
        b, s = self.num_clusters, self.num_services
        options = dict(options or {})
        full = mask is None or self.state is None
        mask = np.ones(b, dtype=bool) if full else np.asarray(mask, dtype=bool)
        idx = np.flatnonzero(mask)
        k = len(idx)
        if k == 0:
            return self._info(self._last_terms, self._last_info, self._last_reward)
        starts = self.window_starts[self._check_split(options.get("split", self.split))]
        if "window_index" in options:
            chosen = np.full(k, starts[int(options["window_index"]) % len(starts)])
        else:
            chosen = starts[rng.integers(len(starts), size=k)]
        if "scenario" in options:
            if options["scenario"] not in self.variant_names:
                raise ValueError(f"unknown scenario {options['scenario']!r}; variants: {self.variant_names}")
            variant = np.full(k, self.variant_names.index(options["scenario"]))
        elif len(self.variant_names) == 1:
            variant = np.zeros(k, dtype=np.int64)
        else:
            variant = rng.choice(len(self.variant_names), size=k, p=self.variant_p)
        init = self._initial_replicas(options.get("initial_replicas", self.config.initial_replicas), k, rng)

        sub, raw, info = warm_start(self.params, k, init, rng, entry_rate=self.rates[chosen])

        if full:
            self.state = sub
            self.raw_obs = raw
        else:
            for f in dataclasses.fields(sub):
                getattr(self.state, f.name)[idx] = getattr(sub, f.name)
            self.raw_obs[idx] = raw
            info = self._scatter(self._last_info, info, idx)
        self.window_start[idx] = chosen
        self.variant[idx] = variant
        self._attack[idx] = 0.0
        self._normalise()
        terms = global_terms(info, self.reward_consts)
        reward = global_reward(terms, self.reward_weights)
        self._remember(info, terms, reward)
        return self._info(terms, info, reward)

    def _initial_replicas(self, spec: Any, k: int, rng: np.random.Generator) -> np.ndarray:
        if spec is None:
            return np.broadcast_to(self.low, (k, self.num_services))
        if isinstance(spec, str):
            if spec != "random":
                raise ValueError(f"initial_replicas must be an int, a mapping, None or 'random', got {spec!r}")
            return rng.integers(self.low, self.high + 1, size=(k, self.num_services))
        if isinstance(spec, dict):
            reps = self.low.copy()
            for svc, value in spec.items():
                reps[self.topology.index(svc)] = int(value)
            return np.broadcast_to(np.clip(reps, self.low, self.high), (k, self.num_services))
        return np.broadcast_to(np.clip(np.asarray(spec, dtype=np.int64), self.low, self.high), (k, self.num_services))

    @staticmethod
    def _scatter(old: dict[str, np.ndarray], new: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for key, value in old.items():
            value = value.copy()
            value[idx] = new[key]
            out[key] = value
        return out

    # ------------------------------------------------------------------ step
    def step(self, deltas: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Apply replica changes to every cluster and advance one control step.

        Args:
            deltas: (B, S) int replica changes; ``desired + delta`` is clipped to each
                service's ``[min_replicas, max_replicas]``.
            rng: The only source of randomness.

        Returns:
            ``(reward (B,) float64, truncated (B,) bool, info)`` with ``info`` as :data:`INFO_KEYS`.
            Clusters past their window keep replaying its last step (callers reset them).
        """
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        st = self.state
        desired = np.minimum(np.maximum(st.desired + deltas, self.low), self.high)
        t = np.minimum(st.step_index, self.window_steps - 1)
        entry_rate = self.rates[self.window_start + t]
        if self.has_scenarios:
            v = self.variant
            sched = {key: arr[v, t] for key, arr in self.sched.items()}
        else:
            sched = self._calm
        self._attack = sched["attack_rate"].copy()
        # In place: the core keeps no other reference to the old state (saves copying it every step).
        self.state, self.raw_obs, info = dynamics.step(self.params, st, desired, rng, entry_rate=entry_rate,
                                                       inplace=True, **sched)
        self._normalise()
        terms = global_terms(info, self.reward_consts)
        reward = global_reward(terms, self.reward_weights)
        self._remember(info, terms, reward)
        truncated = self.state.step_index >= self.window_steps
        return reward, truncated, self._info(terms, info, reward)

    def _remember(self, info, terms, reward) -> None:
        self._last_info, self._last_terms, self._last_reward = info, terms, reward

    def _normalise(self) -> None:
        """``metrics = clip(raw / scale, 0, high)`` in float32; the clip is real only for ``request_rate``."""
        x = np.multiply(self.raw_obs, self._scale32)
        np.minimum(x, self.obs_high, out=x)
        np.maximum(x, 0.0, out=x)
        self.metrics = x

    def _info(self, terms: dict[str, np.ndarray], info: dict[str, np.ndarray], reward: np.ndarray) -> dict[str, np.ndarray]:
        w, dt = self.reward_weights, self.config.step_seconds
        entry = self.topology.entry_index
        return {
            "step": self.state.step_index.copy(),
            "window_start_step": self.window_start.copy(),
            "scenario": self.variant.copy(),
            "slo_violated": info["slo_violated"],
            "slo_violation_seconds": info["slo_violated"] * dt,
            "e2e_latency_p95": info["e2e_latency_p95"],
            "e2e_latency_mean": info["e2e_latency_mean"],
            "e2e_error_rate": info["e2e_error_rate"] + 0.0,  # + 0.0 turns the twin's -0.0 into 0.0
            "offered_rate": info["offered_rate"],
            "attack_rate": self._attack.copy(),
            "entry_requests": info["arrived"][:, entry],
            "failed_requests": terms["failed_requests"] + 0.0,
            "dropped_requests": terms["dropped_requests"],
            "pod_seconds": terms["pod_seconds"],
            "ready_pod_seconds": info["ready_pod_seconds"].sum(axis=1),
            "cpu_request_core_seconds": info["cpu_request_core_seconds"].sum(axis=1),
            "crashes": info["crashes"].sum(axis=1),
            "oom_kills": info["oom_kills"].sum(axis=1),
            "cost_fraction": terms["cost"],
            "reward_slo": -w.slo * terms["slo"],
            "reward_drop": -w.drop * terms["drop"],
            "reward_cost": -w.cost * terms["cost"],
        }

    # ------------------------------------------------------------------ masks and views
    def action_mask(self) -> np.ndarray:
        """(B, S, D) bool: delta d keeps service s inside its bounds (0 is always valid)."""
        # A lookup by (service, desired count): one gather instead of (B, S, D) arithmetic.
        return self._mask_rows.take(self.state.desired + self._mask_row_offset, axis=0)

    def clipped_moves(self, deltas: np.ndarray) -> np.ndarray:
        """(B,) int64: services whose ``desired + delta`` leaves its bounds (masked moves, which the
        step clips). Shapes: deltas (B, S)."""
        target = self.state.desired + deltas
        return ((target < self.low) | (target > self.high)).sum(axis=1)

    @property
    def progress(self) -> np.ndarray:
        """(B,) float32 share of the window played."""
        return np.minimum(self.state.step_index / self.window_steps, 1.0).astype(np.float32)

    @property
    def desired(self) -> np.ndarray:
        """(B, S) int64 current desired replicas."""
        return self.state.desired

    def last_step_data(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The twin's info and raw observations of the last step (for mission terms)."""
        return self._last_info, self.raw_obs

