"""Batched dynamics of the microservice twin: pods, queues, latency, metrics.

The state is a :class:`ClusterState` of plain arrays with a leading batch axis B (independent
clusters): ``[B, S]`` per service, ``[B, S, K]`` per pod slot, ``[B, N]`` per node. :func:`step`
is a pure-ish function ``(params, state, desired, rng, ...) -> (state, observations, info)``
over all B clusters at once.

Implementation: the step checks and broadcasts its inputs, then runs one compiled kernel,
:func:`kernels.step_clusters` (numba): per cluster, loops over services and pod slots, in
three passes (pods; requests through the call graph; the pods' end of step and the metrics).
As numpy calls on ``[B, S, K]`` arrays the step took some 250 calls, whose fixed cost
dominated at RL batch sizes. The frozen dense numpy version in
``tests/microservices/reference_dynamics.py`` states the same model array by array;
``tests/microservices/test_step_equivalence.py`` steps both side by side: pod phases, nodes,
counts and random streams must be identical, floats equal to rounding.

Model, per control step of ``step_seconds`` (default 15 s, the HPA sync period):

1. **Nodes and failures** (scenario schedule): pods on a node that goes down stop serving and
   are held as *lost* (still counted by the ReplicaSet) until ``eviction_timeout_seconds``,
   then deleted and replaced. Random crashes (rate per Ready pod) and targeted kills move
   Ready pods to CrashLoopBackOff: back-off 10 s doubling to 300 s, reset after 600 s Ready.
2. **Replica reconciliation** as a ReplicaSet does: the desired count (clipped to the
   bounds) is compared with live pods (Pending, starting, Ready, back-off, lost); missing
   pods are created Pending; surplus pods are deleted in Kubernetes' order (Pending first,
   then lost, back-off, starting, Ready; newest first) and Terminate for
   ``termination_seconds`` while still holding their node resources.
3. **Scheduling**: Pending pods are bound round-robin over the up nodes in order of free CPU;
   a pod whose requests (CPU and memory) do not fit its node stays Pending and retries next
   step. Node requests never exceed allocatable resources. Bound pods start and become Ready
   after the service's ``startup_seconds``.
4. **Queues** (``substeps`` per step, levels of the call graph in topological order): entry
   arrivals are Poisson around the trace rate plus the attack rate; each served request
   emits its mean calls downstream (fluid). Each service serves ``ready x mu`` requests/s,
   ``mu = cpu_limit x contention x bottleneck / cpu_seconds_per_request`` (CPU throttled at
   the limit; pods on a node whose CPU demand plus the noisy neighbour exceeds its capacity
   get a proportional share). Backlog carries over; what exceeds
   ``min(queue_limit_per_pod x ready, timeout x throughput)`` is dropped (queue full or
   caller timeout), and with no Ready pod every call fails.
5. **Latency**: per service, M/M/c sojourn (exact Erlang C for the waiting probability, the
   offered load capped at 98% of capacity) plus the fluid backlog's wait ``backlog / (c mu)``,
   capped at the timeout. Latency as Prometheus sees it is *inclusive* (a service's latency
   contains its downstream calls, made sequentially): ``L = T M^T`` with ``M = (I - calls)^-1``,
   variance likewise with the call-count variance; p50/p95/p99 from a gamma distribution with
   that mean and variance (Wilson-Hilferty quantile), capped at the service's timeout (callers
   give up then). End-to-end = the entry's inclusive
   latency; end-to-end error = ``1 - prod_s (1 - drop_s)^visits_s``. Repeated visits of one
   request to a service see nearly the same queue (they are a few service times apart, the
   queue relaxes far slower near saturation), so their waits count as fully correlated in the
   variance; other sojourns are independent.
6. **Memory and OOM**: a pod's working set is ``base + per_inflight x requests in the pod``;
   pods above their limit are OOM-killed (into back-off) and the requests they held are
   dropped. Load is spread with +-10% imbalance so not every pod dies at once.

Requests are conserved per service: ``served + dropped + backlog = arrived`` (cumulative
counters in the state).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from digital_twin.microservices import kernels
from digital_twin.microservices.kernels import (  # noqa: F401  (the phases are part of this module's API)
    CRASHLOOP, EMPTY, LOST, NUM_PHASES, PENDING, READY, STARTING, TERMINATING, Z_P50, Z_P95, Z_P99,
)
from digital_twin.microservices.metrics import NUM_METRICS
from digital_twin.microservices.topology import Topology

PHASE_NAMES = ("empty", "pending", "starting", "ready", "crashloop", "terminating", "lost")

_Z = {"p50": Z_P50, "p95": Z_P95, "p99": Z_P99}


@dataclass(frozen=True)
class TwinConfig:
    """Simulation settings that are not part of the topology.

    Attributes:
        step_seconds: Control-step length (the HPA sync period).
        substeps: Queue-model sub-steps per control step.
        poisson_arrivals: Draw entry arrivals per sub-step from a Poisson law (else fluid).
        crashloop_initial_backoff: First CrashLoopBackOff delay, seconds.
        crashloop_max_backoff: Back-off cap, seconds.
        crashloop_reset_seconds: Ready time after which the back-off resets.
        termination_seconds: Time a deleted pod holds its node resources.
        max_utilisation: Offered load is capped at this share of capacity in the stationary
            M/M/c formulas (the fluid backlog term covers overload).
        load_imbalance: Relative spread of per-pod in-flight requests (OOM check).
        slot_headroom: Extra pod slots per service beyond ``max_replicas`` (room for
            Terminating pods while replacements start).
    """

    step_seconds: float = 15.0
    substeps: int = 5
    poisson_arrivals: bool = True
    crashloop_initial_backoff: float = 10.0
    crashloop_max_backoff: float = 300.0
    crashloop_reset_seconds: float = 600.0
    termination_seconds: float = 5.0
    max_utilisation: float = 0.98
    load_imbalance: float = 0.1
    slot_headroom: int = 4


@dataclass
class ClusterState:
    """State of B independent clusters. Shapes: B clusters, S services, K pod slots, N nodes."""

    step_index: np.ndarray  # (B,) int64 control steps taken (index into load and scenarios)
    phase: np.ndarray  # (B, S, K) int8 pod phase (EMPTY ... LOST)
    timer: np.ndarray  # (B, S, K) float64 seconds left in STARTING / CRASHLOOP / TERMINATING / LOST
    node: np.ndarray  # (B, S, K) int16 bound node, -1 when unbound
    backoff: np.ndarray  # (B, S, K) float64 next CrashLoopBackOff delay
    ready_age: np.ndarray  # (B, S, K) float64 seconds Ready since the last start
    desired: np.ndarray  # (B, S) int64 last desired replica count (clipped)
    backlog: np.ndarray  # (B, S) float64 queued requests carried to the next step
    node_demand: np.ndarray  # (B, N) float64 pods' CPU demand on each node last step, cores
    restarts: np.ndarray  # (B, S) int64 cumulative container restarts
    arrived_total: np.ndarray  # (B, S) float64 cumulative requests arrived
    served_total: np.ndarray  # (B, S) float64 cumulative requests served
    dropped_total: np.ndarray  # (B, S) float64 cumulative requests dropped

    def copy(self) -> "ClusterState":
        return ClusterState(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    @property
    def batch_size(self) -> int:
        return self.phase.shape[0]


@dataclass(frozen=True)
class TwinParams:
    """Topology and config flattened into broadcast-ready arrays (built once)."""

    topology: Topology
    config: TwinConfig
    num_slots: int  # K
    slot_valid: np.ndarray  # (S, K) bool: slot usable by the service
    calls: np.ndarray  # (S, S)
    calls_var_t: np.ndarray  # (S, S) transposed call-count variance
    visits_from_t: np.ndarray  # (S, S) transposed (I - calls)^-1
    repeat_pairs_t: np.ndarray  # (S, S) transposed max(M*M - M, 0): ordered pairs of repeat visits
    entry_visits: np.ndarray  # (S,)
    level_bounds: tuple[tuple[int, int], ...]
    startup: np.ndarray  # (S,)
    cost: np.ndarray  # (S,) CPU-seconds per request
    cpu_request: np.ndarray  # (S,)
    cpu_limit: np.ndarray  # (S,)
    mem_request: np.ndarray  # (S,)
    mem_limit: np.ndarray  # (S,)
    mem_base: np.ndarray  # (S,)
    mem_per_inflight: np.ndarray  # (S,)
    min_replicas: np.ndarray  # (S,)
    max_replicas: np.ndarray  # (S,)
    timeout: np.ndarray  # (S,)
    queue_limit: np.ndarray  # (S,)
    node_cpu: np.ndarray  # (N,)
    node_mem: np.ndarray  # (N,)
    kernel: kernels.KernelParams | None = None  # the same, as the compiled step reads them (set by make_params)


def make_params(topology: Topology, config: TwinConfig | None = None) -> TwinParams:
    """Precompute the arrays the step needs.

    Args:
        topology: The validated topology.
        config: Simulation settings (defaults if None).

    Returns:
        The :class:`TwinParams`.
    """
    config = config or TwinConfig()
    if config.substeps < 1 or config.step_seconds <= 0:
        raise ValueError(f"need substeps >= 1 and step_seconds > 0, got {config.substeps}, {config.step_seconds}")
    num_slots = int(topology.max_replicas.max()) + int(config.slot_headroom)
    slot_valid = np.arange(num_slots)[None, :] < (topology.max_replicas[:, None] + config.slot_headroom)
    params = TwinParams(
        topology=topology,
        config=config,
        num_slots=num_slots,
        slot_valid=slot_valid,
        calls=topology.calls,
        calls_var_t=np.ascontiguousarray(topology.calls_var.T),
        visits_from_t=np.ascontiguousarray(topology.visits_from.T),
        repeat_pairs_t=np.ascontiguousarray(np.maximum(topology.visits_from**2 - topology.visits_from, 0.0).T),
        entry_visits=topology.entry_visits.copy(),
        level_bounds=topology.level_bounds,
        startup=topology.startup_seconds,
        cost=topology.cpu_seconds_per_request,
        cpu_request=topology.cpu_request,
        cpu_limit=topology.cpu_limit,
        mem_request=topology.memory_request_bytes,
        mem_limit=topology.memory_limit_bytes,
        mem_base=topology.memory_base_bytes,
        mem_per_inflight=topology.memory_per_inflight_bytes,
        min_replicas=topology.min_replicas,
        max_replicas=topology.max_replicas,
        timeout=topology.timeout_seconds,
        queue_limit=topology.queue_limit_per_pod,
        node_cpu=topology.node_cpu,
        node_mem=topology.node_memory_bytes,
    )

    lo = np.array([b[0] for b in topology.level_bounds], dtype=np.int64)
    hi = np.array([b[1] for b in topology.level_bounds], dtype=np.int64)
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    kernel = kernels.KernelParams(
        slot_valid=np.ascontiguousarray(slot_valid), level_lo=lo, level_hi=hi,
        **dict(zip(("calls_ptr", "calls_row", "calls_val"), kernels.by_column(params.calls))),
        **dict(zip(("calls_var_ptr", "calls_var_row", "calls_var_val"), kernels.by_column(params.calls_var_t))),
        **dict(zip(("visits_ptr", "visits_row", "visits_val"), kernels.by_column(params.visits_from_t))),
        **dict(zip(("pairs_ptr", "pairs_row", "pairs_val"), kernels.by_column(params.repeat_pairs_t))),
        startup=f64(params.startup), cost=f64(params.cost), cpu_request=f64(params.cpu_request),
        cpu_limit=f64(params.cpu_limit), mem_request=f64(params.mem_request), mem_limit=f64(params.mem_limit),
        mem_base=f64(params.mem_base), mem_per_inflight=f64(params.mem_per_inflight),
        min_replicas=np.ascontiguousarray(params.min_replicas, dtype=np.int64),
        max_replicas=np.ascontiguousarray(params.max_replicas, dtype=np.int64),
        timeout=f64(params.timeout), queue_limit=f64(params.queue_limit), node_cpu=f64(params.node_cpu),
        node_mem=f64(params.node_mem), entry=int(topology.entry_index),
        eviction_seconds=float(topology.eviction_timeout_seconds), slo_p95=float(topology.slo_latency_p95_seconds),
        slo_error_rate=float(topology.slo_error_rate), step_seconds=float(config.step_seconds),
        substeps=int(config.substeps), poisson_arrivals=bool(config.poisson_arrivals),
        initial_backoff=float(config.crashloop_initial_backoff), max_backoff=float(config.crashloop_max_backoff),
        backoff_reset_seconds=float(config.crashloop_reset_seconds),
        termination_seconds=float(config.termination_seconds), max_utilisation=float(config.max_utilisation),
        load_imbalance=float(config.load_imbalance),
    )
    return replace(params, kernel=kernel)


def reset(params: TwinParams, batch_size: int, initial_replicas: np.ndarray | None = None,
          rng: np.random.Generator | None = None) -> ClusterState:
    """Start B clusters with ``initial_replicas`` Ready pods per service, placed on nodes.

    Pods are placed round-robin over the nodes in slot order; pods that do not fit stay
    Pending (placement is deterministic, so ``rng`` is accepted for API symmetry only).

    Args:
        params: From :func:`make_params`.
        batch_size: B.
        initial_replicas: (S,) or (B, S) replica counts; default ``min_replicas``.
        rng: Unused (reserved for randomised starts).

    Returns:
        The initial :class:`ClusterState`.
    """
    del rng
    topo = params.topology
    s, k, n = topo.num_services, params.num_slots, topo.num_nodes
    reps = params.min_replicas if initial_replicas is None else np.asarray(initial_replicas)
    reps = np.broadcast_to(np.clip(reps, params.min_replicas, params.max_replicas), (batch_size, s)).astype(np.int64)
    slot = np.arange(k)
    # C order: the compiled scheduler takes C-contiguous arrays (``reps`` may be a broadcast view).
    phase = np.where(slot[None, None, :] < reps[:, :, None], PENDING, EMPTY).astype(np.int8, order="C")
    state = ClusterState(
        step_index=np.zeros(batch_size, dtype=np.int64),
        phase=phase,
        timer=np.zeros((batch_size, s, k)),
        node=np.full((batch_size, s, k), -1, dtype=np.int16),
        backoff=np.full((batch_size, s, k), params.config.crashloop_initial_backoff),
        ready_age=np.zeros((batch_size, s, k)),
        desired=reps.copy(),
        backlog=np.zeros((batch_size, s)),
        node_demand=np.zeros((batch_size, n)),
        restarts=np.zeros((batch_size, s), dtype=np.int64),
        arrived_total=np.zeros((batch_size, s)),
        served_total=np.zeros((batch_size, s)),
        dropped_total=np.zeros((batch_size, s)),
    )
    node_up = np.ones((batch_size, n), dtype=bool)
    kernels.schedule_pending(params.kernel, state.phase, state.timer, state.node, node_up,
                             np.zeros(batch_size, dtype=np.int64))
    # Initial pods start Ready (the cluster has been running before the episode).
    bound = state.phase == STARTING
    state.phase[bound] = READY
    state.timer[bound] = 0.0
    state.ready_age[bound] = params.config.crashloop_reset_seconds
    return state


def step(
    params: TwinParams,
    state: ClusterState,
    desired_replicas: np.ndarray,
    rng: np.random.Generator,
    entry_rate: np.ndarray,
    attack_rate: np.ndarray,
    crash_rate: np.ndarray,
    kills: np.ndarray,
    noisy_cpu: np.ndarray,
    capacity_factor: np.ndarray,
    node_up: np.ndarray,
    inplace: bool = False,
) -> tuple[ClusterState, np.ndarray, dict[str, np.ndarray]]:
    """Advance B clusters by one control step (see the module docstring for the model).

    Args:
        params: From :func:`make_params`.
        state: Current state (not modified unless ``inplace``).
        desired_replicas: (B, S) int desired replica counts (clipped to the bounds).
        rng: Source of all randomness (arrivals, crashes, load imbalance).
        entry_rate: (B,) legitimate requests/s at the entry this step.
        attack_rate: (B,) attack requests/s at the entry this step.
        crash_rate: (B, S) random crashes per Ready pod per second.
        kills: (B, S) Ready pods to kill at the start of the step.
        noisy_cpu: (B, N) cores a noisy neighbour takes per node.
        capacity_factor: (B, S) per-pod throughput multiplier (bottleneck).
        node_up: (B, N) bool nodes up this step.
        inplace: Update ``state`` itself and return it (saves a copy of every array, for
            callers that drop the old state); the results are the same.

    Returns:
        ``(new_state, observations, info)``. ``observations`` is (B, S, M) float32 in
        :data:`metrics.METRICS` order. ``info`` holds (B,) arrays ``e2e_latency_mean``,
        ``e2e_latency_p95``, ``e2e_error_rate``, ``slo_violated``, ``offered_rate`` and
        (B, S) arrays ``arrived``, ``served``, ``dropped``, ``ready_pod_seconds``,
        ``allocated_pod_seconds``, ``cpu_request_core_seconds``, ``crashes``, ``oom_kills``.
    """
    b, s = state.desired.shape
    st = _writable(state) if inplace else state.copy()
    f64 = lambda a, shape: np.ascontiguousarray(np.broadcast_to(a, shape), dtype=np.float64)  # noqa: E731
    crash_rate = f64(crash_rate, (b, s))
    # Computed here with numpy's expm1, as the reference does, so that crash decisions match it exactly.
    crash_prob = -np.expm1(-crash_rate * params.config.step_seconds) if crash_rate.any() else crash_rate
    offered_rate = np.asarray(entry_rate, dtype=np.float64) + np.asarray(attack_rate, dtype=np.float64)
    n = params.node_cpu.shape[0]
    out = kernels.StepOutputs(
        obs=np.empty((b, s, NUM_METRICS), dtype=np.float32),
        e2e_latency_mean=np.empty(b), e2e_latency_p95=np.empty(b), e2e_error_rate=np.empty(b),
        slo_violated=np.empty(b, dtype=bool),
        arrived=np.empty((b, s)), served=np.empty((b, s)), dropped=np.empty((b, s)),
        ready_pod_seconds=np.empty((b, s)), allocated_pod_seconds=np.empty((b, s)),
        cpu_request_core_seconds=np.empty((b, s)),
        crashes=np.empty((b, s), dtype=np.int64), oom_kills=np.empty((b, s), dtype=np.int64),
    )
    inputs = kernels.StepInputs(
        desired=np.ascontiguousarray(np.broadcast_to(desired_replicas, (b, s)), dtype=np.int64),
        offered_rate=np.ascontiguousarray(np.broadcast_to(offered_rate, (b,))), crash_prob=crash_prob,
        kills=np.ascontiguousarray(np.broadcast_to(kills, (b, s)), dtype=np.int64), noisy_cpu=f64(noisy_cpu, (b, n)),
        capacity_factor=f64(capacity_factor, (b, s)),
        node_up=np.ascontiguousarray(np.broadcast_to(node_up, (b, n)), dtype=bool))
    # As plain tuples of the fields: numba checks their types faster (see kernels.step_clusters).
    kernels.step_clusters(tuple(params.kernel), tuple(getattr(st, name) for name in kernels.KernelState._fields),
                          tuple(inputs), rng, tuple(out))
    info = out._asdict()
    del info["obs"]
    info["offered_rate"] = offered_rate
    return st, out.obs, info


def _writable(state: ClusterState) -> ClusterState:
    """``state`` itself, with any field that is not a writable C-contiguous array replaced by a
    copy (the compiled step writes into it)."""
    for f in fields(state):
        value = getattr(state, f.name)
        if not (value.flags.c_contiguous and value.flags.writeable):
            setattr(state, f.name, np.ascontiguousarray(value).copy())
    return state


def with_state(state: ClusterState, **changes) -> ClusterState:
    """Copy of ``state`` with some fields replaced (for tests and env resets)."""
    return replace(state.copy(), **changes)
