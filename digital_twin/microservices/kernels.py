"""Compiled kernels of the microservice twin's step: one cluster at a time, loops over pod slots.

Why compiled: a step touches every pod slot a few times and every service a few dozen times.
As numpy calls on ``[B, S, K]`` and ``[B, S]`` arrays that is some 250 calls per step, whose
fixed cost dominates at the batch sizes RL uses (3.1 ms per step at B = 256, S = 11, K = 14).
The same model as plain loops, compiled by numba, does the work without the per-call cost.

The model, its stages and their order are those of :mod:`digital_twin.microservices.dynamics`
(its docstring). :func:`step_clusters` takes the state, the inputs and the outputs as named
tuples of arrays (:class:`KernelState`, :class:`StepInputs`, :class:`StepOutputs`, with the
parameters in :class:`KernelParams`) and runs three passes over the clusters, compiled into it
(``inline="always"``), each finishing every cluster before the next starts so that the random
draws come in the order numpy's batched calls made them:

* :func:`_update_pods` (nodes, crashes, replica reconciliation, scheduling, serving capacity)
  draws a crash uniform per Ready pod of the services with a crash rate, in (cluster,
  service, slot) order, and hands the serving capacity on as a :class:`Capacity`;
* :func:`_serve_requests` (queues, latency, memory) draws the Poisson arrivals, in (cluster,
  sub-step) order, and hands the load on as a :class:`Traffic`;
* :func:`_end_step` (OOM kills, timers, observations) draws a normal per Ready pod of the
  services near their memory limit, in (cluster, service, slot) order.

The helpers the passes call (the scheduler, Erlang C, the gamma quantile) follow them; the
scheduler also places the initial pods (:func:`schedule_pending`, used by ``dynamics.reset``).
Work done per service stays written out in the passes: as an inlined helper taking ten
arrays, the replica reconciliation made the step some 9% slower at B >= 256 (numba's inlining
keeps reference-count updates of the array arguments at each call).

So, from the same seed, the streams equal those of the dense numpy reference in
``tests/microservices/reference_dynamics.py``; floats agree with it to rounding (matrix
products and ``exp``/``log``/``pow`` round differently from numpy's SIMD and BLAS code), and
pod phases, nodes and counts exactly (``tests/microservices/test_step_equivalence.py``).

Compiled on first use and cached (``cache=True``) outside the source tree, in
``$NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/clustergym/numba`` (``~/.cache/...``): a few
seconds once per machine and version, well under a second per process after that.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

import digital_twin.numba_cache  # noqa: F401  (the cache folder, before the @njit below)
from digital_twin.microservices.metrics import METRIC_INDEX

# Pod phases (int8), as in dynamics. LOST = on a node that went down, not yet evicted.
EMPTY, PENDING, STARTING, READY, CRASHLOOP, TERMINATING, LOST = range(7)
NUM_PHASES = 7
# A ReplicaSet deletes surplus pods in this order of phases (newest slot first within each).
DELETE_ORDER = (PENDING, LOST, CRASHLOOP, STARTING, READY)

Z_P50, Z_P95, Z_P99 = 0.0, 1.6448536269514722, 2.3263478740408408

M_DESIRED = METRIC_INDEX["replicas_desired"]
M_READY = METRIC_INDEX["replicas_ready"]
M_PENDING = METRIC_INDEX["replicas_pending"]
M_CRASHLOOP = METRIC_INDEX["replicas_crashloop"]
M_CPU_USAGE = METRIC_INDEX["cpu_usage_cores"]
M_CPU_REQUESTS = METRIC_INDEX["cpu_requests_cores"]
M_THROTTLED = METRIC_INDEX["cpu_throttled_ratio"]
M_MEMORY = METRIC_INDEX["memory_working_set_bytes"]
M_REQUEST_RATE = METRIC_INDEX["request_rate"]
M_ERROR_RATE = METRIC_INDEX["error_rate"]
M_P50 = METRIC_INDEX["latency_p50_seconds"]
M_P95 = METRIC_INDEX["latency_p95_seconds"]
M_P99 = METRIC_INDEX["latency_p99_seconds"]
M_PENDING_REQUESTS = METRIC_INDEX["pending_requests"]


class KernelParams(NamedTuple):
    """Everything the kernels read besides the state: per-service and per-node arrays, the call
    graph, and the config's scalars (one tuple, so that numba takes it as one argument)."""

    slot_valid: np.ndarray  # (S, K) bool
    level_lo: np.ndarray  # (L,) int64 first service of each call-graph level
    level_hi: np.ndarray  # (L,) int64 one past its last
    # Call-graph matrices by column, nonzero entries only (``y[s] = sum_r v[r] A[r, s]`` over the
    # few r with A[r, s] != 0, in increasing r: the dense sum's value, as its other terms are 0):
    # start of each column's entries (S + 1,), their rows, their values.
    calls_ptr: np.ndarray  # mean calls from caller (row) to callee (column)
    calls_row: np.ndarray
    calls_val: np.ndarray
    calls_var_ptr: np.ndarray  # variance of the call count, transposed (as dynamics' calls_var_t)
    calls_var_row: np.ndarray
    calls_var_val: np.ndarray
    visits_ptr: np.ndarray  # visits_from_t: visits to column s ... see dynamics.TwinParams
    visits_row: np.ndarray
    visits_val: np.ndarray
    pairs_ptr: np.ndarray  # repeat_pairs_t
    pairs_row: np.ndarray
    pairs_val: np.ndarray
    startup: np.ndarray  # (S,) seconds
    cost: np.ndarray  # (S,) CPU-seconds per request
    cpu_request: np.ndarray
    cpu_limit: np.ndarray
    mem_request: np.ndarray
    mem_limit: np.ndarray
    mem_base: np.ndarray
    mem_per_inflight: np.ndarray
    min_replicas: np.ndarray  # (S,) int64
    max_replicas: np.ndarray  # (S,) int64
    timeout: np.ndarray
    queue_limit: np.ndarray
    node_cpu: np.ndarray  # (N,)
    node_mem: np.ndarray  # (N,)
    entry: int
    eviction_seconds: float
    slo_p95: float
    slo_error_rate: float
    step_seconds: float
    substeps: int
    poisson_arrivals: bool
    initial_backoff: float
    max_backoff: float
    backoff_reset_seconds: float
    termination_seconds: float
    max_utilisation: float
    load_imbalance: float


