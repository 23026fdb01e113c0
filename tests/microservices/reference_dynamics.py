"""FROZEN REFERENCE for the equivalence test: the microservice twin's step as it was before it was optimised.

This is a verbatim copy of ``reset``, ``_phase_counts``, ``_per_node_sum``, ``_schedule_pending``,
``_erlang_c``, ``gamma_quantile``, ``step`` and ``_enter_backoff`` from
``digital_twin/microservices/dynamics.py`` at commit 6b562fd (the straightforward dense
implementation: (B, S*K, N) one-hot scheduling, boolean-mask assignments, a full state copy per
step). ``tests/microservices/test_step_equivalence.py`` runs it side by side with the optimised
``dynamics.step`` and requires the same observations, info and states (integers exactly,
floats to rounding).

Do not optimise or "fix" this file. If the model itself changes on purpose, change both the
twin and this reference in the same commit (and say so), so that the test keeps guarding the
speed work and not the model. Changed on purpose since: random crashes and OOM jitter draw one
number per Ready pod of the services concerned (they drew one per pod slot of the whole batch,
which cost more than the rest of the compiled step). The data types (``ClusterState``, ``TwinParams``, ``TwinConfig``),
``make_params`` and the phase constants are imported from the live module: states and params
are shared between the two implementations.
"""

# ruff: noqa
from __future__ import annotations

import numpy as np

from digital_twin.microservices.dynamics import (
    CRASHLOOP, EMPTY, LOST, NUM_PHASES, PENDING, READY, STARTING, TERMINATING, _Z,
    ClusterState, TwinConfig, TwinParams, make_params,
)
from digital_twin.microservices.metrics import METRIC_INDEX, NUM_METRICS


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
    phase = np.where(slot[None, None, :] < reps[:, :, None], PENDING, EMPTY).astype(np.int8)
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


def _phase_counts(phase: np.ndarray) -> np.ndarray:
    """Pods per phase. Shapes: phase (B, S, K) -> counts (B, S, NUM_PHASES) int64."""
    b, s, k = phase.shape
    flat = (np.arange(b * s, dtype=np.int64).repeat(k) * NUM_PHASES + phase.reshape(-1))
    return np.bincount(flat, minlength=b * s * NUM_PHASES).reshape(b, s, NUM_PHASES)


def _per_node_sum(node: np.ndarray, weight: np.ndarray, num_nodes: int) -> np.ndarray:
    """Sum ``weight`` of bound pods per node. Shapes: (B, S, K) -> (B, N)."""
    b = node.shape[0]
    bound = node >= 0
    flat = (np.arange(b, dtype=np.int64)[:, None, None] * num_nodes + node)[bound]
    return np.bincount(flat, weights=weight[bound], minlength=b * num_nodes).reshape(b, num_nodes)


def _schedule_pending(params: TwinParams, state: ClusterState, node_up: np.ndarray, rotation: int) -> None:
    """Bind Pending pods to up nodes that fit their requests (in place).

    Pending pods, in (service, slot) order, are dealt round-robin over the up nodes sorted by
    free CPU (most free first, rotated by ``rotation`` so that retries try other nodes); on
    each node the pods dealt to it are admitted while the cumulative CPU and memory requests
    fit. Shapes: node_up (B, N).
    """
    pending = state.phase == PENDING
    if not pending.any():
        return
    b, s, k = pending.shape
    n = node_up.shape[1]
    holds = (state.node >= 0)
    req_cpu = np.broadcast_to(params.cpu_request[None, :, None], (b, s, k))
    req_mem = np.broadcast_to(params.mem_request[None, :, None], (b, s, k))
    free_cpu = np.where(node_up, params.node_cpu - _per_node_sum(np.where(holds, state.node, -1), req_cpu, n), 0.0)
    free_mem = np.where(node_up, params.node_mem - _per_node_sum(np.where(holds, state.node, -1), req_mem, n), 0.0)
    # Node preference per cluster: most free CPU first; down nodes last.
    order = np.argsort(-np.where(node_up, free_cpu, -np.inf), axis=1, kind="stable")  # (B, N)
    n_up = node_up.sum(axis=1)  # (B,)
    flat_pending = pending.reshape(b, s * k)
    rank = np.cumsum(flat_pending, axis=1) - 1  # (B, S*K) rank among pending pods
    choice_pos = (rank + rotation) % np.maximum(n_up, 1)[:, None]
    chosen = np.take_along_axis(order, choice_pos, axis=1)  # (B, S*K) node index
    chosen = np.where(flat_pending & (n_up[:, None] > 0), chosen, -1)
    onehot = chosen[:, :, None] == np.arange(n)[None, None, :]  # (B, S*K, N)
    cum_cpu = np.cumsum(onehot * req_cpu.reshape(b, s * k, 1), axis=1)
    cum_mem = np.cumsum(onehot * req_mem.reshape(b, s * k, 1), axis=1)
    fits_node = (cum_cpu <= free_cpu[:, None, :] + 1e-9) & (cum_mem <= free_mem[:, None, :] + 1e-6)
    fits = np.any(onehot & fits_node, axis=2).reshape(b, s, k)
    state.node[fits] = chosen.reshape(b, s, k)[fits]
    state.phase[fits] = STARTING
    state.timer[fits] = np.broadcast_to(params.startup[None, :, None], (b, s, k))[fits]


