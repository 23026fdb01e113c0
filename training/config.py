"""Training configs: the YAML schema of ``configs/train/*.yaml``, dotted overrides, one-line errors.

A training config names what to train (the problem and its env config), how (the algorithm, the
policy and their hyperparameters), for how long (the budget), with which seed, and how often to
evaluate on the held-out split and to checkpoint::

    description: PPO with the graph policy on small Azure V1 replays (smoke test, < 5 min).
    problem: vm_rescheduling
    env_config: configs/vm_rescheduling/azure_small.yaml
    algorithm: maskable_ppo
    policy: {name: graph, d_hidden: 32}
    ppo: {learning_rate: 2.5e-4, n_steps: 128, ...}
    n_envs: 2
    total_timesteps: 2048
    seed: 0
    eval: {every_timesteps: 1024, episodes: 2}
    checkpoint: {every_updates: 1}

Problem ``autoscaling`` (``env_config: configs/microservice_autoscaling/*.yaml``; ``env`` holds
top-level keys of that config, e.g. ``window_steps``) trains ``algorithm: ppo`` (masked PPO of
sb3-contrib over the native vector env, ``policy.name`` ``mlp`` or ``graph``:
``training/autoscaling_ppo.py``) or ``mappo`` / ``ippo`` (``training/mappo.py``, which also reads
the ``mappo`` section: layout, value normalisation, Huber delta, minibatches). ``n_envs`` is the
number of clusters stepped together; ``total_timesteps`` counts cluster steps.

``algorithm: bc`` (behaviour cloning of a planner's plans, ``training/imitation.py``) reads the
``bc`` section (teacher planner and its time limit, demonstrations, epochs, batch size, learning
rate, value-loss weight) and ``ppo.gamma`` / ``ppo.max_grad_norm``; ``init_from`` (a run folder
or ``model.zip``) starts ``maskable_ppo`` from a saved policy's weights.

Every key is checked: an unknown one is refused with the allowed keys and a did-you-mean, a value
of the wrong type or range with what is allowed; the ``env`` section and the env config it names
are checked by the problem's own schema (:func:`envs.vm_sources.load_vm_config`,
:func:`envs.microservice.load_config`), as ``evaluate.py`` and the envs check them. All of it happens before a run folder is created.
"""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path
from typing import Any

import yaml

from digital_twin.cli import ConfigError, UsageError, check_keys, read_yaml
from digital_twin.resources import bundled_path, resolve_path

__all__ = ["ConfigError", "DEFAULTS", "MODEL_KINDS", "check_model_path", "list_train_configs", "load_train_config",
           "parse_override", "train_configs_dir"]
# ConfigError is digital_twin.cli's: one class of config mistake for every entry point (a UsageError
# there, a ValueError for library callers); it is re-exported here for the training code.


# Defaults of every key; a key not listed here is refused.
DEFAULTS: dict[str, Any] = {
    "description": "",
    "problem": "vm_rescheduling",
    "env_config": None,
    "env": {},
    "algorithm": None,  # per problem: vm_rescheduling maskable_ppo, autoscaling ppo (DEFAULT_ALGORITHM)
    "policy": {"name": "graph"},
    "ppo": {
        "learning_rate": 2.5e-4,
        "n_steps": 256,
        "batch_size": 64,
        "n_epochs": 4,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "clip_range": 0.1,
        "ent_coef": 0.005,
        "vf_coef": 0.5,
        "max_grad_norm": 0.5,
        "target_kl": None,
    },
    "n_envs": 2,
    "total_timesteps": 10_000,
    "seed": 0,
    "torch_threads": 1,
    "eval": {"every_timesteps": 5_000, "episodes": 4, "seed": 0},
    "checkpoint": {"every_updates": 1},
    # algorithm: bc -- behaviour cloning of a planner's plans on training snapshots (training/imitation.py).
    "bc": {
        "teacher": "beam",
        "teacher_time_limit_s": 0.5,
        "demonstrations": 64,
        "epochs": 10,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "value_coef": 0.5,
    },
    # algorithm: maskable_ppo / ppo -- start from the policy weights of a run folder or model.zip (a bc run,
    # or an earlier run to train further).
    "init_from": None,
    # algorithm: mappo / ippo (problem autoscaling, training/mappo.py); the PPO keys above are shared.
    "mappo": {"layout": "roles", "value_norm": True, "huber_delta": 10.0, "n_minibatches": 1},
}

PROBLEMS = ("vm_rescheduling", "autoscaling")
ALGORITHMS = {"vm_rescheduling": ("maskable_ppo", "bc"), "autoscaling": ("ppo", "mappo", "ippo")}
DEFAULT_ALGORITHM = {"vm_rescheduling": "maskable_ppo", "autoscaling": "ppo"}
ENV_CONFIG_EXAMPLE = {"vm_rescheduling": "configs/vm_rescheduling/azure_small.yaml",
                      "autoscaling": "configs/microservice_autoscaling/chain4_huawei.yaml"}