def by_column(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A matrix's nonzero entries column by column (rows increasing): ``(ptr, rows, values)``."""
    matrix = np.asarray(matrix, dtype=np.float64)
    cols, rows = np.nonzero(matrix.T)  # column-major order, rows increasing within a column
    ptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=matrix.shape[1]))]).astype(np.int64)
    return ptr, rows.astype(np.int64), matrix[rows, cols].copy()


class KernelState(NamedTuple):
    """The state the step advances in place: the arrays of ``dynamics.ClusterState``, same names,
    shapes and dtypes (B clusters, S services, K pod slots, N nodes)."""

    step_index: np.ndarray  # (B,) int64
    phase: np.ndarray  # (B, S, K) int8
    timer: np.ndarray  # (B, S, K) float64
    node: np.ndarray  # (B, S, K) int16
    backoff: np.ndarray  # (B, S, K) float64
    ready_age: np.ndarray  # (B, S, K) float64
    desired: np.ndarray  # (B, S) int64
    backlog: np.ndarray  # (B, S) float64
    node_demand: np.ndarray  # (B, N) float64
    restarts: np.ndarray  # (B, S) int64
    arrived_total: np.ndarray  # (B, S) float64
    served_total: np.ndarray  # (B, S) float64
    dropped_total: np.ndarray  # (B, S) float64


class StepInputs(NamedTuple):
    """What drives one step besides the state (C-contiguous, broadcast by the caller)."""

    desired: np.ndarray  # (B, S) int64 desired replicas, before clipping to the bounds
    offered_rate: np.ndarray  # (B,) requests/s at the entry (legitimate + attack)
    crash_prob: np.ndarray  # (B, S) probability that a Ready pod crashes this step
    kills: np.ndarray  # (B, S) int64 Ready pods to kill
    noisy_cpu: np.ndarray  # (B, N) cores a noisy neighbour takes per node
    capacity_factor: np.ndarray  # (B, S) per-pod throughput multiplier
    node_up: np.ndarray  # (B, N) bool


class StepOutputs(NamedTuple):
    """Arrays the step fills (allocated by the caller): observations and info."""

    obs: np.ndarray  # (B, S, M) float32
    e2e_latency_mean: np.ndarray  # (B,)
    e2e_latency_p95: np.ndarray  # (B,)
    e2e_error_rate: np.ndarray  # (B,)
    slo_violated: np.ndarray  # (B,) bool
    arrived: np.ndarray  # (B, S)
    served: np.ndarray
    dropped: np.ndarray
    ready_pod_seconds: np.ndarray
    allocated_pod_seconds: np.ndarray
    cpu_request_core_seconds: np.ndarray
    crashes: np.ndarray  # (B, S) int64
    oom_kills: np.ndarray  # (B, S) int64


class Capacity(NamedTuple):
    """What pass 1 leaves for the queues: who serves this step, and how fast."""

    ready_count: np.ndarray  # (B, S) Ready pods after reconciliation and scheduling
    servers: np.ndarray  # (B, S, substeps) serving pods per sub-step (fractions join mid-step)
    contention: np.ndarray  # (B, S) mean CPU share of the Ready pods' nodes
    mu: np.ndarray  # (B, S) requests/s one pod serves


class Traffic(NamedTuple):
    """What pass 2 leaves for the pods' end of step: load per service."""

    arrival_rate: np.ndarray  # (B, S) requests/s that arrived
    busy: np.ndarray  # (B, S) sub-steps that ended with a queue
    inflight: np.ndarray  # (B, S) requests in flight per Ready pod
    mean_ws: np.ndarray  # (B, S) mean working set of a Ready pod, bytes
    near: np.ndarray  # (B, S) bool: the working set's upper spread reaches the memory limit


