"""A saved VM-rescheduling agent (an sb3-contrib ``MaskablePPO`` model) used as a planner.

The agent plays :class:`~envs.vm_rescheduling.VMReschedulingEnv` on the snapshot; the migrations it
makes become a plan with the same :class:`~agents.vm.plan.PlanResult` as the baselines, replayed
through the twin (:func:`~agents.vm.plan.finish_plan`).

**Which model.** ``PATH`` is a ``model.zip`` (what ``MaskablePPO.save`` writes), a ``best/`` or
``last/`` folder of a training run (``PATH/model.zip``), or the run folder itself
(``PATH/best/model.zip``, else ``PATH/last/model.zip``).

**Padding.** A size-agnostic policy (``policy.any_padding``, e.g.
:class:`agents.vm.policy.VMGraphPolicy`) gets an env padded to exactly the snapshot being planned
(all hosts and all VMs over its clusters), so a model trained on 40-host clusters plans the
1,176-host ``reset_vm_pm_id_clear_big2.json`` unchanged; it is decoded with
:class:`agents.vm.policy.IncrementalPolicy` (re-encodes only the hosts a step changed). A plain
``MultiInputPolicy`` model keeps the padding of its observation space; a snapshot that does not fit
raises ``ValueError`` naming both sizes.

**Risk-seeking decoding** (VMR2L's ``eval_thres_final.py``). With ``samples=K > 0`` the planner
first decodes deterministically (argmax, the plan ``samples=0`` returns), then samples up to ``K``
more trajectories, each from its own seeded generator (``numpy.random.default_rng([seed, k])``),
until ``K`` are done or ``time_limit_s`` runs out, and returns the candidate with the lowest
fragment rate (the twin's own figure after each trajectory; ties keep the earlier candidate, so
the deterministic plan wins a tie). At each step the sampler drops every action whose probability
is below the ``vm_quantile`` (0.995) quantile of the phase's action probabilities when picking a
VM (over the snapshot's VMs and stop), below the ``host_quantile`` (0.98) quantile when picking a
destination (over the ``2 * hosts`` NUMA-node actions of the VM's cluster), and samples the rest in
proportion to their probabilities. The most likely action always survives; ``0`` keeps every valid
action (plain sampling), ``1`` only the most likely ones.

**Best prefix** (``best_prefix=1``). The policy's own stop action is masked while any migration is
possible, so every trajectory runs to the budget, and each candidate plan is cut after its
lowest-FR migration (the twin's FR after every step; the earliest of equal ones). A policy that
stops too early then keeps going, and a migration that makes FR worse at the end is dropped.

**Time limit.** Checked before every env step: the deterministic decode stops early (its plan so
far is returned), no sample starts after the deadline, and a sample cut by it still competes with
the moves it made.

**Warm-up.** Loading plays one migration on a 3-host cluster, so that the compiled kernels' first
calls are paid at load and a plan's ``wall_s`` is the plan's own (the first plan was ~0.03 s slower).

**Registry syntax** (:func:`agents.vm.get_planner`, ``evaluate.py --policies``)::

    agent:PATH                                   deterministic
    agent:PATH?samples=16                        risk-seeking, 16 samples within the time limit
    agent:PATH?samples=16&vm_quantile=0.99&host_quantile=0.95
    agent:PATH?best_prefix=1                     run to the budget, keep the lowest-FR prefix

parsed by :meth:`AgentPlanner.from_spec`; the options are :class:`AgentPlanner`'s keyword
arguments ``samples``, ``vm_quantile`` and ``host_quantile``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.model_files import resolve_model_path
from agents.vm.plan import Move, PlanResult, finish_plan
from digital_twin.vm import Snapshot
from envs.vm_rescheduling import PHASE_PICK_DESTINATION, VMReschedulingEnv

MODEL_FILE = "model.zip"
SPEC_OPTIONS = {"samples": int, "vm_quantile": float, "host_quantile": float, "best_prefix": int}
"""The options ``agent:PATH?key=value&...`` accepts, with their types."""
_TYPE_WORDS = {int: "an integer", float: "a number"}


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"PATH?samples=16&vm_quantile=0.99"`` -> ``("PATH", {"samples": 16, "vm_quantile": 0.99})``.

    Raises:
        ValueError: an unknown option, a value of the wrong type, or an option without ``=``.
    """
    path, _, query = spec.partition("?")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or key not in SPEC_OPTIONS:
            raise ValueError(f"agent:{spec}: bad option {item!r}; options are "
                             f"{', '.join(f'{k}=<{t.__name__}>' for k, t in SPEC_OPTIONS.items())}")
        try:
            options[key] = SPEC_OPTIONS[key](value)
        except ValueError:
            raise ValueError(
                f"agent:{spec}: option {key} needs {_TYPE_WORDS[SPEC_OPTIONS[key]]}, got {value!r}") from None
    if not path:
        raise ValueError(f"agent:{spec}: no model path")
    return path, options


