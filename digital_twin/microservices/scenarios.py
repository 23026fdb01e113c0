"""Failure and adversarial scenarios, composable in YAML, compiled to per-step arrays.

A scenario file holds a list under ``scenarios:``; each entry has a ``kind``, a
``start_minute`` and a ``duration_minutes`` (default: to the end), plus kind-specific keys:

=============  ================================================================================
kind           keys
=============  ================================================================================
``ddos``       ``rate`` (requests/s) or ``capacity_fraction`` (x the topology's entry capacity at
               max replicas); ``shape``: ``flood`` (constant) or ``pulse`` (on for
               ``duty`` x ``period_seconds`` of each period). Attack requests enter at the entry
               and traverse the call graph like real ones.
``pod_crash``  ``services`` (list, default all); ``rate_per_pod_per_hour`` (random crashes of
               Ready pods, seeded) and/or ``kill`` (Ready pods killed per service at the start).
``contention`` ``node``; ``cpu`` (cores a noisy neighbour takes from that node).
``bottleneck`` ``service``; ``capacity_factor`` (0 < f <= 1: per-pod throughput multiplier, e.g. a
               slow dependency).
``node_loss``  ``node``: the node goes down for the duration and then returns.
=============  ================================================================================

Effects compose: attack rates, crash rates, kills and noisy CPU add; capacity factors
multiply; a node is up only if no scenario takes it down. OOM kills are not a scenario: the
dynamics kill a pod whose working set exceeds its memory limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from digital_twin.microservices.topology import Topology

KINDS = ("ddos", "pod_crash", "contention", "bottleneck", "node_loss")
_KEYS = {
    "ddos": {"rate", "capacity_fraction", "shape", "period_seconds", "duty"},
    "pod_crash": {"services", "rate_per_pod_per_hour", "kill"},
    "contention": {"node", "cpu"},
    "bottleneck": {"service", "capacity_factor"},
    "node_loss": {"node"},
}
_COMMON = {"kind", "start_minute", "duration_minutes", "name"}


class ScenarioError(ValueError):
    """A scenario document is malformed; names the file, the key and the reason."""

    def __init__(self, source: str, key: str, reason: str):
        super().__init__(f"{source}: key '{key}': {reason}")


@dataclass(frozen=True)
class ScenarioSchedule:
    """Scenario effects per control step (shared by the B clusters; randomness is drawn in the step).

    Shapes: T steps, S services, N nodes.
    """

    attack_rate: np.ndarray  # (T,) float64 extra requests/s at the entry
    crash_rate: np.ndarray  # (T, S) float64 random crashes per Ready pod per second
    kills: np.ndarray  # (T, S) int64 Ready pods killed at the start of the step
    noisy_cpu: np.ndarray  # (T, N) float64 cores a noisy neighbour takes
    capacity_factor: np.ndarray  # (T, S) float64 per-pod throughput multiplier
    node_up: np.ndarray  # (T, N) bool
    names: tuple[str, ...] = ()

    @property
    def num_steps(self) -> int:
        return len(self.attack_rate)


def empty_schedule(topology: Topology, num_steps: int) -> ScenarioSchedule:
    """A schedule with no scenario (the baseline)."""
    s, n = topology.num_services, topology.num_nodes
    return ScenarioSchedule(
        attack_rate=np.zeros(num_steps),
        crash_rate=np.zeros((num_steps, s)),
        kills=np.zeros((num_steps, s), dtype=np.int64),
        noisy_cpu=np.zeros((num_steps, n)),
        capacity_factor=np.ones((num_steps, s)),
        node_up=np.ones((num_steps, n), dtype=bool),
    )


def load_scenarios(path: str | Path) -> list[dict[str, Any]]:
    """Read the ``scenarios:`` list of a YAML file (validated later by :func:`compile_scenarios`)."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ScenarioError(str(path), "<document>", f"not valid YAML: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("scenarios"), list):
        raise ScenarioError(str(path), "scenarios", "expected a mapping with a 'scenarios' list")
    return [dict(entry, _source=str(path)) if isinstance(entry, dict) else entry for entry in document["scenarios"]]