@njit(cache=True)
def step_clusters(p, state, inputs, rng, out):
    """Advance every cluster one control step, in place on ``state``; fill ``out``.

    Three passes over the clusters, each finishing all clusters before the next starts, so that
    the random draws come in the order of the dense reference's batched calls (see the module
    docstring); what one pass hands to the next is named (:class:`Capacity`, :class:`Traffic`).

    Args:
        p: :class:`KernelParams`.
        state: :class:`KernelState`, advanced in place.
        inputs: :class:`StepInputs`.
        rng: ``np.random.Generator``, the source of all draws.
        out: :class:`StepOutputs`, every entry written.

    Each of ``p``, ``state``, ``inputs`` and ``out`` may also be a plain tuple of its fields in
    order, as ``dynamics.step`` passes them: numba checks a plain tuple's type in C but a named
    tuple's in Python, which for the four of them added some 20 us per call (a whole step at
    B = 1 takes about 120 us). Here they are named again, at no cost in the compiled code.
    """
    p, state, inputs, out = KernelParams(*p), KernelState(*state), StepInputs(*inputs), StepOutputs(*out)
    capacity = _update_pods(p, state, inputs, rng, out)
    traffic = _serve_requests(p, state, inputs, capacity, rng, out)
    _end_step(p, state, inputs, capacity, traffic, rng, out)