class AgentPlanner:
    """``plan(snapshot, budget, time_limit_s=None, seed=0)`` from a saved MaskablePPO model.

    See the module docstring for paths, padding, risk-seeking decoding and the time limit.

    Args:
        path: a ``model.zip``, a run folder, or its ``best/`` / ``last/`` folder.
        name: the name results are reported under (default ``agent:<model>``, with the options).
        samples: sampled trajectories after the deterministic one (0: deterministic only).
        vm_quantile: when picking a VM, actions below this quantile of the probabilities are dropped.
        host_quantile: the same when picking a destination.
        best_prefix: mask the stop action and keep each plan's lowest-FR prefix (module docstring).

    Raises:
        FileNotFoundError: no model at ``path`` (checked before torch is imported).
        ValueError: the file is not a MaskablePPO model, or an option is out of range.
    """

    def __init__(self, path: str | Path, name: str | None = None, samples: int = 0,
                 vm_quantile: float = 0.995, host_quantile: float = 0.98, best_prefix: int | bool = False):
        if samples < 0:
            raise ValueError(f"samples must be at least 0, got {samples}")
        for label, q in (("vm_quantile", vm_quantile), ("host_quantile", host_quantile)):
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {q}")
        self.path = resolve_model_path(path)  # before importing torch: a typo fails fast
        self.samples, self.vm_quantile, self.host_quantile = int(samples), float(vm_quantile), float(host_quantile)
        if best_prefix not in (0, 1, False, True):
            raise ValueError(f"best_prefix must be 0 or 1, got {best_prefix}")
        self.best_prefix = bool(best_prefix)
        from sb3_contrib import MaskablePPO

        try:
            self.model = MaskablePPO.load(self.path, device="cpu")
        except Exception as exc:  # noqa: BLE001 -- a zip that is not a model fails in many ways
            raise ValueError(f"{self.path}: not a saved MaskablePPO model ({exc.__class__.__name__}: {exc})") from None
        self.policy = self.model.policy
        self.policy.set_training_mode(False)
        self.any_padding = bool(getattr(self.policy, "any_padding", False))
        space = self.model.observation_space
        try:
            self.max_vms = int(space["vm_features"].shape[0])
            self.max_hosts = int(space["host_features"].shape[0])
        except (KeyError, TypeError, IndexError):
            raise ValueError(f"{self.path}: not a VMRescheduling-v0 model (observation space {space})") from None
        self.metadata = self._read_metadata()
        self.decoder = self._decoder()  # built once: its kernels load here, not inside a plan's time
        if name is None:
            label = self.path.stem if self.path.name != MODEL_FILE else \
                "/".join(self.path.resolve().parent.parts[-2:]) or "model"
            options = f"?samples={self.samples}" if self.samples else ""
            if self.samples and (vm_quantile, host_quantile) != (0.995, 0.98):
                options += f"&vm_quantile={vm_quantile:g}&host_quantile={host_quantile:g}"
            if self.best_prefix:
                options += ("&" if options else "?") + "best_prefix=1"
            name = f"agent:{label}{options}"
        self.name = name
        self._warm_up()

    @classmethod
    def from_spec(cls, spec: str) -> AgentPlanner:
        """The planner ``agent:<spec>`` names: ``PATH`` or ``PATH?samples=16&...`` (module docstring)."""
        path, options = parse_spec(spec)
        return cls(path, **options)

    def _read_metadata(self) -> dict[str, Any]:
        file = self.path.parent / "metadata.json"
        if self.path.name != MODEL_FILE or not file.is_file():
            return {}
        try:
            return json.loads(file.read_text())
        except (OSError, ValueError):
            return {}

    # ------------------------------------------------------------------ planning
    def __call__(self, snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0) -> PlanResult:
        start = time.perf_counter()
        deadline = None if time_limit_s is None else start + float(time_limit_s)
        num_hosts = sum(c.num_hosts for c in snapshot.clusters)
        num_vms = sum(c.num_vms for c in snapshot.clusters)
        stats: dict[str, Any] = {"agent": str(self.path), "policy": type(self.policy).__name__}
        if budget < 1 or num_vms == 0:
            return finish_plan(self.name, snapshot, budget, [], snapshot.fragment_rate(), start, stats=stats)
        if self.any_padding:
            max_hosts, max_vms = num_hosts, num_vms
        elif num_hosts > self.max_hosts or num_vms > self.max_vms:
            raise ValueError(
                f"{self.name}: snapshot {snapshot.source} has {num_hosts} hosts and {num_vms} VMs; the model "
                f"({type(self.policy).__name__}, fixed padding) takes at most {self.max_hosts} hosts and "
                f"{self.max_vms} VMs")
        else:
            max_hosts, max_vms = self.max_hosts, self.max_vms
        env = VMReschedulingEnv(max_hosts=max_hosts, max_vms=max_vms, budget=budget)
        decoder = self.decoder
        # Host action range of each VM's cluster, for the destination quantile.
        host_offset = np.cumsum([0] + [c.num_hosts for c in snapshot.clusters])
        vm_cluster = np.repeat(np.arange(len(snapshot.clusters)), [c.num_vms for c in snapshot.clusters])

        moves, fr, finished = self._rollout(env, snapshot, budget, decoder, None, deadline, host_offset, vm_cluster)
        best, frs = (moves, fr, -1), [fr]
        stats.update(padding=(max_hosts, max_vms), deterministic_fr=fr, deterministic_finished=finished)
        done = started = 0
        while started < self.samples and (deadline is None or time.perf_counter() < deadline):
            rng = np.random.default_rng([seed, started])
            started += 1
            moves, fr, finished = self._rollout(env, snapshot, budget, decoder, rng, deadline, host_offset, vm_cluster)
            done += finished
            frs.append(fr)
            if fr < best[1]:
                best = (moves, fr, started - 1)
        if self.samples:
            stats.update(samples=done, samples_started=started, best_sample=best[2], sample_frs=frs[1:])
        return finish_plan(self.name, snapshot, budget, best[0], claimed_fr=best[1], start_time=start, stats=stats)

    def _warm_up(self) -> None:
        """Play one migration on a 3-host cluster, so that the first real plan's time is a plan's: the
        compiled kernels' first calls (~0.02-0.03 s: loading from numba's cache, torch's first ops)
        belong to loading the model, as they would in a controller that keeps it loaded."""
        if not self.any_padding and (self.max_hosts < 3 or self.max_vms < 2):
            return  # too small a padding for the warm-up cluster
        saved = self.best_prefix, self.samples
        self.best_prefix, self.samples = True, min(self.samples, 1)  # the stop action masked: a migration is made
        try:
            self(_warm_up_snapshot(), budget=1)
        finally:
            self.best_prefix, self.samples = saved

    def _decoder(self) -> _Decoder:
        incremental = None
        if self.any_padding:
            try:
                from agents.vm.policy import IncrementalPolicy, VMGraphPolicy
            except ImportError:  # an older policy module: the plain path below still works
                pass
            else:
                if isinstance(self.policy, VMGraphPolicy):
                    incremental = IncrementalPolicy(self.policy)
        return _Decoder(self.policy, incremental)

    def _rollout(self, env: VMReschedulingEnv, snapshot: Snapshot, budget: int, decoder, rng, deadline,
                 host_offset: np.ndarray, vm_cluster: np.ndarray) -> tuple[list[Move], float, bool]:
        """One episode: argmax actions (``rng`` None) or risk-seeking samples; ``(moves, FR, finished)``."""
        obs, info = env.reset(options={"snapshot": snapshot, "budget": budget})
        decoder.reset()
        moves: list[Move] = []
        frs = [float(info["fragment_rate"])]  # FR after 0, 1, ... migrations
        terminated, finished = False, True
        while not terminated:
            if deadline is not None and time.perf_counter() > deadline:
                finished = False
                break
            mask = env.action_masks()
            if self.best_prefix and mask.sum() > 1:
                mask = mask.copy()
                mask[env.stop_action] = False
            logits = decoder.logits(obs, mask)
            if rng is None:
                action = int(np.argmax(logits))
            else:
                action = self._sample(logits, mask, env, rng, host_offset, vm_cluster)
            obs, _, terminated, _, info = env.step(action)
            if "migration" in info:
                moves.append(info["migration"])
                frs.append(float(info["fragment_rate"]))
        if self.best_prefix:
            keep = int(np.argmin(frs))  # the earliest of equal minima
            return moves[:keep], frs[keep], finished
        return moves, float(info["fragment_rate"]), finished

    def _sample(self, logits: np.ndarray, mask: np.ndarray, env: VMReschedulingEnv, rng: np.random.Generator,
                host_offset: np.ndarray, vm_cluster: np.ndarray) -> int:
        """One risk-seeking action: drop actions below the phase's probability quantile, sample the rest."""
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if env.phase == PHASE_PICK_DESTINATION:
            c = vm_cluster[env.selected]
            region, q = probs[2 * host_offset[c]: 2 * host_offset[c + 1]], self.host_quantile
        else:
            region, q = np.append(probs[: env.num_vms], probs[env.stop_action]), self.vm_quantile
        threshold = min(float(np.quantile(region, q)), float(probs.max()))  # the most likely always stays
        keep = np.flatnonzero(mask & (probs >= threshold))
        p = probs[keep]
        return int(keep[rng.choice(keep.size, p=p / p.sum())])


