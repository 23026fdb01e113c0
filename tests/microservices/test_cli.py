"""End-to-end run of the CLI on a short held-out window."""

import re
import subprocess
import sys

import pytest


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "digital_twin.microservices", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "replay" in out.stdout and "calibrate" in out.stdout


def test_replay_prints_consistent_numbers_and_writes_png(tmp_path):
    png = tmp_path / "replay.png"
    minutes = 30
    out = subprocess.run(
        [sys.executable, "-m", "digital_twin.microservices", "--minutes", str(minutes), "--start-minute", "300",
         "--replicas", "4", "--ddos-fraction", "1.0", "--ddos-shape", "flood", "--out", str(png)],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = re.findall(r"^(.*?)\s+SLO-violation minutes\s+([\d.]+) of ([\d.]+)", out.stdout, flags=re.M)
    assert len(rows) == 3, out.stdout
    names = [r[0] for r in rows]
    violation = [float(r[1]) for r in rows]
    totals = {float(r[2]) for r in rows}
    assert totals == {float(minutes)}
    assert all(0.0 <= v <= minutes for v in violation)
    # Violation minutes are whole 15 s steps.
    assert all(abs(v * 4 - round(v * 4)) < 1e-9 for v in violation)
    # A flood at 100% of max-replica capacity for 6 minutes breaks the SLO at 4 fixed replicas
    # (the undisturbed run meets it at this quiet hour).
    assert "ddos" in names[1] and violation[1] >= violation[0] + 5
    # The third run is the ported Kubernetes rule (agents.autoscaling ``k8s_hpa``), its target in
    # integer percent as in evaluate.py.
    assert names[2].startswith("Kubernetes HPA (CPU target 60%)") and "ddos" in names[2]
    # Scaling up towards max replicas never does worse than holding 4 under the same flood
    # (measured: 6.25 and 6.25 minutes; the flood saturates even max replicas).
    assert violation[2] <= violation[1]
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"wrote {png}" in out.stdout


def test_replay_rejects_bad_window(tmp_path):
    out = subprocess.run([sys.executable, "-m", "digital_twin.microservices", "--start-minute", "5000",
                          "--out", str(tmp_path / "x.png")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: --start-minute 5000") and "0-1439" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "x.png").exists()


def test_hpa_target_is_an_integer_percent(tmp_path):
    """One unit for ``--hpa-target`` everywhere: percent of the CPU request, as Kubernetes writes it."""
    for value, message in (("0.6", "expected an integer, got '0.6'"), ("0", "must be a positive integer")):
        out = subprocess.run([sys.executable, "-m", "digital_twin.microservices", "--hpa-target", value,
                              "--minutes", "1", "--out", str(tmp_path / "x.png")], capture_output=True, text=True)
        assert out.returncode == 2 and "--hpa-target" in out.stderr and message in out.stderr, out.stderr


def test_the_compiled_kernels_are_cached_outside_the_source_tree():
    from pathlib import Path

    from digital_twin.microservices import kernels

    where = Path(kernels.step_clusters._cache._cache_path).resolve()
    assert Path(kernels.__file__).resolve().parent not in [where, *where.parents]


def test_peak_utilisation_default_is_the_configs():
    """One default for the load scale: the twin's constant, which the env configs also default to."""
    import os

    from digital_twin.microservices.traces import DEFAULT_PEAK_UTILISATION
    from envs.microservice.config import MicroserviceConfig

    out = subprocess.run([sys.executable, "-m", "digital_twin.microservices", "replay", "--help"],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    assert out.returncode == 0 and f"default {DEFAULT_PEAK_UTILISATION:g}, as the autoscaling configs" in out.stdout
    assert MicroserviceConfig.__dataclass_fields__["peak_utilisation"].default == DEFAULT_PEAK_UTILISATION == 0.7
