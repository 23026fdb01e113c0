"""The twin in the loop: one twin cluster served to a real Prometheus as its Prometheus series.

:class:`TwinLoop` steps a held-out episode of the microservice twin and publishes each step's
metrics through :class:`~digital_twin.microservices.exporter.TwinExporter`, waiting until
Prometheus holds a whole ``rate()`` window of them, so the controller reads exactly that step.
"""

from __future__ import annotations

import time

import numpy as np

from digital_twin.microservices.exporter import TwinExporter
from envs.microservice import MicroserviceCore, batched_observation
from envs.microservice.config import load_config

CONFIG = "configs/microservice_autoscaling/online_boutique_failures.yaml"
SCRAPE_S = 0.25
WINDOW = "1s"
WINDOW_S = 1.0


class TwinLoop:
    def __init__(self, namespace: str, scenario: str = "ddos_flood", window_index: int = 3, seed: int = 0):
        self.core = MicroserviceCore(load_config(CONFIG), num_clusters=1, split="held_out")
        self.rng = np.random.default_rng(seed)
        self.core.reset(self.rng, options={"window_index": window_index, "scenario": scenario})
        self.exporter = TwinExporter(list(self.core.service_names), namespace)
        self.published_at = None

    @property
    def step_index(self) -> int:
        return int(self.core.state.step_index[0])

    def observation(self) -> dict[str, np.ndarray]:
        return batched_observation(self.core)

    def step(self, deltas: np.ndarray) -> None:
        self.core.step(np.asarray(deltas, dtype=np.int64).reshape(1, -1), self.rng)

    def publish(self) -> None:
        self.published_at = time.time()
        self.exporter.publish(self.core.raw_obs[0], at=self.published_at)

    def wait_for_window(self, prometheus) -> float:
        """Wait until Prometheus has scraped a whole rate() window of the published step; return
        the newest scrape's timestamp (the instant to query at: no extrapolation past it)."""
        series = f'kube_deployment_spec_replicas{{deployment="{self.core.service_names[0]}"}}'
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = prometheus.query(f"timestamp({series})")
            newest = float(result[0]["value"][1]) if result else 0.0
            if newest >= self.published_at + WINDOW_S + SCRAPE_S:
                # and the window is full (Prometheus' first scrapes come late)
                count = prometheus.query(f"count_over_time({series}[{WINDOW}])", at=newest)
                if count and float(count[0]["value"][1]) >= WINDOW_S / SCRAPE_S:
                    return newest
            time.sleep(SCRAPE_S / 2)
        raise AssertionError("Prometheus did not scrape the twin exporter for 30 s")

    def close(self) -> None:
        self.exporter.stop()
