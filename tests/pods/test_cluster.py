"""The pod twin: feasibility, bind / evict / move / undo with refusals, metrics, FGD fragmentation, sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digital_twin.pods import (
    InfeasiblePodChangeError, ScenarioGenerator, ScenarioSpec, TraceFormatError, generate, load_openb,
)
from tests.pods.conftest import make_cluster, state

OPENB = Path(__file__).resolve().parents[3] / "shared" / "traces" / "alibaba_openb"


def test_fits_matches_a_per_node_check_and_fits_all():
    c = make_cluster([(1000, 1000), (500, 2000), (2000, 300)], [(600, 400, 0), (400, 900, 1), (100, 100, 0)], [0, 1, -1])
    for i in range(c.num_pods):
        brute = [bool(c.cpu_free[j] >= c.pod_cpu[i] and c.memory_free[j] >= c.pod_memory[i]) for j in range(3)]
        assert c.fits(i).tolist() == brute
    np.testing.assert_array_equal(c.fits_all(), np.stack([c.fits(i) for i in range(c.num_pods)]))


def test_refusals_name_what_was_needed_and_change_nothing():
    c = make_cluster([(1000, 1000), (1000, 1000)], [(800, 100, 0), (300, 100, 1), (100, 950, 0)], [0, -1, -1])
    before = state(c)
    with pytest.raises(InfeasiblePodChangeError, match=r"node n0 has 200 m CPU free, pod p1 needs 300 m"):
        c.bind(1, 0)
    with pytest.raises(InfeasiblePodChangeError, match=r"pod p0 already runs on node n0"):
        c.bind(0, 1)
    with pytest.raises(InfeasiblePodChangeError, match=r"pod p1 is Pending"):
        c.evict(1)
    with pytest.raises(InfeasiblePodChangeError, match=r"already runs on node n0"):
        c.move(0, 0)
    c.bind(2, 1)
    before = state(c)
    with pytest.raises(InfeasiblePodChangeError, match=r"node n1 has 50 MiB memory free, pod p0 needs 100 MiB"):
        c.move(0, 1)
    assert state(c) == before


def test_bind_evict_move_undo_round_trip_and_counts():
    c = make_cluster([(1000, 1000), (1000, 1000)], [(600, 600, 1), (300, 300, 0)])
    start = state(c)
    c.bind(0, 0)
    c.bind(1, 0)
    c.move(0, 1)
    c.evict(1)
    m = c.metrics()
    assert (m.binds, m.moves, m.evictions, m.pending) == (2, 1, 1, 1)
    assert m.placed_by_tier == (1, 0) and m.total_by_tier == (1, 1)
    assert m.cpu_allocation == pytest.approx(600 / 2000)
    for _ in range(4):
        c.undo()
    assert state(c) == start
    with pytest.raises(IndexError, match="no change to undo"):
        c.undo()


def test_gpu_sharing_best_fit_and_refusal():
    c = make_cluster([(8000, 8000)], [(1, 1, 0, 1, 700), (1, 1, 0, 1, 300), (1, 1, 0, 1, 500), (1, 1, 0, 2, 1000)], gpus=[2])
    c.bind(0, 0)                      # GPU 0 (both free: lowest index)
    c.bind(1, 0)                      # tightest fit: GPU 0 has 300 left
    assert c.pod_gpus[:2] == [(0,), (0,)] and c.gpu_free[0].tolist() == [0, 1000]
    c.bind(2, 0)
    with pytest.raises(InfeasiblePodChangeError, match=r"has 0 GPU\(s\) with 1000 thousandths free, pod p3 needs 2"):
        c.bind(3, 0)
    c.evict(0)
    before = state(c)
    with pytest.raises(InfeasiblePodChangeError, match=r"GPU 1 has 500 thousandths free, pod p0 needs 700"):
        c.bind(0, 0, gpus=[1])
    assert state(c) == before
    assert c.capacity_violations() == []


def test_fgd_fragmentation_hand_case():
    # One node, 2 GPUs; a 700-share pod runs on GPU 0 (300 left), GPU 1 idle; a CPU-only pod.
    # Types (weight 1/2 each): CPU-only -> all idle GPU share is fragment (1300);
    # 1 x 700 -> runs on GPU 1, GPU 0's 300 cannot take it -> 300. F = 0.5 * 1300 + 0.5 * 300 = 800.
    c = make_cluster([(4000, 4000)], [(100, 100, 0, 1, 700), (100, 100, 0)], [0, 0], gpus=[2])
    assert c.gpu_free[0].tolist() == [300, 1000]
    assert c.gpu_fragmentation() == pytest.approx(800.0)
    assert c.metrics().gpu_allocation == pytest.approx(700 / 2000)
    assert np.isnan(make_cluster([(1, 1)], [(1, 1, 0)]).gpu_fragmentation())


def test_bad_construction_is_refused():
    with pytest.raises(ValueError, match="starting placement is infeasible: node n0 has 50 m CPU free, pod p1 needs 60 m"):
        make_cluster([(100, 100)], [(50, 10, 0), (60, 10, 0)], [0, 0])
    with pytest.raises(ValueError, match="asks for 2 GPU"):
        make_cluster([(100, 100)], [(1, 1, 0, 2, 500)], gpus=[2])


def test_generator_follows_the_paper_ranges_and_is_seeded():
    spec = ScenarioSpec(num_nodes=8, pods_per_node=4, num_priorities=4, utilisation=0.95)
    a, b = generate(spec, np.random.default_rng(3)), generate(spec, np.random.default_rng(3))
    assert a.pod_cpu.tolist() == b.pod_cpu.tolist() and a.pod_priority.tolist() == b.pod_priority.tolist()
    assert a.num_pods == 32 and a.num_nodes == 8 and a.pending.all()
    assert a.pod_cpu.min() >= 100 and a.pod_cpu.max() <= 1000 and a.pod_memory.max() <= 1000
    assert set(a.pod_priority.tolist()) <= {0, 1, 2, 3}
    sizes = np.bincount(a.pod_owner)
    assert sizes[sizes > 0].max() <= 4
    for o in np.unique(a.pod_owner):  # a ReplicaSet's replicas share requests and priority
        members = a.pod_owner == o
        assert len(set(a.pod_cpu[members])) == 1 and len(set(a.pod_priority[members])) == 1
    util = a.pod_cpu.sum() / a.cpu_capacity.sum()
    assert 0.93 < util <= 0.95
    _, drawn = ScenarioGenerator()(np.random.default_rng(0))
    assert drawn.num_nodes in (4, 8, 16, 32) and drawn.utilisation in (0.90, 0.95, 1.00, 1.05)
    assert a.pod_owner.tolist() == sorted(a.pod_owner.tolist())   # created ReplicaSet by ReplicaSet
    tiny = generate(ScenarioSpec(num_nodes=32, pods_per_node=4, num_priorities=1, utilisation=1.05), np.random.default_rng(0))
    assert tiny.cpu_capacity[0] >= tiny.pod_cpu.max() and tiny.memory_capacity[0] >= tiny.pod_memory.max()
    with pytest.raises(ValueError, match="utilisation must be a non-empty list of numbers > 0"):
        ScenarioGenerator(utilisation=(0.9, 0))


@pytest.mark.skipif(not OPENB.is_dir(), reason="the openb trace is not in ../shared/traces")
def test_openb_loader_reads_the_real_lists():
    c = load_openb(OPENB / "openb_node_list_all_node.csv", OPENB / "openb_pod_list_default.csv", max_nodes=40, max_pods=300)
    assert c.num_nodes == 40 and c.num_pods == 300 and c.pending.all()
    assert c.node_names[0] == "openb-node-0000" and c.pod_names[0] == "openb-pod-0000"
    assert c.pod_priority[0] == 3  # LS
    assert (c.pod_num_gpu[c.pod_gpu_milli < 1000] <= 1).all()


def test_openb_bad_files_name_the_file_and_row(tmp_path):
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,32000,262144,2,T4\n")
    pods = tmp_path / "pods.csv"
    header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
    pods.write_text(header + "p0,1000,1024,1,500,,LS,Running,0,10,0\np1,1000,1024,0,0,,Gold,Running,0,10,0\n")
    with pytest.raises(TraceFormatError, match=rf"{pods}: row 3: qos is 'Gold'; allowed: LS, Guaranteed, Burstable, BE"):
        load_openb(nodes, pods)
    pods.write_text(header + "p0,lots,1024,1,500,,LS,Running,0,10,0\n")
    with pytest.raises(TraceFormatError, match=r"row 2: cpu_milli is 'lots', not a number"):
        load_openb(nodes, pods)
    nodes.write_text("sn,cpu\nn0,1\n")
    with pytest.raises(TraceFormatError, match=r"row 1 \(header\): missing column\(s\) cpu_milli, memory_mib, gpu, model"):
        load_openb(nodes, pods)
    with pytest.raises(TraceFormatError, match=r"missing.csv: no such file"):
        load_openb(tmp_path / "missing.csv", pods)


def test_copies_and_pickles_keep_the_arrays_on_the_changed_buffer():
    # The public arrays are views of the buffer the compiled changes write; a deepcopy or pickle
    # must not leave them behind as stale copies.
    import copy
    import pickle

    c = make_cluster([(1000, 1000), (1000, 1000)], [(600, 600, 1, 1, 500), (300, 300, 0)], [0, -1], gpus=[1, 1])
    for twin in (copy.deepcopy(c), pickle.loads(pickle.dumps(c)), c.copy()):
        assert state(twin)[:5] == state(c)[:5]
        twin.move(0, 1)
        twin.bind(1, 0)
        assert twin.pod_node.tolist() == [1, 0] and twin.cpu_free.tolist() == [700, 400]
        assert twin.gpu_free.tolist() == [[1000], [500]] and twin.pod_gpus == [(0,), ()]
        assert c.pod_node.tolist() == [0, -1] and c.gpu_free.tolist() == [[500], [1000]]


def test_fits_empty_ignores_what_runs():
    # node 0 is full, yet every pod fits it empty; the 2-GPU pod only fits the 2-GPU node; the big pod no node
    c = make_cluster([(1000, 1000), (500, 500)], [(900, 900, 0), (400, 10, 1, 2, 1000), (1200, 10, 0)],
                     placement=[0, -1, -1], gpus=[2, 0])
    assert c.fits_empty().tolist() == [[True, False], [True, False], [False, False]]
    assert c.fits_empty([1]).tolist() == [[True, False]] and not c.fits(1)[1]
