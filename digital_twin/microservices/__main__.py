"""Command line of the microservice twin.

``python -m digital_twin.microservices [replay] ...`` replays a held-out worldcup98 day on a
topology (default Online Boutique) three times: fixed replicas; fixed replicas under a DDoS
scenario; the Kubernetes HPA rule on CPU under the same DDoS. It prints SLO-violation minutes
per run and writes a PNG of load, end-to-end p95 latency and Ready replicas over time.

The twin owns no decision rule: the runs take the ``static`` and ``k8s_hpa`` policies of
``agents.autoscaling`` by name (the ported Kubernetes controller, with its 300 s scale-down
stabilisation and scale-up limit; ``evaluate.py`` compares all the policies).

``python -m digital_twin.microservices calibrate`` fits service demand and the latency-vs-load
relation from the Huawei serverless trace and writes the parameters to YAML.

User mistakes (a flag out of range, a missing or malformed topology / scenario / calibration
file, an output path that cannot be written) end in one ``error:`` line and exit status 2
(:mod:`digital_twin.cli`); ``--debug`` adds the traceback. The first run compiles the twin's
step kernel (numba, some 15-20 s, cached after that) and says so on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from digital_twin.cli import (
    ArgumentParser, UsageError, add_debug_flag, check_writable_file, did_you_mean, existing_file, non_negative_float,
    non_negative_int, positive_float, positive_int, read_yaml, run_cli,
)
from digital_twin.microservices.metrics import METRIC_INDEX
from digital_twin.microservices.scenarios import ScenarioError, compile_scenarios, load_scenarios
from digital_twin.microservices.topology import Topology, TopologyError, builtin_topologies, load_topology
from digital_twin.microservices.traces import (
    DEFAULT_PEAK_UTILISATION, WORLDCUP98_HELDOUT_DAYS, build_load_curve, load_worldcup98,
)
from digital_twin.microservices.twin import MicroserviceTwin


PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".eps", ".ps")
"""Figure formats ``--out`` takes (matplotlib picks the format from the name)."""

DAY_MINUTES = 1440


def _replay_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("replay", help="replay a held-out worldcup98 day (default command)", parents=[common],
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topology", default="online_boutique",
                   help=f"built-in name ({', '.join(builtin_topologies())}) or YAML path (default: online_boutique)")
    p.add_argument("--calibration", type=existing_file, default=None,
                   help="calibration YAML (from the calibrate command) replacing CPU-seconds per request")
    p.add_argument("--day", default="1998-06-30", choices=WORLDCUP98_HELDOUT_DAYS, help="held-out worldcup98 day (default 1998-06-30)")
    p.add_argument("--start-minute", type=non_negative_int, default=0,
                   help=f"first minute of the day to replay, 0-{DAY_MINUTES - 1} (default 0)")
    p.add_argument("--minutes", type=positive_int, default=None,
                   help="minutes to replay; the window must end within the day (default: the rest of the day)")
    p.add_argument("--replicas", type=positive_int, default=5,
                   help="fixed replica count per service, within the services' bounds (services of a fixed "
                        "size keep theirs; default 5)")
    p.add_argument("--peak-utilisation", type=positive_float, default=DEFAULT_PEAK_UTILISATION,
                   help="train-split p99 minute mapped to this share of entry capacity at max replicas (> 0; "
                        f"default {DEFAULT_PEAK_UTILISATION:g}, as the autoscaling configs)")
    p.add_argument("--scenario", type=existing_file, default=None,
                   help="scenario YAML for the attacked runs (default: a DDoS, see --ddos-*)")
    p.add_argument("--ddos-fraction", type=non_negative_float, default=None,
                   help="DDoS rate as a share of entry capacity at max replicas (default 0.5)")
    p.add_argument("--ddos-shape", choices=("flood", "pulse"), default=None, help="DDoS shape (default pulse)")
    p.add_argument("--ddos-start", type=non_negative_float, default=None,
                   help="DDoS start, minutes into the window (default: 40%%)")
    p.add_argument("--ddos-duration", type=positive_float, default=None,
                   help="DDoS length in minutes, > 0 (default: 20%% of the window)")
    p.add_argument("--hpa-target", type=positive_int, default=60,
                   help="HPA CPU averageUtilization target of the third run, integer percent of the request (default 60)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the twin's random draws (default 0)")
    p.add_argument("--out", type=Path, default=Path("results/microservice_twin_replay.png"),
                   help=f"figure path, one of {' '.join(PLOT_SUFFIXES)} (default: results/microservice_twin_replay.png)")


def _calibrate_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("calibrate", parents=[common],
                       help="fit demand and latency-vs-load from the Huawei trace; write YAML")
    p.add_argument("--out", type=Path, default=Path("results/huawei_calibration.yaml"),
                   help="YAML path (default: results/huawei_calibration.yaml)")
    p.add_argument("--topology", default="online_boutique",
                   help="topology whose services get fitted demands (default online_boutique)")


def _load_topology(name_or_path: str) -> Topology:
    """``--topology``: a built-in name or a YAML file; a mistake is a one-line :class:`UsageError`."""
    builtins = builtin_topologies()
    if name_or_path in builtins:
        return load_topology(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        hint = did_you_mean(name_or_path, builtins)
        raise UsageError(f"--topology {name_or_path!r}: not a built-in topology ({', '.join(builtins)}) "
                         f"and no such file{hint}")
    read_yaml(path, "--topology")  # one-line message for a file that is not YAML at all
    return load_topology(path)


def _apply_calibration(topology: Topology, path: Path) -> Topology:
    from digital_twin.microservices.calibration import apply_calibration

    read_yaml(path, "--calibration")
    try:
        return apply_calibration(topology, path)
    except (KeyError, ValueError, TypeError) as err:
        reason = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise UsageError(f"--calibration {path}: {reason}") from None


def _window(args: argparse.Namespace, day_minutes: int) -> tuple[int, int]:
    """``[start, end)`` minutes of the day; a window past the day's end is refused, never cut short."""
    start = args.start_minute
    if start >= day_minutes:
        raise UsageError(f"--start-minute {start}: the day has {day_minutes} minutes; give 0-{day_minutes - 1}")
    if args.minutes is None:
        return start, day_minutes
    if start + args.minutes > day_minutes:
        raise UsageError(f"--start-minute {start} --minutes {args.minutes}: the window runs past the end of the day "
                         f"({day_minutes} minutes); from minute {start} at most {day_minutes - start} minutes fit "
                         f"(or omit --minutes for the rest of the day)")
    return start, start + args.minutes


