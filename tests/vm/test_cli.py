"""End-to-end: the twin's command line on the bundled real snapshot."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run([sys.executable, "-m", "digital_twin.vm", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_demo_prints_report_and_lower_fr_after_greedy(tmp_path):
    out = tmp_path / "after.json"
    proc = run("demo", "--budget", "10", "--save", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "memory_huge_free_mb disagrees on 67 of 472 NUMA nodes" in text
    before = float(re.search(r"before: FR\(16\) ([0-9.]+)", text).group(1))
    after = float(re.search(r"after: FR\(16\) ([0-9.]+)", text).group(1))
    assert before == 0.9770 and after < before
    final = json.loads(text.strip().splitlines()[-1])
    assert final["num_migrations"] == final["plan_length"] == 10
    assert round(final["fragment_rate"], 4) == after
    assert json.loads(out.read_text())["cluster_list"][0]["cluster_name"] == "cluster1"


def test_info_strict_refuses_with_path():
    proc = run("info", "data/vmr2l_snapshots/reset_vm_pm_id_clear2.json", "--strict")
    assert proc.returncode == 2
    assert "cluster_list[0].host_info[0].numa[1].memory_huge_free_mb: strict mode" in proc.stderr


def test_help_reads():
    proc = run("--help")
    assert proc.returncode == 0 and "demo" in proc.stdout and "info" in proc.stdout


def test_replay_saves_loadable_snapshots(tmp_path):
    proc = run("replay", "--hosts", "40", "--fractions", "0.8", "--seed", "3", "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Azure V1 dev -> 40 hosts, seed 3" in proc.stdout
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    from digital_twin.vm import load_snapshot

    snap = load_snapshot(files[0], strict=True)
    assert snap.clusters[0].num_hosts == 40 and snap.clusters[0].num_vms > 0
    fr = float(proc.stdout.split("FR ")[-1].split()[0])
    assert round(snap.fragment_rate(), 4) == fr


def test_demo_takes_the_planner_by_name():
    proc = run("demo", "--budget", "5", "--planner", "ffd", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "ffd plan (largest VMs first" in proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1])["plan_length"] <= 5
    bad = run("demo", "--planner", "gredy")
    assert bad.returncode == 2 and "unknown VM planner 'gredy'" in bad.stderr and "greedy" in bad.stderr
