"""Behaviour analysis of autoscaling policies: what each agent does around a failure's onset, and
a shallow decision tree distilled from each agent, with its fidelity on held-out states.

``evaluate.py CONFIG --policies ... --explain`` records every decision of every policy while it
evaluates them on the held-out split, plays the same scenarios once more on the train split, and
writes ``explain/`` into the run folder:

* ``onset_actions.md`` / ``onset_actions.csv`` / ``onset_actions.png``: per policy, agent and
  failure scenario, the replicas the agent proposed to add and to remove per minute (summed over
  the services it may change, mean over episodes), in time bins before and after the onset;
* ``tree_<policy>__<agent>.txt`` / ``.png``: a depth-limited CART tree (scikit-learn) fitted to
  the agent's per-service moves on the train-split states, over readable features of that
  service (its Prometheus-named metrics in their units, the HPA's CPU utilisation, the entry
  load, the episode's progress, which service it is);
* ``trees.md`` / ``explain.json``: each tree's fidelity (share of held-out decisions it
  reproduces) beside the majority-move baseline (always predicting the agent's most frequent
  train-split move) and its fidelity where the agent moved, so a tree that only learnt "hold"
  reads as such.

An *agent* is what proposes moves: a MAPPO / IPPO run's agents (roles or per-service; they expose
``agent_names``, ``agent_scope`` and ``last_proposals``), or for any other policy one agent,
``policy``, whose move on each service is its desired replicas minus the current ones. Trees are
fitted only on services inside the agent's scope, and only for agents that ever moved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digital_twin.microservices.metrics import METRIC_INDEX, METRICS
from evaluation.tables import write_csv, write_json

ONSET_BINS_MINUTES = ((-5, 0), (0, 2), (2, 5), (5, 10), (10, 20), (20, 40))
"""Minutes from the failure's onset, ``[start, stop)``: the bins of the onset statistics."""

TREE_DEPTH = 3
"""How deep a distilled tree may grow: 8 leaves at most, a rule a person can read."""


def feature_names(service_names: tuple[str, ...] | list[str]) -> list[str]:
    """The columns :func:`service_features` writes, named with their units."""
    return ([f"{m.name} [{m.unit}]" for m in METRICS]
            + ["cpu_utilization [% of request]", "entry request_rate [requests/s]", "episode progress [0-1]"]
            + [f"service={name}" for name in service_names])


def service_features(core) -> np.ndarray:
    """(B, S, F) float32: what a tree may split on for each service of each cluster (see
    :func:`feature_names`): its raw metrics, the HPA's utilisation, the entry service's request
    rate, the episode's progress and a one-hot of the service."""
    from agents.autoscaling.policies import cpu_utilization_percent

    raw = core.raw_obs.astype(np.float32)
    b, s, m = raw.shape
    utilisation, _ = cpu_utilization_percent(core)
    entry_rate = raw[:, core.topology.entry_index, METRIC_INDEX["request_rate"]]
    out = np.empty((b, s, m + 3 + s), dtype=np.float32)
    out[:, :, :m] = raw
    out[:, :, m] = utilisation
    out[:, :, m + 1] = entry_rate[:, None]
    out[:, :, m + 2] = np.asarray(core.progress, dtype=np.float32)[:, None]
    out[:, :, m + 3:] = np.eye(s, dtype=np.float32)[None]
    return out


@dataclass
class PolicyRecord:
    """Everything one policy decided on one split: one entry per step of every batch of episodes."""

    agent_names: list[str]
    scope: np.ndarray  # (A, S) bool
    service_names: list[str]
    step_minutes: float
    features: list[np.ndarray] = field(default_factory=list)  # each (B, S, F)
    proposals: list[np.ndarray] = field(default_factory=list)  # each (B, A, S) int
    scenario: list[str] = field(default_factory=list)
    minutes_from_onset: list[float] = field(default_factory=list)  # nan without a failure
    failure_minutes: dict[str, tuple[float, float]] = field(default_factory=dict)  # scenario -> (0, end - onset)