def _num(source: str, key: str, value: Any, lower: float = 0.0, strict: bool = False, upper: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(source, key, f"expected a finite number, got {value!r}")
    if value < lower or (strict and value == lower) or value > upper:
        raise ScenarioError(source, key, f"out of range ({'>' if strict else '>='} {lower:g}, <= {upper:g}): {value!r}")
    return float(value)


def compile_scenarios(
    specs: list[dict[str, Any]],
    topology: Topology,
    num_steps: int,
    step_seconds: float = 15.0,
    source: str = "<scenarios>",
) -> ScenarioSchedule:
    """Validate scenario entries and compose them into a :class:`ScenarioSchedule`.

    Args:
        specs: Scenario mappings (from YAML or code); see the module docstring.
        topology: Gives service and node names and the entry capacity.
        num_steps: Length T of the episode in control steps.
        step_seconds: Control-step length.
        source: Name used in error messages when an entry has no ``_source``.

    Returns:
        The composed schedule.

    Raises:
        ScenarioError: Naming the file, ``scenarios[i].key`` and the reason.
    """
    schedule = empty_schedule(topology, num_steps)
    step_time = np.arange(num_steps) * step_seconds
    names = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise ScenarioError(source, f"scenarios[{i}]", f"expected a mapping, got {type(spec).__name__}")
        src = spec.get("_source", source)
        where = f"scenarios[{i}]"
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ScenarioError(src, f"{where}.kind", f"expected one of {KINDS}, got {kind!r}")
        for key in spec:
            if key != "_source" and key not in _COMMON | _KEYS[kind]:
                raise ScenarioError(src, f"{where}.{key}", f"unknown key for kind {kind!r}; expected {sorted(_COMMON | _KEYS[kind])}")
        start = _num(src, f"{where}.start_minute", spec.get("start_minute", 0.0)) * 60.0
        duration = spec.get("duration_minutes")
        end = math.inf if duration is None else start + _num(src, f"{where}.duration_minutes", duration, strict=True) * 60.0
        active = (step_time >= start) & (step_time < end)
        names.append(str(spec.get("name", kind)))

        if kind == "ddos":
            if ("rate" in spec) == ("capacity_fraction" in spec):
                raise ScenarioError(src, f"{where}.rate", "give exactly one of rate, capacity_fraction")
            rate = (_num(src, f"{where}.rate", spec["rate"]) if "rate" in spec
                    else _num(src, f"{where}.capacity_fraction", spec["capacity_fraction"]) * topology.entry_capacity())
            shape = spec.get("shape", "flood")
            if shape == "flood":
                on = active
            elif shape == "pulse":
                period = _num(src, f"{where}.period_seconds", spec.get("period_seconds", 120.0), strict=True)
                duty = _num(src, f"{where}.duty", spec.get("duty", 0.5), strict=True, upper=1.0)
                on = active & (((step_time - start) % period) < duty * period)
            else:
                raise ScenarioError(src, f"{where}.shape", f"expected 'flood' or 'pulse', got {shape!r}")
            schedule.attack_rate[on] += rate
        elif kind == "pod_crash":
            services = spec.get("services", list(topology.service_names))
            if not isinstance(services, list) or not services:
                raise ScenarioError(src, f"{where}.services", "expected a non-empty list of service names")
            cols = []
            for svc in services:
                if svc not in topology.service_names:
                    raise ScenarioError(src, f"{where}.services", f"unknown service {svc!r}")
                cols.append(topology.index(svc))
            if "rate_per_pod_per_hour" not in spec and "kill" not in spec:
                raise ScenarioError(src, f"{where}.rate_per_pod_per_hour", "give rate_per_pod_per_hour and/or kill")
            if "rate_per_pod_per_hour" in spec:
                rate = _num(src, f"{where}.rate_per_pod_per_hour", spec["rate_per_pod_per_hour"]) / 3600.0
                schedule.crash_rate[np.ix_(active, cols)] += rate
            if "kill" in spec:
                kill = _num(src, f"{where}.kill", spec["kill"])
                if kill != int(kill):
                    raise ScenarioError(src, f"{where}.kill", f"expected an integer, got {spec['kill']!r}")
                first = np.flatnonzero(active)
                if len(first):
                    schedule.kills[first[0], cols] += int(kill)
        elif kind in ("contention", "node_loss"):
            node = spec.get("node")
            if node not in topology.node_names:
                raise ScenarioError(src, f"{where}.node", f"unknown node {node!r}; nodes: {list(topology.node_names)}")
            col = topology.node_names.index(node)
            if kind == "contention":
                cpu = _num(src, f"{where}.cpu", spec.get("cpu"), upper=float(topology.node_cpu[col]))
                schedule.noisy_cpu[active, col] += cpu
            else:
                schedule.node_up[active, col] = False
        elif kind == "bottleneck":
            svc = spec.get("service")
            if svc not in topology.service_names:
                raise ScenarioError(src, f"{where}.service", f"unknown service {svc!r}")
            factor = _num(src, f"{where}.capacity_factor", spec.get("capacity_factor"), strict=True, upper=1.0)
            schedule.capacity_factor[active, topology.index(svc)] *= factor
    np.minimum(schedule.noisy_cpu, topology.node_cpu, out=schedule.noisy_cpu)
    return ScenarioSchedule(**{**schedule.__dict__, "names": tuple(names)})
