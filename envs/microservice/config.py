"""The microservice autoscaling episode recipe: :class:`MicroserviceConfig` and :func:`load_config`.

Configs come from YAML (``configs/microservice_autoscaling/*.yaml``; see
``online_boutique_worldcup.yaml`` for every key with a comment), a mapping, or a built-in name;
:func:`config_from_dict` checks every key and names the file, key and reason on error: an unknown
key with the allowed ones and a did-you-mean (:func:`digital_twin.cli.unknown_key`, the wording
every config of clustergym uses), as a :class:`~digital_twin.cli.ConfigError` (a ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digital_twin.cli import ConfigError, UsageError, check_keys, did_you_mean, read_yaml
from digital_twin.microservices.traces import DEFAULT_PEAK_UTILISATION
from digital_twin.resources import bundled_path, resolve_path
from envs.microservice.rewards import MISSION_TERMS, RewardWeights

CONFIG_DIR = bundled_path("configs/microservice_autoscaling")
DEFAULT_CONFIG = "online_boutique_worldcup"
#: Split names accepted by configs and options -> the twin's trace labels.
SPLITS = {"train": "train", "held_out": "heldout", "heldout": "heldout"}
LAYOUTS = ("per_service", "roles")


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
        mission: Mission-term weights (names from :data:`envs.microservice.rewards.MISSION_TERMS`),
            each term computed over the scope.
    """

    name: str
    services: str | tuple[str, ...] = "all"
    moves: tuple[int, ...] = (-2, -1, 0, 1, 2)
    mission: dict[str, float] = field(default_factory=dict)


#: The role layout of the HPA multi-agent-system design: a resilience goal split into
#: failure-specific sub-goals (see :mod:`envs.microservice.parallel`).
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
    peak_utilisation: float = DEFAULT_PEAK_UTILISATION
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
    """A file path as :func:`~digital_twin.resources.resolve_path` finds it (built-in names pass through)."""
    return str(resolve_path(value)) if Path(value).suffix else value


def _err(source: str, key: str, reason: str) -> ConfigError:
    return ConfigError(f"{source}: key '{key}': {reason}")


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
            raise _err(source, f"{key}.{term}", f"unknown mission term{did_you_mean(term, MISSION_TERMS)}; "
                                                f"expected one of {', '.join(MISSION_TERMS)}")
        _number(source, f"{key}.{term}", w)
    return {str(k): float(v) for k, v in doc.items()}


def _draw(source: str, where: str, value: Any, rng: np.random.Generator) -> Any:
    """A scenario parameter with its random parts drawn: ``{uniform: [lo, hi]}`` (integers when both
    bounds are, inclusive) or ``{choice: [a, b, ...]}``; anything else is kept as written."""
    if isinstance(value, dict) and set(value) == {"uniform"}:
        bounds = value["uniform"]
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds) or bounds[0] > bounds[1]):
            raise _err(source, where, f"uniform: expected [low, high] numbers with low <= high, got {bounds!r}")
        if all(isinstance(b, int) for b in bounds):
            return int(rng.integers(bounds[0], bounds[1] + 1))
        return float(rng.uniform(bounds[0], bounds[1]))
    if isinstance(value, dict) and set(value) == {"choice"}:
        options = value["choice"]
        if not isinstance(options, list) or not options:
            raise _err(source, where, f"choice: expected a non-empty list, got {options!r}")
        return options[int(rng.integers(len(options)))]
    if isinstance(value, dict) and set(value) & {"uniform", "choice"}:
        raise _err(source, where, "a random parameter is {uniform: [low, high]} or {choice: [...]} alone")
    return value


def _sampled(source: str, where: str, name: str, specs: list[Any], samples: int, pick: int | None) -> list[tuple[dict, ...]]:
    """``samples`` concrete scenario lists of one variant: ``pick`` of its entries (all if None), random
    parameters drawn. Seeded by the variant's name, so a config always expands the same way."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    out = []
    for _ in range(samples):
        chosen = specs if pick is None else [specs[i] for i in sorted(rng.choice(len(specs), size=pick, replace=False))]
        out.append(tuple({k: _draw(source, f"{where}.scenarios.{k}", v, rng) for k, v in spec.items()}
                         if isinstance(spec, dict) else spec for spec in chosen))
    return out


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
            raise _err(source, where, "expected a mapping {name, weight, scenarios | file, samples, pick}")
        check_keys(source, entry, ("name", "weight", "scenarios", "file", "samples", "pick"), prefix=f"{where}.")
        specs = list(entry.get("scenarios") or [])
        if "file" in entry:
            from digital_twin.microservices.scenarios import ScenarioError, load_scenarios

            try:
                specs += load_scenarios(_path(str(entry["file"])))
            except (OSError, ScenarioError) as exc:  # the scenario file's own message names it
                raise _err(source, f"{where}.file", str(exc)) from None
        weight = _number(source, f"{where}.weight", entry.get("weight", 1.0), strict=True)
        samples = int(_number(source, f"{where}.samples", entry.get("samples", 1), lower=1, integer=True))
        pick = entry.get("pick")
        if pick is not None:
            pick = int(_number(source, f"{where}.pick", pick, lower=1, integer=True))
            if pick > len(specs):
                raise _err(source, f"{where}.pick", f"{pick} is more than the variant's {len(specs)} scenario entries")
        name = str(entry["name"])
        drawn = _sampled(source, where, name, specs, samples, pick)
        if samples == 1 and pick is None:
            variants.append(ScenarioVariant(name, float(weight), drawn[0]))
        else:
            variants += [ScenarioVariant(f"{name}/{k}", float(weight) / samples, d) for k, d in enumerate(drawn)]
    if len({v.name for v in variants}) != len(variants):
        raise _err(source, "scenarios", "variant names must be unique")
    return tuple(variants)


def _agents(source: str, doc: Any) -> AgentsConfig:
    doc = dict(doc or {})
    check_keys(source, doc, ("layout", "shared_reward_weight", "per_service_mission", "roles"), prefix="agents.")
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
            check_keys(source, spec, ("services", "moves", "mission"), prefix=f"{key}.")
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
    check_keys(source, doc, _KEYS, section="an autoscaling config")
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
        try:
            kw["reward"] = RewardWeights.from_dict(doc["reward"], source)
        except ValueError as exc:  # its message names the file and the key
            raise ConfigError(str(exc)) from None
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
        else:
            path = resolve_path(path)
        if not path.exists():
            raise ConfigError(f"config {str(config)!r}: no such file and not a built-in "
                              f"({', '.join(builtin_configs())}){did_you_mean(str(config), builtin_configs())}")
        source = str(path)
        try:
            config = read_yaml(path)
        except UsageError as exc:
            raise ConfigError(str(exc)) from None
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise _err(source, "<document>", f"expected a mapping of config keys, got {type(config).__name__}")
        config.setdefault("name", path.stem)
    doc = dict(config)
    check_keys(f"{source} (keyword overrides)", overrides, _KEYS, section="an autoscaling config")
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