@njit(cache=True, inline="always")
def _update_pods(p, state, inputs, rng, out):
    """Pass 1 (items 1-3 of the model, and item 4's serving rate): pods react to nodes, crashes
    and the desired count.

    Per cluster: one scan of each service's pods applies node loss and return, random crashes
    and targeted kills, and counts the phases; the ReplicaSet then creates or deletes pods;
    Pending pods are bound to nodes; and each service's serving capacity per sub-step and
    per-pod rate follow. Draws a uniform per Ready pod of the services with a crash chance,
    in (cluster, service, slot) order.

    Args:
        p, state, inputs, rng, out: As for :func:`step_clusters`.

    Returns:
        The :class:`Capacity` the queues serve with. Writes ``out.crashes``.
    """
    # Arrays taken out of the tuples once: a field read inside the loops would update a
    # reference count (an atomic operation) each time.
    phase, timer, node, backoff, ready_age = state.phase, state.timer, state.node, state.backoff, state.ready_age
    desired, step_index, node_demand = state.desired, state.step_index, state.node_demand
    desired_in, crash_prob, kills = inputs.desired, inputs.crash_prob, inputs.kills
    noisy_cpu, capacity_factor, node_up = inputs.noisy_cpu, inputs.capacity_factor, inputs.node_up
    slot_valid, startup, cost, cpu_request, cpu_limit = p.slot_valid, p.startup, p.cost, p.cpu_request, p.cpu_limit
    mem_request, min_replicas, max_replicas = p.mem_request, p.min_replicas, p.max_replicas
    node_cpu, node_mem = p.node_cpu, p.node_mem
    eviction_seconds, max_backoff = p.eviction_seconds, p.max_backoff
    initial_backoff, termination_seconds = p.initial_backoff, p.termination_seconds
    crashes = out.crashes
    num_clusters, num_services, num_slots = phase.shape
    num_nodes = node_up.shape[1]
    sub = p.substeps
    dt = p.step_seconds
    h = dt / sub

    ready_count = np.empty((num_clusters, num_services))
    servers = np.empty((num_clusters, num_services, sub))
    contention = np.empty((num_clusters, num_services))
    mu = np.empty((num_clusters, num_services))
    node_scratch = np.empty((6, num_nodes))  # rows 0-1: requests per node; the rest, the scheduler's
    order = np.empty(num_nodes, dtype=np.int64)
    node_share = np.empty(num_nodes)
    counts = np.empty(NUM_PHASES, dtype=np.int64)  # pods per phase of one service
    quota = np.zeros(NUM_PHASES, dtype=np.int64)
    pending_per_service = np.empty(num_services, dtype=np.int64)

    for c in range(num_clusters):
        all_up = True
        for n in range(num_nodes):
            if not node_up[c, n]:
                all_up = False
        pending_in_cluster = 0
        # Requests per node, summed during the scan (the scheduler needs them); a deleted lost pod
        # leaves its node after it was counted, so then they are summed again.
        node_scratch[0, :] = 0.0
        node_scratch[1, :] = 0.0
        recount = False
        for s in range(num_services):
            # One scan of the service's pods: node loss or return, then crashes, then counts.
            prob = crash_prob[c, s]
            kill = kills[c, s]
            ready_seen = 0
            crashed = 0
            n_pending = n_starting = n_ready = n_crashloop = n_lost = 0
            for k in range(num_slots):
                ph = phase[c, s, k]
                if ph == EMPTY:
                    continue
                # Pods on a down node stop serving and wait for eviction; Terminating ones are
                # gone; lost pods whose node is back (before eviction) restart their containers.
                nd = node[c, s, k]
                if not all_up and nd >= 0 and not node_up[c, nd]:
                    if ph == STARTING or ph == READY or ph == CRASHLOOP:
                        ph = LOST
                        timer[c, s, k] = eviction_seconds
                    elif ph == TERMINATING:
                        ph = EMPTY
                        node[c, s, k] = -1
                elif ph == LOST:
                    ph = STARTING
                    timer[c, s, k] = startup[s]
                # Random crashes (a uniform per Ready pod) and targeted kills (the first Ready
                # pods), into CrashLoopBackOff.
                if ph == READY:
                    hit = False
                    if prob > 0:
                        hit = rng.random() < prob
                    if kill > 0:
                        ready_seen += 1
                        hit = hit or ready_seen <= kill
                    if hit:
                        ph = CRASHLOOP
                        _enter_backoff(timer, backoff, ready_age, c, s, k, max_backoff)
                        crashed += 1
                phase[c, s, k] = ph
                nd = node[c, s, k]
                if nd >= 0:
                    node_scratch[0, nd] += cpu_request[s]
                    node_scratch[1, nd] += mem_request[s]
                # (branch-free counts: an increment of counts[ph] in memory would chain the pods)
                n_pending += ph == PENDING
                n_starting += ph == STARTING
                n_ready += ph == READY
                n_crashloop += ph == CRASHLOOP
                n_lost += ph == LOST
            crashes[c, s] = crashed
            counts[PENDING], counts[STARTING], counts[READY] = n_pending, n_starting, n_ready
            counts[CRASHLOOP], counts[LOST] = n_crashloop, n_lost

            # ReplicaSet reconciliation: create Pending pods in the lowest free slots, or
            # delete the surplus in Kubernetes' order (written out here: see the module docstring).
            want = min(max(desired_in[c, s], min_replicas[s]), max_replicas[s])
            desired[c, s] = want
            live = n_pending + n_starting + n_ready + n_crashloop + n_lost
            if want > live:
                missing = want - live
                for k in range(num_slots):
                    if missing == 0:
                        break
                    if phase[c, s, k] == EMPTY and slot_valid[s, k]:
                        phase[c, s, k] = PENDING
                        node[c, s, k] = -1
                        backoff[c, s, k] = initial_backoff
                        ready_age[c, s, k] = 0.0
                        missing -= 1
                        counts[PENDING] += 1
            elif want < live:
                # Pending, lost, back-off, starting, Ready pods, newest (highest slot) first
                # within each: one scan from the top with a quota per phase.
                surplus = live - want
                for target in DELETE_ORDER:
                    quota[target] = min(counts[target], surplus)
                    surplus -= quota[target]
                for k in range(num_slots - 1, -1, -1):
                    ph = phase[c, s, k]
                    if ph == EMPTY or ph == TERMINATING or quota[ph] == 0:
                        continue
                    quota[ph] -= 1
                    counts[ph] -= 1
                    if ph == PENDING or ph == LOST:  # no running container: gone at once
                        phase[c, s, k] = EMPTY
                        node[c, s, k] = -1
                        recount = recount or ph == LOST  # it left its node after it was counted
                    else:  # Terminating pods keep their node until the timer runs out
                        phase[c, s, k] = TERMINATING
                        timer[c, s, k] = termination_seconds
            ready_count[c, s] = counts[READY]
            pending_per_service[s] = counts[PENDING]
            pending_in_cluster += counts[PENDING]

        # Scheduling of Pending pods.
        if pending_in_cluster:
            if recount:
                _node_requests(c, node, cpu_request, mem_request, node_scratch)
            _schedule_cluster(c, phase, timer, node, node_up, step_index[c], cpu_request, mem_request, startup,
                              node_cpu, node_mem, pending_per_service, node_scratch, order)

        # Serving capacity per sub-step: Ready pods, plus pods that become Ready mid-step
        # (starting pods after their timer, back-off pods after their timer plus startup).
        for s in range(num_services):
            for j in range(sub):
                servers[c, s, j] = ready_count[c, s]
            for k in range(num_slots):
                ph = phase[c, s, k]
                if ph == STARTING:
                    offset = timer[c, s, k]
                elif ph == CRASHLOOP:
                    offset = timer[c, s, k] + startup[s]
                else:
                    continue
                if offset < dt:
                    for j in range(sub):
                        servers[c, s, j] += min(max(((j + 1) * h - offset) / h, 0.0), 1.0)

        # Contention: pods on a node whose CPU demand (last step) plus the noisy neighbour
        # exceeds its capacity get a proportional share of what is left.
        all_one = True
        for n in range(num_nodes):
            node_share[n] = min(1.0, max(node_cpu[n] - noisy_cpu[c, n], 0.0) / max(node_demand[c, n], 1e-12))
            if node_share[n] != 1.0:
                all_one = False
        for s in range(num_services):
            share = 1.0
            if not all_one and ready_count[c, s] > 0:
                total = 0.0
                for k in range(num_slots):
                    if phase[c, s, k] == READY:
                        total += node_share[max(node[c, s, k], 0)]
                share = total / ready_count[c, s]
            contention[c, s] = share
            mu[c, s] = cpu_limit[s] * share * capacity_factor[c, s] / cost[s]
    return Capacity(ready_count, servers, contention, mu)


