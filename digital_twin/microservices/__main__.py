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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from digital_twin.microservices.metrics import METRIC_INDEX
from digital_twin.microservices.scenarios import compile_scenarios, load_scenarios
from digital_twin.microservices.topology import load_topology
from digital_twin.microservices.traces import WORLDCUP98_HELDOUT_DAYS, build_load_curve, load_worldcup98
from digital_twin.microservices.twin import MicroserviceTwin


def _replay_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a held-out worldcup98 day (default command)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topology", default="online_boutique", help="built-in name or YAML path (default: online_boutique)")
    p.add_argument("--calibration", type=Path, default=None,
                   help="calibration YAML (from the calibrate command) replacing CPU-seconds per request")
    p.add_argument("--day", default="1998-06-30", choices=WORLDCUP98_HELDOUT_DAYS, help="held-out worldcup98 day")
    p.add_argument("--start-minute", type=int, default=0, help="first minute of the day to replay")
    p.add_argument("--minutes", type=int, default=1440, help="minutes to replay (default the whole day)")
    p.add_argument("--replicas", type=int, default=5, help="fixed replica count per service (clipped to bounds)")
    p.add_argument("--peak-utilisation", type=float, default=0.5,
                   help="train-split p99 minute mapped to this share of entry capacity at max replicas")
    p.add_argument("--scenario", type=Path, default=None,
                   help="scenario YAML for the attacked runs (default: a DDoS flood, see --ddos-*)")
    p.add_argument("--ddos-fraction", type=float, default=0.5, help="DDoS rate as a share of entry capacity at max replicas")
    p.add_argument("--ddos-shape", choices=("flood", "pulse"), default="pulse")
    p.add_argument("--ddos-start", type=float, default=None, help="DDoS start, minutes into the window (default: 40%%)")
    p.add_argument("--ddos-duration", type=float, default=None, help="DDoS length in minutes (default: 20%% of the window)")
    p.add_argument("--hpa-target", type=int, default=60,
                   help="HPA CPU averageUtilization target of the third run, integer percent of the request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/microservice_twin_replay.png"), help="PNG path")


def _calibrate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit demand and latency-vs-load from the Huawei trace; write YAML")
    p.add_argument("--out", type=Path, default=Path("results/huawei_calibration.yaml"))
    p.add_argument("--topology", default="online_boutique", help="topology whose services get fitted demands")


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
    if args.hpa_target <= 0:
        raise SystemExit("--hpa-target must be a positive percent of the CPU request")
    if args.replicas < 0:
        raise SystemExit("--replicas must be non-negative")
    # The rules live in the agents layer; imported here so the twin itself never needs it.
    from agents.autoscaling import make_policy

    topology = load_topology(args.topology)
    if args.calibration is not None:
        from digital_twin.microservices.calibration import apply_calibration

        topology = apply_calibration(topology, args.calibration)
    trace = load_worldcup98()
    day = trace.select(day=args.day)
    if not 0 <= args.start_minute < len(day.counts) or args.minutes < 1:
        raise SystemExit(f"--start-minute must be in [0, {len(day.counts)}) and --minutes >= 1")
    end = min(args.start_minute + args.minutes, len(day.counts))
    window = type(day)(day.source, day.minutes[args.start_minute:end], day.counts[args.start_minute:end],
                       day.split_of_minute[args.start_minute:end])
    curve = build_load_curve(trace, topology, window, peak_utilisation=args.peak_utilisation)
    minutes = end - args.start_minute
    if args.scenario is not None:
        specs = load_scenarios(args.scenario)
    else:
        start = 0.4 * minutes if args.ddos_start is None else args.ddos_start
        duration = 0.2 * minutes if args.ddos_duration is None else args.ddos_duration
        specs = [{"kind": "ddos", "name": f"ddos-{args.ddos_shape}", "start_minute": start,
                  "duration_minutes": max(duration, 0.25), "capacity_fraction": args.ddos_fraction,
                  "shape": args.ddos_shape, "period_seconds": 120, "duty": 0.5}]
    attacked = compile_scenarios(specs, topology, len(curve), curve.step_seconds, source=str(args.scenario or "<cli>"))
    initial = np.clip(args.replicas, topology.min_replicas, topology.max_replicas)
    attack = "+".join(attacked.names)
    runs = {
        f"fixed {args.replicas} replicas": (None, make_policy("static", static_replicas=args.replicas)),
        f"fixed {args.replicas} replicas + {attack}": (attacked, make_policy("static", static_replicas=args.replicas)),
        f"Kubernetes HPA (CPU target {args.hpa_target}%) + {attack}": (
            attacked, make_policy("k8s_hpa", hpa_target=args.hpa_target)),
    }
    step_minutes = curve.step_seconds / 60.0
    print(f"topology {topology.name} ({topology.num_services} services), worldcup98 held-out day {args.day} "
          f"minutes {args.start_minute}-{end} ({len(curve)} steps of {curve.step_seconds:g} s), "
          f"load {curve.rates.min():.1f}-{curve.rates.max():.1f} req/s (entry capacity at max replicas "
          f"{topology.entry_capacity():.1f}), SLO p95 <= {topology.slo_latency_p95_seconds:g} s and errors <= "
          f"{topology.slo_error_rate:.0%}")
    results = {}
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

    result = calibration.calibrate_from_huawei(load_topology(args.topology))
    calibration.write_calibration(result, args.out)
    print(calibration.format_report(result))
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m digital_twin.microservices", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    _replay_parser(sub)
    _calibrate_parser(sub)
    if not argv or (argv[0] not in ("replay", "calibrate", "-h", "--help")):
        argv = ["replay", *argv]
    args = parser.parse_args(argv)
    return replay(args) if args.command == "replay" else calibrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
