"""Masked PPO (sb3-contrib ``MaskablePPO``) with exact resume, on ``clustergym/VMRescheduling-v0``
and (through a :class:`Task`, ``training/autoscaling_ppo.py``) any other env.

Read top to bottom: build the envs and the model, then learn in one ``MaskablePPO.learn`` call
whose callback, at every rollout boundary (after an update, before the next rollout):

1. evaluates when ``eval.every_timesteps`` have passed (VM: deterministic plans on fixed episodes
   of the validation split, best-improvement greedy on the same snapshots as a reference), keeping
   ``best/`` (the task says by which figure);
2. captures the whole training state in memory -- model and optimiser, the vectorised envs
   mid-episode, the last observations, every RNG, the counters -- and writes it to ``checkpoint/``
   every ``checkpoint.every_updates`` updates.

SIGINT / SIGTERM set a flag; the next env step ends ``learn``, the in-memory state of the last
boundary is written to ``checkpoint/`` (the partial rollout is dropped: the boundary is its restart
point) and the run exits cleanly. ``--resume`` rebuilds the model and envs from that checkpoint and
continues, repeating exactly what the uninterrupted run did from that boundary on (same parameters
and evaluation figures, checked by the tests).
"""

from __future__ import annotations

import csv
import io
import math
import pickle
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from digital_twin.resources import resolve_path
from training.runs import CheckpointError, library_versions, git_commit, read_checkpoint, save_model, space_signature, write_checkpoint

ENV_ID = "clustergym/VMRescheduling-v0"
EVAL_FIELDS = ("timesteps", "updates", "fr_start", "fr_final", "gain", "greedy_fr", "share_of_greedy_gain",
               "migrations", "plan_s")


# ---------------------------------------------------------------------- envs and model
def make_envs(config: dict[str, Any]):
    """The training ``DummyVecEnv`` (``n_envs`` copies on the train split, each in a ``Monitor``)."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from envs.vm_rescheduling import make_vm_env

    env_config = str(resolve_path(config["env_config"]))
    # Not a subprocess pool: the envs are pickled into checkpoints, and the twin is fast enough.
    return DummyVecEnv([lambda: Monitor(make_vm_env(env_config, "train", **config["env"]))
                        for _ in range(config["n_envs"])])


def selection_split(config: dict[str, Any]) -> str:
    """The split training evaluates on and picks ``best/`` by: ``"val"`` where the env config has a
    ``val_source``, else ``"eval"`` (then ``best/`` has seen the evaluation data: train.py says so)."""
    from envs.vm_sources import load_vm_config

    return "val" if "val_source" in load_vm_config(resolve_path(config["env_config"])) else "eval"


def make_eval_env(config: dict[str, Any]):
    """One env on the :func:`selection_split`, padded like the training envs."""
    from envs.vm_rescheduling import make_vm_env

    return make_vm_env(str(resolve_path(config["env_config"])), selection_split(config), **config["env"])


def policy_spec(config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(policy class or SB3 name, policy_kwargs)`` from the config's ``policy`` section."""
    kwargs = {k: v for k, v in config["policy"].items() if k != "name"}
    if config["policy"]["name"] == "graph":
        from agents.vm.policy import VMGraphPolicy

        return VMGraphPolicy, kwargs
    return "MultiInputPolicy", kwargs


def make_model(config: dict[str, Any], env, tensorboard_log: str | None, spec: Callable | None = None):
    """A fresh ``MaskablePPO`` for the config (seeded); ``spec`` is the task's policy spec (default VM)."""
    from sb3_contrib import MaskablePPO

    policy, policy_kwargs = (spec or policy_spec)(config)
    return MaskablePPO(policy, env, policy_kwargs=policy_kwargs, seed=config["seed"], device="cpu",
                       tensorboard_log=tensorboard_log, verbose=0, **config["ppo"])


def init_from_weights(model, path: str) -> None:
    """Copy the policy weights of a saved model (a run folder or ``model.zip``, e.g. a bc run, or an
    earlier run to train further) into ``model``.

    Only the policy's parameters are taken; the optimiser, counters and RNGs stay fresh.

    Raises:
        ConfigError: the saved policy's parameters do not fit this config's policy.
    """
    from agents.model_files import resolve_model_path
    from training.config import ConfigError

    model_zip = resolve_model_path(resolve_path(path))
    if model.observation_space.__class__.__name__ == "Dict" and "vm_features" in model.observation_space.spaces:
        from agents.vm.policy import load_vm_model

        source = load_vm_model(model_zip, env=model.get_env(), device="cpu")  # any padding
    else:
        from sb3_contrib import MaskablePPO

        source = MaskablePPO.load(model_zip, device="cpu")
    try:
        model.policy.load_state_dict(source.policy.state_dict())
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConfigError(f"init_from {path}: its policy does not fit this config's policy ({first})") from None