@njit(cache=True, inline="always")
def _serve_requests(p, state, inputs, capacity, rng, out):
    """Pass 2 (items 4-5 of the model, and item 6's working set): requests through the call graph.

    Per cluster: the entry's arrivals per sub-step (Poisson, or the fluid mean); the fluid
    queues, sub-step by sub-step in topological order, with what exceeds the queue bound
    dropped; each service's exclusive sojourn (M/M/c plus the backlog's wait) and from it the
    inclusive latency quantiles and error rate along the call graph; and the pods' working set,
    with which services are near their memory limit. Draws the Poisson arrivals in (cluster,
    sub-step) order.

    Args:
        p, state, inputs, rng, out: As for :func:`step_clusters`.
        capacity: Pass 1's :class:`Capacity`.

    Returns:
        The :class:`Traffic` the pods' end of step needs. Writes the latency and error entries of
        ``out.obs``, the end-to-end entries, ``arrived``, ``served``, ``dropped`` and
        ``ready_pod_seconds``; ``state.backlog`` becomes the queues left.
    """
    backlog = state.backlog
    offered_rate = inputs.offered_rate
    ready_count, servers, mu = capacity.ready_count, capacity.servers, capacity.mu
    level_lo, level_hi, timeout, queue_limit = p.level_lo, p.level_hi, p.timeout, p.queue_limit
    mem_base, mem_per_inflight, mem_limit = p.mem_base, p.mem_per_inflight, p.mem_limit
    calls_ptr, calls_row, calls_val = p.calls_ptr, p.calls_row, p.calls_val
    calls_var_ptr, calls_var_row, calls_var_val = p.calls_var_ptr, p.calls_var_row, p.calls_var_val
    visits_ptr, visits_row, visits_val = p.visits_ptr, p.visits_row, p.visits_val
    pairs_ptr, pairs_row, pairs_val = p.pairs_ptr, p.pairs_row, p.pairs_val
    max_utilisation, load_imbalance, poisson_arrivals = p.max_utilisation, p.load_imbalance, p.poisson_arrivals
    slo_p95, slo_error_rate = p.slo_p95, p.slo_error_rate
    obs, e2e_latency_mean, e2e_latency_p95, e2e_error_rate = (
        out.obs, out.e2e_latency_mean, out.e2e_latency_p95, out.e2e_error_rate)
    slo_violated, arrived, served, dropped = out.slo_violated, out.arrived, out.served, out.dropped
    ready_pod_seconds = out.ready_pod_seconds
    num_clusters, num_services = backlog.shape
    entry = p.entry
    sub = p.substeps
    dt = p.step_seconds
    h = dt / sub

    arrival_rate = np.empty((num_clusters, num_services))
    busy = np.zeros((num_clusters, num_services))
    inflight = np.empty((num_clusters, num_services))
    mean_ws = np.empty((num_clusters, num_services))
    near = np.zeros((num_clusters, num_services), dtype=np.bool_)
    arrivals = np.empty(sub)
    queue, area, served_now = np.empty(num_services), np.empty(num_services), np.empty(num_services)
    capacity_rate, service_time = np.empty(num_services), np.empty(num_services)
    t_mean, wait_var, t_var = np.empty(num_services), np.empty(num_services), np.empty(num_services)
    lat_mean, log_ok, x = np.empty(num_services), np.empty(num_services), np.empty(num_services)

    for c in range(num_clusters):
        lam = max(offered_rate[c], 0.0) * h
        for j in range(sub):
            arrivals[j] = rng.poisson(lam) if poisson_arrivals else lam
        for s in range(num_services):
            queue[s] = backlog[c, s]
            arrived[c, s] = 0.0
            served[c, s] = 0.0
            dropped[c, s] = 0.0
            area[s] = 0.0
            served_now[s] = 0.0
        # Queues, sub-step by sub-step, call-graph levels in topological order: a service's
        # arrivals are its callers' completions this sub-step times the mean calls.
        for j in range(sub):
            for level in range(level_lo.size):
                lo, hi = level_lo[level], level_hi[level]
                for s in range(lo, hi):
                    arr = 0.0
                    for e in range(calls_ptr[s], calls_ptr[s + 1]):  # callers are on earlier levels
                        arr += served_now[calls_row[e]] * calls_val[e]
                    if s == entry:
                        arr += arrivals[j]
                    q = queue[s] + arr
                    done = min(q, servers[c, s, j] * mu[c, s] * h)
                    queue[s] = q - done
                    arrived[c, s] += arr
                    served[c, s] += done
                    served_now[s] = done
            # What exceeds the queue bound (queue full or caller timeout) is dropped.
            for s in range(num_services):
                limit = min(queue_limit[s] * servers[c, s, j], timeout[s] * servers[c, s, j] * mu[c, s])
                lost = max(queue[s] - limit, 0.0)
                queue[s] -= lost
                dropped[c, s] += lost
                area[s] += queue[s]
                if queue[s] > 1e-9:
                    busy[c, s] += 1.0

        # Latency per service (exclusive sojourn: M/M/c plus the fluid backlog's wait), then
        # inclusive along the call graph.
        for s in range(num_services):
            mean_servers = 0.0
            for j in range(sub):
                mean_servers += servers[c, s, j]
            mean_servers /= sub
            ready_pod_seconds[c, s] = mean_servers * dt
            m = mu[c, s]
            rate = arrived[c, s] / dt
            arrival_rate[c, s] = rate
            capacity_rate[s] = mean_servers * m
            c_int = int(max(np.rint(mean_servers), 1.0))
            offered = min(rate / max(m, 1e-12), max_utilisation * c_int)
            p_wait = _erlang_c(c_int, offered)
            theta = max(c_int * m - offered * m, 1e-12)
            fluid_wait = (area[s] / sub) / max(capacity_rate[s], 1e-12)
            st = 1.0 / max(m, 1e-12)
            service_time[s] = st
            mean = fluid_wait + p_wait / theta + st
            if mean_servers > 1e-9 and not mean >= timeout[s]:
                t_mean[s] = mean
                wait_var[s] = p_wait * (2.0 - p_wait) / (theta * theta)
                t_var[s] = wait_var[s] + st * st
            else:  # no server, or slower than the timeout: callers give up at the timeout
                t_mean[s] = timeout[s]
                wait_var[s] = 0.0
                t_var[s] = 0.0
            drop_frac = dropped[c, s] / max(arrived[c, s], 1e-12) if arrived[c, s] > 0 else 0.0
            log_ok[s] = math.log1p(-min(drop_frac, 1.0 - 1e-12))
        for s in range(num_services):
            acc = 0.0
            for e in range(visits_ptr[s], visits_ptr[s + 1]):
                acc += t_mean[visits_row[e]] * visits_val[e]
            lat_mean[s] = acc
        # Repeat visits of one request to a service see the same queue: their waits count as
        # fully correlated (N visits add N^2 Var(wait)).
        for s in range(num_services):
            acc = 0.0
            for e in range(calls_var_ptr[s], calls_var_ptr[s + 1]):
                r = calls_var_row[e]
                acc += lat_mean[r] * lat_mean[r] * calls_var_val[e]
            x[s] = t_var[s] + acc
        for s in range(num_services):
            acc = 0.0
            err = 0.0
            for e in range(visits_ptr[s], visits_ptr[s + 1]):
                acc += x[visits_row[e]] * visits_val[e]
                err += log_ok[visits_row[e]] * visits_val[e]
            pairs = 0.0
            for e in range(pairs_ptr[s], pairs_ptr[s + 1]):
                pairs += wait_var[pairs_row[e]] * pairs_val[e]
            var = acc + pairs
            error = -math.expm1(err)
            cap = timeout[s]  # callers give up at the timeout: no observed latency exceeds it
            p95 = min(_gamma_quantile(lat_mean[s], var, Z_P95), cap)
            obs[c, s, M_REQUEST_RATE] = arrival_rate[c, s]
            obs[c, s, M_ERROR_RATE] = error
            obs[c, s, M_P50] = min(_gamma_quantile(lat_mean[s], var, Z_P50), cap)
            obs[c, s, M_P95] = p95
            obs[c, s, M_P99] = min(_gamma_quantile(lat_mean[s], var, Z_P99), cap)
            if s == entry:
                e2e_latency_mean[c] = min(lat_mean[s], cap)
                e2e_latency_p95[c] = p95
                e2e_error_rate[c] = error
                slo_violated[c] = p95 > slo_p95 or error > slo_error_rate

        # Memory: working set = base + per in-flight request; who is near the limit.
        for s in range(num_services):
            per_pod = ((queue[s] + min(arrival_rate[c, s], capacity_rate[s]) * service_time[s])
                       / max(ready_count[c, s], 1.0))
            inflight[c, s] = per_pod
            mean_ws[c, s] = mem_base[s] + mem_per_inflight[s] * per_pod
            if ready_count[c, s] > 0 and mean_ws[c, s] * (1.0 + 3.0 * load_imbalance) > mem_limit[s]:
                near[c, s] = True
            backlog[c, s] = queue[s]
    return Traffic(arrival_rate, busy, inflight, mean_ws, near)


