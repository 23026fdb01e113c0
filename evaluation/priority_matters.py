"""The "Priority Matters" paper's own per-cell results, for comparison with ours cell by cell.

Read from the paper's repository (henrikdchristensen/scheduler-plugins, commit 5f2092053e93,
``analysis/kwok_workload_once/tables/table_solver_better_vs_kwok_optimal_prio{K}_timeout{T}.tex``):
for each number of priority levels ``K`` (1, 2, 4) and window ``T`` (1 s, 10 s), one row per target
utilisation (0.90, 0.95, 1.00, 1.05) and one column per cell (pods per node 4 then 8; nodes 4, 8, 16,
32), ``None`` where the paper has no such cell (32 nodes, 8 pods per node at 0.90: its generator found
no seed where the default leaves pods Pending). Each figure is a % of the cell's 100 seeds (where the
paper's non-preempting scheduler leaves pods Pending), as its ``combine_results.py`` counts them:

* ``better``: its CP-SAT status OPTIMAL or FEASIBLE and its placed pods per priority (highest first)
  more than a separate run of kwokctl's stock kube-scheduler WITH DefaultPreemption places;
* ``kwok_optimal``: its CP-SAT status OPTIMAL and the same placed pods per priority as that run;

the other seeds are "No Calls" (that preempting run leaves nothing Pending), failures (no solution, or an
unproved solution no better, or a proved one worse) and other. The paper's CP-SAT uses every core of
its machine (``num_search_workers = 0``) and its window includes a Go-to-Python round trip; on 32
nodes it found no solution within 1 s (0% better there).
"""

from __future__ import annotations

import numpy as np

UTILISATIONS = (0.90, 0.95, 1.00, 1.05)
PODS_PER_NODE = (4, 8)
NODES = (4, 8, 16, 32)

_ = None
TABLES: dict[tuple[str, int, int], list[list[float | None]]] = {
    # (metric, priority levels, window in s): rows by utilisation, columns (ppn 4: 4 8 16 32 nodes, ppn 8: 4 8 16 32)
    ("better", 1, 1): [[74, 96, 93, 0, 19, 28, 19, _], [85, 98, 98, 0, 80, 95, 30, 0],
                       [86, 98, 98, 0, 96, 100, 20, 0], [92, 99, 98, 0, 99, 100, 17, 0]],
    ("kwok_optimal", 1, 1): [[0, 0, 0, 0, 1, 7, 8, _], [1, 0, 0, 0, 1, 1, 0, 0],
                             [11, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]],
    ("better", 2, 1): [[50, 90, 90, 0, 12, 12, 23, _], [59, 91, 91, 0, 75, 94, 73, 0],
                       [62, 90, 90, 0, 87, 89, 66, 0], [57, 80, 89, 0, 91, 95, 71, 0]],
    ("kwok_optimal", 2, 1): [[23, 6, 0, 0, 9, 23, 21, _], [34, 6, 0, 1, 6, 4, 0, 0],
                             [36, 6, 0, 0, 9, 0, 0, 0], [39, 13, 0, 0, 8, 0, 0, 0]],
    ("better", 4, 1): [[28, 58, 82, 0, 6, 10, 12, _], [39, 72, 85, 0, 50, 90, 46, 0],
                       [41, 73, 74, 0, 57, 87, 21, 0], [34, 60, 67, 0, 65, 82, 24, 0]],
    ("kwok_optimal", 4, 1): [[48, 35, 13, 0, 12, 24, 17, _], [57, 26, 7, 0, 28, 6, 0, 0],
                             [57, 25, 4, 0, 39, 6, 0, 0], [64, 29, 7, 0, 34, 7, 0, 0]],
    ("better", 1, 10): [[75, 95, 97, 60, 16, 29, 33, _], [85, 100, 96, 90, 81, 98, 99, 65],
                        [86, 99, 100, 93, 96, 100, 98, 62], [92, 100, 100, 93, 98, 100, 100, 14]],
    ("kwok_optimal", 1, 10): [[1, 0, 0, 0, 2, 4, 12, _], [4, 0, 0, 0, 0, 0, 0, 0],
                              [12, 0, 0, 0, 0, 0, 0, 0], [4, 0, 0, 0, 0, 0, 0, 0]],
    ("better", 2, 10): [[51, 90, 98, 78, 10, 13, 25, _], [58, 93, 97, 86, 74, 93, 91, 25],
                        [62, 93, 99, 99, 87, 96, 100, 53], [57, 82, 100, 95, 90, 99, 99, 69]],
    ("kwok_optimal", 2, 10): [[23, 5, 0, 0, 7, 18, 21, _], [38, 7, 0, 0, 7, 5, 2, 1],
                              [37, 7, 0, 0, 13, 0, 0, 0], [43, 16, 0, 0, 10, 0, 0, 0]],
    ("better", 4, 10): [[28, 61, 83, 96, 6, 11, 17, _], [39, 74, 91, 96, 51, 89, 97, 46],
                        [41, 72, 91, 94, 57, 94, 100, 92], [35, 63, 89, 83, 62, 90, 97, 59]],
    ("kwok_optimal", 4, 10): [[48, 33, 13, 2, 11, 24, 29, _], [57, 25, 6, 0, 28, 10, 0, 0],
                              [57, 26, 5, 0, 39, 4, 0, 0], [63, 30, 10, 2, 38, 7, 0, 0]],
}
"""The paper's tables as printed (% of seeds); see the module."""
del _