def _warm_up_snapshot() -> Snapshot:
    """Three 2 x 20-vCPU hosts on two racks, two 8-vCPU VMs on different hosts, anti-affinity sets of
    both granularities (their kernels too), FR > 0: somewhere to move."""
    from digital_twin.vm.cluster import ACTIVE_STATUS, Cluster, DeploymentSet, VMType

    cluster = Cluster(
        name="warm-up", vm_types=[VMType("warm-up-8", 8, 8192.0, 1)], host_ids=["h0", "h1", "h2"],
        host_status=[ACTIVE_STATUS] * 3, numa_cpu_total=[[20, 20]] * 3, numa_mem_total=[[65536.0, 65536.0]] * 3,
        host_rack=[0, 0, 1], vm_ids=["v0", "v1"], vm_type=[0, 0], vm_host=[0, 1], vm_placement=[0, 1],
        vm_span=[1, 1], vm_cpu=[[8, 0], [0, 8]], vm_mem=[[8192.0, 0.0], [0.0, 8192.0]], vm_allow_migration=[True, True],
        deployment_sets=[DeploymentSet("host", np.array([0, 1])), DeploymentSet("rack", np.array([1]))])
    return Snapshot.from_clusters([cluster])


class _Decoder:
    """The policy's logits for one observation (invalid actions ``-inf``), incrementally where it can.

    Args:
        policy: the model's policy.
        incremental: an :class:`agents.vm.policy.IncrementalPolicy` on it, or None (a full forward pass).
    """

    def __init__(self, policy, incremental=None):
        self.policy, self.incremental = policy, incremental

    def reset(self) -> None:
        """A new trajectory starts (forget cached embeddings)."""
        if self.incremental is not None:
            self.incremental.reset()

    def logits(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
        if self.incremental is not None:
            logits = self.incremental.logits(obs)
        else:
            import torch as th

            with th.no_grad():
                tensors, _ = self.policy.obs_to_tensor(obs)
                distribution = self.policy.get_distribution(tensors, action_masks=mask[None])
                logits = distribution.distribution.logits[0].cpu().numpy()
        return np.where(mask, logits.astype(np.float64), -np.inf)
