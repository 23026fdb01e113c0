"""Masked PPO on ``clustergym/MicroserviceAutoscaling-v0``: the MLP reference and the service-graph policy.

``algorithm: ppo`` of a ``problem: autoscaling`` config. The training loop, its checkpoints and exact
resume are :func:`training.maskable_ppo.train`'s; this module says what differs (a
:class:`~training.maskable_ppo.Task`):

* **Envs**: the native vector env through SB3's ``VecEnv`` adapter (``n_envs`` clusters in one
  batched twin step, no processes; :func:`envs.microservice.make_sb3_vec_env`) on the env config's
  ``train`` split, in a ``VecMonitor``. The masks at the replica bounds reach ``MaskablePPO``
  through ``env_method("action_masks")``.
* **Policy**: ``policy.name: mlp`` is SB3's ``MultiInputPolicy`` over the whole Dict observation
  (SB3's ``MlpPolicy`` refuses a Dict; the keys are flattened and concatenated), ``graph`` the
  :class:`~agents.autoscaling.graph.ServiceGraphPolicy` (its keys: ``hidden``, ``layers``, ``net_arch``).
* **Evaluation** every ``eval.every_timesteps``: the deterministic policy and the Kubernetes HPA
  (the reference, computed once) on ``eval.episodes`` fixed windows per scenario variant of the
  **train** split (model selection never sees the held-out days), through
  :func:`evaluation.autoscaling.evaluate_autoscaling`, the runner ``evaluate.py`` uses. ``best/`` is
  the model with the highest mean episode return (the env's reward, what PPO maximises). The
  held-out figures come from ``evaluate.py ... --policies agent:runs/<run>/best/model.zip``.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import numpy as np

from digital_twin.cli import read_yaml
from digital_twin.resources import resolve_path
from training.maskable_ppo import Task, capture_rngs, restore_rngs, train as train_maskable
from training.runs import git_commit, library_versions, space_signature

ENV_ID = "clustergym/MicroserviceAutoscaling-v0"
FIGURES = ("episode_return", "slo_violation_minutes", "pod_hours", "success", "p95_latency_s")
"""Means over the evaluation episodes, for the policy and (``hpa_`` prefix) the Kubernetes HPA."""
EVAL_FIELDS = ("timesteps", "updates", *FIGURES, *(f"hpa_{k}" for k in FIGURES))


def env_config(config: dict[str, Any]):
    """The env config of a training config, with its ``env`` overrides applied."""
    from envs.microservice import load_config

    return load_config(resolve_path(config["env_config"]), **config["env"])


def make_envs(config: dict[str, Any]):
    """``n_envs`` clusters on the train split, in a ``VecMonitor`` (episode returns for the logs)."""
    from envs.microservice import make_sb3_vec_env

    return _monitor_class()(make_sb3_vec_env(config["n_envs"], config=env_config(config), split="train"))


@functools.cache
def _monitor_class() -> type:
    """SB3's ``VecMonitor``, picklable (checkpoints pickle the training envs mid-episode): SB3's
    ``VecEnvWrapper`` keeps a dict of its class's members, which pickle refuses; it is rebuilt on load."""
    from stable_baselines3.common.vec_env import VecMonitor

    class PicklableVecMonitor(VecMonitor):
        def __getstate__(self) -> dict[str, Any]:
            return {k: v for k, v in self.__dict__.items() if k != "class_attributes"}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state)
            self.class_attributes = dict(inspect.getmembers(self.__class__))

    PicklableVecMonitor.__qualname__ = "PicklableVecMonitor"
    PicklableVecMonitor.__module__ = __name__
    globals()["PicklableVecMonitor"] = PicklableVecMonitor
    return PicklableVecMonitor


def __getattr__(name: str):
    if name == "PicklableVecMonitor":  # unpickling a checkpoint looks the class up here
        return _monitor_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def policy_spec(config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(policy class or SB3 name, policy_kwargs)`` from the config's ``policy`` section."""
    kwargs = {k: v for k, v in config["policy"].items() if k != "name"}
    if config["policy"]["name"] == "graph":
        from agents.autoscaling.graph import ServiceGraphPolicy

        return ServiceGraphPolicy, kwargs
    return "MultiInputPolicy", kwargs


class TrainSplitEvaluation:
    """The policy and the HPA on fixed train-split windows of every scenario variant (see the module docstring).

    The RNG states are saved and restored around each evaluation, so evaluating never changes
    what training does next.
    """

    split = "train"

    def __init__(self, config: dict[str, Any]):
        self.env_config = env_config(config)
        self.seeds = [config["eval"]["seed"]]
        self.episodes = config["eval"]["episodes"]
        self._hpa: dict[str, float] | None = None

    def _figures(self, policy) -> dict[str, float]:
        from evaluation.autoscaling import evaluate_autoscaling

        rows, _ = evaluate_autoscaling(self.env_config, [policy], self.seeds, episodes=self.episodes,
                                       split="train", progress=False)
        return {k: float(np.mean([r[k] for r in rows])) for k in FIGURES}

    def __call__(self, model) -> dict[str, float]:
        from agents.autoscaling import make_policy
        from agents.autoscaling.policies import ModelPolicy

        rngs = capture_rngs()
        if self._hpa is None:
            self._hpa = {f"hpa_{k}": v for k, v in self._figures(make_policy("k8s_hpa")).items()}
        policy = model if hasattr(model, "desired_replicas") else ModelPolicy(model)  # MAPPO passes its policy
        figures = dict(self._figures(policy), **self._hpa)
        restore_rngs(rngs)
        return figures


def model_metadata(config: dict[str, Any], model, extra: dict[str, Any]) -> dict[str, Any]:
    """What ``best/`` and ``last/`` need to be reloaded anywhere."""
    return {
        "env_id": ENV_ID, "algorithm": "MaskablePPO", "policy": config["policy"],
        "env_config": read_yaml(resolve_path(config["env_config"])), "env_config_path": config["env_config"],
        "env_overrides": config["env"],
        "observation_space": space_signature(model.observation_space), "action_space": space_signature(model.action_space),
        "training_config": config, "num_timesteps": model.num_timesteps, "last_eval": extra.get("last_eval"),
        "selection_split": "train", "versions": library_versions(), "git_commit": git_commit(),
    }


def _postfix(f: dict[str, float]) -> str:
    return (f"eval return {f['episode_return']:.2f} (HPA {f['hpa_episode_return']:.2f}), "
            f"SLO {f['slo_violation_minutes']:.1f} min (HPA {f['hpa_slo_violation_minutes']:.1f})")


TASK = Task(ENV_ID, make_envs, policy_spec, TrainSplitEvaluation, model_metadata, EVAL_FIELDS, "episode_return", True,
            ("episode_return", "slo_violation_minutes", "pod_hours"), _postfix)


def train(config: dict[str, Any], run_dir: Path, run_info: dict[str, Any], resume: bool, progress: bool = True) -> dict[str, Any]:
    """Train (or continue) the run in ``run_dir`` (see :func:`training.maskable_ppo.train`)."""
    return train_maskable(config, run_dir, run_info, resume, progress, task=TASK)
