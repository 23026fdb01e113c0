import numpy as np
import pytest

from digital_twin.microservices import TopologyError, builtin_topologies, load_topology
from digital_twin.microservices.topology import topology_from_dict


def test_builtins_listed():
    assert {"chain4", "online_boutique"} <= set(builtin_topologies())


def test_online_boutique_call_graph_matches_upstream(boutique):
    edges = {(boutique.service_names[u], boutique.service_names[d])
             for u, d in zip(*np.nonzero(boutique.calls))}
    expected = {("frontend", x) for x in ("productcatalog", "currency", "cart", "recommendation", "shipping", "checkout", "ad")}
    expected |= {("checkout", x) for x in ("productcatalog", "shipping", "payment", "email", "currency", "cart")}
    expected |= {("cart", "redis-cart"), ("recommendation", "productcatalog")}
    assert edges == expected
    fe = boutique.index("frontend")
    assert boutique.entry_index == fe
    assert boutique.cpu_request[fe] == pytest.approx(0.1) and boutique.cpu_limit[fe] == pytest.approx(0.2)
    assert boutique.memory_request_bytes[fe] == 64 * 2**20 and boutique.memory_limit_bytes[fe] == 128 * 2**20


def test_topological_order_and_visits(chain4):
    assert chain4.service_names == ("A", "B", "C", "D")
    np.testing.assert_allclose(chain4.entry_visits, [1, 1, 1, 2])
    # Callers always come before callees, so the call matrix is strictly upper triangular.
    assert np.all(np.tril(chain4.calls) == 0)
    np.testing.assert_allclose(chain4.throughput_per_replica, [50, 40, 40, 60])
    # Capacity at max replicas (8): D serves 8 x 60/s but is visited twice per request.
    assert chain4.entry_capacity() == pytest.approx(8 * 60 / 2)


def _doc():
    return {
        "name": "t", "entry": "a",
        "cluster": {"nodes": [{"name": "n1", "cpu": 4, "memory_mib": 4096}]},
        "defaults": {"cpu_request": 0.1, "cpu_limit": 0.2, "memory_request_mib": 64, "memory_limit_mib": 128,
                     "memory_base_mib": 30, "memory_per_inflight_mib": 0.5, "min_replicas": 1, "max_replicas": 4,
                     "startup_seconds": 5, "timeout_seconds": 2, "queue_limit_per_pod": 100},
        "services": {"a": {"cpu_seconds_per_request": 0.01, "calls": {"b": 1}},
                     "b": {"cpu_seconds_per_request": 0.01}},
    }


@pytest.mark.parametrize("mutate, key, reason", [
    (lambda d: d["services"]["b"].update(calls={"a": 1}), "services", "cycle"),
    (lambda d: d["services"]["a"]["calls"].update(zz=1), "services.a.calls.zz", "unknown service"),
    (lambda d: d["defaults"].pop("timeout_seconds"), "services.a.timeout_seconds", "missing required field"),
    (lambda d: d["services"]["b"].pop("cpu_seconds_per_request"), "services.b.cpu_seconds_per_request", "missing"),
    (lambda d: d["services"]["a"].update(max_replicas=0), "services.a.max_replicas", ">= 1"),
    (lambda d: d["services"]["a"].update(min_replicas=5), "services.a.min_replicas", "> max_replicas"),
    (lambda d: d["services"]["a"].update(cpu_limit="lots"), "services.a.cpu_limit", "finite number"),
    (lambda d: d.update(entry="nope"), "entry", "unknown service"),
    (lambda d: d["services"]["a"]["calls"].update(a=1), "services.a.calls.a", "itself"),
    (lambda d: d["cluster"].update(nodes=[]), "cluster.nodes", "non-empty"),
    (lambda d: d["services"]["a"].update(colour="red"), "services.a.colour", "unknown key"),
    # c holds pods and calls b, but nothing calls c: it never gets load.
    (lambda d: d["services"].update(c={"cpu_seconds_per_request": 0.01, "calls": {"b": 1}}), "services.c",
     "unreachable from the entry 'a': no chain of calls from 'a' leads to it, so it would hold pods and never get load"),
])
def test_malformed_topologies_name_file_key_reason(tmp_path, mutate, key, reason):
    import yaml

    doc = _doc()
    mutate(doc)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    message = str(err.value)
    assert str(path) in message and f"key '{key}'" in message and reason in message


def test_valid_user_file_and_throughput_form(tmp_path):
    import yaml

    doc = _doc()
    del doc["services"]["b"]["cpu_seconds_per_request"]
    doc["services"]["b"]["throughput_per_replica"] = 40
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(doc))
    topo = load_topology(path)
    assert topo.cpu_seconds_per_request[topo.index("b")] == pytest.approx(0.2 / 40)


def test_not_yaml_and_missing_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load_topology(path)
    with pytest.raises(FileNotFoundError, match="not a built-in"):
        load_topology(tmp_path / "missing.yaml")
    with pytest.raises(TopologyError, match="expected a mapping"):
        topology_from_dict([1, 2], source="list.yaml")


def test_every_service_of_the_bundled_topologies_is_reachable_from_the_entry():
    for name in builtin_topologies():
        topo = load_topology(name)
        assert np.all(topo.entry_visits > 0), name


def test_an_unreachable_service_names_the_others_too():
    doc = _doc()
    doc["services"]["c"] = {"cpu_seconds_per_request": 0.01}
    doc["services"]["d"] = {"cpu_seconds_per_request": 0.01}
    with pytest.raises(TopologyError, match=r"key 'services.c': unreachable .*\(also unreachable: d\)"):
        topology_from_dict(doc, source="two.yaml")
