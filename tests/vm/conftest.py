"""Fixtures for the VM-rescheduling twin: the bundled real snapshots, tiny documents, random clusters."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from digital_twin.resources import bundled_path
from digital_twin.vm import Cluster, VMType, load_snapshot
from digital_twin.vm.generators import random_cluster

DATA = bundled_path("data/vmr2l_snapshots")
SMALL_REAL = DATA / "reset_vm_pm_id_clear2.json"
BIG_REAL = DATA / "reset_vm_pm_id_clear_big2.json"


def load_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_snapshot(path)


@pytest.fixture(scope="session")
def real_snapshot():
    """The 236+43-host real snapshot (load it once; tests copy before mutating)."""
    return load_quietly(SMALL_REAL)


@pytest.fixture
def real_cluster(real_snapshot) -> Cluster:
    """A fresh copy of the 236-host / 1,934-VM real cluster."""
    return real_snapshot.clusters[0].copy()


def tiny_document() -> dict:
    """A valid 3-host VMR2L document: one split VM, an anti-affinity pair, a consistent free ledger."""
    def host(i, free0, free1, mem0, mem1, rack=0, status="ACTIVE"):
        return {"node_id": f"pm_{i}", "status": status, "node_cpu": 88, "node_mem_mb": 368776.0,
                "numa": [{"node": 0, "total_cpu": 44, "free_cpu": float(free0), "memory_huge_total_mb": 184388.0, "memory_huge_free_mb": mem0},
                         {"node": 1, "total_cpu": 44, "free_cpu": float(free1), "memory_huge_total_mb": 184388.0, "memory_huge_free_mb": mem1}],
                "rack_id": rack}

    def vm(i, vtype, host_id, numa, allow=True):
        return {"instance_id": f"vm_{i}", "instance_type": vtype, "host_id": host_id,
                "numa": [{"node": n, "cpu": c, "mem_mb": m} for n, c, m in numa], "allow_migration": allow}

    return {
        "cluster_list": [{
            "cluster_name": "tiny",
            "host_info": [host(0, 28, 40, 151620.0, 176196.0), host(1, 36, 36, 168004.0, 168004.0, rack=1), host(2, 44, 44, 184388.0, 184388.0, rack=1)],
            "vm_type_info": [{"vm_type": "m.4xlarge", "flavor_limit": 2}],
            "vm_instance": [
                vm(0, "m.4xlarge", "pm_0", [(0, 16, 32768.0)]),
                vm(1, "m.xlarge", "pm_0", [(1, 4, 8192.0)]),
                vm(2, "m.4xlarge", "pm_1", [(0, 8, 16384.0), (1, 8, 16384.0)]),
            ],
            "other_requirement": {"deployment_set": [{"granularity": "host", "data": ["vm_0", "vm_2"]}]},
        }],
        "vm_type_list": [
            {"vm_type": "m.4xlarge", "request_cpu": 16, "request_mem_mb": 32768.0, "numa": 1, "expected_newly_created_num": 0, "weight": 1.0},
            {"vm_type": "m.xlarge", "request_cpu": 4, "request_mem_mb": 8192.0, "numa": 1, "expected_newly_created_num": 0, "weight": 0.0},
        ],
        "general_requirement": {"optimization_objective": 1, "maximum_migration_each_batch": 1000,
                                "maximum_migration": 10, "maximum_time": 600, "available_zone": "test"},
    }


@pytest.fixture
def tiny_doc() -> dict:
    return copy.deepcopy(tiny_document())


@pytest.fixture
def write_doc(tmp_path):
    """Write a document to a temp file and return its path."""
    def write(doc, name="snap.json"):
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return path
    return write


TYPES = [VMType("t2", 2, 4096.0, 1), VMType("t4", 4, 8192.0, 1), VMType("t8", 8, 16384.0, 1),
         VMType("t16", 16, 32768.0, 1), VMType("t32s", 32, 65536.0, 2)]


@st.composite
def clusters(draw, max_hosts: int = 6, max_vms: int = 24) -> Cluster:
    """Random valid clusters: random hosts (some inactive), VMs packed where they fit, anti-affinity sets."""
    return random_cluster(
        draw(st.integers(0, 2**32 - 1)), draw(st.integers(1, max_hosts)), draw(st.integers(0, max_vms)),
        vm_types=TYPES, node_cpu=(16, 24, 44), mem_per_cpu=4096.0, inactive=0.25, split=0.5, frozen=0.25,
        anti_affinity=0.5, rack_anti_affinity=0.5,
    )


# Tiny Azure V1 trace files. Interval map: bucket 0 = [0, 300), 1 = [300, 600), 2 = [600, 900] (last, capped).
TINY_INTERVALS = "0 0\n300 1\n600 2\n900 2\n"
TINY_FLAVOURS = "1,1 a\n2,2 b\n4,4 c\n6,10 d\n10,4 e\n20,1 f\n"
GOOD_F = ["0 a,|,b,b,|", "300 c,|"]
GOOD_D = ["0 U0,|,U1,C2,|", "300 C2,|"]


def write_trace(tmp: Path, flav_lines: list[str], dur_lines: list[str], cut: int, split: str = "dev",
                flavours: str = TINY_FLAVOURS, intervals: str = TINY_INTERVALS) -> Path:
    """Write a tiny trace (flavour map, interval map, flavour and duration files) into ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "flav_map.txt").write_text(flavours)
    (tmp / "v1.interval_map.txt").write_text(intervals)
    (tmp / f"v1.{split}.txt").write_text("\n".join(flav_lines) + "\n")
    (tmp / f"v1.{split}.c{cut}.txt").write_text("\n".join(dur_lines) + "\n")
    return tmp


def brute_force_feasible(cluster: Cluster, vm: int) -> np.ndarray:
    """Feasibility of every destination of ``vm`` by plain per-host Python checks (the test oracle)."""
    mask = np.zeros((cluster.num_hosts, 2), dtype=bool)
    if not cluster.vm_allow_migration[vm]:
        return mask
    for host in range(cluster.num_hosts):
        if host == cluster.vm_host[vm] or cluster.host_status[host] != "ACTIVE":
            continue
        blocked = False
        for dset in cluster.deployment_sets:
            if vm in dset.members:
                for other in dset.members:
                    if other == vm:
                        continue
                    oh = cluster.vm_host[other]
                    if (dset.granularity == "host" and oh == host) or (dset.granularity == "rack" and cluster.host_rack[oh] == cluster.host_rack[host]):
                        blocked = True
        if blocked:
            continue
        for place in (0, 1):
            if cluster.vm_span[vm] == 2 and place == 1:
                continue
            cpu, mem = list(cluster.vm_cpu[vm]), list(cluster.vm_mem[vm])
            if place == 1:
                cpu, mem = cpu[::-1], mem[::-1]
            mask[host, place] = all(
                cluster.free_cpu[host, n] >= cpu[n] and cluster.free_mem[host, n] >= mem[n] for n in (0, 1)
            )
    return mask


def state_arrays(cluster: Cluster) -> dict:
    """Everything a migration may change, for before/after comparisons."""
    return {
        "vm_host": cluster.vm_host.copy(), "vm_placement": cluster.vm_placement.copy(),
        "free_cpu": cluster.free_cpu.copy(), "free_mem": cluster.free_mem.copy(),
        "metrics": cluster.metrics(), "history": list(cluster.history),
    }


def assert_same_state(a: dict, b: dict) -> None:
    for key in ("vm_host", "vm_placement", "free_cpu", "free_mem"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a["metrics"] == b["metrics"]
    assert a["history"] == b["history"]