def _check_replicas(replicas: int, topology: Topology) -> str:
    """Refuse a count no scalable service can run; return the label of the fixed runs."""
    low, high = topology.min_replicas, topology.max_replicas
    scalable = low < high
    if not scalable.any():
        return f"fixed replicas (all services of {topology.name} have a fixed size)"
    lo, hi = int(low[scalable].min()), int(high[scalable].max())
    if not lo <= replicas <= hi:
        raise UsageError(f"--replicas {replicas}: the services of {topology.name} scale between {lo} and {hi} "
                         f"replicas; give a count in {lo}..{hi}")
    clipped = [f"{name} {int(np.clip(replicas, low[i], high[i]))}" for i, name in enumerate(topology.service_names)
               if scalable[i] and not low[i] <= replicas <= high[i]]
    if clipped:
        print(f"note: --replicas {replicas} is outside the bounds of {len(clipped)} services, which run at their "
              f"bound instead: {', '.join(clipped)}", file=sys.stderr)
        return f"fixed {replicas} replicas (clipped)"
    return f"fixed {replicas} replicas"


def _kernels_cached() -> tuple[bool, str]:
    """Whether the twin's compiled kernels are in numba's cache (else the first step compiles them), and where."""
    from digital_twin.microservices import kernels

    try:
        caches = [kernels.step_clusters._cache, kernels.schedule_pending._cache]
        # An index is valid only for the kernel source it was built from (numba checks the stamp).
        return all(bool(c._cache_file._load_index()) for c in caches), str(caches[0]._cache_path)
    except Exception:  # numba's cache layout is not public API: when unsure, say it may compile
        return False, "numba's cache"


def _say_if_compiling() -> None:
    cached, where = _kernels_cached()
    if not cached:
        print(f"note: compiling the twin's step kernel with numba (first run only, some 15-20 s; "
              f"cached in {where})", file=sys.stderr, flush=True)


