"""User mistakes on the twin command lines: one ``error:`` line, exit status 2, no traceback, nothing left behind.

One parametrised case list per class of mistake (missing file, wrong file content, number out of
range, name typo, key typo inside a file, output that cannot be written, flags that contradict each
other), run through ``main(argv)`` of ``python -m digital_twin.vm`` and ``python -m
digital_twin.microservices``; then the shared helpers of :mod:`digital_twin.cli` themselves.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from digital_twin import cli
from digital_twin.microservices import __main__ as ms_cli
from digital_twin.vm import __main__ as vm_cli

ROOT = Path(__file__).resolve().parents[1]
CLEAR2 = str(ROOT / "data/vmr2l_snapshots/reset_vm_pm_id_clear2.json")


@pytest.fixture()
def files(tmp_path):
    """Malformed inputs, a file where a folder is expected, and a path for outputs that must not appear."""
    (tmp_path / "bad.yaml").write_text("a: b\n  c: d\n")
    (tmp_path / "typo_scenario.yaml").write_text("scenarios:\n  - kind: ddos\n    strat_minute: 3\n    rate: 5\n")
    (tmp_path / "typo_topology.yaml").write_text((ROOT / "digital_twin/microservices/topologies/chain4.yaml")
                                                 .read_text().replace("services:", "servces:", 1))
    (tmp_path / "calibration.yaml").write_text("services:\n  nosuch:\n    cpu_seconds_per_request: 0.1\n")
    (tmp_path / "a_file").write_text("x")
    return tmp_path


def run(capsys, module, argv, tmp_path):
    """``module.main(argv)``: (status, stdout, stderr); also checks the error is one clean line."""
    try:
        status = module.main(argv)
    except SystemExit as exc:  # argparse's own checks exit (as under ``python -m``)
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not (tmp_path / "never").exists(), "a refused run left an output folder behind"
    return out, lines[0]


def cases(*items):
    return pytest.mark.parametrize("module, argv, expected", items, ids=[" ".join(i[1]) for i in items])


VM, MS = vm_cli, ms_cli
PNG = ["--out", "{tmp}/never/x.png"]


def expand(argv, tmp_path):
    return [a.replace("{tmp}", str(tmp_path)) for a in argv]


@cases(
    (VM, ["demo", "--snapshot", "missing.json"], "argument --snapshot: missing.json: no such file"),
    (VM, ["info", "missing.json"], "argument snapshot: missing.json: no such file"),
    (VM, ["demo", "--snapshot", "{tmp}"], "not a file"),
    (MS, ["--scenario", "missing.yaml", *PNG], "argument --scenario: missing.yaml: no such file"),
    (MS, ["--calibration", "missing.yaml", *PNG], "argument --calibration: missing.yaml: no such file"),
)
def test_missing_input_file(capsys, files, module, argv, expected):
    _, line = run(capsys, module, expand(argv, files), files)
    assert expected in line


@cases(
    (VM, ["demo", "--snapshot", "README.md"], "README.md: line 1 column 1: invalid JSON"),
    (VM, ["info", "/bin/sh"], "/bin/sh: byte 40: not UTF-8 text"),  # digital_twin/vm/snapshot.py says so
    (MS, ["--topology", "README.md", *PNG], "--topology README.md: not valid YAML at line"),
    (MS, ["--topology", "{tmp}/bad.yaml", *PNG], "bad.yaml: not valid YAML at line 2 column 4"),
    (MS, ["--scenario", "{tmp}/bad.yaml", *PNG], "--scenario"),
    (MS, ["--calibration", "README.md", *PNG], "--calibration README.md: not valid YAML"),
)
def test_file_that_is_not_the_expected_format(capsys, files, module, argv, expected):
    _, line = run(capsys, module, expand(argv, files), files)
    assert expected in line


@cases(
    (VM, ["demo", "--budget", "-3"], "argument --budget: must be an integer >= 0, got -3"),
    (VM, ["demo", "--show", "-1"], "argument --show"),
    (VM, ["replay", "--hosts", "0"], "argument --hosts: must be a positive integer (>= 1), got 0"),
    (VM, ["replay", "--fractions", "0.5", "1.5"], "argument --fractions: must be a fraction in [0, 1], got 1.5"),
    (VM, ["replay", "--load-scale", "2"], "argument --load-scale: must be in (0, 1]"),
    (VM, ["replay", "--target-utilisation", "0"], "argument --target-utilisation"),
    (VM, ["replay", "--seed", "-1"], "argument --seed"),
    (VM, ["replay", "--hosts", "ten"], "expected an integer, got 'ten'"),
    (MS, ["--replicas", "0", *PNG], "argument --replicas: must be a positive integer"),
    (MS, ["--replicas", "11", *PNG], "--replicas 11: the services of online_boutique scale between 1 and 10"),
    (MS, ["--minutes", "0", *PNG], "argument --minutes"),
    (MS, ["--start-minute", "5000", *PNG], "--start-minute 5000: the day has 1440 minutes; give 0-1439"),
    (MS, ["--hpa-target", "0", *PNG], "argument --hpa-target"),
    (MS, ["--ddos-fraction", "-1", *PNG], "argument --ddos-fraction"),
    (MS, ["--ddos-duration", "0", *PNG], "argument --ddos-duration: must be a number > 0"),
    (MS, ["--peak-utilisation", "nan", *PNG], "expected a finite number"),
)
def test_number_out_of_range(capsys, files, module, argv, expected):
    _, line = run(capsys, module, expand(argv, files), files)
    assert expected in line


@cases(
    (MS, ["--topology", "chain5", *PNG], "not a built-in topology (chain4, online_boutique) and no such file "
                                         "(did you mean 'chain4'?)"),
    (VM, ["demo", "--planner", "gredy"], "unknown VM planner 'gredy'; choose one of"),
    (VM, ["demo", "--budjet", "5"], "unrecognized arguments: --budjet 5 (did you mean '--budget'?)"),
    (VM, ["dmeo"], "invalid choice: 'dmeo'"),
    (VM, ["replay", "--split", "train"], "invalid choice: 'train' (choose from 'dev', 'test')"),
    (MS, ["--day", "1998-07-01", *PNG], "invalid choice"),
)
def test_name_typo(capsys, files, module, argv, expected):
    _, line = run(capsys, module, expand(argv, files), files)
    assert expected in line


@cases(
    (MS, ["--scenario", "{tmp}/typo_scenario.yaml", "--minutes", "5", *PNG],
     "key 'scenarios[0].strat_minute': unknown key for kind 'ddos'; expected ["),
    (MS, ["--topology", "{tmp}/typo_topology.yaml", *PNG], "key 'servces': unknown key; expected one of"),
    (MS, ["--calibration", "{tmp}/calibration.yaml", *PNG], "unknown service 'nosuch' in topology"),
)
def test_key_typo_inside_a_file(capsys, files, module, argv, expected):
    _, line = run(capsys, module, expand(argv, files), files)
    assert expected in line


@cases(
    (VM, ["demo", "--save", "{tmp}/never/x.json"], "--save"),
    (VM, ["demo", "--save", "{tmp}"], "is a folder; give a file path"),
    (VM, ["replay", "--hosts", "5", "--out-dir", "{tmp}/a_file/never"], "is a file, so the folder cannot be created"),
    (MS, ["--out", "{tmp}/never/x.txt"], "unsupported file type '.txt'; use one of .png"),
    (MS, ["calibrate", "--out", "{tmp}/never/x.png"], "use one of .yaml, .yml"),
    (MS, ["--out", "/proc/never/x.png"], "cannot write in /proc"),
)
def test_output_that_cannot_be_written_is_refused_before_the_work(capsys, files, module, argv, expected):
    out, line = run(capsys, module, expand(argv, files), files)
    assert expected in line
    assert out == ""  # refused before loading, planning or replaying anything


@cases(
    (MS, ["--start-minute", "1430", "--minutes", "30", *PNG],
     "the window runs past the end of the day (1440 minutes); from minute 1430 at most 10 minutes fit"),
    (MS, ["--scenario", "{tmp}/typo_scenario.yaml", "--ddos-shape", "flood", *PNG],
     "--ddos-shape: set up the default DDoS and do not apply with --scenario"),
    (MS, ["--minutes", "10", "--ddos-start", "20", *PNG], "--ddos-start 20: the window is 10 minutes long"),
    (VM, ["replay", "--fractions", "0.5", "0.5", "--out-dir", "{tmp}/never"], "same file"),
)
def test_flags_that_contradict_each_other(capsys, files, module, argv, expected):
    _, line = run(capsys, module, expand(argv, files), files)
    assert expected in line


def test_debug_adds_the_traceback(capsys):
    assert ms_cli.main(["--topology", "chain5", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: --topology 'chain5'")


# ---------------------------------------------------------------------- the explanations
def test_replicas_clipped_for_some_services_say_so(capsys):
    topology = ms_cli.load_topology("online_boutique")
    label = ms_cli._check_replicas(5, topology)
    assert label == "fixed 5 replicas" and capsys.readouterr().err == ""  # redis-cart is fixed at 1: no note
    import dataclasses

    narrower = dataclasses.replace(topology, max_replicas=np.where(np.arange(topology.num_services) == 0, 3,
                                                                   topology.max_replicas))
    assert ms_cli._check_replicas(5, narrower) == "fixed 5 replicas (clipped)"
    assert "note: --replicas 5 is outside the bounds of 1 services, which run at their bound instead: frontend 3" \
        in capsys.readouterr().err


def test_first_run_says_the_kernel_compiles(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(ms_cli, "_kernels_cached", lambda: (False, "/cache/dir"))
    assert ms_cli.main(["--minutes", "1", "--out", str(tmp_path / "x.png")]) == 0
    err = capsys.readouterr().err
    assert err.count("note: compiling the twin's step kernel with numba (first run only") == 1
    assert "/cache/dir" in err


def test_kernel_cache_check_answers():
    cached, where = ms_cli._kernels_cached()
    assert isinstance(cached, bool) and where


# ---------------------------------------------------------------------- digital_twin.cli helpers
@pytest.mark.parametrize("kind, good, bad", [
    (cli.positive_int, [("1", 1), ("12", 12)], ["0", "-1", "1.5", "x"]),
    (cli.non_negative_int, [("0", 0)], ["-1", "x"]),
    (cli.positive_float, [("0.5", 0.5)], ["0", "-2", "inf", "nan"]),
    (cli.non_negative_float, [("0", 0.0)], ["-0.1"]),
    (cli.fraction, [("0", 0.0), ("1", 1.0)], ["1.5", "-0.1"]),
    (cli.unit_interval, [("1", 1.0), ("0.2", 0.2)], ["0", "1.01"]),
])
def test_argparse_types(kind, good, bad):
    for text, value in good:
        assert kind(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)


def test_writable_checks_create_nothing(tmp_path):
    assert cli.check_writable_file(tmp_path / "new" / "deeper" / "x.png", "--out") == tmp_path / "new" / "deeper" / "x.png"
    assert cli.check_writable_dir(tmp_path / "new" / "dir", "--out-dir")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(cli.UsageError, match="does not exist"):
        cli.check_writable_file(tmp_path / "new" / "x.json", "--save", create_parents=False)


def test_one_line_and_run_cli(capsys):
    assert cli.one_line("a\n   b  c\n\n d") == "a; b c; d"

    class Mine(ValueError):
        pass

    def fail():
        raise Mine("file.yaml: key 'x':\n  unknown")

    assert cli.run_cli(fail, user_errors=(Mine,)) == 2
    assert capsys.readouterr().err == "error: file.yaml: key 'x':; unknown\n"
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        cli.run_cli(lambda: (_ for _ in ()).throw(RuntimeError("bug")), user_errors=(Mine,))
    assert cli.run_cli(lambda: None) == 0


def test_config_error_is_a_usage_error_and_a_value_error(capsys):
    err = cli.unknown_key("c.yaml", "budjet", ["budget", "max_vms"], prefix="env.")
    assert isinstance(err, cli.ConfigError) and isinstance(err, cli.UsageError) and isinstance(err, ValueError)
    assert str(err) == "c.yaml: unknown key 'env.budjet' (did you mean 'budget'?); allowed under env: budget, max_vms"
    assert cli.run_cli(lambda: (_ for _ in ()).throw(err)) == 2  # a config mistake is a user error on a command line
    assert capsys.readouterr().err.startswith("error: c.yaml: unknown key 'env.budjet'")
    with pytest.raises(cli.ConfigError, match=r"x: unknown key 'zzz'; allowed under a thing: a, b"):
        cli.check_keys("x", {"a": 1, "zzz": 2}, ["b", "a"], section="a thing")  # no close match: no suggestion
    with pytest.raises(cli.ConfigError, match=r"x: 'env' must be a mapping of a, b; got list"):
        cli.check_keys("x", [1, 2], ["a", "b"], prefix="env.")
    cli.check_keys("x", {"a": 1}, ["a", "b"])


def test_help_formatter_shows_each_default_once():
    parser = cli.ArgumentParser(prog="p", formatter_class=cli.HelpFormatter, description="95% sure")
    parser.add_argument("--a", type=int, default=3, help="plain")
    parser.add_argument("--b", default=None, help="explained (default: the config's)")
    parser.add_argument("--c", nargs="+", type=int, default=[0, 1], help="a list")
    parser.add_argument("--d", default="50%", help="a share")
    parser.add_argument("--e", action="store_true", help="a switch")
    text = parser.format_help()
    assert "95% sure" in text and "plain (default: 3)" in text and "a list (default: 0 1)" in text
    assert "explained (default: the config's)" in text and "(default: None)" not in text
    assert "a share (default: 50%)" in text and "a switch\n" in text and "False" not in text
