"""The application's Deployments through the official Kubernetes client: read replicas, patch scale.

Only two API calls are made: ``list_namespaced_deployment`` (``spec.replicas`` and the pause
annotation of every Deployment of the namespace) and ``patch_namespaced_deployment_scale`` (the
``scale`` subresource: the least-privilege Role grants ``deployments/scale`` get and patch). API
errors never escape: transient ones (409 conflict, 429, 5xx, timeouts, connection errors) are
retried with exponential backoff, the others (403, 404, 422) are reported at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

PAUSE_ANNOTATION = "clustergym.io/paused"
"""A Deployment annotated ``clustergym.io/paused: "true"`` is left as it is."""

RETRIED = {409, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class DeploymentState:
    replicas: int
    paused: bool


class ApiFailure(RuntimeError):
    """A Kubernetes API call failed for good. ``reason``: a short label; ``status``: HTTP or None."""

    def __init__(self, reason: str, detail: str, status: int | None = None):
        super().__init__(detail)
        self.reason, self.status = reason, status


def load_api_client(kubeconfig: str | None = None, context: str | None = None):
    """An ``ApiClient`` from ``kubeconfig`` (a file), else in-cluster, else ``~/.kube/config``."""
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config(context=context)


def _classify(err: Exception) -> tuple[str, int | None, bool]:
    """``(reason, status, retry?)`` of an API exception."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(err, ApiException):
        status = int(err.status or 0)
        reason = {403: "api_forbidden", 404: "api_not_found", 409: "api_conflict", 422: "api_invalid"}.get(
            status, "api_error")
        return reason, status, status in RETRIED
    return "api_unreachable", None, True  # urllib3 timeouts and connection errors


class DeploymentScaler:
    """Reads and scales the Deployments of one namespace.

    Args:
        api_client: A ``kubernetes.client.ApiClient``.
        namespace: The application's namespace.
        attempts: Tries per call (transient errors only).
        backoff_s: First retry delay; doubled at each retry.
        timeout_s: Per-request timeout.
        sleep: The delay function (tests pass their own).
    """

    def __init__(self, api_client, namespace: str, attempts: int = 4, backoff_s: float = 0.2, timeout_s: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep):
        from kubernetes import client

        self.apps = client.AppsV1Api(api_client)
        self.namespace, self.attempts, self.backoff_s, self.timeout_s = namespace, attempts, backoff_s, timeout_s
        self.sleep = sleep

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as err:  # noqa: BLE001: every failure is classified, none escapes
                reason, status, retry = _classify(err)
                if not retry or attempt == self.attempts:
                    detail = getattr(err, "reason", None) or type(err).__name__
                    raise ApiFailure(reason, f"{what}: {f'HTTP {status} ' if status else ''}{detail}"
                                             f"{f' after {attempt} attempts' if attempt > 1 else ''}", status) from None
                self.sleep(delay)
                delay *= 2

    def read(self, services: list[str]) -> dict[str, DeploymentState]:
        """Replicas and pause flag of each service's Deployment (absent ones are left out)."""
        listing = self._call(f"list deployments in {self.namespace}",
                             lambda: self.apps.list_namespaced_deployment(self.namespace, _request_timeout=self.timeout_s))
        wanted = set(services)
        out = {}
        for d in listing.items:
            if d.metadata.name in wanted:
                annotations = d.metadata.annotations or {}
                out[d.metadata.name] = DeploymentState(int(d.spec.replicas if d.spec.replicas is not None else 1),
                                                       annotations.get(PAUSE_ANNOTATION, "").lower() == "true")
        return out

    def scale(self, name: str, replicas: int) -> None:
        body = {"spec": {"replicas": int(replicas)}}
        self._call(f"scale deployment {self.namespace}/{name} to {replicas}",
                   lambda: self.apps.patch_namespaced_deployment_scale(name, self.namespace, body,
                                                                       _request_timeout=self.timeout_s))