# ---------------------------------------------------------------------- evaluation
def plan_episode(model, env, seed: int) -> tuple[dict[str, float], Any]:
    """Play one deterministic episode; returns its figures and the snapshot it started from."""
    start = time.perf_counter()
    obs, info = env.reset(seed=seed)
    snapshot = env.unwrapped.snapshot.copy()
    fr_start, migrations, terminated = info["fragment_rate"], 0, False
    while not terminated:
        action, _ = model.predict(obs, action_masks=env.unwrapped.action_masks(), deterministic=True)
        obs, _, terminated, truncated, info = env.step(int(action))
        migrations += "migration" in info
        terminated = terminated or truncated
    return {"fr_start": fr_start, "fr_final": info["fragment_rate"], "migrations": migrations,
            "plan_s": time.perf_counter() - start}, snapshot


class HeldOutEvaluation:
    """Deterministic plans on ``eval.episodes`` fixed held-out episodes of the
    :func:`selection_split`; greedy is the reference.

    The RNG states are saved and restored around each evaluation, so evaluating never changes
    what training does next.
    """

    def __init__(self, config: dict[str, Any]):
        self.split = selection_split(config)
        self.env = make_eval_env(config)
        self.seeds = [config["eval"]["seed"] + i for i in range(config["eval"]["episodes"])]
        self.budget = self.env.unwrapped.max_budget
        self._greedy: dict[int, float] = {}

    def __call__(self, model) -> dict[str, float]:
        from agents.vm import get_planner

        rngs = capture_rngs()
        rows = []
        for seed in self.seeds:
            row, snapshot = plan_episode(model, self.env, seed)
            if seed not in self._greedy:
                self._greedy[seed] = get_planner("greedy")(snapshot, self.env.unwrapped.budget).fr_after
            row["greedy_fr"] = self._greedy[seed]
            rows.append(row)
        restore_rngs(rngs)
        out = {k: float(np.mean([r[k] for r in rows])) for k in ("fr_start", "fr_final", "migrations", "plan_s", "greedy_fr")}
        out["gain"] = out["fr_start"] - out["fr_final"]
        greedy_gain = out["fr_start"] - out["greedy_fr"]
        out["share_of_greedy_gain"] = out["gain"] / greedy_gain if greedy_gain > 0 else math.nan
        return out


def record_evaluation(run_dir: Path, model, figures: dict[str, float], updates: int, extra: dict[str, Any],
                      metadata: Callable[[], dict[str, Any]], task: "Task | None" = None) -> None:
    """Append an evaluation to ``eval.csv`` and TensorBoard; save ``best/`` when it is the best yet.

    Shared by every algorithm, so their run folders read the same. ``extra`` keeps ``last_eval`` and
    ``best_score`` (VM: ``best_fr`` too); ``task`` (default: VM rescheduling) names the fields and
    the figure ``best/`` is picked by.
    """
    task = task or VM_TASK
    extra["last_eval"] = dict(figures, timesteps=model.num_timesteps)
    eval_csv = run_dir / "eval.csv"
    new_file = not eval_csv.exists()
    with eval_csv.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=task.eval_fields, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        writer.writerow({"timesteps": model.num_timesteps, "updates": updates, **figures})
    for key in task.tensorboard_keys:
        model.logger.record(f"eval/{key}", figures[key])
    model.logger.dump(model.num_timesteps)
    score = figures[task.score] * (1.0 if task.higher_is_better else -1.0)
    best = extra.get("best_score")
    if best is None and extra.get("best_fr") is not None:  # a VM run's extra: best_fr is its lowest FR
        best = -extra["best_fr"]
    if best is None or score > best:
        extra["best_score"] = score
        if task.score == "fr_final":
            extra["best_fr"] = figures["fr_final"]
        save_model(run_dir / "best", model, metadata())