LAYOUTS = ("roles", "per_service")
TEACHERS = ("greedy", "beam", "cpsat", "cpsat_lns", "ffd")
"""Planners ``bc.teacher`` may name (``agents.vm.VM_PLANNERS`` keys; not random)."""
POLICIES = {"vm_rescheduling": ("graph", "mlp"), "autoscaling": ("graph", "mlp")}
# Sections whose keys are not listed in DEFAULTS: ``policy`` is passed to the policy's constructor,
# ``env`` is checked against the env's own parameters (the VM env's check_env_options, or the
# autoscaling config schema for top-level env-config keys), once the problem is known.
FREE_FORM = ("policy", "env")
_POSITIVE_INTS = ("n_envs", "total_timesteps", "torch_threads", "ppo.n_steps", "ppo.batch_size", "ppo.n_epochs",
                  "eval.every_timesteps", "eval.episodes", "checkpoint.every_updates", "bc.demonstrations",
                  "bc.epochs", "bc.batch_size", "mappo.n_minibatches")
_NON_NEGATIVE_INTS = ("seed", "eval.seed")
_POSITIVE_FLOATS = ("ppo.learning_rate", "ppo.clip_range", "ppo.max_grad_norm", "bc.teacher_time_limit_s",
                    "bc.learning_rate")
_UNIT_FLOATS = ("ppo.gamma", "ppo.gae_lambda")
_NON_NEGATIVE_FLOATS = ("ppo.ent_coef", "ppo.vf_coef", "bc.value_coef")
_POSITIVE_FLOATS += ("mappo.huber_delta",)


def train_configs_dir() -> Path:
    """The bundled ``configs/train/`` folder."""
    return bundled_path("configs/train")


def list_train_configs() -> list[tuple[Path, str]]:
    """``(path, description)`` of each bundled training config, for ``train.py --help``."""
    out = []
    for path in sorted(train_configs_dir().glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text()) or {}
            out.append((path, " ".join(str(doc.get("description", "")).split())))
        except yaml.YAMLError:
            out.append((path, "(unreadable YAML)"))
    return out


