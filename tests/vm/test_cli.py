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
    # The stored-vs-recomputed report is one line; --verbose has the per-node details.
    report = [line for line in text.splitlines() if line.startswith("stored free values")]
    assert len(report) == 1 and "memory_huge_free_mb disagrees on 80 of 558 NUMA nodes (cluster1 67 of 472" in report[0]
    assert "cluster_list[0].host_info[0]" not in text
    assert text.count("FR(k), the fragment rate: the share of free vCPU") == 1
    before = float(re.search(r"before: FR\(16\) ([0-9.]+)", text).group(1))
    after = float(re.search(r"after: FR\(16\) ([0-9.]+)", text).group(1))
    assert before == 0.9770 and after < before
    final = json.loads(text.strip().splitlines()[-1])
    assert final["num_migrations"] == final["plan_length"] == 10
    assert round(final["fragment_rate"], 4) == after
    assert "stopped after" not in text  # the budget was used up
    assert json.loads(out.read_text())["cluster_list"][0]["cluster_name"] == "cluster1"


def test_verbose_lists_every_disagreement():
    proc = run("info", "data/vmr2l_snapshots/reset_vm_pm_id_clear2.json", "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(".memory_huge_free_mb (host ") == 80


def test_demo_says_why_the_plan_stopped_before_its_budget():
    proc = run("demo", "--budget", "50", "--show", "0")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^stopped after 15 of 50 migrations: no improving move left \(no single feasible migration "
                     r"lowers FR\(16\) below 0\.7934\)$", proc.stdout, flags=re.M), proc.stdout


def test_saved_snapshot_holds_only_possible_values(tmp_path):
    """big2's stored memory on pm_355 NUMA 1, carried through the greedy plan, went to -28604 MB."""
    from digital_twin.vm import load_snapshot

    out = tmp_path / "big2_after.json"
    proc = run("demo", "--snapshot", "data/vmr2l_snapshots/reset_vm_pm_id_clear_big2.json", "--save", str(out),
               "--show", "0")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    numa = [n for c in doc["cluster_list"] for h in c["host_info"] for n in h["numa"]]
    assert min(n["memory_huge_free_mb"] for n in numa) >= 0 and min(n["free_cpu"] for n in numa) >= 0
    saved = load_snapshot(out, strict=True)  # consistent with its placements everywhere
    assert saved.report.ok and round(saved.fragment_rate(), 4) == float(re.search(r"after: FR\(16\) ([0-9.]+)", proc.stdout).group(1))
    # The input's quirk stays visible in the report.
    line = next(line for line in proc.stdout.splitlines() if line.startswith("saved the rescheduled snapshot"))
    assert "written as the placed VMs leave them" in line
    assert "would have gone negative on 1: pm_355 NUMA 1 memory_huge_free_mb -28604" in line


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