class _TwinView:
    """The twin's last observation as the view an autoscaling policy reads (``agents.autoscaling.ClusterView``).

    Only observed metrics: ``desired`` is the ``replicas_desired`` metric, as a controller reads
    ``spec.replicas`` from the API server.

    Shapes: raw_obs (B, S, M); low, high (S,); desired (B, S).
    """

    def __init__(self, twin: MicroserviceTwin, obs: np.ndarray):
        self.topology = twin.topology
        self.low = twin.topology.min_replicas.astype(np.int64)
        self.high = twin.topology.max_replicas.astype(np.int64)
        self.observe(obs)

    def observe(self, obs: np.ndarray) -> None:
        self.raw_obs = obs
        self.desired = np.rint(obs[:, :, METRIC_INDEX["replicas_desired"]]).astype(np.int64)


def _run(twin: MicroserviceTwin, policy, seed: int) -> dict[str, np.ndarray]:
    """Replay the twin's load under ``policy`` (an ``agents.autoscaling.AutoscalingPolicy``).

    Returns:
        Per-step series of the first cluster, each (T,).
    """
    obs, info = twin.reset(seed=seed)
    view = _TwinView(twin, obs)
    policy.reset(view)
    series = {k: [] for k in ("p95", "error", "ready", "slo", "offered", "dropped", "pod_seconds")}
    for t in range(twin.num_steps):
        obs, info = twin.step(policy.desired_replicas(view, now_s=t * twin.config.step_seconds))
        view.observe(obs)
        series["p95"].append(info["e2e_latency_p95"][0])
        series["error"].append(info["e2e_error_rate"][0])
        series["ready"].append(obs[0, :, twin.metric_index["replicas_ready"]].sum())
        series["slo"].append(info["slo_violated"][0])
        series["offered"].append(info["offered_rate"][0])
        series["dropped"].append(info["dropped"][0, twin.topology.entry_index])
        series["pod_seconds"].append(info["allocated_pod_seconds"][0].sum())
    return {k: np.array(v) for k, v in series.items()}


def replay(args: argparse.Namespace) -> int:
    check_writable_file(args.out, "--out", suffixes=PLOT_SUFFIXES)
    ddos_flags = {"--ddos-fraction": args.ddos_fraction, "--ddos-shape": args.ddos_shape,
                  "--ddos-start": args.ddos_start, "--ddos-duration": args.ddos_duration}
    if args.scenario is not None and any(v is not None for v in ddos_flags.values()):
        given = ", ".join(k for k, v in ddos_flags.items() if v is not None)
        raise UsageError(f"{given}: set up the default DDoS and do not apply with --scenario {args.scenario}; "
                         "put the DDoS in the scenario file instead")
    # The rules live in the agents layer; imported here so the twin itself never needs it.
    from agents.autoscaling import make_policy

    topology = _load_topology(args.topology)
    if args.calibration is not None:
        topology = _apply_calibration(topology, args.calibration)
    fixed = _check_replicas(args.replicas, topology)
    if args.scenario is not None:  # read (not yet checked against the window) before the trace is loaded
        read_yaml(args.scenario, "--scenario")
        specs = load_scenarios(args.scenario)
    trace = load_worldcup98()
    day = trace.select(day=args.day)
    first, end = _window(args, len(day.counts))
    window = type(day)(day.source, day.minutes[first:end], day.counts[first:end], day.split_of_minute[first:end])
    curve = build_load_curve(trace, topology, window, peak_utilisation=args.peak_utilisation)
    minutes = end - first
    if args.scenario is None:
        if args.ddos_start is not None and args.ddos_start >= minutes:
            raise UsageError(f"--ddos-start {args.ddos_start:g}: the window is {minutes} minutes long; "
                             f"give a start in [0, {minutes})")
        shape = args.ddos_shape or "pulse"
        start = 0.4 * minutes if args.ddos_start is None else args.ddos_start
        duration = 0.2 * minutes if args.ddos_duration is None else args.ddos_duration
        specs = [{"kind": "ddos", "name": f"ddos-{shape}", "start_minute": start,
                  "duration_minutes": max(duration, 0.25),
                  "capacity_fraction": 0.5 if args.ddos_fraction is None else args.ddos_fraction,
                  "shape": shape, "period_seconds": 120, "duty": 0.5}]
    attacked = compile_scenarios(specs, topology, len(curve), curve.step_seconds, source=str(args.scenario or "<cli>"))
    for i, spec in enumerate(specs):
        if float(spec.get("start_minute", 0.0)) >= minutes:
            print(f"note: {args.scenario}: scenarios[{i}] ({spec.get('name', spec.get('kind'))}) starts at minute "
                  f"{float(spec['start_minute']):g}, after the {minutes}-minute window ends: it has no effect",
                  file=sys.stderr)
    initial = np.clip(args.replicas, topology.min_replicas, topology.max_replicas)
    attack = "+".join(attacked.names)
    runs = {
        fixed: (None, make_policy("static", static_replicas=args.replicas)),
        f"{fixed} + {attack}": (attacked, make_policy("static", static_replicas=args.replicas)),
        f"Kubernetes HPA (CPU target {args.hpa_target}%) + {attack}": (
            attacked, make_policy("k8s_hpa", hpa_target=args.hpa_target)),
    }
    step_minutes = curve.step_seconds / 60.0
    print(f"topology {topology.name} ({topology.num_services} services), worldcup98 held-out day {args.day} "
          f"minutes {first}-{end} ({len(curve)} steps of {curve.step_seconds:g} s), "
          f"load {curve.rates.min():.1f}-{curve.rates.max():.1f} req/s (entry capacity at max replicas "
          f"{topology.entry_capacity():.1f}), SLO p95 <= {topology.slo_latency_p95_seconds:g} s and errors <= "
          f"{topology.slo_error_rate:.0%}")
    results = {}
    _say_if_compiling()
    for name, (schedule, policy) in runs.items():
        twin = MicroserviceTwin(topology, curve, schedule, batch_size=1, initial_replicas=initial)
        res = _run(twin, policy, args.seed)
        results[name] = res
        violation_minutes = res["slo"].sum() * step_minutes
        print(f"{name:<45s} SLO-violation minutes {violation_minutes:7.2f} of {len(curve) * step_minutes:.2f} | "
              f"p95 median {np.median(res['p95']):.3f} s max {res['p95'].max():.3f} s | mean error rate "
              f"{res['error'].mean():.2%} | pod-hours {res['pod_seconds'].sum() / 3600:.1f}")
    _plot(args.out, curve, attacked, results, topology)
    print(f"wrote {args.out}")
    return 0


