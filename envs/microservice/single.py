"""``clustergym/MicroserviceAutoscaling-v0``: keep microservice SLOs through real load at least pod cost.

The single-agent Gymnasium env: :class:`~envs.microservice.core.MicroserviceCore` with B = 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import EzPickle

from envs.microservice.config import SPLITS, MicroserviceConfig, load_config
from envs.microservice.core import MicroserviceCore
from envs.microservice.spaces import MaskedMultiDiscrete, single_observation_space


class MicroserviceAutoscalingEnv(gym.Env[dict[str, np.ndarray], np.ndarray], EzPickle):
    """Scale every service of a microservice application to keep its SLO at the least pod cost.

    ## Description
    A Kubernetes application (Online Boutique, 11 services, or the 4-service ``chain4``
    diamond; any topology YAML) runs on the digital twin (:mod:`digital_twin.microservices`):
    real request traces (worldcup98, Huawei serverless, Azure LLM) drive its entry service,
    calls fan out over the call graph, pods start, crash, get OOM-killed or lose their node,
    queues fill and latency grows. Every 15 s (the HPA sync period) the agent changes the
    replica count of each service. An episode is one window of the trace (``window_steps``
    steps) from the config's split (``train`` or ``held_out``, the twin's fixed splits), under
    one scenario variant drawn by weight (DDoS, pod crashes, contention, bottleneck, node loss,
    or none). Everything comes from a config (``configs/microservice_autoscaling/*.yaml``).

    ## Action Space
    ``MultiDiscrete([D] * S)`` (:class:`MaskedMultiDiscrete`): for each service, an index into
    ``action_deltas`` (default ``(-2, -1, 0, +1, +2)``, so index 2 keeps the count). The new
    desired count ``desired + delta`` is clipped to ``[min_replicas, max_replicas]``;
    ``obs["action_mask"]`` (int8) and :meth:`action_masks` (bool, ``MaskablePPO``) mark the
    deltas that need no clipping, flattened service-major (``s * D + d``), as sb3-contrib
    concatenates MultiDiscrete masks. Actions outside the space raise ``ValueError``.

    ## Observation Space
    A ``Dict`` of fixed-shape arrays (S services, M = 14 metrics, D deltas, E call edges):

    | key | shape | dtype | meaning |
    |---|---|---|---|
    | ``metrics`` | (S, M) | float32 | the declared Prometheus metric set (``digital_twin.microservices.metrics.METRIC_NAMES`` order), normalised as below |
    | ``adjacency`` | (S, S) | float32 | mean calls from row service to column service per request (static) |
    | ``edge_index`` | (2, E) | int64 | caller / callee of each call edge (static; for graph networks) |
    | ``progress`` | (1,) | float32 | share of the window played, in [0, 1] |
    | ``action_mask`` | (S * D,) | int8 | 1 where a delta needs no clipping |

    Normalisation of ``metrics`` (``cap`` = the service's max replicas, ``slots`` = cap + the
    twin's 4 spare pod slots; bounds are hard, from the twin's dynamics, and tested):

    | metric | divided by | range |
    |---|---|---|
    | replicas_desired / _ready / _pending / _crashloop | cap | [0, slots / cap] |
    | cpu_usage_cores | cap x cpu_limit | [0, slots / cap] |
    | cpu_requests_cores | cap x cpu_request | [0, slots / cap] |
    | cpu_throttled_ratio, error_rate | 1 | [0, 1] |
    | memory_working_set_bytes | cap x memory_limit | [0, slots x max(limit, base) / (cap x limit)] |
    | request_rate | capacity at cap (cap x cpu_limit / cpu_seconds_per_request) | [0, rate_clip] (clipped: beyond capacity at cap every count is saturated) |
    | latency_p50 / p95 / p99_seconds | the SLO's p95 (1.0 = at the SLO) | [0, timeout / SLO] |
    | pending_requests | cap x queue_limit_per_pod | [0, slots / cap] |

    ## Rewards
    ``r = -(w_slo * slo + w_drop * drop + w_cost * cost)`` per step (weights from the config's
    ``reward``, default 1, 1, 0.5): ``slo`` is 1 when the end-to-end p95 exceeds the SLO or the
    end-to-end error rate exceeds the SLO's; ``drop`` is the end-to-end error rate (share of
    entry requests that failed); ``cost`` is pod-seconds bound this step over
    ``sum_s max_replicas_s x 15 s`` (see :mod:`envs.microservice.rewards`). Worked example on
    Online Boutique (101 pods at most): 30 pods bound for the step, end-to-end p95 0.62 s
    against a 0.5 s SLO, 0.4 % of requests failed: ``slo = 1``, ``drop = 0.004``,
    ``cost = 30 x 15 / (101 x 15) = 0.297``, so ``r = -(1 + 0.004 + 0.5 x 0.297) = -1.153``.
    The same 30 pods within the SLO and no failure give ``-0.149``. ``info`` carries the raw
    terms: ``slo_violated``, ``slo_violation_seconds``, ``e2e_latency_p95``, ``e2e_error_rate``,
    ``failed_requests``, ``dropped_requests``, ``entry_requests``, ``pod_seconds``,
    ``cpu_request_core_seconds``, ``offered_rate``, ``attack_rate``, ``crashes``,
    ``oom_kills``, the reward parts ``reward_slo`` / ``reward_drop`` / ``reward_cost`` (their sum
    is the reward), and ``split``, ``scenario``, ``window_start``, ``clipped_moves``.

    ## Starting State
    A window drawn uniformly from the split's windows (starts every ``window_stride_steps``),
    a scenario variant drawn by weight, ``initial_replicas`` Ready pods per service, after one
    warm-up step at the window's first load.

    ## Episode End
    *Termination*: never (a cluster has no terminal state).
    *Truncation*: when the trace window ends, after ``window_steps`` steps. The env signals it
    itself because the window length is a config value; the registration therefore has no
    ``max_episode_steps``. Stepping after that raises ``RuntimeError``.

    ## Arguments
    * ``config``: built-in name (``online_boutique_worldcup`` default, ``chain4_huawei``,
      ``online_boutique_failures``), YAML path, mapping or :class:`MicroserviceConfig`.
    * ``split``: ``"train"`` or ``"held_out"`` (default: the config's); the reset option
      ``split`` overrides it for one episode.
    * ``render_mode``: ``"ansi"`` or None.
    * ``**overrides``: top-level config keys (e.g. ``window_steps=40``, ``reward={"cost": 1.0}``).

    Reset options: ``split``, ``window_index`` (a fixed window, for evaluation sweeps),
    ``scenario`` (a variant name), ``initial_replicas``.

    ## Version History
    * v0: first version.

    Example:
        >>> import gymnasium as gym
        >>> import envs  # noqa: F401  (registers the ids)
        >>> env = gym.make("clustergym/MicroserviceAutoscaling-v0", config="chain4_huawei")
        >>> obs, info = env.reset(seed=0)
        >>> obs["metrics"].shape, env.action_space
        ((4, 14), MultiDiscrete([5 5 5 5]))
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        config: str | Path | dict | MicroserviceConfig | None = None,
        split: str | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        EzPickle.__init__(self, config, split, render_mode, **overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.config = load_config(config, **overrides)
        self.core = MicroserviceCore(self.config, num_clusters=1, split=split)
        self.render_mode = render_mode
        s, d = self.core.num_services, self.core.num_deltas
        self.action_space = MaskedMultiDiscrete(np.full(s, d, dtype=np.int64))
        self.observation_space = single_observation_space(self.core)
        self._done = True
        self._last_info: dict[str, Any] = {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode: a fresh trace window, scenario variant and initial replicas.

        Args:
            seed: Seeds ``self.np_random``, the only randomness (window, variant, arrivals, crashes).
            options: ``split``, ``window_index``, ``scenario``, ``initial_replicas``.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        info = self.core.reset(self.np_random, options=options)
        self._done = False
        self._split = SPLITS[options.get("split", self.core.split)]
        return self._observation(), self._info(info, clipped=0)

    def step(self, action: np.ndarray):
        if self._done:
            raise RuntimeError("call reset() before step() (the episode's trace window has ended)")
        action = np.asarray(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} outside {self.action_space}")
        delta = self.core.deltas[action.astype(np.int64)][None, :]
        clipped = int(self.core.clipped_moves(delta)[0])
        reward, truncated, info = self.core.step(delta, self.np_random)
        self._done = bool(truncated[0])
        return self._observation(), float(reward[0]), False, self._done, self._info(info, clipped)

    def action_masks(self) -> np.ndarray:
        """(S * D,) bool: the deltas that need no clipping (for ``sb3_contrib.MaskablePPO``)."""
        return self.core.action_mask().reshape(-1)

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.core.state is None:
            return None
        i = self._last_info
        reps = " ".join(f"{n}={r}" for n, r in zip(self.core.service_names, self.core.desired[0].tolist()))
        return (f"step {i['step']}/{self.core.window_steps} [{i['scenario']}] p95 {i['e2e_latency_p95']:.3f} s "
                f"errors {i['e2e_error_rate']:.2%} {'SLO VIOLATED' if i['slo_violated'] else 'SLO ok'} | {reps}")

    def _observation(self) -> dict[str, np.ndarray]:
        core = self.core
        return {
            "metrics": core.metrics[0].copy(),
            "adjacency": core.calls.copy(),
            "edge_index": core.edge_index.copy(),
            "progress": core.progress[:1].copy(),
            "action_mask": core.action_mask()[0].reshape(-1).astype(np.int8),
        }

    def _info(self, info: dict[str, np.ndarray], clipped: int) -> dict[str, Any]:
        out: dict[str, Any] = {key: value[0].item() for key, value in info.items()}
        out["scenario"] = self.core.variant_names[out["scenario"]]
        out["window_start"] = str(self.core.step_minutes[out["window_start_step"]])
        out["split"] = "held_out" if self._split == "heldout" else "train"
        out["clipped_moves"] = clipped
        self._last_info = out
        return out
