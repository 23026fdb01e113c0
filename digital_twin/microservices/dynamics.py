"""Batched dynamics of the microservice twin: pods, queues, latency, metrics.

The state is a :class:`ClusterState` of plain arrays with a leading batch axis B (independent
clusters); :func:`step` is a pure-ish function ``(params, state, desired, rng, ...) ->
(state, observations, info)`` vectorised over ``[B, S]`` (services) and ``[B, S, K]`` (pod
slots). Python loops in a step run only over call-graph levels (3-4), sub-steps (a handful)
and the Erlang recursion (up to K).

Implementation: the pods whose state changes in a step (created, deleted, Pending, starting,
crashing) are usually few, so that work runs on their flat indices, or on the (R, K) slot rows
of the services concerned, rather than on dense ``[B, S, K]`` masks; ``inplace=True`` skips
the copy of the state. Every float is computed with the same operations in the same order as
the straightforward dense version frozen in ``tests/microservices/reference_dynamics.py``:
sums that depend on order (per-node requests, running sums on a node) are sequential in
(service, slot) order like it. ``tests/microservices/test_step_equivalence.py`` checks that
observations, info and states stay bit for bit identical to it.

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

import functools
from dataclasses import dataclass, fields, replace

import numpy as np

from digital_twin.microservices.metrics import METRIC_INDEX, NUM_METRICS
from digital_twin.microservices.topology import Topology

# Pod phases (int8). LOST = on a node that went down, not yet evicted.
EMPTY, PENDING, STARTING, READY, CRASHLOOP, TERMINATING, LOST = range(7)
NUM_PHASES = 7
PHASE_NAMES = ("empty", "pending", "starting", "ready", "crashloop", "terminating", "lost")

_Z = {"p50": 0.0, "p95": 1.6448536269514722, "p99": 2.3263478740408408}


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
    return TwinParams(
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
    # C order: the scheduler writes through flat views (``reps`` may be a broadcast view).
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
    _schedule_pending(params, state, node_up, rotation=0)
    # Initial pods start Ready (the cluster has been running before the episode).
    bound = state.phase == STARTING
    state.phase[bound] = READY
    state.timer[bound] = 0.0
    state.ready_age[bound] = params.config.crashloop_reset_seconds
    return state


# Deletion priority of each phase when a ReplicaSet scales down (lower goes first): Pending,
# lost, back-off, starting, Ready; Empty and Terminating pods are not live (never chosen).
_DELETE_PRIORITY = np.array([9, 0, 3, 4, 2, 9, 1], dtype=np.int64)  # indexed by phase


@functools.lru_cache(maxsize=8)
def _phase_offsets(rows: int, k: int) -> np.ndarray:
    """``NUM_PHASES x`` the flat (cluster, service) row of every pod slot (read-only, cached per shape)."""
    offsets = np.arange(rows, dtype=np.int64).repeat(k) * NUM_PHASES
    offsets.flags.writeable = False
    return offsets


def _phase_counts(phase: np.ndarray) -> np.ndarray:
    """Pods per phase. Shapes: phase (B, S, K) -> counts (B, S, NUM_PHASES) int64."""
    b, s, k = phase.shape
    flat = _phase_offsets(b * s, k) + phase.reshape(-1)
    return np.bincount(flat, minlength=b * s * NUM_PHASES).reshape(b, s, NUM_PHASES)


def _count(mask: np.ndarray) -> np.ndarray:
    """True entries per (cluster, service). Shapes: (B, S, K) bool -> (B, S) int64."""
    if mask.shape[2] < 256:
        # A uint8 einsum is about 4x faster than sum(axis=2) over short rows (no overflow: <= K).
        return np.einsum("bsk->bs", mask.view(np.uint8)).astype(np.int64)
    return mask.sum(axis=2)


def _first_n(mask: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The first ``n`` True entries of each row: ``mask & (cumsum(mask, axis=1) <= n)``.

    Shapes: mask (R, K) bool, n (R,) int -> (R, K) bool.
    """
    k = mask.shape[1]
    dtype = np.int16 if k < 2**15 else np.int64  # small counts: a narrow cumsum is faster
    running = np.cumsum(mask, axis=1, dtype=dtype)
    return mask & (running <= np.minimum(n, k).astype(dtype)[:, None])


