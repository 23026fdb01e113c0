"""Microservice topologies as data: services, call graph, resources, cluster nodes, SLO.

A topology is a YAML document (three built in under ``topologies/``; any user file works the
same way) that :func:`load_topology` validates and turns into a frozen :class:`Topology` of
numpy arrays in *topological order* (callers before callees, grouped by call depth). That order
is the service axis of every ``[B, S]`` array of the twin: actions, observations, state.

Schema (keys under ``defaults`` apply to every service unless the service overrides them)::

    name: online_boutique
    entry: frontend                 # the service that receives the external load
    slo: {latency_p95_seconds: 0.5, error_rate: 0.01}
    cluster:
      nodes: [{name: node-1, cpu: 4, memory_mib: 16384}, ...]   # allocatable resources
      eviction_timeout_seconds: 300 # pods on a lost node are replaced after this long
    defaults: {cpu_request: 0.1, cpu_limit: 0.2, ...}
    services:
      frontend:
        cpu_seconds_per_request: 0.010      # or throughput_per_replica (requests/s at the limit)
        calls: {productcatalog: 2.0, ...}   # mean calls per request handled by this service

Per-service keys: ``cpu_seconds_per_request`` | ``throughput_per_replica``, ``cpu_request``,
``cpu_limit`` (cores), ``memory_request_mib``, ``memory_limit_mib``, ``memory_base_mib``,
``memory_per_inflight_mib`` (working set = base + per-inflight x requests in the pod; above the
limit the pod is OOM-killed), ``min_replicas``, ``max_replicas``, ``startup_seconds``,
``timeout_seconds`` (callers give up after this long), ``queue_limit_per_pod``, ``calls``.

The call graph must be acyclic (synchronous RPC cycles never terminate), and every service must
be reachable from the entry through calls (one that is not would hold pods and never get load).
Malformed documents raise :class:`TopologyError` naming the file, the key and the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

# Package data (declared in pyproject.toml), so that an installed wheel finds them too.
BUILTIN_DIR = Path(str(resources.files("digital_twin.microservices").joinpath("topologies")))
MIB = 1024.0 * 1024.0

_SERVICE_NUMERIC_KEYS = {
    # key: (lower bound, strictly greater?)
    "cpu_seconds_per_request": (0.0, True),
    "throughput_per_replica": (0.0, True),
    "cpu_request": (0.0, True),
    "cpu_limit": (0.0, True),
    "memory_request_mib": (0.0, True),
    "memory_limit_mib": (0.0, True),
    "memory_base_mib": (0.0, False),
    "memory_per_inflight_mib": (0.0, False),
    "min_replicas": (0.0, False),
    "max_replicas": (1.0, False),
    "startup_seconds": (0.0, False),
    "timeout_seconds": (0.0, True),
    "queue_limit_per_pod": (0.0, True),
}
_REQUIRED_SERVICE_KEYS = (
    "cpu_request",
    "cpu_limit",
    "memory_request_mib",
    "memory_limit_mib",
    "memory_base_mib",
    "memory_per_inflight_mib",
    "min_replicas",
    "max_replicas",
    "startup_seconds",
    "timeout_seconds",
    "queue_limit_per_pod",
)


class TopologyError(ValueError):
    """A topology document is malformed; the message names the file, the key and the reason."""

    def __init__(self, source: str, key: str, reason: str):
        super().__init__(f"{source}: key '{key}': {reason}")
        self.source, self.key, self.reason = source, key, reason


@dataclass(frozen=True)
class Topology:
    """A validated topology; every per-service array follows :attr:`service_names` order.

    Shapes: S = number of services, N = number of nodes.
    """

    name: str
    source: str
    service_names: tuple[str, ...]  # (S,) topological order: callers before callees
    entry_index: int
    calls: np.ndarray  # (S, S) float64: mean calls to column service per request at row service
    calls_var: np.ndarray  # (S, S) float64: variance of that call count (floor + Bernoulli)
    visits_from: np.ndarray  # (S, S) float64: (I - calls)^-1, mean visits of column per request at row
    level_bounds: tuple[tuple[int, int], ...]  # [lo, hi) service slices of equal call depth
    cpu_seconds_per_request: np.ndarray  # (S,) CPU-seconds one request costs the service
    cpu_request: np.ndarray  # (S,) cores per pod
    cpu_limit: np.ndarray  # (S,) cores per pod (CFS quota)
    memory_request_bytes: np.ndarray  # (S,)
    memory_limit_bytes: np.ndarray  # (S,)
    memory_base_bytes: np.ndarray  # (S,) idle working set
    memory_per_inflight_bytes: np.ndarray  # (S,) extra working set per request held in the pod
    min_replicas: np.ndarray  # (S,) int64
    max_replicas: np.ndarray  # (S,) int64
    startup_seconds: np.ndarray  # (S,) container start to Ready
    timeout_seconds: np.ndarray  # (S,) callers abandon requests waiting longer
    queue_limit_per_pod: np.ndarray  # (S,) requests a pod holds before refusing more
    node_names: tuple[str, ...]  # (N,)
    node_cpu: np.ndarray  # (N,) allocatable cores
    node_memory_bytes: np.ndarray  # (N,) allocatable memory
    eviction_timeout_seconds: float
    slo_latency_p95_seconds: float
    slo_error_rate: float
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def num_services(self) -> int:
        return len(self.service_names)

    @property
    def num_nodes(self) -> int:
        return len(self.node_names)

    @property
    def entry_visits(self) -> np.ndarray:
        """Mean visits of each service per external request. Shape (S,)."""
        return self.visits_from[self.entry_index]

    @property
    def throughput_per_replica(self) -> np.ndarray:
        """Requests/s one Ready pod serves when running at its CPU limit. Shape (S,)."""
        return self.cpu_limit / self.cpu_seconds_per_request

    def entry_capacity(self, replicas: np.ndarray | None = None) -> float:
        """Largest external request rate the services can serve at the given replica counts.

        Args:
            replicas: Ready pods per service, shape (S,); defaults to ``max_replicas``.

        Returns:
            Requests/s at the entry at which the first service reaches utilisation 1.
        """
        reps = self.max_replicas if replicas is None else np.asarray(replicas, dtype=float)
        visits = self.entry_visits
        used = visits > 0
        return float(np.min(reps[used] * self.throughput_per_replica[used] / visits[used]))

    def index(self, service: str) -> int:
        """Position of ``service`` on the service axis; KeyError names the known services."""
        try:
            return self.service_names.index(service)
        except ValueError:
            raise KeyError(f"unknown service {service!r} in topology {self.name!r}; "
                           f"services: {', '.join(self.service_names)}") from None


def builtin_topologies() -> list[str]:
    """Names accepted by :func:`load_topology` besides file paths."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_topology(name_or_path: str | Path) -> Topology:
    """Load a built-in topology by name or a YAML file by path, and validate it.

    Args:
        name_or_path: ``"chain4"``, ``"online_boutique"`` or a path to a YAML file.

    Returns:
        The validated :class:`Topology`.

    Raises:
        TopologyError: On any malformed content (names file, key and reason).
        FileNotFoundError: If neither a built-in name nor an existing file.
    """
    path = Path(name_or_path)
    if not path.suffix and (BUILTIN_DIR / f"{name_or_path}.yaml").exists():
        path = BUILTIN_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise FileNotFoundError(
            f"topology {str(name_or_path)!r}: no such file and not a built-in ({', '.join(builtin_topologies())})")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TopologyError(str(path), "<document>", f"not valid YAML: {err}") from None
    return topology_from_dict(document, source=str(path))


