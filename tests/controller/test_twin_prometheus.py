"""The controller's view of a live cluster equals the env's: the twin served to a real Prometheus.

Each step of a held-out Online Boutique episode with a DDoS flood is published by the twin's
exporter and scraped by Debian's Prometheus; the controller's reader queries the policy's PromQL
and builds the observation. It must equal the env's observation of that step, and the exported
policy must decide the same on both.
"""

from __future__ import annotations

import numpy as np
from controller.observation import ObservationBuilder
from controller.prometheus import Hold, MetricReader, PrometheusClient
from tests.controller.twin_loop import SCRAPE_S, WINDOW, TwinLoop


def test_observation_from_prometheus_equals_the_envs(graph_policy, prometheus_server):
    loop = TwinLoop("shop")
    try:
        prometheus = prometheus_server([loop.exporter.address], SCRAPE_S)
        builder = ObservationBuilder(graph_policy.metadata)
        reader = MetricReader(PrometheusClient(prometheus.url), graph_policy.metadata, "shop", WINDOW,
                              max_age_s=2 * SCRAPE_S)
        # Play the calm part with the policy in the env alone, then read through Prometheus
        # from just before the flood (minute 10 = step 40) into it.
        while loop.step_index < 38:
            obs = loop.observation()
            feed = {k: obs[k].astype(bool) if k == "action_mask" else obs[k] for k in graph_policy.input_names}
            loop.step(graph_policy.run(feed)["replica_delta"][0])
        worst, decisions, moved = 0.0, 0, 0
        for _ in range(8):
            env_obs = loop.observation()
            loop.publish()
            at = loop.wait_for_window(prometheus)
            raw, _ = reader.read(at)
            assert not isinstance(raw, Hold), raw
            replicas = loop.core.desired[0]
            inputs = builder.inputs(raw, replicas, loop.step_index)
            for key in ("adjacency", "edge_index", "progress", "action_mask"):
                np.testing.assert_array_equal(inputs[key], env_obs[key].astype(inputs[key].dtype), err_msg=key)
            diff = np.abs(inputs["metrics"] - env_obs["metrics"])[0]
            worst = max(worst, float(diff.max()))
            assert diff.max() < 1e-5, {name: (float(diff[:, j].max()), int(diff[:, j].argmax()))
                                       for j, name in enumerate(builder.metric_names) if diff[:, j].max() >= 1e-5}
            env_feed = {k: env_obs[k].astype(bool) if k == "action_mask" else env_obs[k] for k in graph_policy.input_names}
            ours = graph_policy.run(inputs)["replica_delta"][0]
            np.testing.assert_array_equal(ours, graph_policy.run(env_feed)["replica_delta"][0])
            decisions += 1
            moved += int((ours != 0).sum())
            loop.step(ours)
        assert worst < 1e-5, worst
        assert decisions == 8 and moved > 0
    finally:
        loop.close()


def test_it_holds_and_says_why(graph_policy, prometheus_server):
    """No decision on a NaN, a service without series, stale samples or Prometheus down."""
    import time

    from digital_twin.microservices.metrics import METRIC_INDEX

    loop = TwinLoop("shop")
    try:
        prometheus = prometheus_server([loop.exporter.address], SCRAPE_S)
        reader = MetricReader(PrometheusClient(prometheus.url), graph_policy.metadata, "shop", WINDOW,
                              max_age_s=2 * SCRAPE_S)
        raw = loop.core.raw_obs[0].copy()
        raw[3, METRIC_INDEX["request_rate"]] = 0.0  # error_rate = 0 / 0
        loop.exporter.publish(raw)
        loop.published_at = time.time()
        at = loop.wait_for_window(prometheus)
        hold, _ = reader.read(at)
        assert isinstance(hold, Hold) and hold.reason == "metric_nan", hold
        assert loop.core.service_names[3] in hold.detail

        ghost = dict(graph_policy.metadata, observation=dict(graph_policy.metadata["observation"]))
        ghost["observation"]["services"] = graph_policy.metadata["observation"]["services"] + ["ghost"]
        hold, _ = MetricReader(reader.client, ghost, "shop", WINDOW, 2 * SCRAPE_S).read(at)
        assert hold.reason == "metric_missing" and "ghost" in hold.detail

        loop.exporter.stop()  # the exporter stops: its last samples age
        time.sleep(3 * SCRAPE_S)
        hold, _ = reader.read()
        assert hold.reason == "metric_stale" and "s old" in hold.detail, hold

        prometheus.stop()
        hold, _ = reader.read()
        assert hold.reason == "prometheus_unavailable" and "unreachable" in hold.detail
    finally:
        loop.exporter.server.server_close()
