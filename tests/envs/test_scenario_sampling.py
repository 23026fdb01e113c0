"""Randomised scenario variants of autoscaling configs: samples, pick, uniform / choice parameters."""

from __future__ import annotations

import pytest

from digital_twin.cli import ConfigError
from envs.microservice import MicroserviceCore, load_config

BASE = {"topology": "chain4", "trace": "huawei_serverless", "window_steps": 40}


def _config(variants):
    return load_config(dict(BASE, scenarios=variants))


def test_samples_expand_a_variant_with_parameters_in_their_ranges():
    cfg = _config([{"name": "calm", "weight": 2, "scenarios": []},
                   {"name": "crash", "samples": 20, "scenarios": [
                       {"kind": "pod_crash", "services": {"choice": [["B"], ["C"], ["B", "D"]]},
                        "rate_per_pod_per_hour": {"uniform": [2.0, 10.0]}, "start_minute": {"uniform": [1, 5]},
                        "duration_minutes": 3}]}])
    names = [v.name for v in cfg.scenarios]
    assert names == ["calm", *(f"crash/{k}" for k in range(20))]
    assert sum(v.weight for v in cfg.scenarios[1:]) == pytest.approx(1.0)
    specs = [v.specs[0] for v in cfg.scenarios[1:]]
    assert all(2.0 <= s["rate_per_pod_per_hour"] <= 10.0 for s in specs)
    assert {s["start_minute"] for s in specs} <= {1, 2, 3, 4, 5} and all(isinstance(s["start_minute"], int) for s in specs)
    assert len({s["start_minute"] for s in specs}) > 1 and len({tuple(s["services"]) for s in specs}) > 1
    assert all(s["duration_minutes"] == 3 for s in specs)
    # The same config always expands the same way (the draw is seeded by the variant's name).
    again = load_config(dict(BASE, scenarios=[{"name": "calm", "weight": 2, "scenarios": []},
                                              {"name": "crash", "samples": 20, "scenarios": [
                       {"kind": "pod_crash", "services": {"choice": [["B"], ["C"], ["B", "D"]]},
                        "rate_per_pod_per_hour": {"uniform": [2.0, 10.0]}, "start_minute": {"uniform": [1, 5]},
                        "duration_minutes": 3}]}]))
    assert again.scenarios == cfg.scenarios
    MicroserviceCore(cfg, num_clusters=2)  # every drawn variant is a valid twin scenario


def test_pick_combines_entries():
    entries = [{"kind": "pod_crash", "services": ["B"], "kill": 1, "start_minute": 2},
               {"kind": "bottleneck", "service": "C", "capacity_factor": 0.5, "start_minute": 2, "duration_minutes": 3},
               {"kind": "pod_crash", "services": ["D"], "kill": 1, "start_minute": 4}]
    cfg = _config([{"name": "two", "samples": 12, "pick": 2, "scenarios": entries}])
    assert all(len(v.specs) == 2 for v in cfg.scenarios)
    assert len({tuple(s["kind"] + str(s.get("start_minute")) for s in v.specs) for v in cfg.scenarios}) > 1


@pytest.mark.parametrize("variant, words", [
    ({"name": "x", "samples": 0, "scenarios": []}, ["scenarios[0].samples", ">= 1"]),
    ({"name": "x", "pick": 3, "scenarios": [{"kind": "pod_crash", "services": ["B"], "kill": 1}]}, ["pick", "more than"]),
    ({"name": "x", "scenarios": [{"kind": "pod_crash", "services": ["B"], "kill": {"uniform": [3, 1]}}]},
     ["scenarios[0].scenarios.kill", "low <= high"]),
    ({"name": "x", "scenarios": [{"kind": "pod_crash", "services": {"choice": []}, "kill": 1}]}, ["choice", "non-empty"]),
    ({"name": "x", "scenarios": [{"kind": "pod_crash", "services": ["B"], "kill": {"uniform": [1, 2], "choice": [1]}}]},
     ["alone"]),
    ({"name": "x", "sample": 3, "scenarios": []}, ["sample", "samples"]),
])
def test_mistakes_are_named(variant, words):
    with pytest.raises(ConfigError) as err:
        _config([variant])
    assert all(w in str(err.value) for w in words), str(err.value)


def test_the_bundled_randomised_config_loads_and_runs():
    cfg = load_config("online_boutique_randomised")
    families = {v.name.split("/")[0] for v in cfg.scenarios}
    assert {"calm", "ddos_flood", "pod_crashes", "two_at_once"} <= families
    assert sum(len(v.specs) == 2 for v in cfg.scenarios) == 16
    MicroserviceCore(cfg, num_clusters=2)