def _row_entries(rows: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Flat (cluster, service, slot) indices of the True entries of ``selected``, whose row r
    is the flat (cluster, service) ``rows[r]``; in order. Shapes: rows (R,), selected (R, K) -> (P,)."""
    k = selected.shape[1]
    f = np.flatnonzero(selected)  # r * K + slot
    r = f // k
    return (rows[r] - r) * k + f  # rows[r] * K + slot


def _bound_pods(node: np.ndarray, num_nodes: int,
                pods: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bound pods (those in ``pods`` if given), in (cluster, service, slot) order: their flat
    index, flat (cluster, service) row and flat (cluster, node) bin.

    Shapes: node (B, S, K), pods (B, S, K) bool -> three (P,) int64.
    """
    b, s, k = node.shape
    bound = node >= 0
    if pods is not None:
        bound &= pods
    idx = np.flatnonzero(bound)
    row = idx // k
    return idx, row, row // s * num_nodes + node.reshape(-1)[idx]


def _per_node_sum(node: np.ndarray, weight: np.ndarray, num_nodes: int, pods: np.ndarray | None = None) -> np.ndarray:
    """Sum ``weight`` of bound pods (those in ``pods`` if given) per node.

    Each node's pods are added in (service, slot) order (bincount adds in input order), so the
    sums are the same bit for bit however the weights are given.

    Shapes: node (B, S, K); weight (B, S, K), or (B, S, 1) / (1, S, 1) for one value per
    service; pods (B, S, K) bool -> (B, N).
    """
    b, s, k = node.shape
    idx, row, bins = _bound_pods(node, num_nodes, pods)
    weight = np.asarray(weight)
    if weight.ndim == 3 and weight.shape[2] == 1:
        w = np.broadcast_to(weight[:, :, 0], (b, s)).reshape(-1)[row]
    else:
        w = np.broadcast_to(weight, node.shape).reshape(-1)[idx]
    return np.bincount(bins, weights=w, minlength=b * num_nodes).reshape(b, num_nodes)


def _schedule_pending(params: TwinParams, state: ClusterState, node_up: np.ndarray, rotation: int | np.ndarray) -> None:
    """Bind Pending pods to up nodes that fit their requests (in place).

    Pending pods, in (service, slot) order, are dealt round-robin over the up nodes sorted by
    free CPU (most free first, rotated by ``rotation`` so that retries try other nodes); on
    each node the pods dealt to it are admitted while the cumulative CPU and memory requests
    fit. Shapes: node_up (B, N); rotation scalar or (B,) (each cluster's own step count: clusters
    of a vector env reset independently); the state's arrays must be C-contiguous.

    Only the Pending pods are visited (flat indices). When some node's whole share does not fit,
    its running sums are taken over a small (cluster x node, pods dealt to it) grid: the same
    additions in the same order as a cumulative sum over all pod slots, without the dense
    (B, S*K, N) arrays.
    """
    phase = state.phase
    b, s, k = phase.shape
    pods = np.flatnonzero(phase == PENDING)  # (P,) flat (cluster, service, slot), in order
    if pods.size == 0:
        return
    n = node_up.shape[1]
    _, row, bins = _bound_pods(state.node, n)  # every pod holding node resources
    svc_bound = row - row // s * s
    used_cpu = np.bincount(bins, weights=params.cpu_request[svc_bound], minlength=b * n).reshape(b, n)
    used_mem = np.bincount(bins, weights=params.mem_request[svc_bound], minlength=b * n).reshape(b, n)
    free_cpu = np.where(node_up, params.node_cpu - used_cpu, 0.0)
    free_mem = np.where(node_up, params.node_mem - used_mem, 0.0)
    # Node preference per cluster: most free CPU first; down nodes last.
    order = np.argsort(-np.where(node_up, free_cpu, -np.inf), axis=1, kind="stable")  # (B, N)
    n_up = node_up.sum(axis=1)  # (B,)

    cluster = pods // (s * k)
    per_cluster = np.bincount(cluster, minlength=b)
    rank = np.arange(pods.size) - (np.cumsum(per_cluster) - per_cluster)[cluster]  # among the cluster's pending pods
    q = n_up[cluster]
    if not q.all():  # clusters with every node down bind nothing
        keep = q > 0
        pods, cluster, rank, q = pods[keep], cluster[keep], rank[keep], q[keep]
        if pods.size == 0:
            return
    rot = rotation[cluster] if np.ndim(rotation) else rotation
    pos = (rank + rot) % q
    chosen = order[cluster, pos]  # (P,) node index
    # Round-robin: the pods dealt to one node are every q-th pending pod of the cluster, from the
    # first whose rank r has (r + rotation) % q == pos; ``within`` numbers them from 0.
    within = (rank - (pos - rot) % q) // q
    group = cluster * n + chosen
    svc = pods // k - cluster * s
    cpu, mem = params.cpu_request[svc], params.mem_request[svc]
    cpu_room = free_cpu.reshape(-1)[group] + 1e-9
    mem_room = free_mem.reshape(-1)[group] + 1e-6
    # Each node's whole share first: bincount adds in pod order, so its totals equal the running
    # sums at each node's last pod. Running sums of non-negative requests only grow, so if
    # every total fits (the common case), every pod fits.
    fits = None
    if params.cpu_request.min() >= 0 and params.mem_request.min() >= 0:
        total_cpu = np.bincount(group, weights=cpu, minlength=b * n)[group]
        total_mem = np.bincount(group, weights=mem, minlength=b * n)[group]
        if ((total_cpu <= cpu_room) & (total_mem <= mem_room)).all():
            fits = np.ones(pods.size, dtype=bool)
    if fits is None:  # running sums per (cluster, node), as a small dense grid
        cum = np.zeros((2, b * n, int(within.max()) + 1))
        cum[0, group, within] = cpu
        cum[1, group, within] = mem
        np.cumsum(cum, axis=2, out=cum)
        fits = (cum[0, group, within] <= cpu_room) & (cum[1, group, within] <= mem_room)
    bound = pods[fits]
    state.node.reshape(-1)[bound] = chosen[fits]
    phase.reshape(-1)[bound] = STARTING
    state.timer.reshape(-1)[bound] = params.startup[svc[fits]]


def _surplus_to_delete(phase: np.ndarray, surplus: np.ndarray) -> np.ndarray:
    """Live pods a ReplicaSet deletes: ``surplus`` per service, in Kubernetes' order (Pending,
    lost, back-off, starting, Ready; newest slot first).

    Shapes: phase (R, K) int8 pod phases of R services, surplus (R,) int >= 1 -> (R, K) bool.
    """
    r, k = phase.shape
    # A key unique within a row: priority, then newest slot first. The pods to delete are the
    # ``surplus`` smallest keys (non-live pods have the largest), i.e. keys up to the n-th smallest.
    key = _DELETE_PRIORITY.take(phase) * k + (k - 1 - np.arange(k))
    nth = np.sort(key, axis=1)[np.arange(r), np.minimum(surplus, k) - 1]
    live = (phase != EMPTY) & (phase != TERMINATING)
    return live & (key <= nth[:, None])


def _erlang_c(servers: np.ndarray, offered: np.ndarray) -> np.ndarray:
    """Probability of waiting in M/M/c (Erlang C), via the Erlang B recursion.

    Args:
        servers: (B, S) int64 c >= 1.
        offered: (B, S) float64 a = lambda / mu, with a < c.

    Returns:
        (B, S) float64 probability that an arrival waits.
    """
    # B_0 = 1, B_j = a B_{j-1} / (j + a B_{j-1}) for j = 1..c. Elements sorted by c (largest
    # first) make step j a prefix: no masking of the elements already done.
    c = servers.reshape(-1)
    # (a stable sort of int16 keys is a radix sort: several times faster than of int64)
    order = np.argsort(-c.astype(np.int16) if c.max() < 2**15 else -c, kind="stable")
    a = offered.reshape(-1)[order]
    at_least = np.cumsum(np.bincount(c)[::-1])[::-1]  # at_least[j] = #elements with c >= j
    erlang_b = np.ones_like(a)
    t, d = np.empty_like(a), np.empty_like(a)
    for j in range(1, len(at_least)):
        m = at_least[j]
        np.multiply(a[:m], erlang_b[:m], out=t[:m])
        np.add(t[:m], j, out=d[:m])
        np.divide(t[:m], d[:m], out=erlang_b[:m])
    unsorted = np.empty_like(erlang_b)
    unsorted[order] = erlang_b
    erlang_b = unsorted.reshape(servers.shape)
    return servers * erlang_b / (servers - offered * (1.0 - erlang_b))


def gamma_quantile(mean: np.ndarray, var: np.ndarray, z: float) -> np.ndarray:
    """Quantile of a gamma law with the given mean and variance (Wilson-Hilferty).

    Args:
        mean: Array of means (> 0).
        var: Array of variances (>= 0), same shape.
        z: Standard-normal quantile of the wanted level (1.645 for p95).

    Returns:
        The quantile, same shape; equals ``mean`` where ``var`` is 0.
    """
    return _gamma_quantiles(mean, var, (z,))[0]


def _gamma_quantiles(mean: np.ndarray, var: np.ndarray, zs: tuple[float, ...]) -> list[np.ndarray]:
    """:func:`gamma_quantile` at several levels, sharing the work that does not depend on z."""
    shape = mean * mean / np.maximum(var, 1e-300)
    inv9k = 1.0 / (9.0 * shape)
    base = 1.0 - inv9k
    spread = np.sqrt(inv9k)
    has_var = var > 0
    return [np.where(has_var, mean * np.maximum(base + z * spread, 0.0) ** 3, mean) for z in zs]


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
    cfg = params.config
    topo = params.topology
    dt = cfg.step_seconds
    sub = cfg.substeps
    h = dt / sub
    st = _writable(state) if inplace else state.copy()
    b, s, k = st.phase.shape
    n = topo.num_nodes
    phase, timer, node = st.phase, st.timer, st.node  # updated in place below
    startup = params.startup[None, :, None]

    # 1. Node loss / return. Pods on a down node stop serving and wait for eviction.
    if node_up.all():
        back = phase == LOST  # every node is up: lost pods' nodes have returned
    else:
        bound = node >= 0
        on_up_node = np.take(node_up, np.arange(b)[:, None, None] * n + np.maximum(node, 0))
        running = (phase == STARTING) | (phase == READY) | (phase == CRASHLOOP)
        lose = bound & ~on_up_node & running
        phase[lose] = LOST
        timer[lose] = topo.eviction_timeout_seconds
        gone = bound & ~on_up_node & (phase == TERMINATING)
        phase[gone] = EMPTY
        node[gone] = -1
        back = (phase == LOST) & on_up_node  # node returned before eviction: containers restart
    if back.any():
        phase[back] = STARTING
        np.copyto(timer, startup, where=back)

    # 2. Crashes: random (per Ready pod) and targeted kills, into CrashLoopBackOff.
    ready = phase == READY
    crash = None
    if crash_rate.any():
        prob = -np.expm1(-crash_rate * dt)
        crash = ready & (rng.random((b, s, k)) < prob[:, :, None])
    if kills.any():
        rows = np.flatnonzero(kills > 0)  # (R,) flat (cluster, service)
        killed = np.zeros((b * s, k), dtype=bool)
        killed[rows] = _first_n(ready.reshape(-1, k)[rows], kills.reshape(-1)[rows])
        killed = killed.reshape(b, s, k)
        crash = killed if crash is None else crash | killed
    crash_count = np.zeros((b, s), dtype=np.int64)
    if crash is not None and crash.any():
        crash_count = _count(crash)
        _enter_backoff(st, crash, cfg)

    # 3. ReplicaSet reconciliation.
    desired = np.clip(np.asarray(desired_replicas, dtype=np.int64), params.min_replicas, params.max_replicas)
    st.desired = desired
    live = (phase != EMPTY) & (phase != TERMINATING)  # Pending, starting, Ready, back-off, lost
    deficit = (desired - _count(live)).reshape(-1)  # (B*S,)
    # Only the services whose count changes are visited, as (R, K) rows of pod slots.
    grow = np.flatnonzero(deficit > 0)
    if grow.size:
        free = (phase.reshape(-1, k)[grow] == EMPTY) & params.slot_valid[grow - grow // s * s]
        create = _row_entries(grow, _first_n(free, deficit[grow]))  # lowest free slots first
        phase.reshape(-1)[create] = PENDING
        node.reshape(-1)[create] = -1
        st.backoff.reshape(-1)[create] = cfg.crashloop_initial_backoff
        st.ready_age.reshape(-1)[create] = 0.0
    shrink = np.flatnonzero(deficit < 0)
    if shrink.size:
        delete = _row_entries(shrink, _surplus_to_delete(phase.reshape(-1, k)[shrink], -deficit[shrink]))
        was = phase.reshape(-1)[delete]
        unbound = (was == PENDING) | (was == LOST)  # hold no running container: gone at once
        phase.reshape(-1)[delete] = np.where(unbound, EMPTY, TERMINATING)
        node.reshape(-1)[delete[unbound]] = -1
        timer.reshape(-1)[delete[~unbound]] = cfg.termination_seconds

    # 4. Scheduling of Pending pods.
    _schedule_pending(params, st, node_up, rotation=st.step_index)

    # 5. Serving capacity per sub-step: Ready pods, plus pods that become Ready mid-step.
    ready = phase == READY
    ready_count = _count(ready).astype(np.float64)  # (B, S)
    servers_j = np.repeat(ready_count[None], sub, axis=0)  # (J, B, S)
    # Starting pods come up after their timer, back-off pods after their timer plus startup.
    warming = np.flatnonzero((phase == STARTING) | (phase == CRASHLOOP))
    if warming.size:
        left = timer.reshape(-1)[warming]
        row = warming // k
        offset = np.where(phase.reshape(-1)[warming] == CRASHLOOP, left + params.startup[row - row // s * s], left)
        coming = offset < dt
        if coming.any():
            edges = np.arange(1, sub + 1) * h  # sub-step ends
            frac = np.clip((edges[None, :] - offset[coming][:, None]) / h, 0.0, 1.0)  # (P, J)
            for j in range(sub):  # (1-D ufunc.at is the fast one)
                np.add.at(servers_j[j].reshape(-1), row[coming], frac[:, j])
    # (B, S, J): the layout whose mean over J (below) adds the sub-steps in the reference's order.
    servers = np.ascontiguousarray(servers_j.transpose(1, 2, 0))

    # Contention: pods on a node whose CPU demand (last step) plus the noisy neighbour exceeds
    # its capacity get a proportional share of what is left.
    node_avail = np.maximum(params.node_cpu[None, :] - noisy_cpu, 0.0)
    node_share = np.minimum(1.0, node_avail / np.maximum(st.node_demand, 1e-12))  # (B, N)
    if (node_share == 1.0).all():
        contention = np.ones((b, s))  # what the general case gives: share_sum == ready_count
    else:
        pod_share = np.take(node_share, np.arange(b)[:, None, None] * n + np.maximum(node, 0))
        share_sum = np.where(ready, pod_share, 0.0).sum(axis=2)
        contention = np.where(ready_count > 0, share_sum / np.maximum(ready_count, 1.0), 1.0)  # (B, S)
    mu = params.cpu_limit * contention * capacity_factor / params.cost  # (B, S) requests/s per pod

    # 6. Queues, sub-step by sub-step, levels in topological order.
    offered_rate = entry_rate + attack_rate
    if cfg.poisson_arrivals:
        entry_arrivals = rng.poisson(np.maximum(offered_rate, 0.0)[:, None] * h, size=(b, sub)).astype(np.float64)
    else:
        entry_arrivals = np.repeat(np.maximum(offered_rate, 0.0)[:, None] * h, sub, axis=1)
    # The element-wise queue work runs service-major, on (S, B) arrays, so that a level is a
    # block of contiguous rows; the call-graph product keeps the (B, S) layout it always had
    # (the same BLAS call, hence the same rounding).
    servers_t = np.ascontiguousarray(servers_j.transpose(0, 2, 1))  # (J, S, B)
    mu_t = mu.T
    cap_all = servers_t * mu_t * h  # capacity and queue bound of every sub-step
    limit_all = np.minimum(params.queue_limit[:, None] * servers_t, params.timeout[:, None] * servers_t * mu_t)
    backlog = st.backlog.T.copy()  # (S, B) from here to the end of the loop, like the sums below
    arrived = np.zeros((s, b))
    served = np.zeros((s, b))
    dropped = np.zeros((s, b))
    backlog_area = np.zeros((s, b))
    busy_substeps = np.zeros((s, b))
    served_now = np.zeros((b, s))  # (B, S): served this sub-step, input of the next levels
    entry = topo.entry_index
    for j in range(sub):
        for lo, hi in params.level_bounds:
            if lo == 0:
                arr = np.zeros((b, hi - lo))
            else:
                arr = served_now[:, :lo] @ params.calls[:lo, lo:hi]
            if lo <= entry < hi:
                arr[:, entry - lo] += entry_arrivals[:, j]
            arr = arr.T
            queue = backlog[lo:hi]  # a view: the level's backlog is updated in place
            queue += arr
            done = np.minimum(queue, cap_all[j, lo:hi])
            queue -= done
            arrived[lo:hi] += arr
            served[lo:hi] += done
            if hi < s:
                served_now[:, lo:hi] = done.T
        # Drops only change the backlog, which no other level reads: all levels at once.
        lost = np.maximum(backlog - limit_all[j], 0.0)
        backlog -= lost
        dropped += lost
        backlog_area += backlog
        busy_substeps += backlog > 1e-9
    backlog, arrived, served, dropped, backlog_area, busy_substeps = (
        np.ascontiguousarray(a.T) for a in (backlog, arrived, served, dropped, backlog_area, busy_substeps))

    # 7. Latency per service (exclusive sojourn), then inclusive along the call graph.
    mean_servers = servers.mean(axis=2)
    arrival_rate = arrived / dt
    capacity_rate = mean_servers * mu
    has_server = mean_servers > 1e-9
    c_int = np.maximum(np.rint(mean_servers), 1.0).astype(np.int64)
    offered = np.minimum(arrival_rate / np.maximum(mu, 1e-12), cfg.max_utilisation * c_int)
    p_wait = _erlang_c(c_int, offered)
    theta = np.maximum(c_int * mu - offered * mu, 1e-12)
    fluid_wait = (backlog_area / sub) / np.maximum(capacity_rate, 1e-12)
    service_time = 1.0 / np.maximum(mu, 1e-12)
    t_mean = fluid_wait + p_wait / theta + service_time
    wait_var = p_wait * (2.0 - p_wait) / theta**2
    capped = t_mean >= params.timeout
    ok = has_server & ~capped
    t_mean = np.where(ok, t_mean, params.timeout)
    wait_var = np.where(ok, wait_var, 0.0)
    t_var = np.where(ok, wait_var + service_time**2, 0.0)
    lat_mean = t_mean @ params.visits_from_t
    # Visits of one request to the same service come close together and see the same queue,
    # so their waits are taken as fully correlated: N visits add N^2 (not N) x Var(wait).
    lat_var = ((t_var + (lat_mean**2) @ params.calls_var_t) @ params.visits_from_t
               + wait_var @ params.repeat_pairs_t)
    drop_frac = np.where(arrived > 0, dropped / np.maximum(arrived, 1e-12), 0.0)
    log_ok = np.log1p(-np.minimum(drop_frac, 1.0 - 1e-12))
    error_incl = -np.expm1(log_ok @ params.visits_from_t)

    # 8. Memory, OOM kills (queued requests in killed pods are dropped).
    inflight_per_pod = (backlog + np.minimum(arrival_rate, capacity_rate) * service_time) / np.maximum(ready_count, 1.0)
    mean_ws = params.mem_base + params.mem_per_inflight * inflight_per_pod  # (B, S)
    oom_count = np.zeros((b, s), dtype=np.int64)
    near = ready_count > 0
    near &= mean_ws * (1.0 + 3.0 * cfg.load_imbalance) > params.mem_limit
    if near.any():
        # Drawn for every pod slot, so the random stream does not depend on which services are near.
        normal = rng.standard_normal((b, s, k))
        rows = np.flatnonzero(near)  # (R,) flat (cluster, service): only these pods can die
        svc = rows % s
        jitter = 1.0 + cfg.load_imbalance * normal.reshape(-1, k)[rows]  # (R, K)
        inflight = inflight_per_pod.reshape(-1)[rows, None]
        pod_ws = params.mem_base[svc, None] + params.mem_per_inflight[svc, None] * inflight * jitter
        oom = np.zeros((b * s, k), dtype=bool)
        oom[rows] = ready.reshape(-1, k)[rows] & (pod_ws > params.mem_limit[svc, None])
        oom = oom.reshape(b, s, k)
        oom_count = _count(oom)
        killed_share = oom_count / np.maximum(ready_count, 1.0)
        lost_requests = backlog * killed_share
        backlog -= lost_requests
        dropped += lost_requests
        _enter_backoff(st, oom, cfg)

    # 9. Advance pod timers by dt (back-off -> starting -> Ready chains within the step).
    was_ready = phase == READY
    # Pods with a running timer (starting, back-off, terminating, lost: the phases from STARTING
    # on, but READY) are few: work on their flat indices.
    timed = np.flatnonzero((phase >= STARTING) & ~was_ready)
    ph = phase.reshape(-1)[timed]
    left = timer.reshape(-1)[timed] - dt
    restart = (ph == CRASHLOOP) & (left <= 0)
    ph[restart] = STARTING
    row = timed[restart] // k
    left[restart] += params.startup[row - row // s * s]
    up = (ph == STARTING) & (left <= 0)
    ph[up] = READY
    st.ready_age.reshape(-1)[timed[up]] = -left[up]
    left[up] = 0.0
    finished = ((ph == TERMINATING) | (ph == LOST)) & (left <= 0)
    ph[finished] = EMPTY
    node.reshape(-1)[timed[finished]] = -1
    phase.reshape(-1)[timed] = ph
    timer.reshape(-1)[timed] = left
    np.add(st.ready_age, dt, out=st.ready_age, where=was_ready)
    reset_backoff = st.backoff != cfg.crashloop_initial_backoff  # (usually none: skip the rest)
    if reset_backoff.any():
        reset_backoff &= (phase == READY) & (st.ready_age >= cfg.crashloop_reset_seconds)
        st.backoff[reset_backoff] = cfg.crashloop_initial_backoff
    st.step_index += 1

    # CPU demand per node for next step's contention: Ready pods at min(limit, demand).
    usage = served * params.cost / dt  # (B, S) cores actually used
    demand_per_pod = np.minimum(params.cpu_limit, arrival_rate * params.cost / np.maximum(ready_count, 1.0))
    st.node_demand = _per_node_sum(node, demand_per_pod[:, :, None], n, pods=ready)

    st.backlog = backlog
    st.arrived_total += arrived
    st.served_total += served
    st.dropped_total += dropped
    crashes = crash_count + oom_count
    st.restarts += crashes

    # 10. Observations in metrics.METRICS order.
    counts = _phase_counts(phase)
    running_pods = counts[:, :, READY]
    starting_pods = counts[:, :, STARTING]
    crashloop_pods = counts[:, :, CRASHLOOP]
    present = k - counts[:, :, EMPTY]
    obs = np.empty((NUM_METRICS, b, s), dtype=np.float32)  # metric-major while filled
    obs[METRIC_INDEX["replicas_desired"]] = desired
    obs[METRIC_INDEX["replicas_ready"]] = running_pods
    obs[METRIC_INDEX["replicas_pending"]] = counts[:, :, PENDING]
    obs[METRIC_INDEX["replicas_crashloop"]] = crashloop_pods
    obs[METRIC_INDEX["cpu_usage_cores"]] = usage
    obs[METRIC_INDEX["cpu_requests_cores"]] = present * params.cpu_request
    obs[METRIC_INDEX["cpu_throttled_ratio"]] = np.maximum(busy_substeps / sub, 1.0 - contention * capacity_factor)
    obs[METRIC_INDEX["memory_working_set_bytes"]] = (
        running_pods * np.minimum(mean_ws, params.mem_limit)
        + (starting_pods + crashloop_pods) * params.mem_base)
    obs[METRIC_INDEX["request_rate"]] = arrival_rate
    obs[METRIC_INDEX["error_rate"]] = error_incl
    # Callers of a service give up after its timeout, so no observed latency exceeds it.
    p50, p95, p99 = (np.minimum(q, params.timeout)
                     for q in _gamma_quantiles(lat_mean, lat_var, (_Z["p50"], _Z["p95"], _Z["p99"])))
    obs[METRIC_INDEX["latency_p50_seconds"]] = p50
    obs[METRIC_INDEX["latency_p95_seconds"]] = p95
    obs[METRIC_INDEX["latency_p99_seconds"]] = p99
    obs[METRIC_INDEX["pending_requests"]] = backlog
    obs = np.ascontiguousarray(obs.transpose(1, 2, 0))  # (B, S, M)

    bound_pods = starting_pods + running_pods + crashloop_pods + counts[:, :, TERMINATING]
    e2e_p95 = p95[:, entry]
    e2e_err = error_incl[:, entry]
    info = {
        "e2e_latency_mean": np.minimum(lat_mean[:, entry], params.timeout[entry]),
        "e2e_latency_p95": e2e_p95,
        "e2e_error_rate": e2e_err,
        "slo_violated": (e2e_p95 > topo.slo_latency_p95_seconds) | (e2e_err > topo.slo_error_rate),
        "offered_rate": offered_rate,
        "arrived": arrived,
        "served": served,
        "dropped": dropped,
        "ready_pod_seconds": mean_servers * dt,
        "allocated_pod_seconds": bound_pods * dt,
        "cpu_request_core_seconds": bound_pods * params.cpu_request * dt,
        "crashes": crashes,
        "oom_kills": oom_count,
    }
    return st, obs, info


def _enter_backoff(state: ClusterState, crashed: np.ndarray, cfg: TwinConfig) -> None:
    """Move crashed pods into CrashLoopBackOff with the current delay; double the next (in place)."""
    idx = np.flatnonzero(crashed)
    if idx.size == 0:
        return
    backoff = state.backoff.reshape(-1)
    delay = backoff[idx]
    state.phase.reshape(-1)[idx] = CRASHLOOP
    state.timer.reshape(-1)[idx] = delay
    backoff[idx] = np.minimum(delay * 2.0, cfg.crashloop_max_backoff)
    state.ready_age.reshape(-1)[idx] = 0.0


def _writable(state: ClusterState) -> ClusterState:
    """``state`` itself, with any field that is not a writable C-contiguous array replaced by a
    copy (the step writes through flat views)."""
    for f in fields(state):
        value = getattr(state, f.name)
        if not (value.flags.c_contiguous and value.flags.writeable):
            setattr(state, f.name, np.ascontiguousarray(value).copy())
    return state


def with_state(state: ClusterState, **changes) -> ClusterState:
    """Copy of ``state`` with some fields replaced (for tests and env resets)."""
    return replace(state.copy(), **changes)
