"""Speed of the microservice twin: service-steps/s at B=1 and B=1024 on Online Boutique.

A service-step is one service of one cluster advanced by one 15 s control step (5 queue
sub-steps, latency, metrics). The reference below is a straightforward per-cluster,
per-service, per-pod Python implementation of the same model (no failures, replicas held
fixed), run in the same process; before timing, both run the same deterministic episode and
their end-to-end latency and backlog are compared (the speed-up is only worth something if
the outputs match).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/microservice_twin.py``
"""

from __future__ import annotations

import argparse

import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from digital_twin.microservices import MicroserviceTwin, TwinConfig, build_load_curve, load_topology, load_trace  # noqa: E402
from digital_twin.microservices.dynamics import _Z  # noqa: E402


class ReferenceTwin:
    """Per-service Python loops over B clusters: pods as lists, queues as floats."""

    def __init__(self, topology, rates, batch_size, replicas, config):
        self.topo, self.rates, self.batch, self.cfg = topology, rates, batch_size, config
        self.names = topology.service_names
        self.s = topology.num_services
        self.calls = topology.calls.tolist()
        self.calls_var = topology.calls_var.tolist()
        self.visits = topology.visits_from.tolist()
        self.parents = [[u for u in range(self.s) if self.calls[u][d] > 0] for d in range(self.s)]
        self.mu = (topology.cpu_limit / topology.cpu_seconds_per_request).tolist()
        self.replicas = [int(r) for r in replicas]
        # Pods: per cluster, per service, a list of [phase, timer]; all Ready from the start.
        self.pods = [[[["ready", 0.0] for _ in range(self.replicas[s])] for s in range(self.s)] for _ in range(batch_size)]
        self.backlog = [[0.0] * self.s for _ in range(batch_size)]
        self.t = 0

    def step(self):
        cfg, topo = self.cfg, self.topo
        dt, sub = cfg.step_seconds, cfg.substeps
        h = dt / sub
        out_p95, out_backlog = [], []
        for b in range(self.batch):
            ready = []
            for s in range(self.s):
                n_ready = 0
                for pod in self.pods[b][s]:
                    if pod[0] == "starting":
                        pod[1] -= dt
                        if pod[1] <= 0:
                            pod[0] = "ready"
                    if pod[0] == "ready":
                        n_ready += 1
                ready.append(n_ready)
            rate = self.rates[self.t]
            arrived = [0.0] * self.s
            area = [0.0] * self.s
            backlog = self.backlog[b]
            for _ in range(sub):
                served_now = [0.0] * self.s
                for s in range(self.s):  # topological order
                    arr = sum(served_now[u] * self.calls[u][s] for u in self.parents[s])
                    if s == topo.entry_index:
                        arr += rate * h
                    cap = ready[s] * self.mu[s] * h
                    queue = backlog[s] + arr
                    done = min(queue, cap)
                    queue -= done
                    limit = min(topo.queue_limit_per_pod[s] * ready[s], topo.timeout_seconds[s] * ready[s] * self.mu[s])
                    queue -= max(queue - limit, 0.0)
                    served_now[s] = done
                    backlog[s] = queue
                    arrived[s] += arr
                for s in range(self.s):
                    area[s] += backlog[s]
            t_mean, t_var, w_var = [], [], []
            for s in range(self.s):
                c = max(round(ready[s]), 1)
                mu = self.mu[s]
                a = min(arrived[s] / dt / mu, cfg.max_utilisation * c)
                erlang_b = 1.0
                for k in range(1, c + 1):
                    erlang_b = a * erlang_b / (k + a * erlang_b)
                p_wait = c * erlang_b / (c - a * (1 - erlang_b))
                theta = max(c * mu - a * mu, 1e-12)
                mean = area[s] / sub / max(ready[s] * mu, 1e-12) + p_wait / theta + 1 / mu
                wv = p_wait * (2 - p_wait) / theta**2
                if ready[s] == 0 or mean >= topo.timeout_seconds[s]:
                    t_mean.append(topo.timeout_seconds[s])
                    t_var.append(0.0)
                    w_var.append(0.0)
                else:
                    t_mean.append(mean)
                    t_var.append(wv + 1 / mu**2)
                    w_var.append(wv)
            lat_mean = [sum(self.visits[s][d] * t_mean[d] for d in range(self.s)) for s in range(self.s)]
            lat_var = []
            for s in range(self.s):
                v = 0.0
                for d in range(self.s):
                    m = self.visits[s][d]
                    extra = sum(self.calls_var[d][c] * lat_mean[c] ** 2 for c in range(self.s))
                    v += m * (t_var[d] + extra) + max(m * m - m, 0.0) * w_var[d]
                lat_var.append(v)
            e = topo.entry_index
            mean, var = lat_mean[e], lat_var[e]
            k = mean * mean / max(var, 1e-300)
            p95 = mean * max(1 - 1 / (9 * k) + _Z["p95"] * math.sqrt(1 / (9 * k)), 0.0) ** 3 if var > 0 else mean
            out_p95.append(min(p95, topo.timeout_seconds[e]))
            out_backlog.append(sum(backlog))
        self.t += 1
        return np.array(out_p95), np.array(out_backlog)