WINDOWS = tuple(sorted({t for _, _, t in TABLES}))
"""The windows (s) the paper's tables cover."""


def paper_cell(metric: str, priorities: int, pods_per_node: int, nodes: int, window_s: float) -> float | None:
    """The paper's ``metric`` ("better" or "kwok_optimal", %) for a cell, averaged over the utilisations it has
    (equal weights, as the paper's util-aggregated figures), or None where the paper has no such cell or window."""
    table = TABLES.get((metric, priorities, int(window_s))) if float(window_s).is_integer() else None
    if table is None or pods_per_node not in PODS_PER_NODE or nodes not in NODES:
        return None
    column = PODS_PER_NODE.index(pods_per_node) * len(NODES) + NODES.index(nodes)
    values = [row[column] for row in table if row[column] is not None]
    return float(np.mean(values)) if values else None


def paper_mean(metric: str, window_s: float, cells=None) -> float | None:
    """The paper's ``metric`` averaged over ``cells`` ((priorities, pods_per_node, nodes) triples; default every cell
    it has) with equal weights, or None if it has none of them."""
    if cells is None:
        cells = [(k, p, n) for k in (1, 2, 4) for p in PODS_PER_NODE for n in NODES]
    values = [v for v in (paper_cell(metric, *cell, window_s) for cell in cells) if v is not None]
    return float(np.mean(values)) if values else None


OUTCOME_COLUMNS = (("paper_no_calls", "No Calls"), ("paper_default_certified", "KWOK Optimal"),
                   ("paper_better", "Better"), ("paper_failed", "Failures"))
"""Per-row indicator columns of :func:`evaluation.pods.paper_outcome`'s categories and their names in the paper."""


