"""Azure V1 replay: determinism, placement, departures, held-out splits and snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from digital_twin.vm import azure_replay as ar
from digital_twin.vm.azure_replay import HostSpec, flavour_types, replay, replay_snapshot
from digital_twin.vm.azure_trace import AzureV1Trace, TraceFormatError
from tests.vm.conftest import GOOD_D, GOOD_F, write_trace


def cluster_arrays(c):
    return (c.vm_ids, c.host_ids, c.vm_type, c.vm_host, c.vm_placement, c.vm_span, c.vm_cpu, c.vm_mem, c.free_cpu, c.free_mem)


def assert_same_cluster(a, b):
    for x, y in zip(cluster_arrays(a), cluster_arrays(b)):
        if isinstance(x, list):
            assert x == y
        else:
            np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def dev236():
    """The headline replay: dev onto 236 default hosts, auto load scale to 85 %."""
    return replay("dev", 236, fractions=[0.5, 0.75, 1.0], seed=0)


# ---------------------------------------------------------------------- flavours -> VM types
def test_vm_types_from_flavours():
    types = flavour_types(AzureV1Trace.load("dev"))
    assert [t.name for t in types][:3] == ["azure.a", "azure.b", "azure.c"]
    assert all(t.numa == 1 for t in types)  # every Azure flavour fits a 44-vCPU, 180 GB NUMA node
    small = flavour_types(AzureV1Trace.load("dev"), HostSpec((8, 8), (16384.0, 16384.0)))
    assert {t.name: t.numa for t in small}["azure.d"] == 2  # 16 vCPU, 112 GB: split over both nodes


# ---------------------------------------------------------------------- determinism
def test_same_seed_same_replay_different_seed_differs():
    kw = dict(fractions=[0.6, 1.0], load_scale=0.04)
    a = replay("dev", 20, seed=3, **kw)
    b = replay("dev", 20, seed=3, **kw)
    c = replay("dev", 20, seed=4, **kw)
    for name in ("arrival_s", "departure_s", "kept", "host_of"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for x, y in zip(a.clusters, b.clusters):
        assert_same_cluster(x, y)
    assert a.stats == b.stats
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    assert not np.array_equal(a.kept, c.kept)
    assert a.clusters[-1].vm_ids != c.clusters[-1].vm_ids


def test_replay_snapshot_is_one_cut_of_replay():
    one = replay_snapshot("dev", 20, time=200_000.0, seed=1, load_scale=0.04)
    many = replay("dev", 20, times=[100_000.0, 200_000.0], seed=1, load_scale=0.04)
    assert_same_cluster(one, many.clusters[1])


# ---------------------------------------------------------------------- the real replay
def test_capacity_never_exceeded_and_metrics_agree(dev236):
    for cluster, cut in zip(dev236.clusters, dev236.cuts):
        assert cluster.capacity_violations() == []
        assert cluster.recompute_metrics() == cluster.metrics()
        assert cluster.num_vms == cut.num_vms > 0
        idx = np.array([int(v[3:]) for v in cluster.vm_ids])
        # Exactly the placed VMs alive at the cut: arrival <= t < departure.
        assert np.all(dev236.arrival_s[idx] <= cut.time_s) and np.all(dev236.departure_s[idx] > cut.time_s)
        alive = (dev236.host_of >= 0) & (dev236.arrival_s <= cut.time_s) & (dev236.departure_s > cut.time_s)
        np.testing.assert_array_equal(np.flatnonzero(alive), idx)
        np.testing.assert_array_equal(cluster.vm_host, dev236.host_of[idx])
    s = dev236.stats
    assert s["placed"] + s["rejected"] == s["kept"] <= s["offered"] == 259_159
    assert s["departed"] + dev236.cuts[-1].num_vms == s["placed"]


def test_fragment_rate_plausible_and_hosts_mostly_full(dev236):
    assert 0.3 < dev236.load_scale < 0.7
    for cluster, cut in zip(dev236.clusters, dev236.cuts):
        assert 0.0 < cluster.fragment_rate() < 1.0
        assert cut.fragment_rate == cluster.fragment_rate()
    last = dev236.clusters[-1]
    used = 1.0 - last.free_cpu.sum(axis=1) / last.numa_cpu_total.sum(axis=1)
    assert dev236.cuts[-1].cpu_utilisation > 0.8
    assert (used >= 0.75).mean() > 0.8


def test_load_scale_is_picked_for_the_target(dev236):
    trace = AzureV1Trace.load("dev")
    assert dev236.load_scale == ar.suggest_load_scale(trace, 236, dev236.times_s, seed=0)
    cpu, _ = ar.demand(trace, dev236.times_s, seed=0)
    expected_util = dev236.load_scale * cpu.mean() / (236 * 88)
    assert expected_util == pytest.approx(0.85)


# ---------------------------------------------------------------------- hand-made cases
def test_departures_free_their_resources(tmp_path):
    # VM 0 (a, U0) leaves within [0, 300); VM 1 (c, C2) never leaves; VM 2 (b, U1) arrives at 300
    # and leaves in [600, 900).
    data = write_trace(tmp_path, ["0 a,|,c,|", "300 b,|", "600"], ["0 U0,|,C2,|", "300 U1,|", "600"], 900)
    host = HostSpec((8, 8), (16384.0, 16384.0))
    res = replay("dev", 1, times=[0.0, 299.0, 300.0, 900.0], seed=0, load_scale=1.0, host=host,
                 jitter=False, data_dir=data)
    assert 0 < res.departure_s[0] < 300 and 600 <= res.departure_s[2] < 900 and np.isinf(res.departure_s[1])
    at0, _, at300, at900 = res.clusters
    assert at0.vm_ids == ["vm_0", "vm_1"]
    assert at300.vm_ids == ["vm_1", "vm_2"]
    assert at900.vm_ids == ["vm_1"]
    # Everything but VM 1's 4 vCPU / 4 GB is free again.
    assert at900.free_cpu.sum() == 16 - 4 and at900.free_mem.sum() == 2 * 16384.0 - 4096.0
    assert [c.departed for c in res.cuts] == [0, int(res.departure_s[0] <= 299), 1, 2]
    for c in res.clusters:
        assert c.capacity_violations() == []


def test_departure_is_processed_before_arrival_at_same_instant(tmp_path):
    # One host of 2 x 4 vCPU; VMs 0 and 1 fill it; VM 2 arrives exactly when VM 0 departs.
    data = write_trace(tmp_path, ["0 c,|,c,|,c,|"], ["0 C0,|,C0,|,C0,|"], 300)
    trace = AzureV1Trace.load("dev", data)
    host = HostSpec((4, 4), (16384.0, 16384.0))
    arrival = np.array([0.0, 0.0, 100.0])
    departure = np.array([100.0, np.inf, np.inf])
    host_of, clusters, cuts = ar._run_events(
        trace, flavour_types(trace, host), host, 1, arrival, departure, np.ones(3, bool), np.array([100.0]), 0
    )
    assert cuts[0].rejected == 0 and cuts[0].departed == 1
    assert clusters[0].vm_ids == ["vm_1", "vm_2"]
    np.testing.assert_array_equal(host_of, [0, 0, 0])


def test_best_fit_over_numa_nodes(tmp_path):
    # 3 hosts of 2 x (8 vCPU, 16 GB). Expected cell (host, node) per VM, worked by hand:
    order = "c b d c b e f a c b".split()
    data = write_trace(
        tmp_path, ["0 " + ",|,".join(order) + ",|"], ["0 " + ",|,".join(["C0"] * len(order)) + ",|"], 300
    )
    host = HostSpec((8, 8), (16384.0, 16384.0))
    res = replay("dev", 3, fractions=[1.0], seed=0, load_scale=1.0, host=host, jitter=False, data_dir=data)
    c = res.clusters[0]
    expected = {
        "vm_0": (0, 0),  # c 4/4: all cells equal -> lowest host, node 0
        "vm_1": (0, 0),  # b 2/2: h0n0 has least free CPU (4)
        "vm_2": (0, 1),  # d 6/10: needs 6 vCPU; h0n1 first of the equal (8, 16 GB) cells
        "vm_3": (1, 0),  # c 4/4: host 0 has 2 vCPU left per node; of the fresh cells, h1n0 first
        "vm_4": (0, 1),  # b 2/2: h0n0 and h0n1 both have 2 vCPU free; h0n1 has less memory (6 GB vs 10)
        "vm_5": (2, None),  # e 10 vCPU: too big for a node -> 5 + 5 on the only host with 5 free on both
        # vm_6 f 20 vCPU: fits nowhere -> rejected
        "vm_7": (0, 0),  # a 1/1: h0n0 (2 free) is the tightest
        "vm_8": (1, 0),  # c 4/4: h1n0 (4 free) rather than h1n1 (8)
        "vm_9": (2, 0),  # b 2/2: h2n0 (3 free) beats h1n1 (8 free), which first-fit would take
    }
    assert c.vm_ids == list(expected)
    for vm_id, (h, node) in expected.items():
        v = c.vm_index(vm_id)
        assert c.vm_host[v] == h, vm_id
        if node is None:
            assert c.vm_span[v] == 2 and c.vm_cpu[v].tolist() == [5, 5] and c.vm_mem[v].tolist() == [2048.0, 2048.0]
        else:
            assert c.vm_span[v] == 1 and c.vm_placement[v] == node, vm_id
    assert res.stats["rejected"] == 1 and res.stats["placed"] == 9
    np.testing.assert_array_equal(c.free_cpu, [[1, 0], [0, 8], [1, 3]])
    assert c.capacity_violations() == [] and c.recompute_metrics() == c.metrics()


# ---------------------------------------------------------------------- held-out split
def test_splits_never_mix(tmp_path):
    dev, test = AzureV1Trace.load("dev"), AzureV1Trace.load("test")
    assert (dev.flavour_file.name, dev.duration_file.name) == ("v1.dev.txt", "v1.dev.c2100000.txt")
    assert (test.flavour_file.name, test.duration_file.name) == ("v1.test.txt", "v1.test.c2591400.txt")
    assert dev.start_s + dev.span_s <= test.start_s  # [1.8M, 2.1M) and [2.1M, 2.5914M): disjoint windows
    res = replay("dev", 10, seed=0, load_scale=0.01)
    assert res.split == "dev" and res.stats["split"] == "dev" and ".dev." in res.clusters[0].name
    for bad in ("train", "DEV", "", "test "):
        with pytest.raises(ValueError, match="unknown split"):
            AzureV1Trace.load(bad)
    # A directory holding only test files cannot serve dev.
    only_test = write_trace(tmp_path, GOOD_F, GOOD_D, 600, split="test")
    assert AzureV1Trace.load("test", only_test).split == "test"
    with pytest.raises(TraceFormatError, match="v1.dev.txt"):
        AzureV1Trace.load("dev", only_test)


def test_bad_cut_times_are_refused():
    with pytest.raises(ValueError, match="fractions"):
        replay("dev", 10, fractions=[1.5], load_scale=0.01)
    with pytest.raises(ValueError, match="times"):
        replay("dev", 10, times=[-1.0], load_scale=0.01)
    with pytest.raises(ValueError, match="not both"):
        replay("dev", 10, times=[1.0], fractions=[0.5], load_scale=0.01)


# ---------------------------------------------------------------------- VMR2L schema round trip
def test_saved_snapshot_loads_back_identical(tmp_path):
    import digital_twin.vm.snapshot as snapshot
    res = replay("dev", 30, fractions=[0.8, 1.0], seed=0, load_scale=0.06)
    # One file per cut: the cuts are states of the same hosts, and a VMR2L document needs host
    # and VM ids unique across its cluster_list.
    for i, cluster in enumerate(res.clusters):
        path = tmp_path / f"replayed_{i}.json"
        snapshot.save_snapshot(snapshot.Snapshot.from_clusters([cluster]), path)
        back = snapshot.load_snapshot(path, strict=True)
        assert [c.name for c in back.clusters] == [cluster.name]
        loaded = back.clusters[0]
        assert_same_cluster(cluster, loaded)
        assert loaded.vm_types == cluster.vm_types
        assert loaded.metrics() == cluster.metrics()