def time_twin(topology, rates, batch, steps, replicas, config):
    twin = MicroserviceTwin(topology, rates, batch_size=batch, config=config, initial_replicas=replicas)
    twin.reset(seed=0)
    action = np.broadcast_to(replicas, (batch, topology.num_services))
    twin.step(action)  # warm caches
    start = time.perf_counter()
    for _ in range(steps):
        twin.step(action)
    return time.perf_counter() - start


def time_twin_with_churn(topology, rates, batch, steps, config):
    """Twin under crashes, a DDoS pulse and replica counts that change every step."""
    scen = [{"kind": "pod_crash", "rate_per_pod_per_hour": 12},
            {"kind": "ddos", "capacity_fraction": 0.4, "shape": "pulse", "period_seconds": 120, "duty": 0.5}]
    twin = MicroserviceTwin(topology, rates, scenarios=scen, batch_size=batch, config=config)
    twin.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(1, 11, size=(steps + 1, batch, topology.num_services))
    twin.step(actions[0])
    start = time.perf_counter()
    for i in range(steps):
        twin.step(actions[i + 1])
    return time.perf_counter() - start


def time_reference(topology, rates, batch, steps, replicas, config):
    ref = ReferenceTwin(topology, rates, batch, replicas, config)
    ref.step()
    start = time.perf_counter()
    for _ in range(steps):
        ref.step()
    return time.perf_counter() - start


def check_match(topology, rates, replicas, steps=400):
    """Same deterministic episode through twin and reference; largest relative differences."""
    config = TwinConfig(poisson_arrivals=False)
    twin = MicroserviceTwin(topology, rates, config=config, initial_replicas=replicas)
    twin.reset(seed=0)
    ref = ReferenceTwin(topology, rates, 1, replicas, config)
    ref.backlog[0] = twin.state.backlog[0].tolist()
    ref.step()  # the reference's step 0 mirrors the twin's warm-up step in reset
    ref.backlog[0] = twin.state.backlog[0].tolist()
    ref.t = 0
    worst_p95 = worst_backlog = 0.0
    for _ in range(steps):
        _, info = twin.step(replicas[None, :])
        p95, backlog = ref.step()
        worst_p95 = max(worst_p95, abs(info["e2e_latency_p95"][0] - p95[0]) / p95[0])
        worst_backlog = max(worst_backlog, abs(twin.state.backlog.sum() - backlog[0]) / max(backlog[0], 1.0))
    return worst_p95, worst_backlog


def main() -> None:
    topology = load_topology("online_boutique")
    trace = load_trace("worldcup98")
    curve = build_load_curve(trace, topology, trace.select(day="1998-06-29"), peak_utilisation=0.5)
    rates = curve.rates
    replicas = np.minimum(6, topology.max_replicas)
    config = TwinConfig()
    s = topology.num_services

    worst_p95, worst_backlog = check_match(topology, rates[3000:3400] * 1.6, replicas)
    print(f"twin vs reference on 400 steps (deterministic arrivals, overload included): "
          f"max relative difference e2e p95 {worst_p95:.2e}, backlog {worst_backlog:.2e}")

    print(f"Online Boutique, {s} services, {config.substeps} sub-steps per 15 s step, fixed {int(replicas[0])} replicas, "
          f"worldcup98 1998-06-29 load; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    rows = []
    for batch, twin_steps, ref_steps in ((1, 2000, 300), (1024, 60, 2)):
        t_twin = time_twin(topology, rates, batch, twin_steps, replicas, config)
        t_ref = time_reference(topology, rates, batch, ref_steps, replicas, config)
        twin_rate = batch * s * twin_steps / t_twin
        ref_rate = batch * s * ref_steps / t_ref
        rows.append((batch, twin_rate, ref_rate))
        print(f"B={batch:<5d} twin {twin_rate:>12,.0f} service-steps/s ({t_twin / twin_steps * 1e3:8.3f} ms/step) | "
              f"reference {ref_rate:>10,.0f} service-steps/s ({t_ref / ref_steps * 1e3:9.3f} ms/step) | "
              f"ratio {twin_rate / ref_rate:6.1f}x")
    churn_steps = 60
    t_churn = time_twin_with_churn(topology, rates, 1024, churn_steps, config)
    print(f"B=1024  twin with crashes + DDoS pulse + replicas changing every step: "
          f"{1024 * s * churn_steps / t_churn:,.0f} service-steps/s ({t_churn / churn_steps * 1e3:.3f} ms/step)")
    b1024 = rows[1]
    print(f"goal >= 1,000,000 service-steps/s at B=1024: {'met' if b1024[1] >= 1e6 else 'NOT met'}; "
          f"goal >= 20x reference: {'met' if b1024[1] / b1024[2] >= 20 else 'NOT met'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``--help`` prints what the benchmark measures; it takes no options (only when run as a script)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parse_args()
    main()