@njit(cache=True, inline="always")
def _end_step(p, state, inputs, capacity, traffic, rng, out):
    """Pass 3 (item 6's OOM kills, then the end of the step): pods age, metrics are read.

    Per cluster and service, one scan of the pods: Ready pods add their CPU demand to their
    node (next step's contention) and, in services near their memory limit, are OOM-killed if
    their jittered working set exceeds it; every pod's timer advances by the step (back-off ->
    starting -> Ready within the step), and the phases are counted. The requests queued in
    killed pods are dropped, the cumulative counters advance, and the observations are filled.
    Draws a normal per Ready pod of the services near their limit, in (cluster, service, slot)
    order.

    Args:
        p, state, inputs, rng, out: As for :func:`step_clusters`.
        capacity: Pass 1's :class:`Capacity`.
        traffic: Pass 2's :class:`Traffic`.

    Writes the remaining entries of ``out.obs``, ``oom_kills``, ``allocated_pod_seconds`` and
    ``cpu_request_core_seconds``; adds the OOM kills to ``crashes`` and the kills' lost requests
    to ``dropped``; advances ``state.step_index``.
    """
    phase, timer, node, backoff, ready_age = state.phase, state.timer, state.node, state.backoff, state.ready_age
    desired, backlog, node_demand, restarts = state.desired, state.backlog, state.node_demand, state.restarts
    arrived_total, served_total, dropped_total = state.arrived_total, state.served_total, state.dropped_total
    step_index = state.step_index
    capacity_factor = inputs.capacity_factor
    ready_count, contention = capacity.ready_count, capacity.contention
    arrival_rate, busy, inflight, mean_ws, near = (
        traffic.arrival_rate, traffic.busy, traffic.inflight, traffic.mean_ws, traffic.near)
    startup, cost, cpu_request, cpu_limit = p.startup, p.cost, p.cpu_request, p.cpu_limit
    mem_base, mem_per_inflight, mem_limit = p.mem_base, p.mem_per_inflight, p.mem_limit
    max_backoff, initial_backoff, backoff_reset_seconds = p.max_backoff, p.initial_backoff, p.backoff_reset_seconds
    load_imbalance = p.load_imbalance
    obs, arrived, served, dropped, crashes, oom_kills = (
        out.obs, out.arrived, out.served, out.dropped, out.crashes, out.oom_kills)
    allocated_pod_seconds, cpu_request_core_seconds = out.allocated_pod_seconds, out.cpu_request_core_seconds
    num_clusters, num_services, num_slots = phase.shape
    num_nodes = node_demand.shape[1]
    sub = p.substeps
    dt = p.step_seconds

    for c in range(num_clusters):
        for n in range(num_nodes):
            node_demand[c, n] = 0.0
        for s in range(num_services):
            # CPU demand per node for next step's contention: Ready pods at min(limit, demand).
            demand = min(cpu_limit[s], arrival_rate[c, s] * cost[s] / max(ready_count[c, s], 1.0))
            near_limit = near[c, s]
            killed = 0
            n_empty = n_pending = n_starting = n_ready = n_crashloop = n_terminating = 0
            for k in range(num_slots):  # one scan of the service's pods
                ph = phase[c, s, k]
                if ph == READY:
                    nd = node[c, s, k]
                    if nd >= 0:
                        node_demand[c, nd] += demand
                    # OOM kills: per-pod load spread +-imbalance (a normal per Ready pod of a
                    # service near its limit).
                    if near_limit:
                        jitter = 1.0 + load_imbalance * rng.standard_normal()
                        if mem_base[s] + mem_per_inflight[s] * inflight[c, s] * jitter > mem_limit[s]:
                            ph = CRASHLOOP
                            _enter_backoff(timer, backoff, ready_age, c, s, k, max_backoff)
                            killed += 1
                # Pod timers advance by dt (back-off -> starting -> Ready chains within the step).
                if ph == READY:
                    ready_age[c, s, k] += dt
                elif ph != EMPTY and ph != PENDING:
                    left = timer[c, s, k] - dt
                    if ph == CRASHLOOP and left <= 0:
                        ph = STARTING
                        left += startup[s]
                    if ph == STARTING and left <= 0:
                        ph = READY
                        ready_age[c, s, k] = -left
                        left = 0.0
                    elif (ph == TERMINATING or ph == LOST) and left <= 0:
                        ph = EMPTY
                        node[c, s, k] = -1
                    phase[c, s, k] = ph
                    timer[c, s, k] = left
                if ph == READY and ready_age[c, s, k] >= backoff_reset_seconds:
                    backoff[c, s, k] = initial_backoff
                n_empty += ph == EMPTY
                n_pending += ph == PENDING
                n_starting += ph == STARTING
                n_ready += ph == READY
                n_crashloop += ph == CRASHLOOP
                n_terminating += ph == TERMINATING
            # The requests queued in OOM-killed pods are dropped.
            oom_kills[c, s] = killed
            if killed:
                lost = backlog[c, s] * (killed / max(ready_count[c, s], 1.0))
                backlog[c, s] -= lost
                dropped[c, s] += lost

            # Observations (metrics.METRICS order) and the rest of the info.
            arrived_total[c, s] += arrived[c, s]
            served_total[c, s] += served[c, s]
            dropped_total[c, s] += dropped[c, s]
            crashes[c, s] += oom_kills[c, s]
            restarts[c, s] += crashes[c, s]
            bound = n_starting + n_ready + n_crashloop + n_terminating
            allocated_pod_seconds[c, s] = bound * dt
            cpu_request_core_seconds[c, s] = bound * cpu_request[s] * dt
            obs[c, s, M_DESIRED] = desired[c, s]
            obs[c, s, M_READY] = n_ready
            obs[c, s, M_PENDING] = n_pending
            obs[c, s, M_CRASHLOOP] = n_crashloop
            obs[c, s, M_CPU_USAGE] = served[c, s] * cost[s] / dt
            obs[c, s, M_CPU_REQUESTS] = (num_slots - n_empty) * cpu_request[s]
            obs[c, s, M_THROTTLED] = max(busy[c, s] / sub, 1.0 - contention[c, s] * capacity_factor[c, s])
            obs[c, s, M_MEMORY] = (n_ready * min(mean_ws[c, s], mem_limit[s])
                                   + (n_starting + n_crashloop) * mem_base[s])
            obs[c, s, M_PENDING_REQUESTS] = backlog[c, s]
        step_index[c] += 1


