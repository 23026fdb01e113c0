import numpy as np
import pytest
import yaml

from digital_twin.microservices import ScenarioError, compile_scenarios, load_scenarios


def test_compose_all_kinds(boutique):
    specs = [
        {"kind": "ddos", "start_minute": 1, "duration_minutes": 1, "rate": 50},
        {"kind": "ddos", "start_minute": 1.5, "duration_minutes": 2, "capacity_fraction": 0.5, "shape": "pulse",
         "period_seconds": 60, "duty": 0.5},
        {"kind": "pod_crash", "services": ["cart"], "rate_per_pod_per_hour": 36, "kill": 2, "start_minute": 2},
        {"kind": "contention", "node": "node-1", "cpu": 3, "start_minute": 0, "duration_minutes": 1},
        {"kind": "bottleneck", "service": "productcatalog", "capacity_factor": 0.5},
        {"kind": "bottleneck", "service": "productcatalog", "capacity_factor": 0.5, "start_minute": 1},
        {"kind": "node_loss", "node": "node-2", "start_minute": 2, "duration_minutes": 1},
    ]
    sch = compile_scenarios(specs, boutique, num_steps=20, step_seconds=15)
    cap = boutique.entry_capacity()
    # Steps 4-5 flood only; 6-7 flood + pulse on (first half of each 60 s period); 8-9 pulse off.
    np.testing.assert_allclose(sch.attack_rate[:12], [0, 0, 0, 0, 50, 50, 50 + 0.5 * cap, 50 + 0.5 * cap, 0, 0,
                                                      0.5 * cap, 0.5 * cap])
    cart = boutique.index("cart")
    assert sch.kills[8, cart] == 2 and sch.kills.sum() == 2
    assert sch.crash_rate[8:, cart] == pytest.approx(0.01) and sch.crash_rate[:8].sum() == 0
    assert sch.noisy_cpu[:4, 0].tolist() == [3, 3, 3, 3] and sch.noisy_cpu[4:].sum() == 0
    pc = boutique.index("productcatalog")
    assert sch.capacity_factor[0, pc] == 0.5 and sch.capacity_factor[4, pc] == 0.25
    assert not sch.node_up[8:12, 1].any() and sch.node_up[12:, 1].all() and sch.node_up[:, 0].all()


@pytest.mark.parametrize("spec, key", [
    ({"kind": "earthquake"}, "scenarios[0].kind"),
    ({"kind": "ddos"}, "scenarios[0].rate"),
    ({"kind": "ddos", "rate": 5, "shape": "zigzag"}, "scenarios[0].shape"),
    ({"kind": "pod_crash", "services": ["nope"], "kill": 1}, "scenarios[0].services"),
    ({"kind": "contention", "node": "node-9", "cpu": 1}, "scenarios[0].node"),
    ({"kind": "bottleneck", "service": "cart", "capacity_factor": 2}, "scenarios[0].capacity_factor"),
    ({"kind": "node_loss", "node": "node-1", "start_minute": -1}, "scenarios[0].start_minute"),
    ({"kind": "ddos", "rate": 5, "colour": 1}, "scenarios[0].colour"),
])
def test_bad_scenarios_name_file_and_key(tmp_path, boutique, spec, key):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"scenarios": [spec]}))
    with pytest.raises(ScenarioError) as err:
        compile_scenarios(load_scenarios(path), boutique, 10)
    assert str(path) in str(err.value) and f"key '{key}'" in str(err.value)
