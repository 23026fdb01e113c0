"""Gymnasium and PettingZoo environments over clustergym's digital twins.

Importing this package registers the environment ids::

    import gymnasium as gym
    import envs  # noqa: F401  (registers the ids)
    env = gym.make("clustergym/VMRescheduling-v0")           # the bundled real snapshot
    env = gym.make("clustergym/VMRescheduling-v0", config="configs/vm_rescheduling/azure_small.yaml", split="eval")
    env = gym.make("clustergym/MicroserviceAutoscaling-v0", config="chain4_huawei", split="held_out")

Both ids take their configuration the same way: ``config=`` (a YAML path, a mapping, or for
autoscaling a built-in name), ``split=``, and any config key as a keyword override; every key is
checked by the kind's one schema (``envs.vm_sources.load_vm_config`` /
``envs.microservice.config.config_from_dict``), so a typo is named with the allowed keys.

Modules: ``vm_rescheduling`` (+ ``vm_sources``) for VM rescheduling; the ``microservice``
package for autoscaling (config, core, single-agent, vector and PettingZoo envs; the
PettingZoo env is ``envs.microservice.parallel_env``).
"""

from gymnasium.envs.registration import register

register(
    id="clustergym/VMRescheduling-v0",
    # The factory, not the class: it reads config= and split= (the class takes a source).
    entry_point="envs.vm_rescheduling:make_vm_env",
)

register(id="clustergym/PodPacking-v0", entry_point="envs.pod_packing:PodPackingEnv")

register(
    id="clustergym/MicroserviceAutoscaling-v0",
    entry_point="envs.microservice.single:MicroserviceAutoscalingEnv",
    vector_entry_point="envs.microservice.vector:MicroserviceAutoscalingVectorEnv",
)
