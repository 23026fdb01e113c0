"""A saved VM-rescheduling agent (an SB3 ``MaskablePPO`` model) used as a planner.

The agent plays ``VMReschedulingEnv`` on the snapshot with its deterministic masked policy; the
migrations it makes become a plan with the same :class:`~agents.baselines.vm_planners.PlanResult`
as the baselines, replayed through the twin.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agents.baselines.vm_planners import PlanResult, finish_plan
from digital_twin.vm import Snapshot
from envs.vm_rescheduling import VMReschedulingEnv


class AgentPlanner:
    """``plan(snapshot, budget, time_limit_s=None, seed=0)`` from a saved MaskablePPO model.

    Args:
        path: the ``.zip`` written by ``MaskablePPO.save``. The env's padding sizes are read from
            the model's observation space, so any snapshot that fits them can be planned.
        name: the name results are reported under.
    """

    def __init__(self, path: str | Path, name: str | None = None):
        from sb3_contrib import MaskablePPO

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"agent model not found: {self.path}")
        self.model = MaskablePPO.load(self.path, device="cpu")
        self.name = name or f"agent:{self.path.stem}"
        space = self.model.observation_space
        self.max_vms = int(space["vm_features"].shape[0])
        self.max_hosts = int(space["host_features"].shape[0])

    def __call__(self, snapshot: Snapshot, budget: int, time_limit_s: float | None = None, seed: int = 0) -> PlanResult:
        start = time.perf_counter()
        env = VMReschedulingEnv(max_hosts=self.max_hosts, max_vms=self.max_vms, budget=budget)
        obs, info = env.reset(seed=seed, options={"snapshot": snapshot, "budget": budget})
        moves: list[tuple[int, int, int, int]] = []
        terminated = False
        while not terminated:
            if time_limit_s is not None and time.perf_counter() - start > time_limit_s:
                break
            action, _ = self.model.predict(obs, action_masks=env.action_masks(), deterministic=True)
            obs, _, terminated, _, info = env.step(int(action))
            if "migration" in info:
                moves.append(info["migration"])
        return finish_plan(self.name, snapshot, budget, moves, claimed_fr=info["fragment_rate"], start_time=start,
                           stats={"agent": str(self.path)})


def load_agent_planner(spec: str) -> Any:
    """``agent:PATH`` -> :class:`AgentPlanner`."""
    return AgentPlanner(spec.split(":", 1)[1])