def _number(source: str, key: str, value: Any, lower: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TopologyError(source, key, f"expected a finite number, got {value!r}")
    if value < lower or (strict and value == lower):
        raise TopologyError(source, key, f"must be {'>' if strict else '>='} {lower:g}, got {value!r}")
    return float(value)


def _mapping(source: str, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise TopologyError(source, key, f"expected a mapping, got {type(value).__name__}")
    return value


def _check_reachable(source: str, entry: str, services: list[str], calls: dict[str, dict[str, float]]) -> None:
    """Refuse a service no chain of calls from the entry reaches: it would hold pods (and cost)
    but never receive a request, so no policy could be judged on it."""
    reached, frontier = {entry}, [entry]
    while frontier:
        for callee in calls[frontier.pop()]:
            if callee not in reached:
                reached.add(callee)
                frontier.append(callee)
    unreachable = [s for s in services if s not in reached]
    if unreachable:
        svc = unreachable[0]
        others = f" (also unreachable: {', '.join(unreachable[1:])})" if len(unreachable) > 1 else ""
        raise TopologyError(source, f"services.{svc}",
                            f"unreachable from the entry {entry!r}: no chain of calls from {entry!r} leads to it, so "
                            f"it would hold pods and never get load{others}; call it from a service the entry "
                            "reaches, or remove it")


def topology_from_dict(document: Any, source: str = "<dict>") -> Topology:
    """Validate a parsed topology document (see the module docstring) into a :class:`Topology`.

    Args:
        document: The parsed YAML (a mapping).
        source: File name used in error messages.

    Returns:
        The topology, services in topological order.

    Raises:
        TopologyError: Naming ``source``, the offending key and the reason.
    """
    doc = _mapping(source, "<document>", document)
    known_top = {"name", "entry", "slo", "cluster", "defaults", "services", "description"}
    for key in doc:
        if key not in known_top:
            raise TopologyError(source, str(key), f"unknown key; expected one of {sorted(known_top)}")
    for key in ("name", "entry", "services", "cluster"):
        if key not in doc:
            raise TopologyError(source, key, "missing required key")
    name = doc["name"]
    if not isinstance(name, str) or not name:
        raise TopologyError(source, "name", f"expected a non-empty string, got {name!r}")
    defaults = _mapping(source, "defaults", doc.get("defaults", {}))
    services = _mapping(source, "services", doc["services"])
    if not services:
        raise TopologyError(source, "services", "no services")
    file_order = [str(s) for s in services]

    # Per-service parameters with defaults applied, validated.
    params: dict[str, dict[str, float]] = {}
    calls: dict[str, dict[str, float]] = {}
    for key, value in defaults.items():
        if key not in _SERVICE_NUMERIC_KEYS:
            raise TopologyError(source, f"defaults.{key}", f"unknown key; expected one of {sorted(_SERVICE_NUMERIC_KEYS)}")
        _number(source, f"defaults.{key}", value, *_SERVICE_NUMERIC_KEYS[key])
    for svc in file_order:
        spec = _mapping(source, f"services.{svc}", services[svc] if services[svc] is not None else {})
        merged = dict(defaults)
        for key, value in spec.items():
            if key == "calls":
                continue
            if key not in _SERVICE_NUMERIC_KEYS:
                raise TopologyError(source, f"services.{svc}.{key}",
                                    f"unknown key; expected one of {sorted(_SERVICE_NUMERIC_KEYS) + ['calls']}")
            merged[key] = value
        p: dict[str, float] = {}
        for key in _REQUIRED_SERVICE_KEYS:
            if key not in merged:
                raise TopologyError(source, f"services.{svc}.{key}", "missing required field (not in defaults either)")
            p[key] = _number(source, f"services.{svc}.{key}", merged[key], *_SERVICE_NUMERIC_KEYS[key])
        if "cpu_seconds_per_request" in spec and "throughput_per_replica" in spec:
            raise TopologyError(source, f"services.{svc}.throughput_per_replica",
                                "give either cpu_seconds_per_request or throughput_per_replica, not both")
        if "throughput_per_replica" in spec or ("cpu_seconds_per_request" not in merged and "throughput_per_replica" in merged):
            tput = _number(source, f"services.{svc}.throughput_per_replica", merged["throughput_per_replica"], 0.0, True)
            p["cpu_seconds_per_request"] = p["cpu_limit"] / tput
        elif "cpu_seconds_per_request" in merged:
            p["cpu_seconds_per_request"] = _number(source, f"services.{svc}.cpu_seconds_per_request",
                                                   merged["cpu_seconds_per_request"], 0.0, True)
        else:
            raise TopologyError(source, f"services.{svc}.cpu_seconds_per_request",
                                "missing required field (give cpu_seconds_per_request or throughput_per_replica)")
        for key in ("min_replicas", "max_replicas"):
            if p[key] != int(p[key]):
                raise TopologyError(source, f"services.{svc}.{key}", f"expected an integer, got {p[key]!r}")
        if p["min_replicas"] > p["max_replicas"]:
            raise TopologyError(source, f"services.{svc}.min_replicas",
                                f"min_replicas {p['min_replicas']:g} > max_replicas {p['max_replicas']:g}")
        if p["cpu_request"] > p["cpu_limit"]:
            raise TopologyError(source, f"services.{svc}.cpu_request", "cpu_request exceeds cpu_limit")
        if p["memory_request_mib"] > p["memory_limit_mib"]:
            raise TopologyError(source, f"services.{svc}.memory_request_mib", "memory_request_mib exceeds memory_limit_mib")
        params[svc] = p
        svc_calls = _mapping(source, f"services.{svc}.calls", spec.get("calls") or {})
        calls[svc] = {}
        for callee, count in svc_calls.items():
            callee = str(callee)
            if callee not in services:
                raise TopologyError(source, f"services.{svc}.calls.{callee}", f"unknown service {callee!r}")
            if callee == svc:
                raise TopologyError(source, f"services.{svc}.calls.{callee}", "a service cannot call itself (cycle)")
            calls[svc][callee] = _number(source, f"services.{svc}.calls.{callee}", count, 0.0, True)

    entry = doc["entry"]
    if entry not in services:
        raise TopologyError(source, "entry", f"unknown service {entry!r}")
    _check_reachable(source, str(entry), file_order, calls)

    # Call depth by longest path from the entry (Kahn's algorithm also finds cycles).
    indegree = {s: 0 for s in file_order}
    for svc in file_order:
        for callee in calls[svc]:
            indegree[callee] += 1
    depth = {s: 0 for s in file_order}
    ready = [s for s in file_order if indegree[s] == 0]
    visited: list[str] = []
    while ready:
        svc = ready.pop(0)
        visited.append(svc)
        for callee in calls[svc]:
            depth[callee] = max(depth[callee], depth[svc] + 1)
            indegree[callee] -= 1
            if indegree[callee] == 0:
                ready.append(callee)
    if len(visited) < len(file_order):
        cyclic = [s for s in file_order if s not in visited]
        raise TopologyError(source, "services", f"call graph has a cycle through {', '.join(cyclic)}")
    order = sorted(file_order, key=lambda s: (depth[s], file_order.index(s)))
    index = {s: i for i, s in enumerate(order)}
    num_services = len(order)
    call_matrix = np.zeros((num_services, num_services))
    for svc in order:
        for callee, count in calls[svc].items():
            call_matrix[index[svc], index[callee]] = count
    frac = call_matrix - np.floor(call_matrix)
    calls_var = frac * (1.0 - frac)
    visits_from = np.linalg.inv(np.eye(num_services) - call_matrix)
    levels = sorted({depth[s] for s in order})
    level_bounds = tuple(
        (min(index[s] for s in order if depth[s] == lv), max(index[s] for s in order if depth[s] == lv) + 1)
        for lv in levels
    )

    # Cluster.
    cluster = _mapping(source, "cluster", doc["cluster"])
    for key in cluster:
        if key not in ("nodes", "eviction_timeout_seconds"):
            raise TopologyError(source, f"cluster.{key}", "unknown key; expected nodes, eviction_timeout_seconds")
    nodes = cluster.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise TopologyError(source, "cluster.nodes", "expected a non-empty list of {name, cpu, memory_mib}")
    node_names, node_cpu, node_mem = [], [], []
    for i, node in enumerate(nodes):
        node = _mapping(source, f"cluster.nodes[{i}]", node)
        for key in ("name", "cpu", "memory_mib"):
            if key not in node:
                raise TopologyError(source, f"cluster.nodes[{i}].{key}", "missing required field")
        node_names.append(str(node["name"]))
        node_cpu.append(_number(source, f"cluster.nodes[{i}].cpu", node["cpu"], 0.0, True))
        node_mem.append(_number(source, f"cluster.nodes[{i}].memory_mib", node["memory_mib"], 0.0, True) * MIB)
    if len(set(node_names)) != len(node_names):
        raise TopologyError(source, "cluster.nodes", "duplicate node names")
    eviction = _number(source, "cluster.eviction_timeout_seconds", cluster.get("eviction_timeout_seconds", 300.0), 0.0, False)
    max_pod_cpu = max(params[s]["cpu_request"] for s in order)
    if max_pod_cpu > max(node_cpu):
        raise TopologyError(source, "cluster.nodes", f"no node can hold a pod requesting {max_pod_cpu:g} cores")

    slo = _mapping(source, "slo", doc.get("slo", {}))
    for key in slo:
        if key not in ("latency_p95_seconds", "error_rate"):
            raise TopologyError(source, f"slo.{key}", "unknown key; expected latency_p95_seconds, error_rate")
    slo_latency = _number(source, "slo.latency_p95_seconds", slo.get("latency_p95_seconds", 0.5), 0.0, True)
    slo_error = _number(source, "slo.error_rate", slo.get("error_rate", 0.01), 0.0, False)

    def column(key: str, scale: float = 1.0) -> np.ndarray:
        return np.array([params[s][key] * scale for s in order], dtype=np.float64)

    return Topology(
        name=name,
        source=source,
        service_names=tuple(order),
        entry_index=index[entry],
        calls=call_matrix,
        calls_var=calls_var,
        visits_from=visits_from,
        level_bounds=level_bounds,
        cpu_seconds_per_request=column("cpu_seconds_per_request"),
        cpu_request=column("cpu_request"),
        cpu_limit=column("cpu_limit"),
        memory_request_bytes=column("memory_request_mib", MIB),
        memory_limit_bytes=column("memory_limit_mib", MIB),
        memory_base_bytes=column("memory_base_mib", MIB),
        memory_per_inflight_bytes=column("memory_per_inflight_mib", MIB),
        min_replicas=column("min_replicas").astype(np.int64),
        max_replicas=column("max_replicas").astype(np.int64),
        startup_seconds=column("startup_seconds"),
        timeout_seconds=column("timeout_seconds"),
        queue_limit_per_pod=column("queue_limit_per_pod"),
        node_names=tuple(node_names),
        node_cpu=np.array(node_cpu),
        node_memory_bytes=np.array(node_mem),
        eviction_timeout_seconds=eviction,
        slo_latency_p95_seconds=slo_latency,
        slo_error_rate=slo_error,
        extra={"description": doc.get("description", "")},
    )


def with_cpu_seconds(topology: Topology, cpu_seconds_per_request: dict[str, float]) -> Topology:
    """Copy of ``topology`` with some services' CPU-seconds per request replaced (calibration).

    Args:
        topology: The topology to copy.
        cpu_seconds_per_request: Service name -> new CPU-seconds per request (> 0).

    Returns:
        A new :class:`Topology`.
    """
    cost = topology.cpu_seconds_per_request.copy()
    for svc, value in cpu_seconds_per_request.items():
        if not value > 0:
            raise ValueError(f"cpu_seconds_per_request for {svc!r} must be > 0, got {value!r}")
        cost[topology.index(svc)] = value
    fields = dict(topology.__dict__)
    fields["cpu_seconds_per_request"] = cost
    return Topology(**fields)