# ---------------------------------------------------------------------- exact state capture
def capture_rngs() -> dict[str, Any]:
    import torch

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rngs(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def capture_state(model, extra: dict[str, Any]) -> dict[str, bytes]:
    """The training state at a rollout boundary, as checkpoint files."""
    buffer = io.BytesIO()
    model.save(buffer)
    state = {
        "env": model.get_env(), "last_obs": model._last_obs, "last_episode_starts": model._last_episode_starts,
        "num_timesteps": model.num_timesteps, "n_updates": model._n_updates, "episode_num": model._episode_num,
        "ep_info_buffer": list(model.ep_info_buffer or []), "rngs": capture_rngs(), "extra": extra,
    }
    return {"model.zip": buffer.getvalue(), "state.pkl": pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)}


def restore_model(paths: dict[str, Path], config: dict[str, Any], tensorboard_log: str | None,
                  spec: Callable | None = None):
    """Rebuild the model, its envs and RNGs from checkpoint files; returns ``(model, extra)``."""
    from collections import deque

    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import VecEnv

    try:
        state = pickle.loads(paths["state.pkl"].read_bytes())
    except Exception as exc:  # noqa: BLE001 -- any unpickling failure means the same thing to the user
        raise CheckpointError(f"{paths['state.pkl']}: cannot be read ({exc.__class__.__name__})") from None
    (spec or policy_spec)(config)  # imports the policy's module, which unpickling the model needs
    model = MaskablePPO.load(paths["model.zip"], env=state["env"], device="cpu")
    # Loading seeds the env's next reset() (a wrapper passes the seed to the env it wraps); the run it
    # continues had no pending seed.
    env = state["env"]
    while isinstance(env, VecEnv):
        env._reset_seeds()
        env = getattr(env, "venv", None)
    model.tensorboard_log = tensorboard_log
    model._last_obs, model._last_episode_starts = state["last_obs"], state["last_episode_starts"]
    model.num_timesteps, model._n_updates, model._episode_num = state["num_timesteps"], state["n_updates"], state["episode_num"]
    model.ep_info_buffer = deque(state["ep_info_buffer"], maxlen=100)
    restore_rngs(state["rngs"])  # after load: loading reseeds every RNG from the model's seed
    return model, state["extra"]


# ---------------------------------------------------------------------- the training loop
def checkpoint_expectations(config: dict[str, Any], run_info: dict[str, Any], env, env_id: str = ENV_ID) -> dict[str, Any]:
    """What a checkpoint of this run must say about itself to be resumed."""
    return {"run_id": run_info["run_id"], "env_id": env_id,
            "observation_space": space_signature(env.observation_space),
            "action_space": space_signature(env.action_space)}


def model_metadata(config: dict[str, Any], model, extra: dict[str, Any]) -> dict[str, Any]:
    """What ``best/`` and ``last/`` need to be reloaded anywhere."""
    from envs.vm_sources import load_vm_config

    return {
        "env_id": ENV_ID, "algorithm": "MaskablePPO", "policy": config["policy"],
        "env_config": load_vm_config(str(resolve_path(config["env_config"]))), "env_overrides": config["env"],
        "observation_space": space_signature(model.observation_space), "action_space": space_signature(model.action_space),
        "training_config": config, "num_timesteps": model.num_timesteps, "last_eval": extra.get("last_eval"),
        "selection_split": selection_split(config),
        "versions": library_versions(), "git_commit": git_commit(),
    }


@dataclass(frozen=True)
class Task:
    """What :func:`train` needs to know of a problem besides the config.

    Attributes:
        env_id: the env's registered id (checked on resume).
        make_envs: config -> the training ``VecEnv``.
        policy_spec: config -> ``(policy class or SB3 name, policy_kwargs)``; also imports the
            policy's module before a checkpoint is unpickled.
        evaluation: config -> a callable ``model -> figures`` with a ``split`` attribute.
        metadata: ``(config, model, extra)`` -> what ``best/`` and ``last/`` need to be reloaded.
        eval_fields: ``eval.csv`` columns (``timesteps``, ``updates``, then figures).
        score: the figure ``best/`` is picked by; higher_is_better: its direction.
        tensorboard_keys: figures logged as ``eval/<key>``.
        postfix: figures -> the progress bar's text.
    """

    env_id: str
    make_envs: Callable[[dict[str, Any]], Any]
    policy_spec: Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]]
    evaluation: Callable[[dict[str, Any]], Any]
    metadata: Callable[[dict[str, Any], Any, dict[str, Any]], dict[str, Any]]
    eval_fields: tuple[str, ...]
    score: str
    higher_is_better: bool
    tensorboard_keys: tuple[str, ...]
    postfix: Callable[[dict[str, float]], str]


