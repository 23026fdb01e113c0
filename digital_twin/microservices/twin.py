"""A thin stateful wrapper over the pure dynamics: topology + load + scenarios + RNG.

>>> from digital_twin.microservices import MicroserviceTwin, load_topology
>>> import numpy as np
>>> twin = MicroserviceTwin(load_topology("chain4"), load=np.full(8, 100.0), batch_size=2)
>>> obs, info = twin.reset(seed=0)
>>> obs.shape
(2, 4, 14)
>>> obs, info = twin.step(np.full((2, 4), 3))
>>> sorted(info)[:3]
['allocated_pod_seconds', 'arrived', 'cpu_request_core_seconds']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digital_twin.microservices import dynamics
from digital_twin.microservices.metrics import METRIC_INDEX, METRIC_NAMES
from digital_twin.microservices.scenarios import ScenarioSchedule, compile_scenarios, empty_schedule
from digital_twin.microservices.topology import Topology
from digital_twin.microservices.traces import LoadCurve


def warm_start(
    params: dynamics.TwinParams,
    batch_size: int,
    initial_replicas: np.ndarray | None,
    rng: np.random.Generator,
    entry_rate: np.ndarray,
) -> tuple[dynamics.ClusterState, np.ndarray, dict[str, np.ndarray]]:
    """Start B clusters as if they had been running before the episode.

    The initial replicas start Ready, then one warm-up step at ``entry_rate`` fills the
    observations; its requests count as the episode's starting backlog and the step counter
    starts at 0. No scenario acts in the warm-up: it stands for time before the episode (a
    kill at minute 0 must fire once, in the first real step).

    Args:
        params: From :func:`dynamics.make_params`.
        batch_size: B.
        initial_replicas: (S,) or (B, S) replica counts; None for ``min_replicas``.
        rng: Source of the warm-up step's randomness.
        entry_rate: (B,) legitimate requests/s of the warm-up step (the episode's first load).

    Returns:
        ``(state, observations (B, S, M) float32, info)``: ``info`` is the warm-up step's,
        as from :func:`dynamics.step`.
    """
    state = dynamics.reset(params, batch_size, initial_replicas, rng)
    calm = empty_schedule(params.topology, 1)
    state, obs, info = dynamics.step(
        params, state, state.desired, rng, entry_rate=entry_rate,
        attack_rate=calm.attack_rate[0], crash_rate=calm.crash_rate[0], kills=calm.kills[0],
        noisy_cpu=calm.noisy_cpu[0], capacity_factor=calm.capacity_factor[0], node_up=calm.node_up[0],
    )
    state.step_index[:] = 0
    state.arrived_total = state.backlog.copy()
    state.served_total[:] = 0.0
    state.dropped_total[:] = 0.0
    return state, obs, info


class MicroserviceTwin:
    """B independent clusters running one topology under a load curve and scenarios.

    Args:
        topology: The validated topology.
        load: Entry request rate per control step: a :class:`LoadCurve`, or an array of
            requests/s with shape (T,) (shared) or (B, T) (one curve per cluster).
        scenarios: A compiled :class:`ScenarioSchedule`, a list of scenario mappings (compiled
            here), or None.
        batch_size: B.
        config: Simulation settings; its ``step_seconds`` must match the load curve's.
        initial_replicas: Replicas per service at reset, (S,) or (B, S); default the minimum.

    Shapes: observations (B, S, M) float32 in :data:`METRIC_NAMES` order; actions (B, S) int.
    """

    def __init__(
        self,
        topology: Topology,
        load: LoadCurve | np.ndarray,
        scenarios: ScenarioSchedule | list[dict[str, Any]] | None = None,
        batch_size: int = 1,
        config: dynamics.TwinConfig | None = None,
        initial_replicas: np.ndarray | None = None,
    ):
        if isinstance(load, LoadCurve):
            config = config or dynamics.TwinConfig(step_seconds=load.step_seconds)
            if config.step_seconds != load.step_seconds:
                raise ValueError(f"load curve built for {load.step_seconds} s steps, config has {config.step_seconds} s")
            rates = load.rates
        else:
            rates = np.asarray(load, dtype=np.float64)
        if rates.ndim == 1:
            rates = np.broadcast_to(rates, (batch_size, rates.shape[0]))
        if rates.shape[0] != batch_size or rates.ndim != 2 or rates.shape[1] == 0:
            raise ValueError(f"load must have shape (T,) or ({batch_size}, T), got {np.shape(load)}")
        if not np.all(np.isfinite(rates)) or np.any(rates < 0):
            raise ValueError("load rates must be finite and >= 0")
        self.topology = topology
        self.params = dynamics.make_params(topology, config)
        self.config = self.params.config
        self.batch_size = batch_size
        self.rates = rates  # (B, T)
        num_steps = rates.shape[1]
        if scenarios is None:
            scenarios = empty_schedule(topology, num_steps)
        elif not isinstance(scenarios, ScenarioSchedule):
            scenarios = compile_scenarios(scenarios, topology, num_steps, self.config.step_seconds)
        if scenarios.num_steps < num_steps:
            raise ValueError(f"scenario schedule covers {scenarios.num_steps} steps, load has {num_steps}")
        self.schedule = scenarios
        self.initial_replicas = initial_replicas
        self.state: dynamics.ClusterState | None = None
        self.rng: np.random.Generator | None = None

    service_names = property(lambda self: self.topology.service_names)
    metric_names = METRIC_NAMES
    metric_index = METRIC_INDEX

    @property
    def num_steps(self) -> int:
        """Episode length T in control steps."""
        return self.rates.shape[1]

    @property
    def done(self) -> np.ndarray:
        """(B,) bool: the cluster has replayed its whole load curve."""
        self._require_reset()
        return self.state.step_index >= self.num_steps

    def reset(self, seed: int | None = None, rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict]:
        """Start all clusters at step 0 with the initial replicas Ready.

        A warm-up step at the first load value fills the observations (the cluster was running
        before the episode; see :func:`warm_start`).

        Args:
            seed: Seed for a fresh ``np.random.Generator`` (ignored if ``rng`` is given).
            rng: Generator to draw all randomness from.

        Returns:
            ``(observations, info)`` as from :meth:`step`.
        """
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.state, obs, info = warm_start(self.params, self.batch_size, self.initial_replicas, self.rng,
                                           entry_rate=self.rates[:, 0])
        return obs, info

    def step(self, desired_replicas: np.ndarray) -> tuple[np.ndarray, dict]:
        """Apply desired replica counts and advance one control step.

        Args:
            desired_replicas: (B, S) or (S,) integer replica counts per service, clipped to
                each service's ``[min_replicas, max_replicas]``.

        Returns:
            ``(observations (B, S, M) float32, info)``; see :func:`dynamics.step`.

        Raises:
            ValueError: ``desired_replicas`` of another shape (the message gives both shapes), or
                not integers.
            RuntimeError: Before :meth:`reset`, or past the end of the load curve.
        """
        self._require_reset()
        if np.any(self.state.step_index >= self.num_steps):
            raise RuntimeError("load curve exhausted: reset the twin (or give a longer load curve)")
        shape = (self.batch_size, self.topology.num_services)
        given = np.asarray(desired_replicas)
        try:
            desired = np.broadcast_to(given, shape)
        except ValueError:
            raise ValueError(f"desired_replicas must have shape {shape} (clusters x services of {self.topology.name}) "
                             f"or ({shape[1]},) (one count per service for every cluster), got shape {given.shape}") from None
        if not np.issubdtype(desired.dtype, np.integer):
            if not np.all(np.isfinite(desired)) or np.any(desired != np.round(desired)):
                raise ValueError("desired_replicas must be integers")
        self.state, obs, info = self._advance(self.state, desired.astype(np.int64))
        return obs, info

    def _advance(self, state: dynamics.ClusterState, desired: np.ndarray):
        t = np.minimum(state.step_index, self.num_steps - 1)
        sch = self.schedule
        return dynamics.step(
            self.params,
            state,
            desired,
            self.rng,
            entry_rate=self.rates[np.arange(self.batch_size), t],
            attack_rate=sch.attack_rate[t],
            crash_rate=sch.crash_rate[t],
            kills=sch.kills[t],
            noisy_cpu=sch.noisy_cpu[t],
            capacity_factor=sch.capacity_factor[t],
            node_up=sch.node_up[t],
        )

    def _require_reset(self) -> None:
        if self.state is None:
            raise RuntimeError("call reset() before step()")

    def __repr__(self) -> str:
        return (f"MicroserviceTwin(topology={self.topology.name!r}, services={self.topology.num_services}, "
                f"batch_size={self.batch_size}, steps={self.num_steps}, step_seconds={self.config.step_seconds}, "
                f"scenarios={list(self.schedule.names)})")
