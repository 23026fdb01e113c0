"""Deprecated import path of the PettingZoo env: use :mod:`envs.microservice.parallel`.

Kept only so ``from envs.microservice_autoscaling_v0 import parallel_env`` (the import users
already wrote) keeps working; it warns once on import.
"""

import warnings

from envs.microservice.parallel import parallel_env

warnings.warn(
    "envs.microservice_autoscaling_v0 is deprecated: use `from envs.microservice import parallel_env`",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["parallel_env"]
