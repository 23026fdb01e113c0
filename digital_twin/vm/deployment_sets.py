"""Anti-affinity deployment sets over replayed or generated clusters, sized like production snapshots.

The bundled real snapshots hold few deployment sets; a production snapshot the project checked
against (issue #12) holds 165 per cluster (150 of host granularity, 15 of rack granularity) over
two clusters of 254 and 1,010 hosts with 591 and 2,409 VMs, and ``maximum_migration: 10``. Its
exact model had one boolean per set member per host, 2,086,048 of them, which puts about 81 % of
the VMs in a set (0.81 x (591 x 254 + 2,409 x 1,010) = 2.09 M). This module builds such snapshots:

* :func:`with_deployment_sets` gives a cluster racks (``hosts_per_rack`` consecutive hosts) and
  draws disjoint sets of both granularities over its VMs such that **the placement it starts from
  satisfies every set**: the members of a host set sit on distinct hosts, those of a rack set on
  distinct racks. Sets are replicas of one service, so a set is filled with VMs of one instance
  type first, topped up with others when that type has too few spread-out VMs.
* :func:`production_like_snapshot` generates the two clusters with
  :func:`~digital_twin.vm.vmr2l_like.generate_cluster` (Azure V1 churn, the ``clear_big2`` VM
  shapes, 2 x 44 vCPU hosts; the default utilisation gives about 2.4 VMs per host, as the
  production file has), adds the sets, and sets ``maximum_migration`` to 10.
* :func:`strip_deployment_sets` is the same snapshot without sets (for with/without comparisons).

Everything is seeded: the same arguments give the same snapshot.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from digital_twin.vm.cluster import Cluster, DeploymentSet
from digital_twin.vm.snapshot import GeneralRequirement, Snapshot

PRODUCTION_HOSTS = (254, 1010)
"""Hosts per cluster of the production snapshot of issue #12 (591 and 2,409 VMs on them)."""


def with_deployment_sets(
    cluster: Cluster,
    rng: np.random.Generator | int,
    *,
    num_host_sets: int = 150,
    num_rack_sets: int = 15,
    member_fraction: float = 0.81,
    hosts_per_rack: int | None = 20,
    rack_set_size: tuple[int, int] = (2, 8),
) -> Cluster:
    """A copy of ``cluster`` at its current placement with racks and anti-affinity sets that it satisfies.

    Sizes: rack sets draw their size uniformly in ``rack_set_size`` (capped at the number of
    racks); the host sets share the rest of ``member_fraction * num_vms`` members, at least 2
    each, in Dirichlet(1) proportions (a few large sets, many small ones). Sets are filled largest
    first, rack sets before host sets (they are the more constrained); a set gets fewer members
    than drawn only when the unassigned VMs do not spread over enough hosts (racks). Every VM is in
    at most one set.

    Args:
        cluster: the cluster (replayed, generated or loaded); it is not modified.
        rng: a numpy generator, or a seed for one.
        num_host_sets: sets whose members must be on distinct hosts.
        num_rack_sets: sets whose members must be on distinct racks.
        member_fraction: share of the VMs to put in sets, in [0, 1].
        hosts_per_rack: consecutive hosts per rack (host ``h`` in rack ``h // hosts_per_rack``);
            None keeps the cluster's own racks.
        rack_set_size: (min, max) members of a rack set, min >= 2.

    Returns:
        A new cluster (its migration history starts empty; serialisation metadata is dropped, so
        a writer describes it from its arrays, sets included). Existing sets are replaced.

    Raises:
        ValueError: a count or fraction out of range, or rack sets wanted over fewer than 2 racks.
    """
    if num_host_sets < 0 or num_rack_sets < 0:
        raise ValueError(f"set counts must be >= 0, got num_host_sets={num_host_sets}, num_rack_sets={num_rack_sets}")
    if not 0.0 <= member_fraction <= 1.0:
        raise ValueError(f"member_fraction must be in [0, 1], got {member_fraction}")
    if hosts_per_rack is not None and hosts_per_rack < 1:
        raise ValueError(f"hosts_per_rack must be >= 1 (or None to keep the cluster's racks), got {hosts_per_rack}")
    lo, hi = rack_set_size
    if not 2 <= lo <= hi:
        raise ValueError(f"rack_set_size must be (min, max) with 2 <= min <= max, got {rack_set_size}")
    rng = np.random.default_rng(rng)
    num_hosts, num_vms = cluster.num_hosts, cluster.num_vms
    racks = np.arange(num_hosts, dtype=np.int64) // hosts_per_rack if hosts_per_rack else cluster.host_rack.copy()
    num_racks = len(np.unique(racks))
    if num_rack_sets and num_racks < 2:
        raise ValueError(f"cluster {cluster.name}: {num_rack_sets} rack sets need at least 2 racks, "
                         f"the cluster has {num_racks} (lower hosts_per_rack)")

    rack_sizes = rng.integers(min(lo, num_racks), min(hi, num_racks) + 1, size=num_rack_sets)
    host_members = max(int(round(member_fraction * num_vms)) - int(rack_sizes.sum()), 0)
    if num_host_sets:
        extra = max(host_members - 2 * num_host_sets, 0)
        host_sizes = 2 + rng.multinomial(extra, rng.dirichlet(np.ones(num_host_sets)))
    else:
        host_sizes = np.zeros(0, dtype=np.int64)

    vm_rack = racks[cluster.vm_host]
    free = np.ones(num_vms, dtype=bool)  # not yet in a set

    def fill(size: int, key: np.ndarray) -> np.ndarray:
        # One VM per key (host or rack), VMs of one randomly drawn type first: replicas of a service.
        cand = rng.permutation(np.flatnonzero(free))
        if len(cand) == 0:
            return cand
        same = cluster.vm_type[cand] == cluster.vm_type[cand[0]]
        order = cand[np.argsort(~same, kind="stable")]
        _, first = np.unique(key[order], return_index=True)
        chosen = np.sort(order[np.sort(first)][:size])
        free[chosen] = False
        return chosen

    rack_sets = [DeploymentSet("rack", fill(int(n), vm_rack)) for n in np.sort(rack_sizes)[::-1]]
    host_sets = [DeploymentSet("host", fill(int(n), cluster.vm_host)) for n in np.sort(host_sizes)[::-1]]
    return dataclasses.replace(cluster, host_rack=racks, deployment_sets=host_sets + rack_sets, meta={})


