"""Fixtures of the controller tests: real servers on loopback ports."""

from tests.controller.prometheus_server import prometheus_server  # noqa: F401
