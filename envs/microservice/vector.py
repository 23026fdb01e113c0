"""Native vector envs for microservice autoscaling: B clusters in one batched twin step, no processes.

* :class:`MicroserviceAutoscalingVectorEnv`: a ``gymnasium.vector.VectorEnv`` over
  :class:`~envs.microservice.core.MicroserviceCore` (the core *is* B clusters; the
  single-agent env is the same core with B = 1). Registered as the ``vector_entry_point`` of
  ``clustergym/MicroserviceAutoscaling-v0``::

      envs = gym.make_vec("clustergym/MicroserviceAutoscaling-v0", num_envs=256,
                          vectorization_mode="vector_entry_point", config="online_boutique_worldcup")

* :class:`MicroserviceSB3VecEnv`: a ``stable_baselines3`` ``VecEnv`` over the same, so SB3 (and
  sb3-contrib ``MaskablePPO``, through ``env_method("action_masks")``) train on it directly.
  It is built on first access, so importing this module does not import SB3 or torch.

Spaces, rewards and ``info`` keys are those of
:class:`~envs.microservice.single.MicroserviceAutoscalingEnv`, batched: observations are a
dict of ``(B, ...)`` arrays, actions ``(B, S)`` delta indices, ``info`` a dict of ``(B,)`` arrays
(each with its ``_key`` mask, all True), plus ``clipped_moves``.

Autoreset: ``metadata["autoreset_mode"]`` is set explicitly. Default ``NEXT_STEP`` (as
``CartPoleVectorEnv``): a cluster whose window ended is reset on the *next* ``step``, whose
action it ignores, returning the new episode's first observation with reward 0 and
``terminated = truncated = False``. ``SAME_STEP`` (used by the SB3 adapter) resets it within
the step that ended it, returns the new first observation, and puts the last one in
``info["final_obs"]`` (object array) and its info in ``info["final_info"]``. Truncation comes
from per-cluster step counters (the window length), never from a wrapper.

All randomness (windows, variants, arrivals, crashes) comes from ``self.np_random``, one
generator for the batch: ``reset(seed=s)`` gives identical trajectories for identical actions.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.microservice.config import MicroserviceConfig, load_config
from envs.microservice.core import MicroserviceCore
from envs.microservice.spaces import MaskedMultiDiscrete, batched_observation, single_observation_space


class MicroserviceAutoscalingVectorEnv(VectorEnv):
    """B microservice clusters stepped together (see the module docstring).

    Args:
        num_envs: B.
        config: As for the single env (name, path, mapping or config).
        split: ``"train"`` / ``"held_out"`` (default: the config's).
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default) or ``SAME_STEP``.
        render_mode: None (no rendering).
        **overrides: Top-level config keys.

    Shapes: observations ``{"metrics": (B, S, M), "adjacency": (B, S, S), "edge_index":
    (B, 2, E), "progress": (B, 1), "action_mask": (B, S * D)}``; actions (B, S) int64;
    rewards (B,) float64; terminations, truncations (B,) bool.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        config: str | Path | dict | MicroserviceConfig | None = None,
        split: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        mode = AutoresetMode(autoreset_mode)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode must be NEXT_STEP or SAME_STEP, got {mode}")
        if render_mode is not None:
            raise ValueError(f"render_mode must be None, got {render_mode!r}")
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self.render_mode = render_mode
        self.config = load_config(config, **overrides)
        self.core = MicroserviceCore(self.config, num_clusters=num_envs, split=split)
        self.num_envs = num_envs
        s, d = self.core.num_services, self.core.num_deltas
        self.single_action_space = MaskedMultiDiscrete(np.full(s, d, dtype=np.int64))
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.single_observation_space = single_observation_space(self.core)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.prev_done = np.zeros(num_envs, dtype=bool)
        self._all = np.ones(num_envs, dtype=bool)
        self._all.flags.writeable = False

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None):
        """Start new episodes on all B clusters.

        Args:
            seed: One int seeds the batch's generator (a sequence of ints is hashed into one).
            options: As for the single env (``split``, ``window_index``, ``scenario``,
                ``initial_replicas``), applied to every cluster for this reset only; autoresets
                use the constructor's split and draws.
        """
        if isinstance(seed, Sequence):
            seed = int(np.random.SeedSequence([int(x) for x in seed if x is not None] or None).generate_state(1)[0])
        super().reset(seed=seed)
        info = self.core.reset(self.np_random, options=options)
        self.prev_done[:] = False
        return batched_observation(self.core), self._infos(info, np.zeros(self.num_envs, dtype=np.int64))

    def step(self, actions: np.ndarray):
        actions = np.asarray(actions)
        if actions.shape != self.action_space.shape or not np.issubdtype(actions.dtype, np.integer) \
                or actions.min() < 0 or actions.max() >= self.core.num_deltas:
            raise ValueError(f"actions must be {self.action_space.shape} integers in [0, {self.core.num_deltas}), "
                             f"got shape {actions.shape} dtype {actions.dtype}")
        if self.core.state is None:
            raise RuntimeError("call reset() before step()")
        core = self.core
        deltas = core.deltas[actions]
        clipped = core.clipped_moves(deltas)
        reward, truncated, info = core.step(deltas, self.np_random)
        terminated = np.zeros(self.num_envs, dtype=bool)

        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            reset = self.prev_done
            if reset.any():
                info = core.reset(self.np_random, mask=reset)
                reward = np.where(reset, 0.0, reward)
                truncated = truncated & ~reset
                clipped = np.where(reset, 0, clipped)
            self.prev_done = terminated | truncated
            return batched_observation(core), reward, terminated, truncated, self._infos(info, clipped)

        done = terminated | truncated
        if not done.any():
            return batched_observation(core), reward, terminated, truncated, self._infos(info, clipped)
        last_obs = batched_observation(core)
        final_obs = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(done):
            final_obs[i] = {key: value[i] for key, value in last_obs.items()}
        final_info = self._infos(info, clipped, mask=done)
        reset_info = core.reset(self.np_random, mask=done)
        infos = self._infos(reset_info, np.where(done, 0, clipped))
        infos.update({"final_obs": final_obs, "_final_obs": done.copy(), "final_info": final_info, "_final_info": done.copy()})
        return batched_observation(core), reward, terminated, truncated, infos

    def action_masks(self) -> np.ndarray:
        """(B, S * D) bool: deltas that need no clipping, per cluster (``MaskablePPO``'s layout)."""
        return self.core.action_mask().reshape(self.num_envs, -1)

    def _infos(self, info: dict[str, np.ndarray], clipped: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
        mask = self._all if mask is None else mask
        out: dict[str, Any] = {}
        for key, value in info.items():
            out[key] = value
            out["_" + key] = mask
        out["clipped_moves"] = np.asarray(clipped, dtype=np.int64)
        out["_clipped_moves"] = mask
        return out


# ---------------------------------------------------------------------------------------------
# Stable-Baselines3 VecEnv adapter (built on first access: SB3 imports torch)
# ---------------------------------------------------------------------------------------------

#: Methods of the vector env that return one row per cluster; ``env_method`` splits them per index.
BATCHED_METHODS = ("action_masks",)


class ClusterInfo(MutableMapping):
    """One cluster's ``info`` as SB3 wants it (a mapping per env), read from the batch's columns.

    SB3 asks for a list of B mappings every step but reads little of them (``get("episode")``,
    ``get("is_success")``; ``terminal_observation`` and ``TimeLimit.truncated`` at episode ends);
    building B dicts of every raw term per step took about half as long as the batched step
    itself at B = 256. A view holds the step's ``(B,)`` columns and its index and turns a value
    into a Python scalar only when it is read.
    Writes (SB3 wrappers set ``terminal_observation``) first copy the view into a plain dict, so
    the shared columns are never changed; ``copy()`` returns a plain dict.

    The columns must not change after the step: the core returns fresh arrays each step.

    Args:
        columns: Key -> (B,) array (the vector env's info without its ``_key`` masks).
        index: The cluster.
    """

    __slots__ = ("_columns", "_index", "_data")

    def __init__(self, columns: dict[str, np.ndarray], index: int):
        self._columns = columns
        self._index = index
        self._data: dict[str, Any] | None = None

    def __getitem__(self, key: str) -> Any:
        if self._data is not None:
            return self._data[key]
        return self._columns[key][self._index].item()

    def get(self, key: str, default: Any = None) -> Any:
        if self._data is not None:
            return self._data.get(key, default)
        column = self._columns.get(key)
        return default if column is None else column[self._index].item()

    def __contains__(self, key: object) -> bool:
        return key in (self._columns if self._data is None else self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns if self._data is None else self._data)

    def __len__(self) -> int:
        return len(self._columns if self._data is None else self._data)

    def __setitem__(self, key: str, value: Any) -> None:
        self._materialise()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._materialise()[key]

    def copy(self) -> dict[str, Any]:
        """A plain dict of every key (as SB3's ``VecMonitor`` copies an info before adding ``episode``)."""
        return dict(self._materialise())

    def _materialise(self) -> dict[str, Any]:
        if self._data is None:
            i = self._index
            self._data = {key: column[i].item() for key, column in self._columns.items()}
        return self._data

    def __repr__(self) -> str:
        return repr(dict(self.items()))


def split_infos(info: dict[str, Any], num_envs: int) -> list[ClusterInfo]:
    """The vector env's batched ``info`` as B per-cluster views (SB3's ``infos`` list).

    Args:
        info: Key -> (B,) array, with the ``_key`` masks and ``final_obs`` / ``final_info``
            of :class:`MicroserviceAutoscalingVectorEnv` (dropped here).
        num_envs: B.
    """
    columns = {k: v for k, v in info.items() if k[0] != "_" and k not in ("final_obs", "final_info")}
    return list(map(ClusterInfo, itertools.repeat(columns, num_envs), range(num_envs)))


@functools.cache
def _build_sb3_class() -> type:
    from stable_baselines3.common.vec_env import VecEnv

    class MicroserviceSB3VecEnv(VecEnv):
        """SB3 ``VecEnv`` over :class:`MicroserviceAutoscalingVectorEnv` (``SAME_STEP`` autoreset).

        ``step_wait`` returns SB3's ``(obs, rewards, dones, infos)``: ``infos`` is a list of
        per-cluster mappings (:class:`ClusterInfo`, read on access) with the env's raw terms,
        plus ``terminal_observation`` and ``TimeLimit.truncated`` when a window ends. ``seed(s)`` then ``reset()`` seeds the batch's
        single generator with ``s`` (SB3 hands env ``i`` seed ``s + i``; only env 0's is used).
        All clusters share one config, so ``get_attr`` returns the vector env's attribute for
        each index and ``set_attr`` sets it once; ``env_method`` splits the rows of
        :data:`BATCHED_METHODS` (``action_masks``) and repeats other methods' results.

        Args:
            num_envs: B.
            config, split, **overrides: As for :class:`MicroserviceAutoscalingVectorEnv`.
        """

        def __init__(self, num_envs: int = 1, config=None, split: str | None = None, **overrides: Any):
            self.venv = MicroserviceAutoscalingVectorEnv(num_envs, config, split,
                                                         autoreset_mode=AutoresetMode.SAME_STEP, **overrides)
            self.render_mode = None
            super().__init__(num_envs, self.venv.single_observation_space, self.venv.single_action_space)
            self._actions: np.ndarray | None = None

        def reset(self):
            options = self._options[0] or None
            obs, info = self.venv.reset(seed=self._seeds[0], options=options)
            self._reset_seeds()
            self._reset_options()
            self.reset_infos = split_infos(info, self.num_envs)
            return obs

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = np.asarray(actions).reshape(self.num_envs, -1).astype(np.int64)

        def step_wait(self):
            obs, reward, terminated, truncated, info = self.venv.step(self._actions)
            dones = terminated | truncated
            if not dones.any():
                return obs, reward.astype(np.float32), dones, split_infos(info, self.num_envs)
            # The clusters that ended report their last step (``final_info``); the others' values
            # are the same in both.
            infos = split_infos(info["final_info"], self.num_envs)
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = info["final_obs"][i]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            return obs, reward.astype(np.float32), dones, infos

        def close(self) -> None:
            self.venv.close()

        def get_attr(self, attr_name: str, indices=None) -> list[Any]:
            value = getattr(self, attr_name) if attr_name == "render_mode" else getattr(self.venv, attr_name)
            return [value for _ in self._get_indices(indices)]

        def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
            setattr(self.venv, attr_name, value)

        def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
            result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
            idx = list(self._get_indices(indices))
            if method_name in BATCHED_METHODS:
                return [result[i] for i in idx]
            return [result for _ in idx]

        def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
            return [False for _ in self._get_indices(indices)]

        def get_images(self):
            return [None for _ in range(self.num_envs)]

    MicroserviceSB3VecEnv.__module__ = __name__
    MicroserviceSB3VecEnv.__qualname__ = "MicroserviceSB3VecEnv"
    globals()["MicroserviceSB3VecEnv"] = MicroserviceSB3VecEnv
    return MicroserviceSB3VecEnv


def __getattr__(name: str):
    if name == "MicroserviceSB3VecEnv":
        return _build_sb3_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_sb3_vec_env(num_envs: int = 1, config=None, split: str | None = None, **overrides: Any):
    """An SB3 ``VecEnv`` of ``num_envs`` clusters (imports SB3, hence torch)."""
    return _build_sb3_class()(num_envs, config, split, **overrides)
