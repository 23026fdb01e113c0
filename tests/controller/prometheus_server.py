"""A real Prometheus (Debian's ``prometheus`` package) on a loopback port, for the controller tests.

``prometheus_server(targets, scrape_interval_s)`` starts one with its own config and storage in a
temporary folder, waits for ``/-/ready``, and is stopped when the test ends. A missing binary is
a failure naming the install script, not a skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/test_servers.sh (make test does)", pytrace=False)
    return path


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen
    folder: Path

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        body = requests.get(f"{self.url}/api/v1/query", params=params, timeout=5).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for_series(self, expr: str, timeout_s: float = 30.0) -> list[dict]:
        """Poll until ``expr`` returns a sample (the first scrape lands ~5 s after start)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"no samples of {expr} within {timeout_s} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_prometheus(targets: list[str], scrape_interval_s: float = 1.0) -> Prometheus:
    exe = binary("prometheus")
    folder = Path(tempfile.mkdtemp(prefix="clustergym-prometheus-"))
    interval = f"{int(scrape_interval_s * 1000)}ms"
    (folder / "prometheus.yml").write_text(
        f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
        f"scrape_configs:\n  - job_name: twin\n    static_configs:\n      - targets: {targets!r}\n")
    port = free_port()
    log = open(folder / "prometheus.log", "wb")
    process = subprocess.Popen([exe, f"--config.file={folder / 'prometheus.yml'}",
                                f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=log, stderr=subprocess.STDOUT)
    server = Prometheus(f"http://127.0.0.1:{port}", process, folder)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = (folder / "prometheus.log").read_text()[-2000:]
            server.stop()
            raise AssertionError(f"prometheus exited: {text}")
        try:
            if requests.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError("prometheus not ready within 30 s")


@pytest.fixture
def prometheus_server():
    """Factory: ``prometheus_server(targets, scrape_interval_s=1.0) -> Prometheus``; all stopped after the test."""
    started: list[Prometheus] = []

    def start(targets: list[str], scrape_interval_s: float = 1.0) -> Prometheus:
        started.append(start_prometheus(targets, scrape_interval_s))
        return started[-1]

    yield start
    for server in started:
        server.stop()