@njit(cache=True)
def schedule_pending(p, phase, timer, node, node_up, rotation):
    """Bind the Pending pods of every cluster (see :func:`_schedule_cluster`); ``rotation`` (B,)."""
    num_nodes = node_up.shape[1]
    scratch = np.empty((6, num_nodes))
    order = np.empty(num_nodes, dtype=np.int64)
    for c in range(phase.shape[0]):
        pending = (phase[c] == PENDING).sum(axis=1)
        if pending.sum():
            _node_requests(c, node, p.cpu_request, p.mem_request, scratch)
            _schedule_cluster(c, phase, timer, node, node_up, rotation[c], p.cpu_request, p.mem_request, p.startup,
                              p.node_cpu, p.node_mem, pending, scratch, order)


@njit(cache=True, inline="always")
def _schedule_cluster(c, phase, timer, node, node_up, rotation, cpu_request, mem_request, startup, node_cpu, node_mem,
                      pending, scratch, order):
    """Bind cluster ``c``'s Pending pods to up nodes that fit their requests (in place).

    Pending pods, in (service, slot) order, are dealt round-robin over the up nodes sorted by
    free CPU (most free first, ties by node index; rotated by ``rotation`` so that retries try
    other nodes); a pod binds if the running sums of the CPU and memory requests dealt to its
    node, itself included, fit the node. ``pending`` (S,) counts each service's Pending pods;
    ``scratch`` (6, N) float64 holds the nodes' requests in rows 0-1 (see :func:`_node_requests`)
    and is working space beyond; ``order`` (N,) int64 too.
    """
    num_services, num_slots = phase.shape[1], phase.shape[2]
    num_nodes = node_up.shape[1]
    # Rows of scratch: requested CPU, memory (given), free CPU, memory, running CPU, memory.
    num_up = 0
    for n in range(num_nodes):
        scratch[4, n] = 0.0
        scratch[5, n] = 0.0
        if node_up[c, n]:
            scratch[2, n] = node_cpu[n] - scratch[0, n]
            scratch[3, n] = node_mem[n] - scratch[1, n]
            num_up += 1
        else:
            scratch[2, n] = 0.0
            scratch[3, n] = 0.0
    if num_up == 0:
        return
    for n in range(num_nodes):  # stable insertion sort: most free CPU first, down nodes last
        m = n
        while m > 0 and _node_before(node_up[c, n], scratch[2, n], node_up[c, order[m - 1]], scratch[2, order[m - 1]]):
            order[m] = order[m - 1]
            m -= 1
        order[m] = n
    rank = 0
    for s in range(num_services):
        left = pending[s]
        k = 0
        while left > 0 and k < num_slots:
            if phase[c, s, k] == PENDING:
                left -= 1
                chosen = order[(rank + rotation) % num_up]
                rank += 1
                scratch[4, chosen] += cpu_request[s]
                scratch[5, chosen] += mem_request[s]
                if scratch[4, chosen] <= scratch[2, chosen] + 1e-9 and scratch[5, chosen] <= scratch[3, chosen] + 1e-6:
                    node[c, s, k] = chosen
                    phase[c, s, k] = STARTING
                    timer[c, s, k] = startup[s]
            k += 1


