"""Calibration of service demand and latency-vs-load from the Huawei serverless trace.

Method (per function of the bundled copy, day 0, one row a minute):

1. Data: ``request_call`` (requests in the minute, lambda) and ``request_delay`` (mean
   execution time in the minute, d, milliseconds); minutes where either is empty are skipped.
   ``cpu`` holds the function's CPU allocation (cores), constant over the day.
2. Model: the M/M/1-shaped latency-vs-load curve ``d(lambda) = s / (1 - lambda / Lambda)``,
   with ``s`` the execution time at no load and ``Lambda`` the saturation rate (requests per
   minute); ``Lambda = inf`` (a flat curve) is allowed and chosen when latency does not rise
   with load (serverless platforms add instances as load grows).
3. Fit on the train hours (0-17): for each ``Lambda`` on a grid (1.02 to 10^4 times the largest
   train rate, and infinity), ``log s`` is the closed-form least-squares value of
   ``log d - log(1 / (1 - lambda / Lambda))``; the ``Lambda`` with the smallest squared log
   error wins (log space, because execution times are heavy-tailed).
4. Held-out error: mean absolute percentage error of ``d`` on hours 18-23, next to that of a
   constant (the train median) so the load term's worth is visible.
5. Demand: ``cpu_seconds_per_request = s x min(cpu_allocation, 1)``: a request runs on one
   thread, so it uses at most one core for its no-load execution time.

:data:`ONLINE_BOUTIQUE_FUNCTIONS` maps services to functions whose no-load times suit them; the
fitted demands replace the topology's defaults via :func:`apply_calibration`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from digital_twin.microservices.topology import Topology, with_cpu_seconds
from digital_twin.microservices.traces import HUAWEI_DIR, HUAWEI_HELDOUT_HOURS, HUAWEI_TRAIN_HOURS, load_huawei_table

ONLINE_BOUTIQUE_FUNCTIONS = {
    "frontend": 97,
    "recommendation": 96,
    "productcatalog": 39,
    "cart": 60,
    "currency": 34,
    "shipping": 161,
    "redis-cart": 75,
}


@dataclass(frozen=True)
class LatencyFit:
    """Fitted latency-vs-load curve of one function.

    Attributes:
        function_id: Huawei function id.
        no_load_ms: ``s``, execution time at no load, milliseconds.
        saturation_rpm: ``Lambda``, requests/minute at which latency diverges (inf: flat).
        cpu_allocation: Cores allocated to the function (``cpu`` table).
        cpu_seconds_per_request: Fitted demand.
        train_mape: Mean absolute percentage error on the train hours.
        heldout_mape: Same on the held-out hours.
        heldout_mape_constant: Held-out error of the constant (train median) predictor.
        train_minutes: Minutes used for the fit.
        heldout_minutes: Minutes used for the held-out error.
    """

    function_id: int
    no_load_ms: float
    saturation_rpm: float
    cpu_allocation: float
    cpu_seconds_per_request: float
    train_mape: float
    heldout_mape: float
    heldout_mape_constant: float
    train_minutes: int
    heldout_minutes: int

    def predict_ms(self, requests_per_minute: np.ndarray) -> np.ndarray:
        """Mean execution time (ms) at the given load; shape follows the input."""
        util = np.minimum(np.asarray(requests_per_minute, dtype=float) / self.saturation_rpm, 0.99)
        return self.no_load_ms / (1.0 - util)


def fit_latency_curve(rate: np.ndarray, delay: np.ndarray, grid_size: int = 400) -> tuple[float, float]:
    """Least-squares fit (log space) of ``delay = s / (1 - rate / Lambda)``.

    Args:
        rate: (T,) requests per minute (>= 0).
        delay: (T,) mean latency, any unit (> 0).
        grid_size: Number of ``Lambda`` values tried.

    Returns:
        ``(s, Lambda)``: no-load latency in ``delay``'s unit and saturation rate
        (``inf`` for a flat curve).
    """
    rate = np.asarray(rate, dtype=float)
    log_delay = np.log(np.asarray(delay, dtype=float))
    candidates = np.concatenate([rate.max() * np.geomspace(1.02, 1e4, grid_size), [np.inf]])
    util = rate[None, :] / candidates[:, None]  # (G, T)
    log_x = -np.log1p(-util)  # log(1 / (1 - util))
    log_s = np.mean(log_delay[None, :] - log_x, axis=1)
    sse = np.sum((log_delay[None, :] - log_s[:, None] - log_x) ** 2, axis=1)
    best = int(np.argmin(sse))
    return float(np.exp(log_s[best])), float(candidates[best])


def _mape(pred: np.ndarray, obs: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - obs) / obs))


def calibrate_from_huawei(topology: Topology | None = None, directory: Path | str = HUAWEI_DIR,
                          mapping: dict[str, int] | None = None) -> dict:
    """Fit every bundled function and, for ``topology``, the mapped services' demands.

    Args:
        topology: Topology whose services get demands (None: functions only).
        directory: Folder with the Huawei CSVs.
        mapping: Service -> function id (default :data:`ONLINE_BOUTIQUE_FUNCTIONS` for Online
            Boutique, none otherwise).

    Returns:
        ``{"method": str, "functions": {id: LatencyFit}, "services": {name: {...}}}``.
    """
    calls = load_huawei_table("request_call", directory)
    delays = load_huawei_table("request_delay", directory)
    cpu = load_huawei_table("cpu", directory)
    hour = (calls.minutes % 1440) // 60
    train_rows = np.isin(hour, HUAWEI_TRAIN_HOURS)
    held_rows = np.isin(hour, HUAWEI_HELDOUT_HOURS)
    fits: dict[int, LatencyFit] = {}
    for fid in calls.function_ids.tolist():  # a dozen functions, at calibration time
        rate, delay = calls.column(fid), delays.column(fid)
        usable = np.isfinite(rate) & np.isfinite(delay) & (delay > 0)
        train, held = usable & train_rows, usable & held_rows
        if train.sum() < 30 or held.sum() < 10:
            continue
        s, sat = fit_latency_curve(rate[train], delay[train])
        alloc = float(np.nanmedian(cpu.column(fid)))
        fit = LatencyFit(fid, s, sat, alloc, s / 1000.0 * min(alloc, 1.0), 0.0, 0.0, 0.0,
                         int(train.sum()), int(held.sum()))
        constant = float(np.median(delay[train]))
        fits[fid] = LatencyFit(**{**asdict(fit),
                                  "train_mape": _mape(fit.predict_ms(rate[train]), delay[train]),
                                  "heldout_mape": _mape(fit.predict_ms(rate[held]), delay[held]),
                                  "heldout_mape_constant": _mape(np.full(held.sum(), constant), delay[held])})
    if mapping is None:
        mapping = ONLINE_BOUTIQUE_FUNCTIONS if topology is not None and topology.name == "online_boutique" else {}
    services = {}
    for svc, fid in mapping.items():
        if topology is not None:
            topology.index(svc)  # KeyError names the known services
        if fid not in fits:
            raise KeyError(f"function {fid} (for {svc}) has no fit; fitted: {sorted(fits)}")
        services[svc] = {"function": fid, "cpu_seconds_per_request": fits[fid].cpu_seconds_per_request}
    return {"method": __doc__.strip().splitlines()[0], "functions": fits, "services": services,
            "topology": None if topology is None else topology.name}


def write_calibration(result: dict, path: Path | str) -> None:
    """Write the fitted parameters as YAML (plain floats; ``saturation_rpm: .inf`` when flat)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "method": result["method"],
        "source": "data/huawei_serverless (day 0); train hours 0-17, held-out hours 18-23",
        "topology": result["topology"],
        "functions": {int(fid): {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(fit).items()
                                 if k != "function_id"} for fid, fit in result["functions"].items()},
        "services": result["services"],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def apply_calibration(topology: Topology, path: Path | str) -> Topology:
    """Topology with CPU-seconds per request replaced by a calibration file's ``services``."""
    doc = yaml.safe_load(Path(path).read_text())
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict):
        raise ValueError(f"{path}: key 'services': expected a mapping of service -> {{cpu_seconds_per_request}}")
    values = {}
    for svc, entry in services.items():
        if not isinstance(entry, dict) or "cpu_seconds_per_request" not in entry:
            raise ValueError(f"{path}: key 'services.{svc}.cpu_seconds_per_request': missing")
        values[svc] = float(entry["cpu_seconds_per_request"])
    return with_cpu_seconds(topology, values)


def format_report(result: dict) -> str:
    """A table of the fits: no-load time, saturation, demand, train / held-out errors."""
    lines = [f"{'function':>8} {'no-load ms':>10} {'sat. req/min':>13} {'cores':>6} {'CPU-s/req':>10} "
             f"{'train MAPE':>10} {'held-out MAPE':>13} {'constant':>9}"]
    for fid, f in result["functions"].items():
        lines.append(f"{fid:>8} {f.no_load_ms:>10.3f} {f.saturation_rpm:>13.4g} {f.cpu_allocation:>6.2f} "
                     f"{f.cpu_seconds_per_request:>10.5f} {f.train_mape:>10.1%} {f.heldout_mape:>13.1%} "
                     f"{f.heldout_mape_constant:>9.1%}")
    for svc, entry in result["services"].items():
        lines.append(f"service {svc}: function {entry['function']}, cpu_seconds_per_request "
                     f"{entry['cpu_seconds_per_request']:.5f}")
    return "\n".join(lines)
