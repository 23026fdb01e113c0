"""The "Priority Matters" scenario generator (Christensen, Giallorenzo, Mauro, 2025): the default pod source.

A scenario is a cluster of identical nodes and a list of pods, all Pending, in their creation order,
drawn as the paper's ``scripts/kwok_workload_once/test_runner.py`` draws them:

* nodes: one of ``num_nodes`` (4, 8, 16, 32);
* pods: ``num_nodes * pods_per_node`` (4 or 8 per node), in ReplicaSets whose sizes are drawn one
  after the other, uniformly in 1-4 but never more than the pods still to make (``_gen_rs_sizes``);
  the replicas of a set share its requests (CPU 100-1000 m, memory 100-1000 MiB, uniform integers;
  the paper's "100MB"-"1000MB": the scale does not matter, nodes are sized from the requests) and its
  priority, one of ``num_priorities`` (1, 2 or 4) levels ``0, 1, ...``, uniform per set;
* node size: the pods' total request divided by ``utilisation``, spread over the nodes (rounded up),
  and never below the largest pod's request, per resource; ``utilisation`` is one of 0.90, 0.95,
  1.00, 1.05 (the paper's job files), so that the cluster is nearly full (or over-full);
* creation order: ReplicaSet by ReplicaSet (as the paper's runner applies them), a set's replicas
  together; creation times 0, 1, ...

Every draw takes its randomness from the ``numpy.random.Generator`` it is given, so a seed fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digital_twin.pods.cluster import PodCluster

NODE_COUNTS = (4, 8, 16, 32)
PODS_PER_NODE = (4, 8)
PRIORITY_LEVELS = (1, 2, 4)
UTILISATION = (0.90, 0.95, 1.00, 1.05)
REQUEST_RANGE = (100, 1000)
REPLICAS = (1, 4)


@dataclass(frozen=True)
class ScenarioSpec:
    """What one scenario was drawn with (recorded beside every result)."""

    num_nodes: int
    pods_per_node: int
    num_priorities: int
    utilisation: float


@dataclass(frozen=True)
class ScenarioGenerator:
    """Draw paper scenarios; each field lists the values drawn from (uniformly).

    Args:
        node_counts: cluster sizes.
        pods_per_node: average pods per node.
        priority_levels: numbers of priority levels.
        utilisation: target utilisations (each > 0).
    """

    node_counts: tuple[int, ...] = NODE_COUNTS
    pods_per_node: tuple[int, ...] = PODS_PER_NODE
    priority_levels: tuple[int, ...] = PRIORITY_LEVELS
    utilisation: tuple[float, ...] = UTILISATION

    def __post_init__(self) -> None:
        for what, values in (("node_counts", self.node_counts), ("pods_per_node", self.pods_per_node),
                             ("priority_levels", self.priority_levels)):
            if not values or any(int(v) != v or v < 1 for v in values):
                raise ValueError(f"scenario generator: {what} must be a non-empty list of whole numbers >= 1, got {list(values)}")
        if not self.utilisation or any(not isinstance(u, (int, float)) or isinstance(u, bool) or not u > 0
                                       for u in self.utilisation):
            raise ValueError(f"scenario generator: utilisation must be a non-empty list of numbers > 0, got {list(self.utilisation)}")

    def __call__(self, rng: np.random.Generator, name: str = "scenario") -> tuple[PodCluster, ScenarioSpec]:
        spec = ScenarioSpec(num_nodes=int(rng.choice(self.node_counts)), pods_per_node=int(rng.choice(self.pods_per_node)),
                            num_priorities=int(rng.choice(self.priority_levels)),
                            utilisation=float(rng.choice(self.utilisation)))
        return generate(spec, rng, name=name), spec


def generate(spec: ScenarioSpec, rng: np.random.Generator, name: str = "scenario") -> PodCluster:
    """One scenario of ``spec`` (all pods Pending, in arrival order), drawn from ``rng``."""
    target = spec.num_nodes * spec.pods_per_node
    sizes, left = [], target
    while left > 0:  # each set 1-4 replicas, capped at what is left (the paper's _gen_rs_sizes)
        size = int(rng.integers(1 if left <= REPLICAS[1] else REPLICAS[0], min(REPLICAS[1], left) + 1))
        sizes.append(size)
        left -= size
    sets = len(sizes)
    cpu_set = rng.integers(REQUEST_RANGE[0], REQUEST_RANGE[1] + 1, size=sets)
    mem_set = rng.integers(REQUEST_RANGE[0], REQUEST_RANGE[1] + 1, size=sets)
    prio_set = rng.integers(0, spec.num_priorities, size=sets)
    owner = np.repeat(np.arange(sets), sizes)
    cpu, mem, prio = cpu_set[owner], mem_set[owner], prio_set[owner]
    node_cpu = max(int(cpu.max()), int(np.ceil(np.ceil(cpu.sum() / spec.utilisation) / spec.num_nodes)))
    node_mem = max(int(mem.max()), int(np.ceil(np.ceil(mem.sum() / spec.utilisation) / spec.num_nodes)))
    replica = np.concatenate([np.arange(n) for n in sizes])
    return PodCluster(
        [f"node-{j:02d}" for j in range(spec.num_nodes)], np.full(spec.num_nodes, node_cpu),
        np.full(spec.num_nodes, node_mem), [f"rs-{o:03d}-{r}" for o, r in zip(owner, replica)], cpu, mem, prio,
        pod_owner=owner, owner_names=[f"rs-{s:03d}" for s in range(sets)], pod_start=np.arange(target, dtype=float),
        name=name)