def _check_keys(where: str, given: dict[str, Any], allowed: dict[str, Any], prefix: str = "") -> None:
    check_keys(where, given, allowed, prefix)
    for key, value in given.items():
        name = f"{prefix}{key}"
        if key in FREE_FORM and not prefix:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {name!r} must be a mapping, got {value!r}")
            continue  # checked by _check_env once the problem is known
        if isinstance(allowed[key], dict):
            _check_keys(where, value, allowed[key], prefix=f"{name}.")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in FREE_FORM:
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get_dotted(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"ppo.learning_rate=1e-4"`` -> ``(["ppo", "learning_rate"], 0.0001)`` (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. ppo.learning_rate=1e-4 or total_timesteps=4096")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    return parts, value


def _as_override_dict(parts: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


def _check_values(where: str, config: dict[str, Any]) -> None:
    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"{where}: {key} must be {what}, got {get_dotted(config, key)!r}")

    for key in _POSITIVE_INTS:
        v = get_dotted(config, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(key, "a positive integer")
    for key in _NON_NEGATIVE_INTS:
        v = get_dotted(config, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise bad(key, "an integer >= 0")
    for key in _POSITIVE_FLOATS:
        v = get_dotted(config, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise bad(key, "a number > 0")
    for key in _UNIT_FLOATS:
        v = get_dotted(config, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise bad(key, "a number in [0, 1]")
    for key in _NON_NEGATIVE_FLOATS:
        v = get_dotted(config, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise bad(key, "a number >= 0")
    kl = config["ppo"]["target_kl"]
    if kl is not None and (isinstance(kl, bool) or not isinstance(kl, (int, float)) or kl <= 0):
        raise bad("ppo.target_kl", "null or a number > 0")
    if not isinstance(config["mappo"]["value_norm"], bool):
        raise bad("mappo.value_norm", "true or false")
    if config["mappo"]["layout"] not in LAYOUTS:
        raise bad("mappo.layout", f"one of {', '.join(LAYOUTS)}")
    problem = config["problem"]
    if problem not in PROBLEMS:
        raise ConfigError(f"{where}: problem {problem!r} is not one of {', '.join(PROBLEMS)}")
    algorithms = ALGORITHMS[problem]
    if config["algorithm"] not in algorithms:
        raise ConfigError(f"{where}: algorithm {config['algorithm']!r} is not one of {', '.join(algorithms)} "
                          f"for problem {problem}")
    policies = POLICIES[problem]
    name = config["policy"].get("name")
    if name not in policies:
        raise ConfigError(f"{where}: policy.name {name!r} is not one of {', '.join(policies)}")
    if not config["env_config"] or not isinstance(config["env_config"], str):
        raise ConfigError(f"{where}: env_config must name the env's YAML config, e.g. {ENV_CONFIG_EXAMPLE[problem]}")
    env_path = resolve_path(config["env_config"])
    if not env_path.is_file():
        raise ConfigError(f"{where}: env_config {config['env_config']!r} does not exist")
    _check_env(where, problem, env_path, config["env"])
    if config["algorithm"] == "bc" and name != "graph":
        raise ConfigError(f"{where}: algorithm bc trains policy.name graph (the pointer heads it clones into), got {name!r}")
    if config["bc"]["teacher"] not in TEACHERS:
        raise ConfigError(f"{where}: bc.teacher {config['bc']['teacher']!r} is not one of {', '.join(TEACHERS)}")
    init_from = config["init_from"]
    if init_from is not None:
        if config["algorithm"] not in ("maskable_ppo", "ppo"):
            raise ConfigError(f"{where}: init_from is for algorithms maskable_ppo and ppo, not {config['algorithm']}")
        if not isinstance(init_from, str) or not init_from:
            raise ConfigError(f"{where}: init_from must be null or a run folder / model.zip path, got {init_from!r}")
        check_model_path(f"{where}: init_from {init_from}", resolve_path(init_from))
    batch = config["ppo"]["n_steps"] * config["n_envs"]
    if config["algorithm"] in ("maskable_ppo", "ppo") and config["ppo"]["batch_size"] > batch:
        raise ConfigError(f"{where}: ppo.batch_size {config['ppo']['batch_size']} is larger than a rollout "
                          f"(ppo.n_steps x n_envs = {batch})")


def _check_env(where: str, problem: str, env_path: Path, env: dict[str, Any]) -> None:
    """The env config's own schema, and the ``env`` section against the env's parameters: their
    mistakes are named in their file (or as ``env.<key>``)."""
    if problem == "vm_rescheduling":
        from envs.vm_rescheduling import check_env_options
        from envs.vm_sources import load_vm_config

        check_env_options(where, env, prefix="env.")
        load_vm_config(env_path)
        return
    from envs.microservice.config import load_config

    load_config(env_path)  # its own mistakes, named in its file
    try:
        load_config(env_path, **env)
    except ConfigError as exc:  # a mistake of the env section: named as the training config's
        raise ConfigError(f"{where}: env section: {exc}") from None


MODEL_KINDS = "a model.zip written by train.py, or a run folder with best/ or last/ (runs/<run>)"
"""What ``init_from`` (and ``evaluate.py --policies agent:PATH``) take."""


def check_model_path(where: str, path: Path, takes: str = MODEL_KINDS) -> Path:
    """The model.zip ``path`` names, checked to be a saved SB3 model without importing torch.

    Used for ``init_from`` here, before the run folder exists (a model that does not fit the
    config's policy is only found out once the policy is built, in ``training/maskable_ppo.py``),
    and by ``evaluate.py`` for ``agent:PATH``.

    Args:
        where: what to name in the message (``"<file>: init_from <path>"``, ``"--policies agent:x"``).
        path: the path given.
        takes: what the message says the path may be.

    Raises:
        ConfigError: nothing there, a folder without a model, or a file that is not a saved model.
    """
    from agents.model_files import resolve_model_path

    try:
        model = resolve_model_path(path)
    except FileNotFoundError:
        what = ("no model found: no model.zip in that folder (nor in best/ or last/)" if path.is_dir()
                else "not found (no such file or folder)")
        raise ConfigError(f"{where}: {what}; give {takes}") from None
    # What an SB3 model's save() writes: a zip holding the pickled "data" and the weights "policy.pth".
    if not zipfile.is_zipfile(model) or not {"data", "policy.pth"} <= set(zipfile.ZipFile(model).namelist()):
        raise ConfigError(f"{where}: {model} is not a saved model; give {takes}")
    return model


def _read_document(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a training config file, or a one-line ConfigError."""
    p = resolve_path(path)
    where = str(path)
    if not p.exists():
        bundled = ", ".join(str(q.relative_to(train_configs_dir().parents[1])) for q, _ in list_train_configs())
        raise ConfigError(f"{where}: no such config file (bundled training configs: {bundled})")
    try:
        doc = read_yaml(p)
    except UsageError as exc:
        raise ConfigError(str(exc).replace(str(p), where, 1)) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(sorted(DEFAULTS))}, got {type(doc).__name__}")
    if {"train_source", "eval_source"} & set(doc) and not set(doc) & {"env_config", "algorithm", "ppo"}:
        raise ConfigError(f"{where}: this is an env config (it has train_source / eval_source), not a training "
                          "config; a training config names it as env_config (see configs/train/*.yaml)")
    return doc


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Read, merge with the defaults, apply ``key=value`` overrides, and check a training config.

    Args:
        path: the YAML file (relative paths may also name a bundled ``configs/train/...`` file).
        overrides: dotted ``key=value`` strings, applied in order.

    Returns:
        The resolved config: every key present, values checked.

    Raises:
        ConfigError: a one-line message naming the file or override, what is wrong, what is allowed.
    """
    where = str(path)
    doc = _read_document(path)
    _check_keys(where, doc, DEFAULTS)
    config = _merge(DEFAULTS, doc)
    for text in overrides:
        parts, value = parse_override(text)
        _check_keys(f"override {text!r}", _as_override_dict(parts, value), DEFAULTS)
        config = _merge(config, _as_override_dict(parts, value))
    if config["algorithm"] is None and config["problem"] in DEFAULT_ALGORITHM:
        config["algorithm"] = DEFAULT_ALGORITHM[config["problem"]]
    _check_values(where if not overrides else f"{where} (with overrides)", config)
    return config