def compare_cells(rows: list[dict]) -> list[dict]:
    """One entry per window and cell ``(priorities, pods_per_node, nodes)`` of ``rows`` (``paper_protocol`` rows of
    :func:`evaluation.pods.evaluate_pods`): the scenarios, our share (%) of each paper category, and the paper's
    ``better`` / ``kwok_optimal`` for that cell and window (None where it has none)."""
    from evaluation.tables import summarise

    keys = ("time_limit_s", "priorities", "pods_per_node", "nodes")
    out = []
    for entry in summarise(sorted(rows, key=lambda r: tuple(r[k] for k in keys)), keys, [k for k, _ in OUTCOME_COLUMNS]):
        cell = {k: entry[k] for k in keys}
        cell["scenarios"] = entry["episodes"]
        cell.update({k: 100.0 * entry[k]["mean"] for k, _ in OUTCOME_COLUMNS})
        args = (cell["priorities"], cell["pods_per_node"], cell["nodes"], cell["time_limit_s"])
        cell["paper_better_ref"] = paper_cell("better", *args)
        cell["paper_kwok_optimal_ref"] = paper_cell("kwok_optimal", *args)
        out.append(cell)
    return out


def cells_markdown(entries: list[dict]) -> tuple[str, list[str]]:
    """The per-cell table (ours beside the paper's) and the summary lines: means over the cells both have, equal
    weights, per window."""
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    head = ["window s", "priorities", "pods/node", "nodes", "n", *(name for _, name in OUTCOME_COLUMNS),
            "paper Better", "paper KWOK Optimal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for e in entries:
        lines.append("| " + " | ".join([f"{e['time_limit_s']:g}", str(e["priorities"]), str(e["pods_per_node"]),
                                         str(e["nodes"]), str(e["scenarios"]),
                                         *(fmt(e[k]) for k, _ in OUTCOME_COLUMNS),
                                         fmt(e["paper_better_ref"]), fmt(e["paper_kwok_optimal_ref"])]) + " |")
    notes = []
    for window in sorted({e["time_limit_s"] for e in entries}):
        both = [e for e in entries if e["time_limit_s"] == window and e["paper_better_ref"] is not None]
        if not both:
            continue
        mean = lambda k: float(np.mean([e[k] for e in both]))  # noqa: E731
        notes.append(f"{window:g} s, mean over the {len(both)} cells both have (equal weights): Better {mean('paper_better'):.0f}% "
                     f"(paper {mean('paper_better_ref'):.0f}%), KWOK Optimal {mean('paper_default_certified'):.0f}% "
                     f"(paper {mean('paper_kwok_optimal_ref'):.0f}%), No Calls {mean('paper_no_calls'):.0f}%, "
                     f"Failures {mean('paper_failed'):.0f}%")
    return "\n".join(lines), notes


def plot_cells(path, entries: list[dict], title: str):
    """Better and KWOK Optimal per cell, ours beside the paper's, one row of panels per window the paper covers."""
    from evaluation.plots import _pyplot, save_figure

    plt = _pyplot()
    windows = [w for w in sorted({e["time_limit_s"] for e in entries})
               if any(e["time_limit_s"] == w and e["paper_better_ref"] is not None for e in entries)]
    if not windows:
        return None
    fig, axes = plt.subplots(len(windows), 2, figsize=(15, 3.6 * len(windows)), squeeze=False)
    for row, window in zip(axes, windows):
        mine = [e for e in entries if e["time_limit_s"] == window]
        x = np.arange(len(mine))
        labels = [f"{e['nodes']}n\n{e['pods_per_node']}ppn\nK={e['priorities']}\n({e['scenarios']})" for e in mine]
        for ax, (ours, ref, name) in zip(row, (("paper_better", "paper_better_ref", "Better"),
                                              ("paper_default_certified", "paper_kwok_optimal_ref", "KWOK Optimal"))):
            ax.bar(x - 0.2, [e[ours] for e in mine], 0.4, label="ours (paper protocol)")
            ax.bar(x + 0.2, [np.nan if e[ref] is None else e[ref] for e in mine], 0.4, label="paper (its tables)")
            ax.set_xticks(x, labels, fontsize=6)
            ax.set_ylim(0, 105)
            ax.set_ylabel("% of scenarios")
            ax.set_title(f"{name}, {window:g} s window (cell: nodes, pods per node, K priorities, our scenarios)",
                         fontsize=9)
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    return save_figure(fig, path)
