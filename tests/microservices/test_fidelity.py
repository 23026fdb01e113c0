"""Fidelity: the twin's latency model against a discrete-event simulation of the same network.

The DES (written here with heapq; SimPy is not a project dependency) simulates the queueing
network the twin models: Poisson arrivals at the entry; every service is a FCFS station with c
servers and exponential service times of rate mu = cpu_limit / cpu_seconds_per_request; a
request is served at a service and then makes its downstream calls one after another
(depth-first, the calls counts being integers here), so its end-to-end latency is the sum of its
sojourn times. Random parameters per case; the busiest station runs at utilisation up to 0.9.
"""

import heapq
import itertools

import numpy as np
import pytest

from digital_twin.microservices import MicroserviceTwin, TwinConfig
from digital_twin.microservices.topology import topology_from_dict


def random_network(rng: np.random.Generator, utilisation: float):
    """A random DAG of 3-5 services: integer calls, random rates and server counts."""
    n = int(rng.integers(3, 6))
    names = [f"s{i}" for i in range(n)]
    calls = {name: {} for name in names}
    for j in range(1, n):  # every service is reachable: one parent among earlier services
        parent = int(rng.integers(0, j))
        calls[names[parent]][names[j]] = int(rng.integers(1, 3))
        if j >= 2 and rng.random() < 0.4:  # sometimes a second parent (shared dependency)
            other = int(rng.integers(0, j))
            if other != parent:
                calls[names[other]][names[j]] = 1
    mu = rng.uniform(20.0, 200.0, n)  # requests/s per server
    servers = rng.integers(1, 5, n)
    # Visits per external request, then the entry rate that puts the busiest station at `utilisation`.
    visits = np.zeros(n)
    visits[0] = 1.0
    for i in range(n):
        for callee, k in calls[names[i]].items():
            visits[names.index(callee)] += visits[i] * k
    rate = utilisation * np.min(servers * mu / visits)
    return names, calls, mu, servers, rate


def des_latencies(names, calls, mu, servers, rate, num_requests, seed):
    """End-to-end latencies of ``num_requests`` requests from the event-driven simulation."""
    rng = np.random.default_rng(seed)
    index = {name: i for i, name in enumerate(names)}

    def route(service):  # depth-first visit order of one request
        out = [index[service]]
        for callee, k in calls[service].items():
            for _ in range(k):
                out.extend(route(callee))
        return out

    path = route(names[0])
    busy = [0] * len(names)
    queues = [[] for _ in names]  # FCFS queues of request ids (list + head pointer)
    heads = [0] * len(names)
    position = np.zeros(num_requests, dtype=np.int64)
    start = np.zeros(num_requests)
    finish = np.full(num_requests, np.nan)
    tie = itertools.count()  # keeps simultaneous events in a fixed order
    events = []
    arrivals = np.cumsum(rng.exponential(1.0 / rate, num_requests))
    service_draws = rng.exponential(1.0, (num_requests, len(path)))
    for r, t in enumerate(arrivals):
        heapq.heappush(events, (t, next(tie), 0, r))  # kind 0: arrive at path[position]

    def begin(now, station, r):
        busy[station] += 1
        heapq.heappush(events, (now + service_draws[r, position[r]] / mu[station], next(tie), 1, r))

    while events:
        now, _, kind, r = heapq.heappop(events)
        station = path[position[r]]
        if kind == 0:
            if position[r] == 0:
                start[r] = now
            if busy[station] < servers[station]:
                begin(now, station, r)
            else:
                queues[station].append(r)
        else:
            busy[station] -= 1
            if heads[station] < len(queues[station]):
                nxt = queues[station][heads[station]]
                heads[station] += 1
                begin(now, station, nxt)
            position[r] += 1
            if position[r] == len(path):
                finish[r] = now
            else:
                heapq.heappush(events, (now, next(tie), 0, r))
    return finish - start


def twin_latency(names, calls, mu, servers, rate):
    """Stationary end-to-end mean and p95 from the twin at a constant entry rate."""
    services = {}
    for i, name in enumerate(names):
        services[name] = {"cpu_seconds_per_request": 1.0 / mu[i], "min_replicas": int(servers[i]),
                          "max_replicas": int(servers[i]), "calls": calls[name]}
    topo = topology_from_dict({
        "name": "des", "entry": names[0],
        "cluster": {"nodes": [{"name": "big", "cpu": 1000, "memory_mib": 10**7}]},
        "defaults": {"cpu_request": 1.0, "cpu_limit": 1.0, "memory_request_mib": 1, "memory_limit_mib": 10**6,
                     "memory_base_mib": 1, "memory_per_inflight_mib": 0, "min_replicas": 1, "max_replicas": 1,
                     "startup_seconds": 0, "timeout_seconds": 1e6, "queue_limit_per_pod": 1e9},
        "services": services,
    })
    twin = MicroserviceTwin(topo, np.full(4, rate), config=TwinConfig(poisson_arrivals=False),
                            initial_replicas=servers)
    twin.reset(seed=0)
    _, info = twin.step(servers[None, :])
    return float(info["e2e_latency_mean"][0]), float(info["e2e_latency_p95"][0])


CASES = [(seed, util) for seed, util in zip(range(6), (0.5, 0.7, 0.9, 0.6, 0.8, 0.9))]


@pytest.mark.parametrize("seed, utilisation", CASES)
def test_twin_matches_des(seed, utilisation):
    names, calls, mu, servers, rate = random_network(np.random.default_rng(100 + seed), utilisation)
    latencies = des_latencies(names, calls, mu, servers, rate, num_requests=40_000, seed=seed)
    steady = latencies[5_000:]  # drop the warm-up from an empty network
    des_mean, des_p95 = float(np.mean(steady)), float(np.percentile(steady, 95))
    mean, p95 = twin_latency(names, calls, mu, servers, rate)
    mean_err, p95_err = abs(mean - des_mean) / des_mean, abs(p95 - des_p95) / des_p95
    print(f"case {seed} util {utilisation}: services {len(names)} servers {servers.tolist()} | "
          f"mean twin {mean * 1e3:.2f} ms DES {des_mean * 1e3:.2f} ms ({mean_err:.1%}) | "
          f"p95 twin {p95 * 1e3:.2f} ms DES {des_p95 * 1e3:.2f} ms ({p95_err:.1%})")
    assert mean_err < 0.10
    assert p95_err < 0.20