def production_like_snapshot(
    seed: int = 0,
    *,
    hosts: Sequence[int] = PRODUCTION_HOSTS,
    split: str = "dev",
    mix: str = "clear_big2",
    target_utilisation: float = 0.49,
    maximum_migration: int | None = 10,
    sets: bool = True,
    data_dir: str | None = None,
    **set_options: Any,
) -> Snapshot:
    """A snapshot shaped like issue #12's production file: two clusters, 165 sets each, budget 10.

    Each cluster comes from :func:`~digital_twin.vm.vmr2l_like.generate_cluster` (its own child
    seed of ``seed``), with host ids ``cluster{i}_pm{j}`` and VM ids ``cluster{i}_vm{j}`` so the
    snapshot saves and reloads (ids are unique over the file). With the defaults and seed 0 the
    clusters hold 625 and 2,401 VMs (the production file: 591 and 2,409; other seeds vary by about
    15 %) and the fragment rate is 0.33 (the production file's: 0.49).

    Args:
        seed: fixes every draw.
        hosts: hosts per cluster.
        split, mix, target_utilisation, data_dir: as for ``generate_cluster``.
        maximum_migration: the snapshot's ``general_requirement.maximum_migration``.
        sets: add deployment sets (:func:`with_deployment_sets`); False gives the same clusters without.
        set_options: keyword arguments for :func:`with_deployment_sets`.

    Returns:
        The snapshot (``source`` names the generator and seed).
    """
    from digital_twin.vm.vmr2l_like import generate_cluster  # needs the Azure trace: imported on use

    seeds = np.random.SeedSequence(seed).spawn(2 * len(hosts))
    clusters = []
    for i, n in enumerate(hosts):
        name = f"cluster{i + 1}"
        c, _ = generate_cluster(split, int(n), seed=int(seeds[2 * i].generate_state(1)[0]), mix=mix,
                                target_utilisation=target_utilisation, name=name, data_dir=data_dir)
        c = dataclasses.replace(c, host_ids=[f"{name}_pm{j}" for j in range(c.num_hosts)],
                                vm_ids=[f"{name}_vm{j}" for j in range(c.num_vms)])
        if sets:
            c = with_deployment_sets(c, np.random.default_rng(seeds[2 * i + 1]), **set_options)
        clusters.append(c)
    snap = Snapshot.from_clusters(clusters, GeneralRequirement(maximum_migration=maximum_migration))
    snap.source = f"production_like:seed{seed}:{'x'.join(map(str, hosts))}{'' if sets else ':no-sets'}"
    return snap


def strip_deployment_sets(snapshot: Snapshot) -> Snapshot:
    """The same snapshot (placements, racks, requirement) with no deployment sets."""
    clusters = [dataclasses.replace(c, deployment_sets=[]) for c in snapshot.clusters]
    return Snapshot(clusters, snapshot.vm_types, snapshot.requirement, snapshot.source + ":no-sets", meta=snapshot.meta)