def _plot(out: Path, curve, attacked, results, topology) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    minutes = np.arange(len(curve)) * curve.step_seconds / 60.0
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    axes[0].plot(minutes, curve.rates, label="worldcup98 load", color="black", lw=1)
    axes[0].plot(minutes, curve.rates + attacked.attack_rate[: len(curve)], label="load + attack", color="red", lw=0.8, alpha=0.7)
    axes[0].set_ylabel("entry requests/s")
    axes[0].legend(loc="upper left", fontsize=8)
    for name, res in results.items():
        axes[1].plot(minutes, res["p95"], label=name, lw=0.9)
        axes[2].plot(minutes, res["ready"], label=name, lw=0.9)
    axes[1].axhline(topology.slo_latency_p95_seconds, color="grey", ls="--", lw=0.8, label="SLO")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("end-to-end p95 latency (s)")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[2].set_ylabel("Ready pods (all services)")
    axes[2].set_xlabel(f"minutes since {np.datetime_as_string(curve.start)}")
    axes[2].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{topology.name}: worldcup98 replay")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def calibrate(args: argparse.Namespace) -> int:
    from digital_twin.microservices import calibration

    check_writable_file(args.out, "--out", suffixes=(".yaml", ".yml"))
    result = calibration.calibrate_from_huawei(_load_topology(args.topology))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    calibration.write_calibration(result, args.out)
    print(calibration.format_report(result))
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from digital_twin.microservices.traces import TraceError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(prog="python -m digital_twin.microservices", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    add_debug_flag(common)
    sub = parser.add_subparsers(dest="command")
    _replay_parser(sub, common)
    _calibrate_parser(sub, common)
    if not argv or (argv[0] not in ("replay", "calibrate", "-h", "--help")):
        argv = ["replay", *argv]
    args = parser.parse_args(argv)
    command = replay if args.command == "replay" else calibrate
    return run_cli(lambda: command(args), debug=args.debug, user_errors=(TopologyError, ScenarioError, TraceError))


if __name__ == "__main__":
    raise SystemExit(main())