class DecisionRecorder:
    """An ``observer`` for :func:`~evaluation.autoscaling.evaluate_autoscaling` that keeps, per
    policy, every step's service features and each agent's proposed moves."""

    def __init__(self) -> None:
        self.records: dict[str, PolicyRecord] = {}

    def __call__(self, policy, core, desired: np.ndarray, *, scenario: str, seed: int, step: int,
                 onset: int | None, end: int | None) -> None:
        if hasattr(policy, "last_proposals"):
            proposals = np.asarray(policy.last_proposals, dtype=np.int64)
            names, scope = list(policy.agent_names), np.asarray(policy.agent_scope, dtype=bool)
        else:
            proposals = (np.asarray(desired, dtype=np.int64) - core.desired)[:, None, :]
            names, scope = ["policy"], np.ones((1, core.num_services), dtype=bool)
        step_minutes = core.config.step_seconds / 60.0
        record = self.records.get(policy.name)
        if record is None:
            record = self.records[policy.name] = PolicyRecord(names, scope, list(core.service_names), step_minutes)
        record.features.append(service_features(core))
        record.proposals.append(proposals)
        record.scenario.append(scenario)
        record.minutes_from_onset.append(np.nan if onset is None else (step - onset) * step_minutes)
        if onset is not None:
            record.failure_minutes[scenario] = (0.0, (end - onset) * step_minutes)


# ---------------------------------------------------------------------- around the onset
def onset_statistics(record: PolicyRecord, method: str) -> list[dict[str, Any]]:
    """Per agent, failure scenario and onset bin: replicas proposed up and down per minute (summed
    over the agent's scope, mean over the bin's steps and episodes) and the share of steps with a move."""
    rows = []
    scenarios = np.array(record.scenario)
    since = np.array(record.minutes_from_onset, dtype=np.float64)
    for a, agent in enumerate(record.agent_names):
        for scenario in record.failure_minutes:
            for lo, hi in ONSET_BINS_MINUTES:
                steps = np.flatnonzero((scenarios == scenario) & (since >= lo) & (since < hi))
                if not len(steps):
                    continue
                moves = np.stack([record.proposals[i][:, a, :] for i in steps]) * record.scope[a]  # (n, B, S)
                per_step_up = np.maximum(moves, 0).sum(axis=2)  # (n, B)
                per_step_down = np.maximum(-moves, 0).sum(axis=2)
                rows.append({
                    "method": method, "agent": agent, "scenario": scenario, "from_minute": lo, "to_minute": hi,
                    "up_per_minute": float(per_step_up.mean() / record.step_minutes),
                    "down_per_minute": float(per_step_down.mean() / record.step_minutes),
                    "moving_share": float(((per_step_up + per_step_down) > 0).mean()),
                })
    return rows


