"""A model-predictive reference policy: roll the twin forward over candidate replica plans.

Every control step, for each of the B clusters, :class:`ModelPredictivePolicy` copies the
cluster's twin state once per candidate plan and sample, plays all ``B x K x R`` copies ``horizon`` steps ahead
with :func:`digital_twin.microservices.dynamics.step` (one batched call per horizon step, no loop
over clusters or candidates), scores each copy by the env's own reward
(:func:`envs.microservice.rewards.global_reward` with the core's weights, summed over the horizon)
and applies the best plan's first step. It shows how much a policy that knew the twin could gain
over the HPA; it is not a deployable controller (it needs the twin's full state).

**Plans.** A plan is a replica vector held for the whole horizon (re-planned every step, so only
its first step is ever applied). Candidates, around the current desired counts ``r``:

* hold ``r`` (index 0: on a tie the policy does nothing);
* every service shifted together by ``d`` in ``shifts`` (default +-1, +-2): the load moves all
  services together (they see the same entry requests), so the common moves come first;
* one service at a time by ``d`` in ``shifts`` (``len(shifts) x S``): the per-service corrections;
* *sized* plans: each service at ``ceil(forecast peak x visits_s / (u x throughput_s))`` for each
  target utilisation ``u`` in ``sizing_utilisations``: the jump to the right size after a load
  step, which small moves reach only over several steps.

Then ``refine_rounds`` rounds of coordinate search around the best so far (each service +-1).
A small structured set rather than a cross-entropy search: with a plan held over the horizon the
score is close to separable by service (each count trades its own pods against its own queue),
so one-at-a-time moves, a few joint ones and a round of coordinate search get close to the best
plan, at a fixed, small cost per decision (K = 1 + 4 + 4 S + 5 plans, then 2 S + 1; a
cross-entropy search would need several times the rollouts for the same S).

**Forecast** (the only input the plan does not read from the state): the entry's observed
``request_rate`` (what Prometheus shows; attack traffic included, since a policy cannot tell it
apart) over the last ``history_steps`` decisions, kept by the policy itself. ``"trend_max"``
(default) is the larger of the linear trend of that history and its recent maximum (the last
``recent_steps``): conservative, because one violated step costs more than any pod saving.
``"last"`` holds the last value, ``"trend"`` extrapolates the trend alone. The forecast is raised
by ``margin`` (default 10%). The policy never reads the trace (``core.rates``,
``core.window_start``) nor the scenario schedule (``core.sched``, ``core.variant``).

**Failures.** Rollouts assume nothing beyond what the state shows: no crash, kill, attack,
noisy neighbour or bottleneck to come; a node is down in the rollout if it holds a lost pod now
(the state shows the node loss), else up. What the state does not show, a slower service (a
bottleneck, a noisy neighbour's CPU), the policy *estimates* (``estimate_capacity``, on by
default) as a per-service capacity factor held over the horizon as the rollouts'
``capacity_factor``: each decision replays the last one (its saved state and replicas, at the
entry rate observed since) and compares it with what the twin reports: the requests a saturated
service served, the CPU throttling of the others (:meth:`ModelPredictivePolicy._update_capacity`).
Without the estimate the MPC loses to the HPA under a slow dependency (it keeps planning for
capacity that is gone).

**Randomness.** Each plan is rolled out ``samples`` times (default 4) with Poisson arrivals, and
its score is the mean: the SLO is a p95 and near saturation the arrival noise decides it (with
fluid arrivals, ``fluid=True``, the rollouts see no transient queue and the MPC runs services too
hot: more SLO minutes on chain4's train windows). All draws come from the policy's own generator,
seeded at every :meth:`~ModelPredictivePolicy.reset`; the env's generator is never seen, so
evaluating the MPC draws exactly the arrivals the env would draw for any other policy's actions.

The defaults (horizon, margin, recent maximum, samples, the estimate) were chosen on **train**
windows of chain4_huawei, online_boutique_worldcup and online_boutique_failures, never on the
held-out split.

Like :class:`~agents.autoscaling.policies.AgentPolicy`, the policy needs the env core
(:class:`~envs.microservice.MicroserviceCore`), not just a :class:`ClusterView`: it reads
``core.state`` (the twin state), ``core.params``, ``core.topology``, ``core.raw_obs``,
``core.low`` / ``core.high`` and the reward's ``core.reward_consts`` / ``core.reward_weights``.

Shapes: B clusters, K candidates, R samples, S services, H horizon steps, L history steps.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import numpy as np

from digital_twin.microservices import dynamics
from digital_twin.microservices.metrics import METRIC_INDEX

if TYPE_CHECKING:
    from envs.microservice import MicroserviceCore

__all__ = ["FORECASTS", "ModelPredictivePolicy", "forecast_entry_rate", "repeat_state"]

FORECASTS = ("trend_max", "trend", "last")

_RATE = METRIC_INDEX["request_rate"]
_THROTTLED = METRIC_INDEX["cpu_throttled_ratio"]


def forecast_entry_rate(history: np.ndarray, horizon: int, kind: str = "trend_max",
                        recent_steps: int = 8) -> np.ndarray:
    """Entry requests/s for the next ``horizon`` steps from past observations only.

    Args:
        history: (B, L) observed entry rates, oldest first (the last column is the latest step).
        horizon: H.
        kind: ``"trend_max"``, ``"trend"`` or ``"last"`` (see the module docstring).
        recent_steps: Steps of the recent maximum of ``"trend_max"``.

    Returns:
        (B, H) float64 forecast, >= 0.
    """
    history = np.asarray(history, dtype=np.float64)
    last = history[:, -1:]
    if kind == "last":
        return np.repeat(last, horizon, axis=1)
    if kind not in FORECASTS:
        raise ValueError(f"unknown forecast {kind!r}; choose {', '.join(FORECASTS)}")
    n = history.shape[1]
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    mean = history.mean(axis=1, keepdims=True)
    denom = float((x * x).sum())
    slope = ((history - mean) * x).sum(axis=1, keepdims=True) / denom if denom > 0 else np.zeros_like(mean)
    ahead = x[-1] + np.arange(1, horizon + 1, dtype=np.float64)  # (H,) steps from the history's centre
    trend = mean + slope * ahead[None, :]
    if kind == "trend_max":
        trend = np.maximum(trend, history[:, -recent_steps:].max(axis=1, keepdims=True))
    return np.maximum(trend, 0.0)


def repeat_state(state: dynamics.ClusterState, k: int) -> dynamics.ClusterState:
    """Each cluster's state ``k`` times, cluster-major: row ``b * k + j`` is copy ``j`` of cluster ``b``."""
    return dynamics.ClusterState(**{f.name: np.repeat(getattr(state, f.name), k, axis=0)
                                    for f in dataclasses.fields(state)})


