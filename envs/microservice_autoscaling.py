"""``clustergym/MicroserviceAutoscaling-v0``: keep microservice SLOs through real load at least pod cost.

Three parts, in reading order:

* :class:`MicroserviceConfig` and :func:`load_config`: the episode recipe, from YAML
  (``configs/microservice_autoscaling/*.yaml``; see ``online_boutique_worldcup.yaml`` for every
  key with a comment).
* :class:`MicroserviceCore`: B clusters of one config over the twin's batched dynamics
  (:mod:`digital_twin.microservices.dynamics`), with per-cluster trace windows, scenario
  variants, partial resets, normalised observations, action masks and rewards. No Gym code:
  the single-agent env (B = 1), the native vector env (:mod:`envs.microservice_vector`) and the
  PettingZoo env (:mod:`envs.microservice_autoscaling_v0`) are thin shells over it.
* :class:`MicroserviceAutoscalingEnv`: the single-agent Gymnasium env.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from gymnasium import spaces
from gymnasium.utils import EzPickle

from digital_twin.microservices import dynamics
from digital_twin.microservices.metrics import METRIC_INDEX, NUM_METRICS
from digital_twin.microservices.scenarios import compile_scenarios
from digital_twin.microservices.topology import Topology, load_topology
from digital_twin.microservices.traces import build_load_curve, load_trace
from envs.microservice_rewards import (
    MISSION_TERMS,
    RewardConstants,
    RewardWeights,
    global_reward,
    global_terms,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs" / "microservice_autoscaling"
DEFAULT_CONFIG = "online_boutique_worldcup"
#: Split names accepted by configs and options -> the twin's trace labels.
SPLITS = {"train": "train", "held_out": "heldout", "heldout": "heldout"}
LAYOUTS = ("per_service", "roles")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScenarioVariant:
    """One failure/attack mix an episode may run under; times are minutes from the window start.

    Attributes:
        name: Label reported in ``info["scenario"]``.
        weight: Relative probability of being drawn at reset.
        specs: Twin scenario entries (:mod:`digital_twin.microservices.scenarios`).
    """

    name: str
    weight: float = 1.0
    specs: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class RoleSpec:
    """A role agent of the PettingZoo ``roles`` layout.

    Attributes:
        name: Agent id.
        services: Scope: ``"all"``, ``"entry"``, ``"entry_tier"`` (the entry and its direct
            callees) or a tuple of service names. The role may change only these services.
        moves: Replica deltas the role may use on its scope (0 is always allowed).
        mission: Mission-term weights (names from :data:`envs.microservice_rewards.MISSION_TERMS`),
            each term computed over the scope.
    """

    name: str
    services: str | tuple[str, ...] = "all"
    moves: tuple[int, ...] = (-2, -1, 0, 1, 2)
    mission: dict[str, float] = field(default_factory=dict)


#: The role layout of the HPA multi-agent-system design: a resilience goal split into
#: failure-specific sub-goals (see :mod:`envs.microservice_autoscaling_v0`).
DEFAULT_ROLES: tuple[RoleSpec, ...] = (
    RoleSpec("ddos_manager", "entry_tier", (0, 1, 2), {"drop": 1.0}),
    RoleSpec("availability_manager", "all", (0, 1, 2), {"slo": 1.0, "unready": 1.0}),
    RoleSpec("resource_manager", "all", (-2, -1, 0, 1, 2), {"cost": 1.0, "throttle": 0.5}),
)


@dataclass(frozen=True)
class AgentsConfig:
    """Multi-agent settings (PettingZoo env only).

    Attributes:
        layout: ``"per_service"`` (one agent per service) or ``"roles"``.
        shared_reward_weight: Each agent's reward is this x the global reward plus its mission reward.
        per_service_mission: Mission-term weights of a per-service agent (scope: its own service).
        roles: The role agents of the ``roles`` layout.
    """

    layout: str = "per_service"
    shared_reward_weight: float = 1.0
    per_service_mission: dict[str, float] = field(default_factory=lambda: {"drop": 0.5, "cost": 0.25})
    roles: tuple[RoleSpec, ...] = DEFAULT_ROLES


@dataclass(frozen=True)
class MicroserviceConfig:
    """Everything that defines an episode; loaded from YAML by :func:`load_config`.

    Attributes:
        name: Config name.
        topology: Built-in topology name or YAML path (relative paths from the repo root).
        calibration: Optional calibration YAML replacing CPU-seconds per request.
        trace: Bundled trace (``worldcup98``, ``huawei_serverless[:id]``, ``azure_llm_conv``/``_code``).
        peak_utilisation: Train-split p99 minute mapped to this share of entry capacity at max replicas.
        split: ``"train"`` or ``"held_out"``: which of the trace's fixed splits windows come from.
        window_steps: Episode length in control steps (a window of the trace).
        window_stride_steps: Windows start on multiples of this many steps.
        step_seconds: Control-step length (the HPA sync period).
        substeps: Queue sub-steps per control step.
        max_replicas: Optional cap on every service's ``max_replicas`` (also sets the load scale).
        initial_replicas: Replicas at reset: an int, ``{service: int}``, None (``min_replicas``)
            or ``"random"`` (uniform in each service's bounds, per episode).
        action_deltas: Replica changes one action index means, e.g. ``(-2, -1, 0, 1, 2)``.
        rate_clip: ``request_rate`` observations are clipped at this many times the service's
            capacity at max replicas.
        reward: Global reward weights.
        scenarios: Variants; each episode draws one by weight.
        agents: Multi-agent settings.
        description: Free text.
        source: File the config came from.
    """

    name: str = DEFAULT_CONFIG
    topology: str = "online_boutique"
    calibration: str | None = None
    trace: str = "worldcup98"
    peak_utilisation: float = 0.7
    split: str = "train"
    window_steps: int = 240
    window_stride_steps: int = 4
    step_seconds: float = 15.0
    substeps: int = 5
    max_replicas: int | None = None
    initial_replicas: int | str | dict[str, int] | None = None
    action_deltas: tuple[int, ...] = (-2, -1, 0, 1, 2)
    rate_clip: float = 4.0
    reward: RewardWeights = RewardWeights()
    scenarios: tuple[ScenarioVariant, ...] = (ScenarioVariant("none"),)
    agents: AgentsConfig = AgentsConfig()
    description: str = ""
    source: str = "<defaults>"


def builtin_configs() -> list[str]:
    """Names accepted by :func:`load_config` besides paths and mappings."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _path(value: str) -> str:
    """Resolve a relative file path against the repo root (built-in names pass through)."""
    p = Path(value)
    if p.suffix and not p.is_absolute() and not p.exists():
        p = ROOT / p
    return str(p) if p.suffix else value


def _err(source: str, key: str, reason: str) -> ValueError:
    return ValueError(f"{source}: key '{key}': {reason}")


def _number(source: str, key: str, value: Any, lower: float = 0.0, strict: bool = False, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise _err(source, key, f"expected a finite number, got {value!r}")
    if value < lower or (strict and value == lower):
        raise _err(source, key, f"must be {'>' if strict else '>='} {lower:g}, got {value!r}")
    if integer and value != int(value):
        raise _err(source, key, f"expected an integer, got {value!r}")
    return value


def _weights(source: str, key: str, doc: Any) -> dict[str, float]:
    if not isinstance(doc, dict):
        raise _err(source, key, f"expected a mapping of mission terms, got {doc!r}")
    for term, w in doc.items():
        if term not in MISSION_TERMS:
            raise _err(source, f"{key}.{term}", f"unknown mission term; expected one of {MISSION_TERMS}")
        _number(source, f"{key}.{term}", w)
    return {str(k): float(v) for k, v in doc.items()}


def _variants(source: str, doc: Any) -> tuple[ScenarioVariant, ...]:
    if doc is None or doc == []:
        return (ScenarioVariant("none"),)
    if not isinstance(doc, list):
        raise _err(source, "scenarios", "expected a list of variants or of twin scenario entries")
    if all(isinstance(e, dict) and "kind" in e for e in doc):  # one variant: plain twin entries
        return (ScenarioVariant("scenarios", 1.0, tuple(doc)),)
    variants = []
    for i, entry in enumerate(doc):
        where = f"scenarios[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise _err(source, where, "expected a mapping {name, weight, scenarios | file}")
        unknown = set(entry) - {"name", "weight", "scenarios", "file"}
        if unknown:
            raise _err(source, f"{where}.{sorted(unknown)[0]}", "unknown key; expected name, weight, scenarios, file")
        specs = list(entry.get("scenarios") or [])
        if "file" in entry:
            from digital_twin.microservices.scenarios import load_scenarios

            specs += load_scenarios(_path(str(entry["file"])))
        weight = _number(source, f"{where}.weight", entry.get("weight", 1.0), strict=True)
        variants.append(ScenarioVariant(str(entry["name"]), float(weight), tuple(specs)))
    if len({v.name for v in variants}) != len(variants):
        raise _err(source, "scenarios", "variant names must be unique")
    return tuple(variants)


def _agents(source: str, doc: Any) -> AgentsConfig:
    doc = dict(doc or {})
    unknown = set(doc) - {"layout", "shared_reward_weight", "per_service_mission", "roles"}
    if unknown:
        raise _err(source, f"agents.{sorted(unknown)[0]}", "unknown key")
    layout = doc.get("layout", "per_service")
    if layout not in LAYOUTS:
        raise _err(source, "agents.layout", f"expected one of {LAYOUTS}, got {layout!r}")
    kwargs: dict[str, Any] = {"layout": layout}
    if "shared_reward_weight" in doc:
        kwargs["shared_reward_weight"] = float(_number(source, "agents.shared_reward_weight", doc["shared_reward_weight"]))
    if "per_service_mission" in doc:
        kwargs["per_service_mission"] = _weights(source, "agents.per_service_mission", doc["per_service_mission"])
    if "roles" in doc:
        roles_doc = doc["roles"]
        if not isinstance(roles_doc, dict) or not roles_doc:
            raise _err(source, "agents.roles", "expected a non-empty mapping role -> {services, moves, mission}")
        roles = []
        for name, spec in roles_doc.items():
            key = f"agents.roles.{name}"
            spec = dict(spec or {})
            unknown = set(spec) - {"services", "moves", "mission"}
            if unknown:
                raise _err(source, f"{key}.{sorted(unknown)[0]}", "unknown key; expected services, moves, mission")
            services = spec.get("services", "all")
            if isinstance(services, list):
                services = tuple(str(s) for s in services)
            elif services not in ("all", "entry", "entry_tier"):
                raise _err(source, f"{key}.services", "expected all, entry, entry_tier or a list of services")
            moves = spec.get("moves", [-2, -1, 0, 1, 2])
            if not isinstance(moves, list) or not moves:
                raise _err(source, f"{key}.moves", "expected a non-empty list of replica deltas")
            moves = tuple(sorted({int(_number(source, f"{key}.moves", m, lower=-np.inf, integer=True)) for m in moves} | {0}))
            roles.append(RoleSpec(str(name), services, moves, _weights(source, f"{key}.mission", spec.get("mission", {}))))
        kwargs["roles"] = tuple(roles)
    return AgentsConfig(**kwargs)


_KEYS = {f.name for f in dataclasses.fields(MicroserviceConfig)} - {"source"}


def config_from_dict(doc: dict[str, Any], source: str = "<dict>") -> MicroserviceConfig:
    """Validate a parsed config document into a :class:`MicroserviceConfig`.

    Raises:
        ValueError: Naming ``source``, the key and the reason.
    """
    if not isinstance(doc, dict):
        raise _err(source, "<document>", f"expected a mapping, got {type(doc).__name__}")
    for key in doc:
        if key not in _KEYS:
            raise _err(source, str(key), f"unknown key; expected one of {sorted(_KEYS)}")
    kw: dict[str, Any] = {"source": source}
    for key in ("name", "description", "trace"):
        if key in doc:
            kw[key] = str(doc[key])
    if "topology" in doc:
        kw["topology"] = _path(str(doc["topology"]))
    if doc.get("calibration") is not None:
        kw["calibration"] = _path(str(doc["calibration"]))
    if "split" in doc:
        if doc["split"] not in SPLITS:
            raise _err(source, "split", f"expected train or held_out, got {doc['split']!r}")
        kw["split"] = doc["split"]
    for key, lower, strict, integer in (("peak_utilisation", 0.0, True, False), ("window_steps", 1, False, True),
                                        ("window_stride_steps", 1, False, True), ("step_seconds", 0.0, True, False),
                                        ("substeps", 1, False, True), ("rate_clip", 0.0, True, False)):
        if key in doc:
            value = _number(source, key, doc[key], lower, strict, integer)
            kw[key] = int(value) if integer else float(value)
    if doc.get("max_replicas") is not None:
        kw["max_replicas"] = int(_number(source, "max_replicas", doc["max_replicas"], 1, integer=True))
    init = doc.get("initial_replicas")
    if init is not None:
        if isinstance(init, dict):
            init = {str(k): int(_number(source, f"initial_replicas.{k}", v, integer=True)) for k, v in init.items()}
        elif init != "random":
            init = int(_number(source, "initial_replicas", init, integer=True))
        kw["initial_replicas"] = init
    if "action_deltas" in doc:
        deltas = doc["action_deltas"]
        if not isinstance(deltas, list) or 0 not in deltas or len(set(deltas)) != len(deltas):
            raise _err(source, "action_deltas", f"expected a list of distinct integers containing 0, got {deltas!r}")
        kw["action_deltas"] = tuple(int(_number(source, "action_deltas", d, -np.inf, integer=True)) for d in deltas)
    if "reward" in doc:
        kw["reward"] = RewardWeights.from_dict(doc["reward"], source)
    kw["scenarios"] = _variants(source, doc.get("scenarios"))
    if "agents" in doc:
        kw["agents"] = _agents(source, doc["agents"])
    cfg = MicroserviceConfig(**kw)
    for role in cfg.agents.roles:
        if not set(role.moves) <= set(cfg.action_deltas):
            raise _err(source, f"agents.roles.{role.name}.moves", f"{role.moves} not all in action_deltas {cfg.action_deltas}")
    return cfg


def load_config(config: str | Path | dict | MicroserviceConfig | None = None, **overrides: Any) -> MicroserviceConfig:
    """Load a config by built-in name, YAML path or mapping, with top-level keys overridden.

    Args:
        config: ``"online_boutique_worldcup"`` (default), ``"chain4_huawei"``,
            ``"online_boutique_failures"``, a YAML path, a mapping, or a config (returned
            with the overrides applied).
        **overrides: Top-level keys replacing the file's (mappings such as ``reward`` and
            ``agents`` are merged one level deep).

    Returns:
        The validated :class:`MicroserviceConfig`.
    """
    if isinstance(config, MicroserviceConfig):
        if not overrides:
            return config
        config = _to_dict(config)
    source = "<dict>"
    if config is None:
        config = DEFAULT_CONFIG
    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.suffix and (CONFIG_DIR / f"{config}.yaml").exists():
            path = CONFIG_DIR / f"{config}.yaml"
        elif not path.is_absolute() and not path.exists():
            path = ROOT / path
        if not path.exists():
            raise FileNotFoundError(f"config {str(config)!r}: no such file and not a built-in ({', '.join(builtin_configs())})")
        source = str(path)
        config = yaml.safe_load(path.read_text()) or {}
        config.setdefault("name", path.stem)
    doc = dict(config)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return config_from_dict(doc, source)


def _to_dict(cfg: MicroserviceConfig) -> dict[str, Any]:
    """Inverse of :func:`config_from_dict` (for overriding a loaded config)."""
    doc = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ("source", "reward", "scenarios", "agents")}
    doc["action_deltas"] = list(cfg.action_deltas)
    doc["reward"] = dataclasses.asdict(cfg.reward)
    doc["scenarios"] = [{"name": v.name, "weight": v.weight, "scenarios": list(v.specs)} for v in cfg.scenarios]
    a = cfg.agents
    doc["agents"] = {"layout": a.layout, "shared_reward_weight": a.shared_reward_weight,
                     "per_service_mission": dict(a.per_service_mission),
                     "roles": {r.name: {"services": list(r.services) if isinstance(r.services, tuple) else r.services,
                                        "moves": list(r.moves), "mission": dict(r.mission)} for r in a.roles}}
    return doc


# ---------------------------------------------------------------------------------------------
# Core: B clusters of one config
# ---------------------------------------------------------------------------------------------

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
        The cluster then runs one warm-up step at the window's first load with no scenario
        effect (it was running before the episode), as :meth:`MicroserviceTwin.reset` does.

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

        sub = dynamics.reset(self.params, k, init, rng)
        calm = {key: v[:k] for key, v in self._calm.items()}
        sub, raw, info = dynamics.step(self.params, sub, sub.desired, rng, entry_rate=self.rates[chosen], **calm)
        sub.step_index[:] = 0
        sub.arrived_total = sub.backlog.copy()
        sub.served_total[:] = 0.0
        sub.dropped_total[:] = 0.0

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


# ---------------------------------------------------------------------------------------------
# Spaces shared by the envs
# ---------------------------------------------------------------------------------------------

class MaskedMultiDiscrete(spaces.MultiDiscrete):
    """``MultiDiscrete`` whose ``sample(mask=...)`` also takes sb3-contrib's flat mask.

    sb3-contrib concatenates the per-dimension masks into one ``(sum(nvec),)`` array, which is
    what the envs put in ``obs["action_mask"]``; Gymnasium's ``MultiDiscrete.sample`` wants a
    tuple of per-dimension int8 arrays. This subclass accepts both, so
    ``space.sample(mask=obs["action_mask"])`` works (as PettingZoo's API test calls it).
    """

    def sample(self, mask=None, probability=None):
        if isinstance(mask, np.ndarray) and self.nvec.ndim == 1 and mask.shape == (int(self.nvec.sum()),):
            mask = tuple(np.split(mask.astype(np.int8, copy=False), np.cumsum(self.nvec)[:-1]))
        return super().sample(mask=mask, probability=probability)


def single_observation_space(core: MicroserviceCore) -> spaces.Dict:
    """The single-agent observation space (see :class:`MicroserviceAutoscalingEnv`)."""
    s, d, e = core.num_services, core.num_deltas, core.edge_index.shape[1]
    return spaces.Dict({
        "metrics": spaces.Box(0.0, core.obs_high, dtype=np.float32),
        "adjacency": spaces.Box(0.0, max(float(core.calls.max()), 1.0), (s, s), np.float32),
        "edge_index": spaces.Box(0, max(s - 1, 0), (2, e), np.int64),
        "progress": spaces.Box(0.0, 1.0, (1,), np.float32),
        "action_mask": spaces.Box(0, 1, (s * d,), np.int8),
    })


def batched_observation(core: MicroserviceCore) -> dict[str, np.ndarray]:
    """Observations of all B clusters as a dict of (B, ...) arrays (the vector env's batch)."""
    b = core.num_clusters
    return {
        "metrics": core.metrics,
        "adjacency": np.broadcast_to(core.calls, (b, *core.calls.shape)).copy(),
        "edge_index": np.broadcast_to(core.edge_index, (b, *core.edge_index.shape)).copy(),
        "progress": core.progress[:, None],
        "action_mask": core.action_mask().reshape(b, -1).view(np.int8),
    }


# ---------------------------------------------------------------------------------------------
# Single-agent env
# ---------------------------------------------------------------------------------------------

class MicroserviceAutoscalingEnv(gym.Env[dict[str, np.ndarray], np.ndarray], EzPickle):
    """Scale every service of a microservice application to keep its SLO at the least pod cost.

    ## Description
    A Kubernetes application (Online Boutique, 11 services, or the 4-service ``chain4``
    diamond; any topology YAML) runs on the digital twin (:mod:`digital_twin.microservices`):
    real request traces (worldcup98, Huawei serverless, Azure LLM) drive its entry service,
    calls fan out over the call graph, pods start, crash, get OOM-killed or lose their node,
    queues fill and latency grows. Every 15 s (the HPA sync period) the agent changes the
    replica count of each service. An episode is one window of the trace (``window_steps``
    steps) from the config's split (``train`` or ``held_out``, the twin's fixed splits), under
    one scenario variant drawn by weight (DDoS, pod crashes, contention, bottleneck, node loss,
    or none). Everything comes from a config (``configs/microservice_autoscaling/*.yaml``).

    ## Action Space
    ``MultiDiscrete([D] * S)`` (:class:`MaskedMultiDiscrete`): for each service, an index into
    ``action_deltas`` (default ``(-2, -1, 0, +1, +2)``, so index 2 keeps the count). The new
    desired count ``desired + delta`` is clipped to ``[min_replicas, max_replicas]``;
    ``obs["action_mask"]`` (int8) and :meth:`action_masks` (bool, ``MaskablePPO``) mark the
    deltas that need no clipping, flattened service-major (``s * D + d``), as sb3-contrib
    concatenates MultiDiscrete masks. Actions outside the space raise ``ValueError``.

    ## Observation Space
    A ``Dict`` of fixed-shape arrays (S services, M = 14 metrics, D deltas, E call edges):

    | key | shape | dtype | meaning |
    |---|---|---|---|
    | ``metrics`` | (S, M) | float32 | the declared Prometheus metric set (``digital_twin.microservices.metrics.METRIC_NAMES`` order), normalised as below |
    | ``adjacency`` | (S, S) | float32 | mean calls from row service to column service per request (static) |
    | ``edge_index`` | (2, E) | int64 | caller / callee of each call edge (static; for graph networks) |
    | ``progress`` | (1,) | float32 | share of the window played, in [0, 1] |
    | ``action_mask`` | (S * D,) | int8 | 1 where a delta needs no clipping |

    Normalisation of ``metrics`` (``cap`` = the service's max replicas, ``slots`` = cap + the
    twin's 4 spare pod slots; bounds are hard, from the twin's dynamics, and tested):

    | metric | divided by | range |
    |---|---|---|
    | replicas_desired / _ready / _pending / _crashloop | cap | [0, slots / cap] |
    | cpu_usage_cores | cap x cpu_limit | [0, slots / cap] |
    | cpu_requests_cores | cap x cpu_request | [0, slots / cap] |
    | cpu_throttled_ratio, error_rate | 1 | [0, 1] |
    | memory_working_set_bytes | cap x memory_limit | [0, slots x max(limit, base) / (cap x limit)] |
    | request_rate | capacity at cap (cap x cpu_limit / cpu_seconds_per_request) | [0, rate_clip] (clipped: beyond capacity at cap every count is saturated) |
    | latency_p50 / p95 / p99_seconds | the SLO's p95 (1.0 = at the SLO) | [0, timeout / SLO] |
    | pending_requests | cap x queue_limit_per_pod | [0, slots / cap] |

    ## Rewards
    ``r = -(w_slo * slo + w_drop * drop + w_cost * cost)`` per step (weights from the config's
    ``reward``, default 1, 1, 0.5): ``slo`` is 1 when the end-to-end p95 exceeds the SLO or the
    end-to-end error rate exceeds the SLO's; ``drop`` is the end-to-end error rate (share of
    entry requests that failed); ``cost`` is pod-seconds bound this step over
    ``sum_s max_replicas_s x 15 s`` (see :mod:`envs.microservice_rewards`). Worked example on
    Online Boutique (101 pods at most): 30 pods bound for the step, end-to-end p95 0.62 s
    against a 0.5 s SLO, 0.4 % of requests failed: ``slo = 1``, ``drop = 0.004``,
    ``cost = 30 x 15 / (101 x 15) = 0.297``, so ``r = -(1 + 0.004 + 0.5 x 0.297) = -1.153``.
    The same 30 pods within the SLO and no failure give ``-0.149``. ``info`` carries the raw
    terms: ``slo_violated``, ``slo_violation_seconds``, ``e2e_latency_p95``, ``e2e_error_rate``,
    ``failed_requests``, ``dropped_requests``, ``entry_requests``, ``pod_seconds``,
    ``cpu_request_core_seconds``, ``offered_rate``, ``attack_rate``, ``crashes``,
    ``oom_kills``, the reward parts ``reward_slo`` / ``reward_drop`` / ``reward_cost`` (their sum
    is the reward), and ``split``, ``scenario``, ``window_start``, ``clipped_moves``.

    ## Starting State
    A window drawn uniformly from the split's windows (starts every ``window_stride_steps``),
    a scenario variant drawn by weight, ``initial_replicas`` Ready pods per service, after one
    warm-up step at the window's first load.

    ## Episode End
    *Termination*: never (a cluster has no terminal state).
    *Truncation*: when the trace window ends, after ``window_steps`` steps. The env signals it
    itself because the window length is a config value; the registration therefore has no
    ``max_episode_steps``. Stepping after that raises ``RuntimeError``.

    ## Arguments
    * ``config``: built-in name (``online_boutique_worldcup`` default, ``chain4_huawei``,
      ``online_boutique_failures``), YAML path, mapping or :class:`MicroserviceConfig`.
    * ``split``: ``"train"`` or ``"held_out"`` (default: the config's); the reset option
      ``split`` overrides it for one episode.
    * ``render_mode``: ``"ansi"`` or None.
    * ``**overrides``: top-level config keys (e.g. ``window_steps=40``, ``reward={"cost": 1.0}``).

    Reset options: ``split``, ``window_index`` (a fixed window, for evaluation sweeps),
    ``scenario`` (a variant name), ``initial_replicas``.

    ## Version History
    * v0: first version.

    Example:
        >>> import gymnasium as gym
        >>> import envs  # noqa: F401  (registers the ids)
        >>> env = gym.make("clustergym/MicroserviceAutoscaling-v0", config="chain4_huawei")
        >>> obs, info = env.reset(seed=0)
        >>> obs["metrics"].shape, env.action_space
        ((4, 14), MultiDiscrete([5 5 5 5]))
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        config: str | Path | dict | MicroserviceConfig | None = None,
        split: str | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        EzPickle.__init__(self, config, split, render_mode, **overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.config = load_config(config, **overrides)
        self.core = MicroserviceCore(self.config, num_clusters=1, split=split)
        self.render_mode = render_mode
        s, d = self.core.num_services, self.core.num_deltas
        self.action_space = MaskedMultiDiscrete(np.full(s, d, dtype=np.int64))
        self.observation_space = single_observation_space(self.core)
        self._done = True
        self._last_info: dict[str, Any] = {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode: a fresh trace window, scenario variant and initial replicas.

        Args:
            seed: Seeds ``self.np_random``, the only randomness (window, variant, arrivals, crashes).
            options: ``split``, ``window_index``, ``scenario``, ``initial_replicas``.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        info = self.core.reset(self.np_random, options=options)
        self._done = False
        self._split = SPLITS[options.get("split", self.core.split)]
        return self._observation(), self._info(info, clipped=0)

    def step(self, action: np.ndarray):
        if self._done:
            raise RuntimeError("call reset() before step() (the episode's trace window has ended)")
        action = np.asarray(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} outside {self.action_space}")
        delta = self.core.deltas[action.astype(np.int64)][None, :]
        clipped = int(self.core.clipped_moves(delta)[0])
        reward, truncated, info = self.core.step(delta, self.np_random)
        self._done = bool(truncated[0])
        return self._observation(), float(reward[0]), False, self._done, self._info(info, clipped)

    def action_masks(self) -> np.ndarray:
        """(S * D,) bool: the deltas that need no clipping (for ``sb3_contrib.MaskablePPO``)."""
        return self.core.action_mask().reshape(-1)

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.core.state is None:
            return None
        i = self._last_info
        reps = " ".join(f"{n}={r}" for n, r in zip(self.core.service_names, self.core.desired[0].tolist()))
        return (f"step {i['step']}/{self.core.window_steps} [{i['scenario']}] p95 {i['e2e_latency_p95']:.3f} s "
                f"errors {i['e2e_error_rate']:.2%} {'SLO VIOLATED' if i['slo_violated'] else 'SLO ok'} | {reps}")

    def _observation(self) -> dict[str, np.ndarray]:
        core = self.core
        return {
            "metrics": core.metrics[0].copy(),
            "adjacency": core.calls.copy(),
            "edge_index": core.edge_index.copy(),
            "progress": core.progress[:1].copy(),
            "action_mask": core.action_mask()[0].reshape(-1).astype(np.int8),
        }

    def _info(self, info: dict[str, np.ndarray], clipped: int) -> dict[str, Any]:
        out: dict[str, Any] = {key: value[0].item() for key, value in info.items()}
        out["scenario"] = self.core.variant_names[out["scenario"]]
        out["window_start"] = str(self.core.step_minutes[out["window_start_step"]])
        out["split"] = "held_out" if self._split == "heldout" else "train"
        out["clipped_moves"] = clipped
        self._last_info = out
        return out
