"""End to end: the twin in the loop of a real Prometheus and a real Kubernetes API server.

The twin plays a held-out Online Boutique window with a DDoS flood; its exporter serves the
step's metrics (with the replicas the API server holds: the twin follows each Deployment's
``spec.replicas``); Prometheus scrapes it; the controller reads Prometheus, runs the exported
graph policy and patches the Deployments' ``scale``. Its decisions equal the in-gym policy's on
the same steps; when the exporter stops it holds and says why; a paused Deployment is left alone.
The command line runs the same loop, serves ``/metrics`` and ``/healthz`` and ends on SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import requests
from kubernetes import client

from controller.autoscaler import Autoscaler
from controller.kube import PAUSE_ANNOTATION, DeploymentScaler
from controller.observation import ObservationBuilder
from controller.prometheus import MetricReader, PrometheusClient
from controller.safety import SafetyRules
from tests.controller.kube_server import create_deployments
from tests.controller.prometheus_server import free_port
from tests.controller.twin_loop import SCRAPE_S, WINDOW, TwinLoop


def api_replicas(apps: client.AppsV1Api, namespace: str, services: list[str]) -> np.ndarray:
    return np.array([apps.read_namespaced_deployment_scale(s, namespace).spec.replicas for s in services])


def policy_delta(policy, obs: dict[str, np.ndarray]) -> np.ndarray:
    feed = {k: obs[k].astype(bool) if k == "action_mask" else obs[k] for k in policy.input_names}
    return policy.run(feed)["replica_delta"][0]


def test_controller_decides_as_the_gym_policy_and_holds_when_metrics_stop(kube_cluster, graph_policy,
                                                                           prometheus_server):
    namespace = "shop-loop"
    kube_cluster.create_namespace(namespace)
    apps = client.AppsV1Api(kube_cluster.api_client())
    loop = TwinLoop(namespace)
    services = list(loop.core.service_names)
    try:
        while loop.step_index < 38:  # the calm part in the env alone; the flood starts at step 40
            loop.step(policy_delta(graph_policy, loop.observation()))
        create_deployments(apps, namespace, dict(zip(services, loop.core.desired[0].tolist())))
        prometheus = prometheus_server([loop.exporter.address], SCRAPE_S)
        builder = ObservationBuilder(graph_policy.metadata)
        reader = MetricReader(PrometheusClient(prometheus.url), graph_policy.metadata, namespace, WINDOW,
                              max_age_s=2 * SCRAPE_S)
        autoscaler = Autoscaler(graph_policy, reader, DeploymentScaler(kube_cluster.api_client(), namespace),
                                SafetyRules(builder.low, builder.high_replicas))
        autoscaler.periods = loop.step_index  # it joins the episode here: the same progress
        latencies, moved = [], 0
        for _ in range(8):
            in_gym = policy_delta(graph_policy, loop.observation())
            loop.publish()
            decision = autoscaler.step(at=loop.wait_for_window(prometheus))
            assert decision.hold is None, decision.line()
            np.testing.assert_array_equal(decision.proposed - decision.replicas, in_gym)
            now = api_replicas(apps, namespace, services)
            np.testing.assert_array_equal(now, builder.clip(loop.core.desired[0] + in_gym))
            assert decision.changed == {s: (int(a), int(b)) for s, a, b in zip(services, decision.replicas, now) if a != b}
            moved += len(decision.changed)
            latencies.append((decision.query_s, decision.inference_s, decision.patch_s))
            loop.step(now - loop.core.desired[0])  # the twin follows the API server
        assert moved > 0
        print("query / inference / patch s per period (median):", np.median(latencies, axis=0).round(4).tolist())

        # A paused Deployment keeps its count whatever the policy says.
        paused = services[0]
        apps.patch_namespaced_deployment(paused, namespace, {"metadata": {"annotations": {PAUSE_ANNOTATION: "true"}}})
        apps.patch_namespaced_deployment_scale(paused, namespace, {"spec": {"replicas": int(builder.high_replicas[0])}})
        loop.step(api_replicas(apps, namespace, services) - loop.core.desired[0])
        loop.publish()
        decision = autoscaler.step(at=loop.wait_for_window(prometheus))
        assert decision.hold is None
        assert paused not in decision.changed
        assert api_replicas(apps, namespace, services)[0] == builder.high_replicas[0]
        if decision.target[0] != builder.high_replicas[0]:
            assert paused in decision.paused

        # The exporter stops: the samples age, the controller holds and changes nothing.
        before = api_replicas(apps, namespace, services)
        loop.exporter.stop()
        time.sleep(3 * SCRAPE_S)
        decision = autoscaler.step()
        assert decision.hold is not None and decision.hold.reason == "metric_stale", decision.line()
        assert "s old" in decision.line()
        np.testing.assert_array_equal(api_replicas(apps, namespace, services), before)
        assert autoscaler.telemetry.holds.labels("metric_stale")._value.get() == 1
    finally:
        loop.exporter.server.server_close()


def test_command_line_serves_metrics_and_stops_on_sigterm(kube_cluster, graph_policy, prometheus_server):
    namespace = "shop-cli"
    kube_cluster.create_namespace(namespace)
    apps = client.AppsV1Api(kube_cluster.api_client())
    loop = TwinLoop(namespace, scenario="calm")
    services = list(loop.core.service_names)
    try:
        create_deployments(apps, namespace, dict(zip(services, loop.core.desired[0].tolist())))
        prometheus = prometheus_server([loop.exporter.address], SCRAPE_S)
        loop.publish()
        loop.wait_for_window(prometheus)
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "controller", "autoscale", "--policy", str(graph_policy.path), "--prometheus",
             prometheus.url, "--namespace", namespace, "--kubeconfig", str(kube_cluster.admin_kubeconfig),
             "--period", "1", "--window", WINDOW, "--scrape-interval", str(SCRAPE_S), "--dry-run",
             "--metrics-address", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline, metrics = time.monotonic() + 60, ""
            while time.monotonic() < deadline and "clustergym_controller_decisions_total 2.0" not in metrics:
                time.sleep(0.3)
                try:
                    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                except requests.RequestException:
                    assert process.poll() is None, process.stdout.read()
            assert "clustergym_controller_decisions_total 2.0" in metrics
            assert "clustergym_controller_inference_seconds_count" in metrics
            assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            loop.exporter.stop()  # metrics stop: it holds, counts why, and stays healthy
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and 'holds_total{reason="metric_stale"}' not in metrics:
                time.sleep(0.3)
                metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            assert 'clustergym_controller_holds_total{reason="metric_stale"}' in metrics
            assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=30)
        assert process.returncode == 0, out
        assert "dry run" in out and "period 0:" in out and "hold (metric_stale)" in out and "stopped after" in out
        np.testing.assert_array_equal(api_replicas(apps, namespace, services), loop.core.desired[0])  # dry run
    finally:
        loop.exporter.server.server_close()
