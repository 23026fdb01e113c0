"""The real VMR2L snapshots the VM agent tests plan on, loaded once per test run."""

from __future__ import annotations

import warnings

import pytest

from digital_twin.vm import Snapshot, load_snapshot
from envs.vm_sources import REAL_SNAPSHOTS


def load_quietly(name: str) -> Snapshot:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real files' memory quirk
        return load_snapshot(REAL_SNAPSHOTS / name)


@pytest.fixture(scope="session")
def clear2() -> Snapshot:
    """The real file: 236 + 43 hosts, 1,934 + 155 VMs."""
    return load_quietly("reset_vm_pm_id_clear2.json")


@pytest.fixture(scope="session")
def small_snapshot(clear2) -> Snapshot:
    """Its second cluster alone: 43 hosts, 155 VMs (what the test models are built for)."""
    return Snapshot.from_clusters([clear2.clusters[1]])


@pytest.fixture(scope="session")
def big_snapshot() -> Snapshot:
    """The real 352 + 824-host, 4,546-VM snapshot (4,547 actions)."""
    return load_quietly("reset_vm_pm_id_clear_big2.json")
