"""The autoscaling loop: every period, read the metrics, run the policy, scale the Deployments.

One period (:meth:`Autoscaler.step`):

1. read every Deployment's ``spec.replicas`` and pause annotation (Kubernetes API);
2. read the policy's metrics at one instant (Prometheus);
3. build the inputs as the env does (:class:`~controller.observation.ObservationBuilder`) and run
   the ONNX policy: ``replicas + replica_delta`` is its decision;
4. pass it through the safety rules (bounds, scale-down stabilisation, maximum change);
5. patch the ``scale`` of each Deployment whose count changes, unless paused or ``dry_run``.

If step 1 or 2 fails (API error, a Deployment missing, Prometheus down, a metric missing, NaN or
stale) the period **holds**: nothing is patched, the reason is logged and counted. A failed patch
of one Deployment is reported and does not stop the others. Nothing raised inside a period ends
the loop; SIGTERM (``stop``) ends it after the current period.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.kube import ApiFailure, DeploymentScaler
from controller.observation import ObservationBuilder
from controller.policy import Policy
from controller.prometheus import Hold, MetricReader
from controller.safety import SafetyRules
from controller.telemetry import Telemetry

log = logging.getLogger("clustergym.controller")


@dataclass
class Decision:
    """What one period did.

    Attributes:
        period: 0, 1, ... since the controller started.
        hold: Why nothing was done, or None.
        replicas: (S,) replicas read from the API (None if that failed).
        proposed: (S,) the policy's replicas before the safety rules (None on a hold).
        target: (S,) after the safety rules.
        changed: ``{deployment: (old, new)}`` patched (or, dry-run, that would be).
        paused: Deployments left alone for their pause annotation.
        failed: ``{deployment: reason}`` whose patch failed.
        inputs: The policy's inputs (for checks against the in-gym policy).
        query_s, inference_s, patch_s: Where the period's time went.
    """

    period: int
    hold: Hold | None = None
    replicas: np.ndarray | None = None
    proposed: np.ndarray | None = None
    target: np.ndarray | None = None
    changed: dict[str, tuple[int, int]] = field(default_factory=dict)
    paused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, np.ndarray] | None = None
    query_s: float = 0.0
    inference_s: float = 0.0
    patch_s: float = 0.0

    def line(self) -> str:
        """One log line."""
        if self.hold is not None:
            return f"period {self.period}: hold ({self.hold.reason}): {self.hold.detail}"
        moves = ", ".join(f"{k} {a}->{b}" for k, (a, b) in self.changed.items()) or "no change"
        extra = "".join([f"; paused: {', '.join(self.paused)}" if self.paused else "",
                         f"; failed: {', '.join(f'{k} ({v})' for k, v in self.failed.items())}" if self.failed else ""])
        return (f"period {self.period}: {moves}{extra} (query {self.query_s * 1e3:.0f} ms, inference "
                f"{self.inference_s * 1e3:.1f} ms, patch {self.patch_s * 1e3:.0f} ms)")


class Autoscaler:
    """Args:
        policy: An autoscaling :class:`~controller.policy.Policy`.
        reader: Its metrics.
        scaler: The namespace's Deployments.
        rules: The safety rules.
        telemetry: Counters and latencies (None: a private one).
        dry_run: Decide and log, patch nothing.
    """

    def __init__(self, policy: Policy, reader: MetricReader, scaler: DeploymentScaler, rules: SafetyRules,
                 telemetry: Telemetry | None = None, dry_run: bool = False):
        self.policy, self.reader, self.scaler, self.rules = policy, reader, scaler, rules
        self.builder = ObservationBuilder(policy.metadata)
        self.services = self.builder.services
        self.telemetry = telemetry or Telemetry(period_s=float(policy.metadata["action"]["step_seconds"]))
        self.dry_run = dry_run
        self.periods = 0

    def step(self, at: float | None = None) -> Decision:
        """One period (see the module docstring); never raises for cluster or metric trouble."""
        decision = Decision(self.periods)
        try:
            self._step(decision, at)
        except Exception as err:  # noqa: BLE001: a bug in one period must not end the loop
            log.exception("period %d failed", self.periods)
            decision.hold = Hold("internal_error", f"{type(err).__name__}: {err}")
        self.periods += 1
        self.telemetry.period_done(decision.hold.reason if decision.hold else None)
        return decision

    def _step(self, decision: Decision, at: float | None) -> None:
        t = self.telemetry
        try:
            states = self.scaler.read(self.services)
        except ApiFailure as err:
            t.api_errors.labels(err.reason).inc()
            decision.hold = Hold(err.reason, str(err))
            return
        missing = [s for s in self.services if s not in states]
        if missing:
            decision.hold = Hold("deployment_missing", f"no Deployment {', '.join(missing)} in namespace "
                                                       f"{self.scaler.namespace}")
            return
        replicas = np.array([states[s].replicas for s in self.services], dtype=np.int64)
        decision.replicas = replicas
        raw, decision.query_s = self.reader.read(at)
        t.query_seconds.observe(decision.query_s)
        if isinstance(raw, Hold):
            decision.hold = raw
            return
        decision.inputs = self.builder.inputs(raw, replicas, self.periods)
        started = time.perf_counter()
        out = self.policy.run(decision.inputs)
        decision.inference_s = time.perf_counter() - started
        t.inference_seconds.observe(decision.inference_s)
        decision.proposed = replicas + np.asarray(out["replica_delta"][0], dtype=np.int64)
        decision.target = self.rules.apply(replicas, decision.proposed, time.time() if at is None else at)
        started = time.perf_counter()
        for i in np.flatnonzero(decision.target != replicas):
            name, old, new = self.services[i], int(replicas[i]), int(decision.target[i])
            if states[name].paused:
                decision.paused.append(name)
                continue
            if not self.dry_run:
                try:
                    self.scaler.scale(name, new)
                except ApiFailure as err:
                    t.api_errors.labels(err.reason).inc()
                    decision.failed[name] = str(err)
                    continue
            decision.changed[name] = (old, new)
            t.changes.labels(name, "up" if new > old else "down").inc()
        decision.patch_s = time.perf_counter() - started
        t.patch_seconds.observe(decision.patch_s)

    def run(self, period_s: float, stop: threading.Event, max_periods: int | None = None) -> int:
        """Periods every ``period_s`` until ``stop`` is set (checked between periods) or
        ``max_periods`` are done; returns the number of periods run."""
        next_at = time.monotonic()
        done = 0
        while not stop.is_set() and (max_periods is None or done < max_periods):
            decision = self.step()
            (log.warning if decision.hold or decision.failed else log.info)("%s", decision.line())
            done += 1
            next_at += period_s
            stop.wait(max(0.0, next_at - time.monotonic()))
        return done


def describe(policy: Policy, args: Any) -> str:
    """The start-up line: what runs against what."""
    meta = policy.metadata
    return (f"policy {policy.path} ({meta.get('kind')}, {len(meta['observation']['services'])} services of "
            f"{meta['topology']['name']}), Prometheus {args.prometheus}, namespace {args.namespace}, every "
            f"{args.period:g} s{' (dry run: nothing is patched)' if args.dry_run else ''}")
