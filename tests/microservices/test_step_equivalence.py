"""The compiled twin step gives the results of the frozen dense numpy reference.

``digital_twin.microservices.dynamics`` runs its step in compiled per-cluster loops
(``kernels.py``, numba). ``reference_dynamics.py`` in this folder is a verbatim copy of the
dense numpy implementation the model was first written as. Here both are stepped side by side
from the same state, inputs and seed: every integer and boolean array (pod phases, nodes,
counts, crashes, SLO flags) must be identical, dtypes and shapes included, every float equal to
rounding (the kernels' matrix products and ``exp``/``log``/``pow`` round differently from
numpy's BLAS and SIMD code, by an ulp or so), and the random generators must end in the same
state (the kernels draw in the reference's order). Float differences cannot build up: each
check compares the two trajectories step by step over 80-150 steps.

The inputs are random and change every step so that every branch runs: replica changes up
and down (with jumps to the bounds), random crashes, targeted kills, DDoS, noisy neighbours,
bottlenecks, node losses shorter and longer than the eviction timeout, clusters with every
node down, nodes too small for the pods (Pending retries, running sums over a full node) and
memory pressure (OOM kills). One case drives the step from a compiled scenario schedule.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from digital_twin.microservices import dynamics as dyn
from digital_twin.microservices import load_topology
from digital_twin.microservices.scenarios import compile_scenarios
from digital_twin.microservices.topology import topology_from_dict
from tests.microservices import reference_dynamics as ref

STATE_FIELDS = [f.name for f in dataclasses.fields(dyn.ClusterState)]

# Small nodes and tight memory: pods wait Pending, nodes fill up, pods are OOM-killed.
TIGHT = {
    "name": "tight", "entry": "A",
    "cluster": {"nodes": [{"name": "n1", "cpu": 1.3, "memory_mib": 1024},
                          {"name": "n2", "cpu": 2.0, "memory_mib": 700},
                          {"name": "n3", "cpu": 0.9, "memory_mib": 2048}],
                "eviction_timeout_seconds": 60},
    "defaults": {"cpu_request": 0.25, "cpu_limit": 0.5, "memory_request_mib": 128, "memory_limit_mib": 160,
                 "memory_base_mib": 80, "memory_per_inflight_mib": 1.0, "min_replicas": 1, "max_replicas": 6,
                 "startup_seconds": 10, "timeout_seconds": 3, "queue_limit_per_pod": 100},
    "services": {"A": {"throughput_per_replica": 50, "calls": {"B": 1, "C": 0.5}, "cpu_request": 0.1},
                 "B": {"throughput_per_replica": 40, "calls": {"D": 1.5}, "startup_seconds": 30},
                 "C": {"throughput_per_replica": 40, "calls": {"D": 1}, "cpu_request": 0.35},
                 "D": {"throughput_per_replica": 60, "startup_seconds": 7.5}},
}


def _topology(name: str):
    return topology_from_dict(TIGHT) if name == "tight" else load_topology(name)


def _assert_same(new, old, what: str) -> None:
    """Same dtype and shape; integers and booleans equal, floats equal to rounding."""
    new, old = np.asarray(new), np.asarray(old)
    assert new.dtype == old.dtype and new.shape == old.shape, f"{what}: {new.dtype}{new.shape} != {old.dtype}{old.shape}"
    if np.issubdtype(new.dtype, np.floating):
        rtol = 1e-5 if new.dtype == np.float32 else 1e-9  # float32: a cast of values an ulp apart
        same = np.isclose(new, old, rtol=rtol, atol=1e-9 * max(float(np.abs(old).max(initial=0.0)), 1.0))
    else:
        same = new == old
    if not same.all():
        bad = np.flatnonzero(~same.reshape(-1))[:5]
        raise AssertionError(f"{what}: differs at flat {bad}: {new.reshape(-1)[bad]} != {old.reshape(-1)[bad]}")


def _assert_same_step(new, old, t: int) -> None:
    (s_new, obs_new, info_new), (s_old, obs_old, info_old) = new, old
    _assert_same(obs_new, obs_old, f"step {t} observations")
    assert info_new.keys() == info_old.keys()
    for key in info_old:
        _assert_same(info_new[key], info_old[key], f"step {t} info[{key!r}]")
    for name in STATE_FIELDS:
        _assert_same(getattr(s_new, name), getattr(s_old, name), f"step {t} state.{name}")


def _random_inputs(ir: np.random.Generator, topo, b: int, node_down_left: np.ndarray) -> dict[str, np.ndarray]:
    """One step of scenario effects, each switched on at random (node losses last several steps)."""
    s, n = topo.num_services, topo.num_nodes
    cap = float(topo.throughput_per_replica[topo.entry_index] * topo.max_replicas[topo.entry_index])
    crash = np.zeros((b, s))
    if ir.random() < 0.15:
        crash = np.where(ir.random((b, s)) < 0.5, ir.uniform(0, 0.02, (b, s)), 0.0)
    kills = np.zeros((b, s), dtype=np.int64)
    if ir.random() < 0.2:
        kills = np.where(ir.random((b, s)) < 0.3, ir.integers(0, 4, (b, s)), 0)
    start = ir.random((b, n)) < 0.02
    node_down_left[start] = ir.integers(2, 30, size=int(start.sum()))  # some outlast the eviction timeout
    every_node = ir.random(b) < 0.005
    node_down_left[every_node] = np.maximum(node_down_left[every_node], 2)
    node_up = node_down_left <= 0
    node_down_left -= 1
    return {
        "entry_rate": ir.uniform(0, 0.15 * cap, size=b) * ir.choice([0.3, 1.0, 3.0]),
        "attack_rate": np.where(ir.random(b) < 0.05, ir.uniform(0, 3 * cap, size=b), 0.0),
        "crash_rate": crash,
        "kills": kills,
        "noisy_cpu": np.where(ir.random((b, n)) < 0.05, ir.uniform(0, 1.2 * topo.node_cpu, (b, n)), 0.0),
        "capacity_factor": np.where(ir.random((b, s)) < 0.05, ir.uniform(0.1, 1.0, (b, s)), 1.0),
        "node_up": node_up,
    }


def _random_desired(ir: np.random.Generator, topo, desired: np.ndarray) -> np.ndarray:
    """Random replica moves, sometimes every service to a bound at once; a little out of bounds (clipped)."""
    b, s = desired.shape
    r = ir.random()
    if r < 0.1:
        desired = np.where(ir.random((b, s)) < 0.5, topo.max_replicas, topo.min_replicas)
    elif r < 0.8:
        desired = desired + np.where(ir.random((b, s)) < 0.5, ir.integers(-3, 4, (b, s)), 0)
    return np.clip(desired, topo.min_replicas - 1, topo.max_replicas + 1)


def _run_side_by_side(topo, config: dyn.TwinConfig, batch: int, seed: int, steps: int, inplace: bool,
                      inputs) -> None:
    params = dyn.make_params(topo, config)
    ir = np.random.default_rng([seed, 1])
    rng_new, rng_old = np.random.default_rng([seed, 2]), np.random.default_rng([seed, 2])
    # Initial replicas as the callers give them: default, one per service, one per cluster and service.
    init = [None, ir.integers(topo.min_replicas, topo.max_replicas + 1),
            ir.integers(topo.min_replicas, topo.max_replicas + 1, size=(batch, topo.num_services))][seed % 3]
    s_new, s_old = dyn.reset(params, batch, init, rng_new), ref.reset(params, batch, init, rng_old)
    for name in STATE_FIELDS:
        _assert_same(getattr(s_new, name), getattr(s_old, name), f"reset state.{name}")
    desired = s_old.desired.copy()
    for t in range(steps):
        desired = _random_desired(ir, topo, desired)
        step_inputs = inputs(ir, t)
        kept = {name: getattr(s_new, name).copy() for name in STATE_FIELDS}
        old = ref.step(params, s_old, desired.copy(), rng_old, **step_inputs)
        new = dyn.step(params, s_new, desired.copy(), rng_new, inplace=inplace, **step_inputs)
        if inplace:
            assert new[0] is s_new
        else:  # the default step leaves its input alone
            for name in STATE_FIELDS:
                _assert_same(getattr(s_new, name), kept[name], f"step {t} input state.{name}")
        _assert_same_step(new, old, t)
        s_new, s_old = new[0], old[0]
        desired = s_old.desired
    assert rng_new.bit_generator.state == rng_old.bit_generator.state


@pytest.mark.parametrize(
    ("topology", "batch", "seed", "steps", "substeps", "poisson", "inplace"),
    [
        ("online_boutique", 1, 0, 150, 5, True, False),
        ("online_boutique", 7, 1, 120, 5, True, True),
        ("online_boutique", 64, 2, 80, 5, True, True),
        ("online_boutique", 7, 3, 80, 3, False, False),
        ("chain4", 1, 4, 150, 5, True, True),
        ("chain4", 7, 5, 120, 5, True, False),
        ("chain4", 64, 6, 80, 1, False, True),
        ("tight", 7, 7, 120, 5, True, False),
        ("tight", 64, 8, 80, 5, True, True),
    ],
)
def test_random_scenarios_match_reference(topology, batch, seed, steps, substeps, poisson, inplace):
    topo = _topology(topology)
    down = np.zeros((batch, topo.num_nodes), dtype=np.int64)
    _run_side_by_side(topo, dyn.TwinConfig(substeps=substeps, poisson_arrivals=poisson), batch, seed, steps,
                      inplace, lambda ir, t: _random_inputs(ir, topo, batch, down))


def test_compiled_failure_schedule_matches_reference(boutique):
    """Every scenario kind from a compiled schedule (as the twin and the env drive the step)."""
    steps, batch = 100, 7
    specs = [
        {"kind": "ddos", "start_minute": 2, "duration_minutes": 6, "capacity_fraction": 0.6, "shape": "pulse",
         "period_seconds": 120, "duty": 0.5},
        {"kind": "pod_crash", "services": ["frontend", "cart"], "rate_per_pod_per_hour": 60, "start_minute": 1,
         "duration_minutes": 10},
        {"kind": "pod_crash", "services": ["frontend", "currency"], "kill": 2, "start_minute": 4},
        {"kind": "contention", "node": "node-1", "cpu": 3.0, "start_minute": 8, "duration_minutes": 5},
        {"kind": "bottleneck", "service": "productcatalog", "capacity_factor": 0.4, "start_minute": 12,
         "duration_minutes": 5},
        {"kind": "node_loss", "node": "node-2", "start_minute": 14, "duration_minutes": 6},
    ]
    sched = compile_scenarios(specs, boutique, steps, 15.0)
    rates = np.random.default_rng(9).uniform(20, 120, size=(steps, batch))

    def inputs(ir, t):
        return {"entry_rate": rates[t], "attack_rate": np.full(batch, sched.attack_rate[t]),
                "crash_rate": np.broadcast_to(sched.crash_rate[t], (batch, boutique.num_services)),
                "kills": np.broadcast_to(sched.kills[t], (batch, boutique.num_services)),
                "noisy_cpu": np.broadcast_to(sched.noisy_cpu[t], (batch, boutique.num_nodes)),
                "capacity_factor": np.broadcast_to(sched.capacity_factor[t], (batch, boutique.num_services)),
                "node_up": np.broadcast_to(sched.node_up[t], (batch, boutique.num_nodes))}

    _run_side_by_side(boutique, dyn.TwinConfig(), batch, 10, steps, False, inputs)


def test_inplace_step_accepts_non_contiguous_or_read_only_state(chain4):
    """``inplace=True`` replaces fields it cannot write into (the compiled step needs C-contiguous arrays)."""
    params = dyn.make_params(chain4)
    state = dyn.reset(params, 3, np.full(4, 3))
    inputs = {"entry_rate": np.full(3, 150.0), "attack_rate": np.zeros(3), "crash_rate": np.zeros((3, 4)),
              "kills": np.zeros((3, 4), dtype=np.int64), "noisy_cpu": np.zeros((3, 2)),
              "capacity_factor": np.ones((3, 4)), "node_up": np.ones((3, 2), dtype=bool)}
    desired = np.array([[5, 1, 8, 2]] * 3)
    expected = ref.step(params, state, desired, np.random.default_rng(0), **inputs)
    odd = state.copy()
    odd.timer = np.asfortranarray(odd.timer)
    odd.phase.flags.writeable = False
    new = dyn.step(params, odd, desired, np.random.default_rng(0), inplace=True, **inputs)
    assert new[0] is odd and odd.phase.flags.writeable and odd.timer.flags.c_contiguous
    _assert_same_step(new, expected, 0)


def test_kernel_state_names_the_cluster_state_fields():
    """``dynamics.step`` hands the state to the kernel by ``KernelState``'s field names, in its order."""
    from digital_twin.microservices import kernels

    assert kernels.KernelState._fields == tuple(STATE_FIELDS)