VM_TASK = Task(ENV_ID, make_envs, policy_spec, HeldOutEvaluation, model_metadata, EVAL_FIELDS, "fr_final", False,
               ("fr_final", "share_of_greedy_gain", "migrations"),
               lambda f: f"eval FR {f['fr_final']:.4f} (greedy {f['greedy_fr']:.4f})")


class _Stop:
    """Set by SIGINT / SIGTERM; checked after each env step."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum, frame) -> None:  # noqa: ARG002
        self.signal = signum


def train(config: dict[str, Any], run_dir: Path, run_info: dict[str, Any], resume: bool, progress: bool = True,
          task: Task | None = None) -> dict[str, Any]:
    """Train (or continue) the run in ``run_dir``; returns a summary. See the module docstring.

    ``task`` is the problem (default :data:`VM_TASK`)."""
    task = task or VM_TASK
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import configure
    from tqdm import tqdm

    torch.set_num_threads(config["torch_threads"])
    tb_dir = str(run_dir / "tb")
    if resume:
        probe = task.make_envs(dict(config, n_envs=1))
        paths, manifest = read_checkpoint(run_dir, checkpoint_expectations(config, run_info, probe, task.env_id))
        probe.close()
        model, extra = restore_model(paths, config, tb_dir, task.policy_spec)
    else:
        model = make_model(config, task.make_envs(config), tb_dir, task.policy_spec)
        if config.get("init_from"):
            init_from_weights(model, config["init_from"])
        extra = {"last_eval_timesteps": None, "best_fr": None, "best_score": None, "last_eval": None, "updates": 0}
    model.set_logger(configure(tb_dir, ["tensorboard"]))
    expect = checkpoint_expectations(config, run_info, model.get_env(), task.env_id)
    evaluation = task.evaluation(config)
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    total = config["total_timesteps"]
    bar = tqdm(total=total, initial=model.num_timesteps, desc="training", unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    restored_at = model.num_timesteps if resume else None
    boundary: dict[str, Any] = {}  # the last rollout boundary's state: files and manifest

    def evaluate_now() -> None:
        figures = evaluation(model)
        extra["last_eval_timesteps"] = model.num_timesteps
        record_evaluation(run_dir, model, figures, extra["updates"], extra, lambda: task.metadata(config, model, extra), task)
        bar.set_postfix_str(task.postfix(figures))

    def at_boundary() -> None:
        """After an update (or at the start), before the next rollout."""
        restored = model.num_timesteps == restored_at  # already evaluated and written before the stop
        if not restored:
            if model.num_timesteps > 0:
                extra["updates"] += 1
            since = model.num_timesteps - (extra["last_eval_timesteps"] or 0)
            if since >= config["eval"]["every_timesteps"]:
                evaluate_now()
        boundary["files"] = capture_state(model, extra)
        boundary["manifest"] = dict(expect, num_timesteps=model.num_timesteps, updates=extra["updates"])
        if not restored and extra["updates"] % config["checkpoint"]["every_updates"] == 0:
            write_checkpoint(run_dir, boundary["files"], boundary["manifest"])

    class Boundaries(BaseCallback):
        def _on_rollout_start(self) -> None:
            at_boundary()

        def _on_step(self) -> bool:
            bar.update(self.model.get_env().num_envs)
            return stop.signal is None

    try:
        remaining = total - model.num_timesteps
        if remaining > 0:
            model.learn(remaining, callback=Boundaries(), reset_num_timesteps=False, log_interval=1)
        interrupted = stop.signal is not None
        if interrupted:
            write_checkpoint(run_dir, boundary["files"], boundary["manifest"])
        else:
            if model.num_timesteps != extra["last_eval_timesteps"]:
                extra["updates"] += 1
                evaluate_now()
            final = capture_state(model, extra)
            write_checkpoint(run_dir, final, dict(expect, num_timesteps=model.num_timesteps, updates=extra["updates"]))
            save_model(run_dir / "last", model, task.metadata(config, model, extra))
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    # When interrupted, the run continues from the boundary checkpoint, not from where the step stopped.
    steps = boundary["manifest"]["num_timesteps"] if interrupted else model.num_timesteps
    return {"interrupted": interrupted, "signal": stop.signal, "num_timesteps": steps,
            "last_eval": extra["last_eval"], "best_fr": extra.get("best_fr"), "best_score": extra.get("best_score"),
            "split": evaluation.split}

