"""Gymnasium and PettingZoo environments over clustergym's digital twins.

Importing this package registers the environment ids::

    import gymnasium as gym
    import envs  # noqa: F401  (registers the ids)
    env = gym.make("clustergym/VMRescheduling-v0")

Modules: ``vm_rescheduling`` (+ ``vm_sources``) for VM rescheduling; the ``microservice``
package for autoscaling (config, core, single-agent, vector and PettingZoo envs; the
PettingZoo env is ``envs.microservice.parallel_env``).
"""

from gymnasium.envs.registration import register

register(
    id="clustergym/VMRescheduling-v0",
    entry_point="envs.vm_rescheduling:VMReschedulingEnv",
)

register(
    id="clustergym/MicroserviceAutoscaling-v0",
    entry_point="envs.microservice.single:MicroserviceAutoscalingEnv",
    vector_entry_point="envs.microservice.vector:MicroserviceAutoscalingVectorEnv",
)