class ModelPredictivePolicy:
    """The twin rolled forward over candidate plans, the best plan's first step applied.

    Args:
        horizon: H, control steps each plan is played (default 8: 2 minutes at 15 s steps, longer
            than any pod's start-up, so a scale-up's benefit is seen).
        shifts: Replica changes of the uniform and one-at-a-time candidates.
        sizing_utilisations: Target utilisations of the sized candidates (empty: none).
        refine_rounds: Rounds of +-1 coordinate search around the best plan.
        forecast: ``"trend_max"``, ``"trend"`` or ``"last"``.
        margin: The forecast is multiplied by ``1 + margin``.
        history_steps: L, past decisions the trend is fitted on.
        recent_steps: Window of the recent maximum (``"trend_max"``; 8 steps = 2 minutes, a full
            period of the configs' DDoS pulses).
        estimate_capacity: Correct each service's capacity from the last step (module docstring).
        capacity_floor: Lowest capacity factor the estimate may reach.
        capacity_smoothing: Share of the step from the old factor to a saturated service's estimate.
        saturation: A queue over this share of a step's served requests marks a saturated service.
        fluid: Fluid (expected) arrivals in the rollouts (then one sample); else Poisson.
        samples: Rollouts per plan with Poisson arrivals; the score is their mean.
        seed: Seed of the policy's own generator (re-seeded at every reset).
        name: Label in reports.

    Attributes (after decisions): ``decisions`` (count), ``decision_seconds`` (wall time of all
    decisions, seconds), ``rollout_service_steps`` (service-steps simulated).
    """

    def __init__(self, horizon: int = 8, shifts: tuple[int, ...] = (-2, -1, 1, 2),
                 sizing_utilisations: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9), refine_rounds: int = 1,
                 forecast: str = "trend_max", margin: float = 0.1, history_steps: int = 8, recent_steps: int = 8,
                 estimate_capacity: bool = True, capacity_floor: float = 0.1, capacity_smoothing: float = 1.0,
                 saturation: float = 0.05, fluid: bool = False, samples: int = 4, seed: int = 0, name: str = "mpc"):
        if horizon < 1 or history_steps < 1 or recent_steps < 1 or refine_rounds < 0:
            raise ValueError("need horizon, history_steps, recent_steps >= 1 and refine_rounds >= 0")
        if forecast not in FORECASTS:
            raise ValueError(f"unknown forecast {forecast!r}; choose {', '.join(FORECASTS)}")
        if any(not 0 < u <= 1 for u in sizing_utilisations):
            raise ValueError(f"sizing utilisations must lie in (0, 1], got {sizing_utilisations}")
        self.horizon, self.shifts = int(horizon), tuple(int(d) for d in shifts if d != 0)
        self.sizing = np.asarray(sizing_utilisations, dtype=np.float64)
        self.refine_rounds, self.forecast, self.margin = int(refine_rounds), forecast, float(margin)
        self.history_steps, self.recent_steps = int(history_steps), int(recent_steps)
        self.estimate_capacity, self.capacity_floor = bool(estimate_capacity), float(capacity_floor)
        self.capacity_smoothing, self.saturation = float(capacity_smoothing), float(saturation)
        if samples < 1 or not 0 < capacity_smoothing <= 1:
            raise ValueError("need samples >= 1 and 0 < capacity_smoothing <= 1")
        self.fluid, self.seed, self.name = bool(fluid), int(seed), name
        self._samples = 1 if self.fluid else int(samples)
        self._params_src = None  # the core's params the rollout params were built from

    # ------------------------------------------------------------------ episode
    def reset(self, core: MicroserviceCore) -> None:
        """Re-seed the generator, start the history at the current observation, zero the counters."""
        from envs.microservice.rewards import global_reward, global_terms  # the env package, on first use

        if not all(hasattr(core, name) for name in ("state", "params", "reward_consts", "reward_weights")):
            raise TypeError(f"{self.name} rolls the twin forward: it needs the env core (an "
                            f"envs.microservice.MicroserviceCore), got a {type(core).__name__}")
        self._terms, self._reward = global_terms, global_reward
        self.rng = np.random.default_rng(self.seed)
        if self._params_src is not core.params:
            cfg = dataclasses.replace(core.params.config, poisson_arrivals=not self.fluid)
            self.params = dynamics.make_params(core.topology, cfg)
            self._params_src = core.params
        topo = core.topology
        self._per_pod = topo.throughput_per_replica / np.maximum(topo.entry_visits, 1e-12)  # entry req/s per pod
        self._visited = topo.entry_visits > 0
        b, s = core.desired.shape
        rate = self._entry_rate(core)
        self.history = np.repeat(rate[:, None], self.history_steps, axis=1)
        self.capacity = np.ones((b, s))  # estimated per-pod capacity multiplier (1: as the topology says)
        self._prev: tuple | None = None  # (state, desired, node_up) of the last decision
        self.decisions, self.decision_seconds, self.rollout_service_steps = 0, 0.0, 0

    def _entry_rate(self, core: MicroserviceCore) -> np.ndarray:
        return core.raw_obs[:, core.topology.entry_index, _RATE].astype(np.float64)

    # ------------------------------------------------------------------ decision
    def desired_replicas(self, core: MicroserviceCore, now_s: float) -> np.ndarray:
        """(B, S) desired replicas: the first step of the best plan of each cluster."""
        start = time.perf_counter()
        state, low, high = core.state, core.low, core.high
        rate = self._entry_rate(core)
        self.history = np.concatenate([self.history[:, 1:], rate[:, None]], axis=1)
        fresh = self._restarted(state)
        if fresh.any():  # clusters reset since the last decision: start them afresh
            self.history[fresh] = rate[fresh, None]
            self.capacity[fresh] = 1.0
        if self.estimate_capacity and self._prev is not None:
            self._update_capacity(core, rate, ~fresh)
        load = forecast_entry_rate(self.history, self.horizon, self.forecast, self.recent_steps)  # (B, H)
        load *= 1.0 + self.margin
        node_up = self._node_up(state, core.topology.num_nodes)
        best, best_score = None, None
        plans = self._candidates(state.desired, load.max(axis=1), low, high)
        for round_ in range(1 + self.refine_rounds):
            if round_:
                plans = self._neighbours(best, low, high)
            scores = self._score(core, state, plans, load, node_up)  # (B, K)
            pick = scores.argmax(axis=1)
            rows = np.arange(plans.shape[0])
            if best is None:
                best, best_score = plans[rows, pick], scores[rows, pick]
            else:  # keep the previous best unless a neighbour beats it
                better = scores[rows, pick] > best_score
                best = np.where(better[:, None], plans[rows, pick], best)
                best_score = np.where(better, scores[rows, pick], best_score)
        self._prev = (state.copy(), best.copy(), node_up)
        self.decisions += 1
        self.decision_seconds += time.perf_counter() - start
        return best

    def _restarted(self, state: dynamics.ClusterState) -> np.ndarray:
        """(B,) bool: clusters not one step past the last decision (reset in between)."""
        if self._prev is None:
            return np.zeros(state.batch_size, dtype=bool)
        return state.step_index != self._prev[0].step_index + 1

    def _update_capacity(self, core: MicroserviceCore, rate: np.ndarray, valid: np.ndarray) -> None:
        """Correct :attr:`capacity` (the per-pod capacity factor of each service) from the last step.

        The last state and decision are replayed (``samples`` Poisson draws, at the entry rate
        observed since, with the current factors). The twin reports ``cpu_throttled_ratio =
        max(busy sub-steps / sub-steps, 1 - share x factor)``, ``share`` being the CPU share the
        pods' nodes give (computable from the state) and ``factor`` the bottleneck (not in the
        state); ``bound = (1 - throttled) / share`` is then a lower bound of the factor. Per service:

        1. it kept a queue (over ``saturation`` of the step's work): it served at capacity, and
           the factor is scaled by ``served / replayed served``;
        2. else a throttled ratio that is no multiple of ``1 / sub-steps`` is the second term:
           the factor is ``bound``, exactly;
        3. else a factor under ``bound`` is raised to it (no throttling: the full factor);
        4. else, if the replay was not busy (its throttling is its ``1 - share x factor``, within
           0.1) but the service was throttled more, it is slower than thought: the factor moves
           halfway to ``bound``. (A busy replay explains the throttling: no change.)
        """
        prev, desired, node_up = self._prev
        b, s = desired.shape
        n, r = node_up.shape[1], self._samples
        replay, replay_obs, _ = dynamics.step(
            self.params, repeat_state(prev, r), np.repeat(desired, r, axis=0), self.rng,
            entry_rate=np.repeat(rate, r), attack_rate=0.0, crash_rate=np.zeros((b * r, s)),
            kills=np.zeros((b * r, s), np.int64), noisy_cpu=np.zeros((b * r, n)),
            capacity_factor=np.repeat(self.capacity, r, axis=0), node_up=np.repeat(node_up, r, axis=0), inplace=True)
        self.rollout_service_steps += b * r * s
        now = core.state
        served = now.served_total - prev.served_total
        predicted = replay.served_total.reshape(b, r, s).mean(axis=1) - prev.served_total
        saturated = (now.backlog > self.saturation * np.maximum(served, 1.0)) & (predicted > 1e-9)
        by_served = np.clip(self.capacity * served / np.maximum(predicted, 1e-9), self.capacity_floor, 1.0)

        share = self._node_share(prev)
        throttled = core.raw_obs[:, :, _THROTTLED].astype(np.float64)
        replayed = replay_obs[:, :, _THROTTLED].astype(np.float64).reshape(b, r, s).mean(axis=1)
        bound = np.clip((1.0 - throttled) / share, self.capacity_floor, 1.0)
        sub = self.params.config.substeps
        exact = np.abs(throttled * sub - np.rint(throttled * sub)) > 1e-3
        replay_idle = replayed <= 1.0 - share * self.capacity + 0.1
        slower = replay_idle & (bound < self.capacity)
        capacity = np.where(saturated, self.capacity + self.capacity_smoothing * (by_served - self.capacity),
                   np.where(exact, bound,
                   np.where(bound > self.capacity, bound,
                   np.where(slower, 0.5 * (self.capacity + bound), self.capacity))))
        self.capacity = np.where(valid[:, None], capacity, self.capacity)

    def _node_share(self, state: dynamics.ClusterState) -> np.ndarray:
        """(B, S) mean CPU share of each service's Ready pods' nodes (the twin's contention with no
        noisy neighbour), from the nodes' CPU demand in ``state``; 1 without Ready pods."""
        node_cpu = self.params.node_cpu
        per_node = np.minimum(1.0, node_cpu[None, :] / np.maximum(state.node_demand, 1e-12))  # (B, N)
        ready = state.phase == dynamics.READY  # (B, S, K)
        nodes = np.maximum(state.node, 0).astype(np.int64)
        shares = np.take_along_axis(per_node[:, None, :], nodes.reshape(state.batch_size, 1, -1), axis=2)
        shares = shares.reshape(nodes.shape)
        count = ready.sum(axis=2)
        return np.where(count > 0, (shares * ready).sum(axis=2) / np.maximum(count, 1), 1.0)

    def _candidates(self, current: np.ndarray, peak: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """(B, K, S) plans of the first round (module docstring), clipped to the bounds."""
        b, s = current.shape
        eye = np.eye(s, dtype=np.int64)
        shifts = np.asarray(self.shifts, dtype=np.int64)
        uniform = current[:, None, :] + shifts[None, :, None]  # (B, |d|, S)
        single = current[:, None, None, :] + shifts[None, :, None, None] * eye[None, None]  # (B, |d|, S, S)
        parts = [current[:, None, :], uniform, single.reshape(b, -1, s)]
        if len(self.sizing):
            need = peak[:, None, None] / (self.sizing[None, :, None] * self._per_pod[None, None, :])  # (B, U, S)
            parts.append(np.where(self._visited, np.ceil(need - 1e-9), current[:, None, :]).astype(np.int64))
        return np.clip(np.concatenate(parts, axis=1), low, high)

    @staticmethod
    def _neighbours(best: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """(B, 2 S + 1) plans: ``best`` and each service +-1."""
        b, s = best.shape
        eye = np.eye(s, dtype=np.int64)
        moves = np.concatenate([np.zeros((1, s), np.int64), eye, -eye])  # (2S+1, S)
        return np.clip(best[:, None, :] + moves[None], low, high)

    def _node_up(self, state: dynamics.ClusterState, num_nodes: int) -> np.ndarray:
        """(B, N) bool: False where the state holds a lost pod (its node is down), else True."""
        lost = state.phase == dynamics.LOST  # (B, S, K)
        up = np.ones((state.batch_size, num_nodes), dtype=bool)
        if lost.any():
            c, _, _ = np.nonzero(lost)
            up[c, state.node[lost].astype(np.int64)] = False
        return up

    def _score(self, core: MicroserviceCore, state: dynamics.ClusterState, plans: np.ndarray, load: np.ndarray,
               node_up: np.ndarray) -> np.ndarray:
        """(B, K) env reward summed over the horizon, each plan held from the current state."""
        b, k, s = plans.shape
        r = self._samples
        m = b * k * r  # copy (b, j, i): sample i of plan j of cluster b
        copies = repeat_state(state, k * r)
        desired = np.repeat(plans.reshape(b * k, s), r, axis=0)
        rates = np.repeat(load, k * r, axis=0)  # (M, H)
        up = np.repeat(node_up, k * r, axis=0)
        n = up.shape[1]
        calm = dict(attack_rate=0.0, crash_rate=np.zeros((m, s)), kills=np.zeros((m, s), np.int64),
                    noisy_cpu=np.zeros((m, n)), capacity_factor=np.repeat(self.capacity, k * r, axis=0), node_up=up)
        total = np.zeros(m)
        for h in range(self.horizon):
            copies, _, info = dynamics.step(self.params, copies, desired, self.rng, entry_rate=rates[:, h],
                                            inplace=True, **calm)
            total += self._reward(self._terms(info, core.reward_consts), core.reward_weights)
        self.rollout_service_steps += m * s * self.horizon
        return total.reshape(b, k, r).mean(axis=2)

    def stats(self) -> dict[str, float]:
        """Compute so far: decisions, seconds per decision, rollout service-steps per second."""
        secs = max(self.decision_seconds, 1e-12)
        return {"decisions": self.decisions, "seconds_per_decision": self.decision_seconds / max(self.decisions, 1),
                "decisions_per_s": self.decisions / secs,
                "rollout_service_steps_per_s": self.rollout_service_steps / secs}
