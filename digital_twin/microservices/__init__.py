"""Microservice digital twin for autoscaling (no RL code; numpy, and numba for the step).

Public API:

* :func:`load_topology` (built-in ``"chain4"``, ``"online_boutique"`` or a YAML path) -> :class:`Topology`
* :func:`load_trace` / :func:`build_load_curve` -> :class:`LoadCurve` (entry requests/s per step; the
  scale's default :data:`DEFAULT_PEAK_UTILISATION`)
* :func:`compile_scenarios` / :func:`load_scenarios` -> :class:`ScenarioSchedule`
* :class:`MicroserviceTwin`: ``reset(seed)``, ``step(desired_replicas[B, S]) -> (obs[B, S, M], info)``
* :data:`METRICS` / :data:`METRIC_INDEX` / :func:`promql`: the observed metric set
* :mod:`dynamics`: the pure batched step behind the class
"""

from digital_twin.microservices.dynamics import ClusterState, TwinConfig
from digital_twin.microservices.metrics import METRIC_INDEX, METRIC_NAMES, METRICS, MetricSpec, promql
from digital_twin.microservices.scenarios import ScenarioError, ScenarioSchedule, compile_scenarios, load_scenarios
from digital_twin.microservices.topology import Topology, TopologyError, builtin_topologies, load_topology
from digital_twin.microservices.traces import (
    DEFAULT_PEAK_UTILISATION, LoadCurve, LoadTrace, TraceError, build_load_curve, load_trace,
)
from digital_twin.microservices.twin import MicroserviceTwin

__all__ = [
    "ClusterState",
    "DEFAULT_PEAK_UTILISATION",
    "LoadCurve",
    "LoadTrace",
    "METRICS",
    "METRIC_INDEX",
    "METRIC_NAMES",
    "MetricSpec",
    "MicroserviceTwin",
    "ScenarioError",
    "ScenarioSchedule",
    "Topology",
    "TopologyError",
    "TraceError",
    "TwinConfig",
    "build_load_curve",
    "builtin_topologies",
    "compile_scenarios",
    "load_scenarios",
    "load_topology",
    "load_trace",
    "promql",
]
