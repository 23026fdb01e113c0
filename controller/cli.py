"""``python -m controller``: run an exported policy against a live cluster.

    python -m controller autoscale --policy policy.onnx --prometheus http://prometheus:9090 \
        --namespace shop --dry-run
    python -m controller reschedule --policy vm_policy.onnx --snapshot cluster.json --out plan.json
    python -m controller reschedule --policy vm_policy.onnx --from-cluster --out plan.json [--apply]
    python -m controller export models/autoscaling/ppo_graph -o policy.onnx   (needs the training stack)

A user mistake (a missing policy file, a bad URL or duration) is one ``error:`` line and exit
status 2, before anything touches the cluster.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading

USAGE_ERROR = 2
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")


class UsageError(Exception):
    """A mistake in the command line or its files: reported in one line, exit status 2."""


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value
    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _duration(text: str) -> str:
    if not _DURATION.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a PromQL duration (e.g. 1m, 30s, 1m30s)")
    return text


def _url(text: str) -> str:
    if not re.match(r"^https?://[^/\s]+", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s):// URL")
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage too)
        sys.stderr.write(f"error: {self.prog}: {message}\n")
        sys.exit(USAGE_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m controller", description="Run a policy exported by train.py export "
                     "against a live Kubernetes cluster and Prometheus.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    a = sub.add_parser("autoscale", help="scale an application's Deployments with an autoscaling policy",
                       description="Every period: query Prometheus for the policy's metrics, build its observation "
                       "as the env does, run it, and patch each Deployment's scale. Holds (changes nothing, says why) "
                       "on stale, missing or NaN metrics and on API errors.")
    a.add_argument("--policy", required=True, help="the exported policy.onnx (its policy.json beside it)")
    a.add_argument("--prometheus", required=True, type=_url, help="Prometheus base URL, e.g. http://prometheus:9090")
    a.add_argument("--namespace", required=True, help="the application's namespace")
    a.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else ~/.kube/config)")
    a.add_argument("--context", help="kubeconfig context")
    a.add_argument("--period", type=_positive(float), help="seconds between decisions (default: the policy's "
                   "step_seconds, what it was trained with)")
    a.add_argument("--window", type=_duration, default="1m", help="rate() window of the queries (default 1m; at "
                   "least 4 scrape intervals)")
    a.add_argument("--scrape-interval", type=_positive(float), default=15.0,
                   help="Prometheus' scrape interval in s (default 15): samples older than two are stale")
    a.add_argument("--max-change", type=_positive(int), help="most replicas added or removed per Deployment per "
                   "period (default: no limit beyond the policy's deltas)")
    a.add_argument("--scale-down-window", type=_non_negative, default=0.0, metavar="SECONDS",
                   help="scale down only to the highest recommendation of the last SECONDS (default 0: as trained)")
    a.add_argument("--dry-run", action="store_true", help="decide and log, patch nothing")
    a.add_argument("--metrics-address", default="0.0.0.0:9100", help="where /metrics and /healthz listen "
                   "(default 0.0.0.0:9100; port 0: any free port)")
    a.add_argument("--periods", type=_positive(int), help="stop after this many periods (default: run until SIGTERM)")
    a.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    r = sub.add_parser("reschedule", help="plan VM live migrations with a VM policy; with --apply, run them on KubeVirt",
                       description="Build the fleet from a VMR2L-schema snapshot file or from the cluster's Nodes and "
                       "KubeVirt VMIs, plan migrations with the exported policy, and write the plan as JSON. Dry-run "
                       "unless --apply, which creates kubevirt.io/v1 VirtualMachineInstanceMigrations in plan order "
                       "(each after the migrations it depends on). How Nodes and VMIs map to the fleet: "
                       "controller/vm/kubevirt.py.")
    r.add_argument("--policy", required=True, help="the exported vm_policy.onnx (its .json beside it)")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--snapshot", help="a VMR2L-schema snapshot file (JSON) to plan on")
    where.add_argument("--from-cluster", action="store_true", help="read Nodes and VMIs from the cluster")
    r.add_argument("--namespace", action="append", help="with --from-cluster: VMIs of this namespace only "
                   "(repeatable; default: all namespaces)")
    r.add_argument("--node-selector", help="with --from-cluster: label selector of the Nodes that are hosts")
    r.add_argument("--budget", type=_positive(int), help="most migrations (default: the budget the policy was "
                   "trained with, or the snapshot file's maximum_migration where that is smaller)")
    r.add_argument("--best-prefix", action=argparse.BooleanOptionalAction, default=True,
                   help="plan to the budget and keep the prefix with the lowest fragment rate (evaluate.py's "
                   "agent:PATH?best_prefix=1; default); --no-best-prefix lets the policy stop the plan")
    r.add_argument("--out", default="plan.json", help="the plan file to write (default plan.json)")
    r.add_argument("--apply", action="store_true", help="create the migrations (needs --from-cluster and the "
                   "permissions of deploy/vm-migrations.yaml); default: dry-run, plan only")
    r.add_argument("--migration-timeout", type=_positive(float), default=600.0, metavar="SECONDS",
                   help="a migration not finished after this long counts as failed (default 600)")
    r.add_argument("--parallel", type=_positive(int), default=5, help="most migrations in flight (default 5)")
    r.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, else ~/.kube/config)")
    r.add_argument("--context", help="kubeconfig context")
    e = sub.add_parser("export", help="export a trained model to ONNX (needs the training stack: torch)",
                       add_help=False)
    e.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--metrics-address {text!r}: expected HOST:PORT, e.g. 0.0.0.0:9100")
    return host, int(port)


def run_autoscale(args: argparse.Namespace) -> int:
    from controller.autoscaler import Autoscaler, describe
    from controller.kube import DeploymentScaler
    from controller.policy import PolicyError, load_policy
    from controller.prometheus import MetricReader, PrometheusClient
    from controller.safety import SafetyRules
    from controller.telemetry import Telemetry

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    host, port = _address(args.metrics_address)
    try:
        policy = load_policy(args.policy, problem="autoscaling")
    except PolicyError as err:
        raise UsageError(f"--policy: {err}") from None
    meta = policy.metadata
    period = args.period or float(meta["action"]["step_seconds"])
    args.period = period
    api = _api_client(args)
    telemetry = Telemetry(period)
    server = telemetry.serve(host, port)
    reader = MetricReader(PrometheusClient(args.prometheus), meta, args.namespace, args.window,
                          max_age_s=2 * args.scrape_interval)
    from controller.observation import ObservationBuilder

    builder = ObservationBuilder(meta)
    rules = SafetyRules(builder.low, builder.high_replicas, args.max_change, args.scale_down_window)
    autoscaler = Autoscaler(policy, reader, DeploymentScaler(api, args.namespace), rules, telemetry, args.dry_run)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log = logging.getLogger("clustergym.controller")
    log.info("%s; /metrics and /healthz on %s:%d", describe(policy, args), host, server.server_address[1])
    periods = autoscaler.run(period, stop, args.periods)
    log.info("stopped after %d periods", periods)
    server.shutdown()
    return 0


def run_reschedule(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from controller.policy import PolicyError, load_policy
    from controller.vm.planner import plan_migrations

    if args.apply and not args.from_cluster:
        raise UsageError("--apply needs --from-cluster: a plan is applied only to the cluster it was made from")
    if not args.from_cluster and (args.namespace or args.node_selector):
        raise UsageError("--namespace and --node-selector need --from-cluster")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    try:
        policy = load_policy(args.policy, problem="vm_rescheduling")
    except PolicyError as err:
        raise UsageError(f"--policy: {err}") from None
    api = None
    if args.from_cluster:
        from controller.vm.kubevirt import ClusterReadError, fleet_from_cluster

        api = _api_client(args)
        try:
            fleet = fleet_from_cluster(api, args.namespace, args.node_selector)
        except ClusterReadError as err:
            raise UsageError(f"--from-cluster: {err}") from None
        source = "cluster" + (f" (namespaces {', '.join(args.namespace)})" if args.namespace else "")
    else:
        from controller.vm.snapshot_file import load_fleet

        try:
            fleet = load_fleet(args.snapshot)
        except (OSError, ValueError) as err:
            raise UsageError(f"--snapshot: {str(err).splitlines()[0]}") from None
        source = str(args.snapshot)
    budget = args.budget or min(policy.metadata.get("budget") or 50, fleet.budget or 10**9)
    plan = plan_migrations(fleet, policy, budget, best_prefix=args.best_prefix, source=source)
    document = plan.to_json()
    print(f"{source}: {len(fleet.host_ids)} hosts, {len(fleet.vm_ids)} VMs; {len(plan.migrations)} migrations "
          f"(budget {budget}), fragment rate {plan.fragment_rate_before:.4f} -> {plan.fragment_rate_after:.4f}; "
          f"planned in {plan.planning_seconds:.2f} s")
    status = 0
    if args.apply and plan.migrations:
        from controller.vm.kubevirt import MigrationRunner, check_permissions

        refused = check_permissions(api, [m.vm.split("/", 1)[0] for m in plan.migrations])
        if refused:
            out.write_text(json.dumps(document, indent=1) + "\n")
            raise UsageError(f"--apply: {refused}; the plan is in {out}")
        runner = MigrationRunner(api, plan_id=f"clustergym-{int(time.time())}", timeout_s=args.migration_timeout,
                                 parallel=args.parallel)
        results = runner.apply(plan)
        document["applied"] = [vars(r) for r in results]
        counts = {k: sum(r.outcome == k for r in results) for k in dict.fromkeys(r.outcome for r in results)}
        print("applied: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        status = 0 if counts.get("succeeded", 0) == len(results) else 1
    elif not args.apply:
        print("dry-run: nothing was changed (--apply creates the migrations)")
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"plan: {out}")
    return status


def _api_client(args: argparse.Namespace):
    from controller.kube import load_api_client

    try:
        return load_api_client(args.kubeconfig, args.context)
    except Exception as err:  # the client's own config errors (missing file, no context)
        raise UsageError(f"--kubeconfig: {str(err).splitlines()[0]}") from None


def run_export(rest: list[str]) -> int:
    try:
        from training.export import main as export
    except ImportError as err:
        raise UsageError(f"export needs the training stack ({err.name} is not installed): install clustergym "
                         "with its dependencies, or export on the machine you trained on") from None
    return export(rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        try:
            return run_export(argv[1:])
        except UsageError as err:
            print(f"error: {err}", file=sys.stderr)
            return USAGE_ERROR
    args = build_parser().parse_args(argv)
    try:
        return run_reschedule(args) if args.command == "reschedule" else run_autoscale(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
