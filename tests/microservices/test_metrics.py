import subprocess
import sys

import pytest

from digital_twin.microservices import METRIC_INDEX, METRIC_NAMES, METRICS, promql


def test_metric_set_declared_once_and_consistent():
    assert len(set(METRIC_NAMES)) == len(METRICS)
    assert [METRIC_INDEX[m.name] for m in METRICS] == list(range(len(METRICS)))
    required = {"replicas_desired", "replicas_ready", "replicas_pending", "cpu_usage_cores", "cpu_requests_cores",
                "memory_working_set_bytes", "request_rate", "error_rate", "latency_p50_seconds",
                "latency_p95_seconds", "latency_p99_seconds", "pending_requests"}
    assert required <= set(METRIC_NAMES)
    for m in METRICS:
        assert m.unit and m.description


def test_promql_renders_service_namespace_window():
    q = promql("cpu_usage_cores", "cart", namespace="shop", window="30s")
    assert 'namespace="shop"' in q and "cart-" in q and "[30s]" in q and "{" in q
    q = promql("latency_p95_seconds", "frontend")
    assert q.startswith("histogram_quantile(0.95") and 'destination_workload="frontend"' in q
    with pytest.raises(KeyError, match="unknown metric"):
        promql("nope", "cart")


def test_import_pulls_no_rl_stack():
    code = ("import sys, digital_twin.microservices, digital_twin.microservices.__main__; "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('torch','gymnasium','torch_geometric','pettingzoo')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