def _erlang_c(servers: np.ndarray, offered: np.ndarray) -> np.ndarray:
    """Probability of waiting in M/M/c (Erlang C), via the Erlang B recursion.

    Args:
        servers: (B, S) int64 c >= 1.
        offered: (B, S) float64 a = lambda / mu, with a < c.

    Returns:
        (B, S) float64 probability that an arrival waits.
    """
    erlang_b = np.ones_like(offered)
    for k in range(1, int(servers.max()) + 1):
        nxt = offered * erlang_b / (k + offered * erlang_b)
        erlang_b = np.where(servers >= k, nxt, erlang_b)
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
    shape = mean * mean / np.maximum(var, 1e-300)
    inv9k = 1.0 / (9.0 * shape)
    cube = np.maximum(1.0 - inv9k + z * np.sqrt(inv9k), 0.0) ** 3
    return np.where(var > 0, mean * cube, mean)


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
) -> tuple[ClusterState, np.ndarray, dict[str, np.ndarray]]:
    """Advance B clusters by one control step (see the module docstring for the model).

    Args:
        params: From :func:`make_params`.
        state: Current state (not modified).
        desired_replicas: (B, S) int desired replica counts (clipped to the bounds).
        rng: Source of all randomness (arrivals, crashes, load imbalance).
        entry_rate: (B,) legitimate requests/s at the entry this step.
        attack_rate: (B,) attack requests/s at the entry this step.
        crash_rate: (B, S) random crashes per Ready pod per second.
        kills: (B, S) Ready pods to kill at the start of the step.
        noisy_cpu: (B, N) cores a noisy neighbour takes per node.
        capacity_factor: (B, S) per-pod throughput multiplier (bottleneck).
        node_up: (B, N) bool nodes up this step.

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
    st = state.copy()
    b, s, k = st.phase.shape
    n = topo.num_nodes
    rows = np.arange(b)[:, None, None]

    # 1. Node loss / return. Pods on a down node stop serving and wait for eviction.
    bound = st.node >= 0
    on_up_node = node_up[rows, np.maximum(st.node, 0)]
    running = (st.phase == STARTING) | (st.phase == READY) | (st.phase == CRASHLOOP)
    lose = bound & ~on_up_node & running
    st.phase[lose] = LOST
    st.timer[lose] = topo.eviction_timeout_seconds
    gone = bound & ~on_up_node & (st.phase == TERMINATING)
    st.phase[gone] = EMPTY
    st.node[gone] = -1
    back = (st.phase == LOST) & on_up_node  # node returned before eviction: containers restart
    st.phase[back] = STARTING
    st.timer[back] = np.broadcast_to(params.startup[None, :, None], (b, s, k))[back]

    # 2. Crashes: random (per Ready pod) and targeted kills, into CrashLoopBackOff.
    ready = st.phase == READY
    crash = np.zeros_like(ready)
    if crash_rate.any():
        prob = -np.expm1(-crash_rate * dt)
        drawn = ready & (prob[:, :, None] > 0)  # a uniform per Ready pod of the services with a crash rate
        crash[drawn] = rng.random(int(drawn.sum())) < np.broadcast_to(prob[:, :, None], (b, s, k))[drawn]
    if kills.any():
        crash |= ready & (np.cumsum(ready, axis=2) <= kills[:, :, None])
    _enter_backoff(st, crash, cfg)

    # 3. ReplicaSet reconciliation.
    desired = np.clip(np.asarray(desired_replicas, dtype=np.int64), params.min_replicas, params.max_replicas)
    st.desired = desired
    phase = st.phase
    live = (phase == PENDING) | (phase == STARTING) | (phase == READY) | (phase == CRASHLOOP) | (phase == LOST)
    live_count = live.sum(axis=2)
    deficit = desired - live_count
    if (deficit > 0).any():
        free_slot = (phase == EMPTY) & params.slot_valid[None]
        create = free_slot & (np.cumsum(free_slot, axis=2) <= deficit[:, :, None])
        phase[create] = PENDING
        st.node[create] = -1
        st.backoff[create] = cfg.crashloop_initial_backoff
        st.ready_age[create] = 0.0
    if (deficit < 0).any():
        # Deletion order: Pending, lost, back-off, starting, Ready; newest slot first.
        priority = np.select([phase == PENDING, phase == LOST, phase == CRASHLOOP, phase == STARTING, phase == READY],
                             [0, 1, 2, 3, 4], default=9)
        key = priority * k + (k - 1 - np.arange(k))[None, None, :]
        rank = np.argsort(np.argsort(key, axis=2, kind="stable"), axis=2, kind="stable")
        delete = live & (rank < (-deficit)[:, :, None])
        unbound = delete & ((phase == PENDING) | (phase == LOST))
        phase[unbound] = EMPTY
        st.node[unbound] = -1
        terminate = delete & ~unbound
        phase[terminate] = TERMINATING
        st.timer[terminate] = cfg.termination_seconds

    # 4. Scheduling of Pending pods.
    _schedule_pending(params, st, node_up, rotation=int(st.step_index[0]) if b else 0)

    # 5. Serving capacity per sub-step: Ready pods, plus pods that become Ready mid-step.
    phase = st.phase
    ready = phase == READY
    ready_count = ready.sum(axis=2).astype(np.float64)  # (B, S)
    servers = np.repeat(ready_count[:, :, None], sub, axis=2)  # (B, S, J)
    offset = np.where(phase == STARTING, st.timer,
                      np.where(phase == CRASHLOOP, st.timer + params.startup[None, :, None], np.inf))
    coming = offset < dt
    if coming.any():
        bi, si, ki = np.nonzero(coming)
        edges = np.arange(1, sub + 1) * h  # sub-step ends
        frac = np.clip((edges[None, :] - offset[bi, si, ki][:, None]) / h, 0.0, 1.0)  # (P, J)
        np.add.at(servers, (bi, si), frac)

    # Contention: pods on a node whose CPU demand (last step) plus the noisy neighbour exceeds
    # its capacity get a proportional share of what is left.
    node_avail = np.maximum(params.node_cpu[None, :] - noisy_cpu, 0.0)
    node_share = np.minimum(1.0, node_avail / np.maximum(st.node_demand, 1e-12))  # (B, N)
    pod_share = node_share[rows, np.maximum(st.node, 0)]
    share_sum = np.where(ready, pod_share, 0.0).sum(axis=2)
    contention = np.where(ready_count > 0, share_sum / np.maximum(ready_count, 1.0), 1.0)  # (B, S)
    mu = params.cpu_limit * contention * capacity_factor / params.cost  # (B, S) requests/s per pod

    # 6. Queues, sub-step by sub-step, levels in topological order.
    offered_rate = entry_rate + attack_rate
    if cfg.poisson_arrivals:
        entry_arrivals = rng.poisson(np.maximum(offered_rate, 0.0)[:, None] * h, size=(b, sub)).astype(np.float64)
    else:
        entry_arrivals = np.repeat(np.maximum(offered_rate, 0.0)[:, None] * h, sub, axis=1)
    backlog = st.backlog.copy()
    arrived = np.zeros((b, s))
    served = np.zeros((b, s))
    dropped = np.zeros((b, s))
    backlog_area = np.zeros((b, s))
    busy_substeps = np.zeros((b, s))
    served_now = np.zeros((b, s))
    entry = topo.entry_index
    for j in range(sub):
        cap = servers[:, :, j] * mu * h
        limit = np.minimum(params.queue_limit * servers[:, :, j], params.timeout * servers[:, :, j] * mu)
        for lo, hi in params.level_bounds:
            if lo == 0:
                arr = np.zeros((b, hi - lo))
            else:
                arr = served_now[:, :lo] @ params.calls[:lo, lo:hi]
            if lo <= entry < hi:
                arr[:, entry - lo] += entry_arrivals[:, j]
            queue = backlog[:, lo:hi] + arr
            done = np.minimum(queue, cap[:, lo:hi])
            queue -= done
            lost = np.maximum(queue - limit[:, lo:hi], 0.0)
            queue -= lost
            served_now[:, lo:hi] = done
            backlog[:, lo:hi] = queue
            arrived[:, lo:hi] += arr
            served[:, lo:hi] += done
            dropped[:, lo:hi] += lost
        backlog_area += backlog
        busy_substeps += backlog > 1e-9

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
    oom = np.zeros_like(ready)
    near = ready_count > 0
    near &= mean_ws * (1.0 + 3.0 * cfg.load_imbalance) > params.mem_limit
    if near.any():
        drawn = ready & near[:, :, None]  # a normal per Ready pod of the services near their limit
        jitter = np.ones((b, s, k))
        jitter[drawn] = 1.0 + cfg.load_imbalance * rng.standard_normal(int(drawn.sum()))
        pod_ws = params.mem_base[None, :, None] + params.mem_per_inflight[None, :, None] * inflight_per_pod[:, :, None] * jitter
        oom = drawn & (pod_ws > params.mem_limit[None, :, None])
        killed_share = oom.sum(axis=2) / np.maximum(ready_count, 1.0)
        lost_requests = backlog * killed_share
        backlog -= lost_requests
        dropped += lost_requests
        _enter_backoff(st, oom, cfg)

    # 9. Advance pod timers by dt (back-off -> starting -> Ready chains within the step).
    phase = st.phase
    for ph in (STARTING, CRASHLOOP, TERMINATING, LOST):
        m = phase == ph
        st.timer[m] -= dt
    restart = (phase == CRASHLOOP) & (st.timer <= 0)
    phase[restart] = STARTING
    st.timer[restart] += np.broadcast_to(params.startup[None, :, None], (b, s, k))[restart]
    up = (phase == STARTING) & (st.timer <= 0)
    phase[up] = READY
    st.ready_age[up] = -st.timer[up]
    st.timer[up] = 0.0
    was_ready = (phase == READY) & ~up
    st.ready_age[was_ready] += dt
    st.backoff[(phase == READY) & (st.ready_age >= cfg.crashloop_reset_seconds)] = cfg.crashloop_initial_backoff
    finished = ((phase == TERMINATING) | (phase == LOST)) & (st.timer <= 0)
    phase[finished] = EMPTY
    st.node[finished] = -1
    st.step_index += 1

    # CPU demand per node for next step's contention: Ready pods at min(limit, demand).
    usage = served * params.cost / dt  # (B, S) cores actually used
    demand_per_pod = np.minimum(params.cpu_limit, arrival_rate * params.cost / np.maximum(ready_count, 1.0))
    st.node_demand = _per_node_sum(np.where(ready, st.node, -1), np.broadcast_to(demand_per_pod[:, :, None], (b, s, k)), n)

    st.backlog = backlog
    st.arrived_total += arrived
    st.served_total += served
    st.dropped_total += dropped
    crashes = crash.sum(axis=2) + oom.sum(axis=2)
    st.restarts += crashes

    # 10. Observations in metrics.METRICS order.
    counts = _phase_counts(phase)
    running_pods = counts[:, :, READY]
    present = k - counts[:, :, EMPTY]
    obs = np.empty((b, s, NUM_METRICS), dtype=np.float32)
    obs[:, :, METRIC_INDEX["replicas_desired"]] = desired
    obs[:, :, METRIC_INDEX["replicas_ready"]] = running_pods
    obs[:, :, METRIC_INDEX["replicas_pending"]] = counts[:, :, PENDING]
    obs[:, :, METRIC_INDEX["replicas_crashloop"]] = counts[:, :, CRASHLOOP]
    obs[:, :, METRIC_INDEX["cpu_usage_cores"]] = usage
    obs[:, :, METRIC_INDEX["cpu_requests_cores"]] = present * params.cpu_request
    obs[:, :, METRIC_INDEX["cpu_throttled_ratio"]] = np.maximum(busy_substeps / sub, 1.0 - contention * capacity_factor)
    obs[:, :, METRIC_INDEX["memory_working_set_bytes"]] = (
        running_pods * np.minimum(mean_ws, params.mem_limit)
        + (counts[:, :, STARTING] + counts[:, :, CRASHLOOP]) * params.mem_base)
    obs[:, :, METRIC_INDEX["request_rate"]] = arrival_rate
    obs[:, :, METRIC_INDEX["error_rate"]] = error_incl
    # Callers of a service give up after its timeout, so no observed latency exceeds it.
    obs[:, :, METRIC_INDEX["latency_p50_seconds"]] = np.minimum(gamma_quantile(lat_mean, lat_var, _Z["p50"]), params.timeout)
    p95 = np.minimum(gamma_quantile(lat_mean, lat_var, _Z["p95"]), params.timeout)
    obs[:, :, METRIC_INDEX["latency_p95_seconds"]] = p95
    obs[:, :, METRIC_INDEX["latency_p99_seconds"]] = np.minimum(gamma_quantile(lat_mean, lat_var, _Z["p99"]), params.timeout)
    obs[:, :, METRIC_INDEX["pending_requests"]] = backlog

    bound_pods = counts[:, :, STARTING] + counts[:, :, READY] + counts[:, :, CRASHLOOP] + counts[:, :, TERMINATING]
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
        "oom_kills": oom.sum(axis=2),
    }
    return st, obs, info


def _enter_backoff(state: ClusterState, crashed: np.ndarray, cfg: TwinConfig) -> None:
    """Move crashed pods into CrashLoopBackOff with the current delay; double the next (in place)."""
    if not crashed.any():
        return
    state.phase[crashed] = CRASHLOOP
    state.timer[crashed] = state.backoff[crashed]
    state.backoff[crashed] = np.minimum(state.backoff[crashed] * 2.0, cfg.crashloop_max_backoff)
    state.ready_age[crashed] = 0.0
