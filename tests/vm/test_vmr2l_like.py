"""VMR2L-like generator: the real files' host spec and type mix with Azure V1 churn, and its env source."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from digital_twin.resources import bundled_path
from digital_twin.vm.azure_replay import HostSpec
from digital_twin.vm.metrics import free_from_placements
from digital_twin.vm.vmr2l_like import MIXES, generate_cluster, generate_snapshot, type_mix_from_snapshot
from envs.vm_sources import AzureReplaySource, FileSource, VMR2LLikeSource, check_disjoint, load_vm_config, make_source
from tests.vm.conftest import BIG_REAL, GOOD_D, GOOD_F, SMALL_REAL, load_quietly, write_trace

CONFIG = bundled_path("configs/vm_rescheduling/vmr2l_like.yaml")
REAL_HOST = HostSpec()


def cluster_arrays(c):
    return (c.vm_ids, c.host_ids, c.vm_type, c.vm_host, c.vm_placement, c.vm_span, c.vm_cpu, c.vm_mem, c.free_cpu, c.free_mem)


def assert_same_cluster(a, b):
    for x, y in zip(cluster_arrays(a), cluster_arrays(b)):
        if isinstance(x, list):
            assert x == y
        else:
            np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------- the target: the real files' published mix
@pytest.mark.parametrize("path,name", [(SMALL_REAL, "clear2"), (BIG_REAL, "clear_big2")])
def test_mixes_are_the_real_files_type_lists_and_shares(path, name):
    snap = load_quietly(path)
    derived, stored = type_mix_from_snapshot(snap, name), MIXES[name]
    assert [(t.name, t.request_cpu, t.request_mem_mb, t.numa) for t in derived.vm_types] == \
        [(t.name, t.request_cpu, t.request_mem_mb, t.numa) for t in stored.vm_types]
    np.testing.assert_array_equal(derived.shape_type, stored.shape_type)
    np.testing.assert_array_equal(derived.shape_span, stored.shape_span)
    np.testing.assert_array_equal(derived.counts, stored.counts)
    assert stored.counts.sum() == sum(c.num_vms for c in snap.clusters)
    # ... and the real host spec is HostSpec's default: every host of both files.
    for c in snap.clusters:
        assert (c.numa_cpu_total == REAL_HOST.numa_cpu).all() and (c.numa_mem_total == REAL_HOST.numa_mem_mb).all()


# ---------------------------------------------------------------------- validity
@pytest.mark.parametrize("mix", sorted(MIXES))
def test_capacity_never_exceeded_and_vms_have_their_types_shape(mix):
    for seed, u in ((0, 0.97), (1, 0.8)):
        c, stats = generate_cluster("dev", 60, seed=seed, mix=mix, target_utilisation=u, fraction=0.7)
        assert c.capacity_violations() == []
        assert (c.free_cpu >= 0).all() and (c.free_mem >= -1e-6).all()
        free_cpu, free_mem = free_from_placements(c.numa_cpu_total, c.numa_mem_total, c.vm_host, *c.vm_node_usage())
        np.testing.assert_array_equal(free_cpu, c.free_cpu)
        assert (c.numa_cpu_total == REAL_HOST.numa_cpu).all() and (c.numa_mem_total == REAL_HOST.numa_mem_mb).all()
        types = MIXES[mix].vm_types
        np.testing.assert_array_equal(c.vm_cpu.sum(axis=1), [types[t].request_cpu for t in c.vm_type])
        np.testing.assert_allclose(c.vm_mem.sum(axis=1), [types[t].request_mem_mb for t in c.vm_type])
        two = c.vm_span == 2
        assert (np.abs(c.vm_cpu[two, 0] - c.vm_cpu[two, 1]) <= 1).all()  # split evenly
        assert stats.num_vms == c.num_vms > 0 and len(set(c.vm_ids)) == c.num_vms
        assert c.metrics() == c.recompute_metrics()


# ---------------------------------------------------------------------- determinism
def test_same_seed_same_cluster_different_seed_differs():
    kw = dict(mix="clear_big2", target_utilisation=0.9, fraction=0.8)
    a, sa = generate_cluster("dev", 50, seed=3, **kw)
    b, sb = generate_cluster("dev", 50, seed=3, **kw)
    c, _ = generate_cluster("dev", 50, seed=4, **kw)
    assert_same_cluster(a, b)
    assert sa == sb
    assert a.vm_ids != c.vm_ids
    s1, st1 = generate_snapshot(7, hosts_range=(40, 80), num_clusters=(1, 3))
    s2, st2 = generate_snapshot(np.random.default_rng(7), hosts_range=(40, 80), num_clusters=(1, 3))
    assert st1 == st2 and len(s1.clusters) == len(s2.clusters)
    for x, y in zip(s1.clusters, s2.clusters):
        assert_same_cluster(x, y)


# ---------------------------------------------------------------------- distribution, load and size
@pytest.mark.parametrize("mix", sorted(MIXES))
def test_type_mix_is_statistically_close_to_the_target(mix):
    target = MIXES[mix]
    counts = np.zeros(len(target.counts))
    key = {(int(t), int(s)): i for i, (t, s) in enumerate(zip(target.shape_type, target.shape_span))}
    for seed in range(6):
        c, _ = generate_cluster("dev", 120, seed=seed, mix=mix, target_utilisation=0.85, fraction=0.5 + 0.08 * seed)
        for t, s in zip(c.vm_type.tolist(), c.vm_span.tolist()):
            counts[key[(t, s)]] += 1
    n = counts.sum()
    assert n > 1500
    share = counts / n
    # Total variation distance to the target shares: sampling noise alone gives about 0.02 here.
    assert 0.5 * np.abs(share - target.shares).sum() < 0.05, (share.round(3), target.shares.round(3))
    mean_cpu = share @ target.shape_cpu
    assert abs(mean_cpu - target.mean_cpu) / target.mean_cpu < 0.08
    two_share = share[target.shape_span == 2].sum()
    assert abs(two_share - target.shares[target.shape_span == 2].sum()) < 0.04


def test_utilisation_and_sizes_are_as_asked():
    rng = np.random.default_rng(11)
    for _ in range(4):
        snap, stats = generate_snapshot(rng, hosts_range=(40, 90), num_clusters=(2, 3), utilisation_range=(0.8, 0.9))
        assert 2 <= len(snap.clusters) <= 3 and len(stats) == len(snap.clusters)
        assert len({id(c.vm_types) for c in snap.clusters}) >= 1 and snap.vm_types == snap.clusters[0].vm_types
        for c, s in zip(snap.clusters, stats):
            assert 40 <= c.num_hosts <= 90 and s.num_hosts == c.num_hosts
            assert 0.8 <= s.target_utilisation <= 0.9
            total = c.numa_cpu_total.sum()
            used = total - c.free_cpu.sum()
            assert used / total == pytest.approx(s.cpu_utilisation)
            assert used <= s.target_utilisation * total + 1e-9  # never past the target
            assert used >= s.target_utilisation * total - 2  # within the smallest VM of it
            assert 0.8 - 2 / total <= s.cpu_utilisation <= 0.9
    # A single cluster at an exact size and load.
    c, s = generate_cluster("dev", 77, seed=5, mix="clear2", target_utilisation=0.93, fraction=0.9)
    assert c.num_hosts == 77 and abs(s.cpu_utilisation - 0.93) < 2 / (77 * 88)


def test_random_fit_is_valid_seeded_and_off_by_default():
    kw = dict(mix="clear2", target_utilisation=0.9, fraction=0.7)
    best, _ = generate_cluster("dev", 50, seed=2, **kw)
    assert_same_cluster(best, generate_cluster("dev", 50, seed=2, random_fit=0.0, **kw)[0])
    a, sa = generate_cluster("dev", 50, seed=2, random_fit=0.7, **kw)
    b, _ = generate_cluster("dev", 50, seed=2, random_fit=0.7, **kw)
    assert_same_cluster(a, b)
    assert a.capacity_violations() == [] and sa.random_fit == 0.7
    assert sa.cpu_utilisation <= 0.9 + 1e-12
    assert not np.array_equal(a.vm_host[: min(a.num_vms, best.num_vms)], best.vm_host[: min(a.num_vms, best.num_vms)])
    snap, stats = generate_snapshot(3, hosts_range=(40, 50), random_fit_range=(0.2, 0.4))
    assert all(0.2 <= s.random_fit <= 0.4 for s in stats)
    with pytest.raises(ValueError, match="random_fit"):
        generate_cluster("dev", 10, random_fit=1.5)


def test_spread_fit_fragments_the_free_vcpu_and_is_seeded():
    """Spreading leaves every node a little free vCPU: FR near 1 where best fit packs (FR ~0.3)."""
    kw = dict(mix="clear2", target_utilisation=0.9, fraction=0.8)
    best, sb = generate_cluster("dev", 80, seed=1, **kw)
    spread, ss = generate_cluster("dev", 80, seed=1, spread_fit=1.0, **kw)
    assert_same_cluster(spread, generate_cluster("dev", 80, seed=1, spread_fit=1.0, **kw)[0])
    assert spread.capacity_violations() == [] and ss.spread_fit == 1.0
    assert ss.cpu_utilisation <= 0.9 + 1e-12 and abs(ss.cpu_utilisation - sb.cpu_utilisation) < 0.01
    assert sb.fragment_rate < 0.7 < ss.fragment_rate
    # Spread nodes keep their free vCPU under the 16-vCPU fragment size, not in empty nodes.
    free = spread.free_cpu.reshape(-1)
    assert (free < 16).mean() > 0.9
    # The default (0) is best fit, and random + spread may not exceed 1.
    assert_same_cluster(best, generate_cluster("dev", 80, seed=1, spread_fit=0.0, **kw)[0])
    with pytest.raises(ValueError, match="spread_fit"):
        generate_cluster("dev", 10, random_fit=0.6, spread_fit=0.6)
    snap, stats = generate_snapshot(3, hosts_range=(40, 50), random_fit_range=(0.5, 0.5), spread_fit_range=(0.6, 0.9))
    assert all(s.spread_fit == pytest.approx(0.5) for s in stats)  # capped at 1 - random_fit


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown split"):
        generate_cluster("train", 10)
    with pytest.raises(ValueError, match="target_utilisation"):
        generate_cluster("dev", 10, target_utilisation=1.5)
    with pytest.raises(ValueError, match="unknown type mix"):
        generate_cluster("dev", 10, mix="azure")
    with pytest.raises(ValueError, match="hosts_range"):
        generate_snapshot(0, hosts_range=(50, 10))
    with pytest.raises(ValueError, match="utilisation_range"):
        generate_snapshot(0, utilisation_range=(0.0, 0.5))


# ---------------------------------------------------------------------- the env source and its held-out split
def test_source_refuses_to_overlap_with_the_held_out_split(tmp_path):
    train = make_source({"kind": "vmr2l_like", "split": "dev", "hosts_range": [40, 60]})
    assert isinstance(train, VMR2LLikeSource) and train.hosts_range == (40, 60)
    with pytest.raises(ValueError, match="share data"):
        check_disjoint(train, VMR2LLikeSource(split="dev"))
    with pytest.raises(ValueError, match="share data"):
        check_disjoint(train, AzureReplaySource(split="dev"))  # same trace split, other generator: still shared
    check_disjoint(train, VMR2LLikeSource(split="test"))
    check_disjoint(train, AzureReplaySource(split="test"))
    check_disjoint(train, FileSource([SMALL_REAL, BIG_REAL], split="eval"))
    with pytest.raises(ValueError, match="'dev' or 'test'"):
        VMR2LLikeSource(split="train")
    with pytest.raises(ValueError, match="mixes"):
        VMR2LLikeSource(mixes=("nope",))
    # A dev generator reads only the dev trace files: a directory without them cannot serve it.
    only_test = write_trace(tmp_path, GOOD_F, GOOD_D, 600, split="test")
    with pytest.raises(Exception, match="v1.dev.txt"):
        generate_cluster("dev", 4, data_dir=str(only_test))
    snap = train(np.random.default_rng(0))
    assert snap.source.startswith("vmr2l_like:dev:") and all(".test." not in c.name for c in snap.clusters)


def test_config_trains_on_generated_data_and_evaluates_on_the_real_files():
    from envs.vm_rescheduling import make_vm_env

    cfg = load_vm_config(CONFIG)
    assert cfg["train_source"]["kind"] == "vmr2l_like" and cfg["train_source"]["split"] == "dev"
    assert cfg["eval_source"]["kind"] == "files" and cfg["eval_source"]["split"] == "eval"
    ev = make_vm_env(CONFIG, "eval")
    for path in (SMALL_REAL, BIG_REAL):  # the padding holds every eval snapshot
        _, info = ev.reset(seed=0, options={"snapshot": load_quietly(path)})
        assert info["split"] == "eval"
    tr = make_vm_env(CONFIG, "train")
    for seed in range(6):  # ... and training draws (the report checks 20)
        _, info = tr.reset(seed=seed)
        assert info["split"] == "dev" and tr.snapshot.source.startswith("vmr2l_like:dev:")


def test_check_env_on_the_configs_train_split():
    from envs.vm_rescheduling import make_vm_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test ...
        # ... but the one on render modes: an env built directly (not by gym.make) has no spec.
        warnings.filterwarnings("ignore", message=".*alternative render modes.*")
        check_env(make_vm_env(CONFIG, "train", invalid_action="penalty"))