@njit(cache=True, inline="always")
def _node_requests(c, node, cpu_request, mem_request, used):
    """CPU and memory requests of the pods bound to each node of cluster ``c``, summed in
    (service, slot) order, into ``used`` rows 0 and 1 (zeroed first)."""
    used[0, :] = 0.0
    used[1, :] = 0.0
    for s in range(node.shape[1]):
        for k in range(node.shape[2]):
            nd = node[c, s, k]
            if nd >= 0:
                used[0, nd] += cpu_request[s]
                used[1, nd] += mem_request[s]


@njit(cache=True, inline="always")
def _node_before(up, free, other_up, other_free):
    """Whether a node goes strictly before another in the scheduler's preference order."""
    if not up:
        return False
    return not other_up or free > other_free


@njit(cache=True, inline="always")
def _enter_backoff(timer, backoff, ready_age, c, s, k, max_backoff):
    """Start a crashed pod's CrashLoopBackOff with its current delay, doubled for next time (the
    caller sets its phase)."""
    delay = backoff[c, s, k]
    timer[c, s, k] = delay
    backoff[c, s, k] = min(delay * 2.0, max_backoff)
    ready_age[c, s, k] = 0.0


@njit(cache=True, inline="always")
def _erlang_c(servers, offered):
    """Probability that an arrival waits in M/M/c (Erlang C), for c servers and load a < c.

    Through the Erlang B recursion in reciprocal form, ``1/B_j = 1 + (j/a) / B_{j-1}``: a chain of
    multiply-adds rather than of divisions (several times faster for tens of servers; a = 0 gives
    B = 1/inf = 0 as it should).
    """
    inv_offered = 1.0 / offered if offered > 0 else np.inf
    inv_b = 1.0
    for j in range(1, servers + 1):
        inv_b = 1.0 + (j * inv_offered) * inv_b
    erlang_b = 1.0 / inv_b
    return servers * erlang_b / (servers - offered * (1.0 - erlang_b))


@njit(cache=True, inline="always")
def _gamma_quantile(mean, var, z):
    """Quantile of a gamma law with this mean and variance (Wilson-Hilferty); ``mean`` if var is 0."""
    if not var > 0:
        return mean
    shape = mean * mean / max(var, 1e-300)
    inv9k = 1.0 / (9.0 * shape)
    base = max(1.0 - inv9k + z * math.sqrt(inv9k), 0.0)
    return mean * (base * base * base)
