"""Microservice autoscaling environments over the microservice twin.

Modules, in reading order:

* :mod:`~envs.microservice.config`: the episode recipe (:class:`MicroserviceConfig`,
  :func:`load_config`, YAML checks).
* :mod:`~envs.microservice.rewards`: the global reward and the PettingZoo mission terms.
* :mod:`~envs.microservice.core`: :class:`MicroserviceCore`, B clusters of one config over the
  twin's batched dynamics (windows, variants, partial resets, observations, masks, rewards).
* :mod:`~envs.microservice.spaces`: the spaces and batched observation the envs share.
* :mod:`~envs.microservice.single`: ``clustergym/MicroserviceAutoscaling-v0``
  (:class:`MicroserviceAutoscalingEnv`, B = 1).
* :mod:`~envs.microservice.vector`: the native vector env and the SB3 ``VecEnv`` adapter.
* :mod:`~envs.microservice.multi_agent`: :class:`~envs.microservice.multi_agent.MultiAgentView`,
  the per-agent observations, masks, merge and rewards of B clusters (what MAPPO trains on).
* :mod:`~envs.microservice.parallel`: the PettingZoo env (:func:`parallel_env`), that view with B = 1.

The PettingZoo names are imported on first use, so a Gymnasium user does not import PettingZoo.
"""

from __future__ import annotations

import importlib
from typing import Any

from envs.microservice.config import MicroserviceConfig, builtin_configs, load_config
from envs.microservice.core import MicroserviceCore
from envs.microservice.single import MicroserviceAutoscalingEnv
from envs.microservice.spaces import MaskedMultiDiscrete, batched_observation
from envs.microservice.vector import MicroserviceAutoscalingVectorEnv, make_sb3_vec_env

#: Names served lazily -> their module (PettingZoo is imported only when one is asked for).
_LAZY = {
    "parallel_env": "envs.microservice.parallel",
    "MicroserviceAutoscalingParallelEnv": "envs.microservice.parallel",
}

__all__ = [
    "MaskedMultiDiscrete",
    "MicroserviceAutoscalingEnv",
    "MicroserviceAutoscalingParallelEnv",
    "MicroserviceAutoscalingVectorEnv",
    "MicroserviceConfig",
    "MicroserviceCore",
    "batched_observation",
    "builtin_configs",
    "load_config",
    "make_sb3_vec_env",
    "parallel_env",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
