"""Fixtures of the controller tests: real servers on loopback ports, and an exported policy."""

import pytest

from tests.controller.prometheus_server import prometheus_server  # noqa: F401


@pytest.fixture(scope="session")
def graph_policy(tmp_path_factory):
    """The shipped service-graph policy (Online Boutique), exported once per test run."""
    from controller.policy import load_policy
    from training.export import export_autoscaling

    out = tmp_path_factory.mktemp("policy") / "policy.onnx"
    export_autoscaling("models/autoscaling/ppo_graph", out)
    return load_policy(out, problem="autoscaling")
from tests.controller.kube_server import kube_cluster  # noqa: F401, E402


@pytest.fixture(scope="session")
def vm_policy(tmp_path_factory):
    """The shipped VM graph policy, exported once per test run."""
    from controller.policy import load_policy
    from training.export_vm import export_vm_model

    out = tmp_path_factory.mktemp("vm_policy") / "vm_policy.onnx"
    export_vm_model("models/vm_rescheduling/graph_bc", out)
    return load_policy(out, problem="vm_rescheduling")