def onset_markdown(rows: list[dict[str, Any]]) -> str:
    """One table per method: rows agent x scenario, a column per onset bin with ``+up / -down``."""
    bins = [(lo, hi) for lo, hi in ONSET_BINS_MINUTES]
    lines = ["Replicas proposed per minute around each failure's onset (`+added / -removed`, summed over the "
             "services the agent may change; mean over episodes). Columns: minutes from the onset.", ""]
    for method in dict.fromkeys(r["method"] for r in rows):
        lines += [f"### {method}", "", "| agent | scenario | " + " | ".join(f"{lo}..{hi}" for lo, hi in bins) + " |",
                  "|---|---|" + "---:|" * len(bins)]
        mine = [r for r in rows if r["method"] == method]
        for agent in dict.fromkeys(r["agent"] for r in mine):
            for scenario in dict.fromkeys(r["scenario"] for r in mine):
                cells = {(r["from_minute"], r["to_minute"]): r for r in mine
                         if r["agent"] == agent and r["scenario"] == scenario}
                if not cells:
                    continue
                text = [f"+{c['up_per_minute']:.2f} / -{c['down_per_minute']:.2f}" if (c := cells.get(b)) else ""
                        for b in bins]
                lines.append(f"| {agent} | {scenario} | " + " | ".join(text) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_onset(path: Path, records: dict[str, PolicyRecord], max_minutes: float = 40.0) -> Path:
    """Net replicas proposed per minute against minutes from the onset: a panel per failure
    scenario, a line per method and agent, the failure's span shaded."""
    from evaluation.plots import _LINES, _pyplot

    plt = _pyplot()
    scenarios = list(dict.fromkeys(s for r in records.values() for s in r.failure_minutes))
    cols = min(4, max(1, len(scenarios)))
    rows = (len(scenarios) + cols - 1) // cols
    fig, axes = plt.subplots(max(rows, 1), cols, figsize=(4.2 * cols, 3.2 * max(rows, 1) + 0.8), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(scenarios):]:
        ax.set_visible(False)
    line = 0
    for method, record in records.items():
        scen = np.array(record.scenario)
        since = np.array(record.minutes_from_onset, dtype=np.float64)
        for a, agent in enumerate(record.agent_names):
            label = method if record.agent_names == ["policy"] else f"{method}: {agent}"
            style = _LINES[line % len(_LINES)]
            line += 1
            for ax, scenario in zip(axes.flat, scenarios):
                if scenario not in record.failure_minutes:
                    continue
                steps = np.flatnonzero((scen == scenario) & (since >= -10) & (since < max_minutes))
                if not len(steps):
                    continue
                net = np.array([(record.proposals[i][:, a, :] * record.scope[a]).sum(axis=1).mean() for i in steps])
                minute = np.floor(since[steps])
                keys = np.unique(minute)
                per_minute = np.array([net[minute == k].mean() for k in keys]) / record.step_minutes
                ax.plot(keys, per_minute, label=label, **style)
    for ax, scenario in zip(axes.flat, scenarios):
        start, stop = next(r.failure_minutes[scenario] for r in records.values() if scenario in r.failure_minutes)
        ax.axvspan(start, min(stop, max_minutes), color="tab:red", alpha=0.08)
        ax.axvline(0, color="tab:red", linewidth=1)
        ax.axhline(0, color="0.5", linewidth=0.6)
        ax.set_title(scenario)
        ax.set_xlabel("minutes from the failure's onset")
        ax.set_ylabel("net replicas proposed / min")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:  # below the panels, where it hides no curve
        fig.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)), fontsize=8)
    fig.suptitle("What each agent proposes around a failure (red: while it acts)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- distilled trees
def agent_samples(record: PolicyRecord, a: int) -> tuple[np.ndarray, np.ndarray]:
    """``(X (N, F), y (N,))``: agent ``a``'s per-service moves on the services in its scope."""
    features = np.concatenate([f.reshape(-1, f.shape[-1]) for f in record.features])  # (steps*B*S, F)
    moves = np.concatenate([p[:, a, :].reshape(-1) for p in record.proposals])
    in_scope = np.concatenate([np.broadcast_to(record.scope[a], p[:, a, :].shape).reshape(-1) for p in record.proposals])
    return features[in_scope], moves[in_scope]


@dataclass
class DistilledTree:
    """One agent's tree and how faithful it is."""

    method: str
    agent: str
    tree: Any  # sklearn DecisionTreeClassifier
    train_states: int
    heldout_states: int
    fidelity: float  # share of held-out moves the tree reproduces
    majority_move: int
    majority_fidelity: float  # the same for always predicting the most frequent train move
    move_fidelity: float  # share of the held-out states where the agent moved (not 0) that the tree gets right
    text: str


def distil(method: str, agent: str, train: tuple[np.ndarray, np.ndarray], heldout: tuple[np.ndarray, np.ndarray],
           names: list[str], depth: int = TREE_DEPTH, seed: int = 0) -> DistilledTree:
    """Fit a CART tree to ``train`` (X, y) and score it on ``heldout``."""
    from sklearn.tree import DecisionTreeClassifier, export_text

    x, y = train
    leaf = max(20, len(y) // 200)  # no leaf for a handful of states: a rule should cover many
    tree = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=leaf, random_state=seed).fit(x, y)
    values, counts = np.unique(y, return_counts=True)
    majority = int(values[counts.argmax()])
    hx, hy = heldout
    right = tree.predict(hx) == hy if len(hy) else np.zeros(0, dtype=bool)
    fidelity = float(right.mean()) if len(hy) else float("nan")
    move_fidelity = float(right[hy != 0].mean()) if (hy != 0).any() else float("nan")
    text = export_text(tree, feature_names=names, class_names=[f"{int(c):+d}" for c in tree.classes_],
                       decimals=2, show_weights=False)
    return DistilledTree(method, agent, tree, len(y), len(hy), fidelity, majority,
                         float((hy == majority).mean()) if len(hy) else float("nan"), move_fidelity, text)


def plot_tree_png(path: Path, tree: DistilledTree, names: list[str]) -> Path:
    """The tree as a picture: each node's rule, states and majority move."""
    from sklearn.tree import plot_tree

    from evaluation.plots import _pyplot, save_figure

    plt = _pyplot()
    leaves = tree.tree.get_n_leaves()
    fig, ax = plt.subplots(figsize=(max(8.0, 2.6 * leaves), 1.9 * (tree.tree.get_depth() + 1)))
    plot_tree(tree.tree, feature_names=names, class_names=[f"{int(c):+d}" for c in tree.tree.classes_],
              filled=True, impurity=False, proportion=True, rounded=True, fontsize=8, ax=ax)
    ax.set_title(f"{tree.method}: {tree.agent}, replica move per service\nfidelity {tree.fidelity:.1%} on "
                 f"{tree.heldout_states:,} held-out states (always {tree.majority_move:+d}: {tree.majority_fidelity:.1%})")
    return save_figure(fig, path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "policy"


# ---------------------------------------------------------------------- the report
def write_explanation(out_dir: Path, heldout: DecisionRecorder, train: DecisionRecorder) -> list[Path]:
    """Write ``out_dir`` (see the module docstring); returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    onset_rows = [row for method, record in heldout.records.items() for row in onset_statistics(record, method)]
    if onset_rows:
        write_csv(out_dir / "onset_actions.csv", onset_rows)
        (out_dir / "onset_actions.md").write_text(onset_markdown(onset_rows) + "\n")
        written += [out_dir / "onset_actions.csv", out_dir / "onset_actions.md",
                    plot_onset(out_dir / "onset_actions.png", heldout.records)]
    trees: list[DistilledTree] = []
    for method, record in heldout.records.items():
        if method not in train.records:
            continue
        names = feature_names(record.service_names)
        for a, agent in enumerate(record.agent_names):
            x, y = agent_samples(train.records[method], a)
            if not len(y) or len(np.unique(y)) < 2:
                continue  # it never moved on the train split: nothing to explain
            tree = distil(method, agent, (x, y), agent_samples(record, a), names)
            trees.append(tree)
            stem = f"tree_{_slug(method)}__{_slug(agent)}"
            (out_dir / f"{stem}.txt").write_text(
                f"{method}: {agent}, replica move per service, fitted on {tree.train_states:,} train-split states;\n"
                f"fidelity {tree.fidelity:.1%} on {tree.heldout_states:,} held-out states "
                f"(always {tree.majority_move:+d}: {tree.majority_fidelity:.1%}; where the agent moved: "
                f"{tree.move_fidelity:.1%})\n\n{tree.text}")
            written += [out_dir / f"{stem}.txt", plot_tree_png(out_dir / f"{stem}.png", tree, names)]
    lines = [f"Decision trees (depth <= {TREE_DEPTH}) distilled from each agent's move per service: fitted on "
             "train-split states, fidelity = share of held-out moves reproduced; the baseline always predicts "
             "the agent's most frequent train-split move; *where it moved*: fidelity on the held-out states "
             "where the agent's move was not 0.", "",
             "| method | agent | train states | held-out states | fidelity | majority move | majority fidelity "
             "| where it moved |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {t.method} | {t.agent} | {t.train_states:,} | {t.heldout_states:,} | {t.fidelity:.1%} | "
              f"{t.majority_move:+d} | {t.majority_fidelity:.1%} | {t.move_fidelity:.1%} |" for t in trees]
    (out_dir / "trees.md").write_text("\n".join(lines) + "\n")
    write_json(out_dir / "explain.json", {
        "tree_depth": TREE_DEPTH, "onset_bins_minutes": [list(b) for b in ONSET_BINS_MINUTES],
        "trees": [{"method": t.method, "agent": t.agent, "train_states": t.train_states,
                   "heldout_states": t.heldout_states, "fidelity": t.fidelity, "majority_move": t.majority_move,
                   "majority_fidelity": t.majority_fidelity, "move_fidelity": t.move_fidelity} for t in trees],
        "onset_actions": onset_rows,
    })
    return written + [out_dir / "trees.md", out_dir / "explain.json"]
