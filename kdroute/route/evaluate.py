"""`kdroute route eval`: several scorers on the same folds, side by side, with random and oracle.

Learned scorers are cross-validated (fit on k-1 folds, scored on the held-out one); scorers that
need no training and saved artifacts are scored as they are. Every headline metric is the mean over
the folds of the metric on that fold, so all scorers are judged on the same items; the 95 %
intervals resample the pooled out-of-fold scores. `random` is the expectation of a random router
(a constant score, i.e. the straight line) and `oracle` knows the answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdroute.route import metrics
from kdroute.route.data import RoutingData, make_labels, positive
from kdroute.route.registry import build_scorer
from kdroute.route.train import (
    cross_val_scores,
    fold_metrics,
    folds_of,
    group_folds_of,
    request_costs,
)

if TYPE_CHECKING:
    from rich.table import Table

    from kdroute.config import Settings


def scorer_scores(name: str, data: RoutingData, labels: np.ndarray, folds: int, seed: int,
                  fold: np.ndarray | None = None, train: RoutingData | None = None,
                  train_labels: np.ndarray | None = None) -> np.ndarray:
    """(N,) scores of one scorer on every item: out-of-fold for learned scorers (on `fold` if
    given), or, with `train`, from one fit on that other data set."""
    if name == "random":
        return np.zeros(len(data))
    if name == "oracle":
        return metrics.oracle_scores(data.q_student, data.q_teacher)
    scorer = build_scorer(name)
    if not scorer.needs_training:
        return scorer.score_texts(data.prompts)
    if train is not None:
        return scorer.fit(train.prompts, train_labels, train.groups).score_texts(data.prompts)
    return cross_val_scores(lambda: build_scorer(name), data, labels, folds, seed, fold=fold)[0]


def split_of(data: RoutingData, folds: int, seed: int, grouped: bool,
             train: RoutingData | None) -> tuple[str, np.ndarray]:
    """How items are held out, and the fold of each: `cross-dataset` (one fold: all of `data`,
    trained on `train`), `grouped` (whole groups per fold) or `random`."""
    if train is not None:
        return "cross-dataset", np.zeros(len(data), dtype=int)
    if grouped:
        return "grouped", group_folds_of(data.groups, folds, seed)
    return "random", folds_of(len(data), folds, seed)


def evaluate_scorers(data: RoutingData, names: Sequence[str], routers: Sequence[Path],
                     settings: Settings, folds: int = 5, seed: int = 0, bootstrap: int = 1000,
                     output_tokens: int = 256, plot: Path | None = None,
                     json_out: Path | None = None, grouped: bool = False,
                     train: RoutingData | None = None) -> dict[str, Any]:
    """Every scorer on the same held-out items: k folds (random, or whole groups of
    `data.groups` with `grouped`), or all of `data` after fitting on `train` (cross-dataset)."""
    from rich.progress import Progress

    from kdroute.route.artifact import load_artifact

    cfg = settings.router
    labels = make_labels(data.q_student, data.q_teacher, cfg.label_rule, cfg.label_delta)
    train_labels = (None if train is None else
                    make_labels(train.q_student, train.q_teacher, cfg.label_rule, cfg.label_delta))
    split, fold = split_of(data, folds, seed, grouped, train)
    costs: tuple = (0.0, 1.0)
    if all(m.input_price_per_1m is not None for m in (settings.teacher, settings.student)):
        costs = request_costs(data, settings, output_tokens)
    all_scores: dict[str, np.ndarray] = {}
    todo = [*dict.fromkeys([*names, "random", "oracle"])]
    with Progress(transient=True) as progress:
        bar = progress.add_task("scoring", total=len(todo) + len(routers))
        for name in todo:
            progress.update(bar, description=f"scoring {name}")
            all_scores[name] = scorer_scores(name, data, labels, folds, seed, fold, train,
                                             train_labels)
            progress.advance(bar)
        for path in routers:
            artifact = load_artifact(path)
            all_scores[artifact.version] = artifact.scorer.score_texts(data.prompts)
            progress.advance(bar)
    report: dict[str, Any] = {
        "n": len(data), "teacher": data.teacher, "student": data.student,
        "folds": int(len(np.unique(fold))), "split": split, "groups": len(set(data.groups)),
        "n_train": len(train) if train is not None else None,
        "r_student": float(data.q_student.mean()), "r_teacher": float(data.q_teacher.mean()),
        "label_rule": cfg.label_rule, "label_rate": float(positive(labels).mean()), "scorers": {}}
    for name, s in all_scores.items():
        cost_s, cost_t = costs
        per_fold = fold_metrics(s, fold, data, cost_s, cost_t)
        pooled = metrics.evaluate(s, data.q_student, data.q_teacher, labels, cost_s, cost_t,
                                  rounds=bootstrap if name != "random" else 0, seed=seed)
        per_fold |= {k: v for k, v in pooled.items() if k.endswith(("_lo", "_hi"))}
        report["scorers"][name] = per_fold
    if plot:
        plot_curves(all_scores, data, plot)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def plot_curves(all_scores: dict[str, np.ndarray], data: RoutingData, path: Path) -> Path:
    """PNG of routed quality against the teacher-call share, one line per scorer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, s in all_scores.items():
        curve = metrics.routing_curve(s, data.q_student, data.q_teacher)
        style = {"random": "k:", "oracle": "k--"}.get(name, "-")
        ax.plot(curve.calls * 100, curve.quality * 100, style, label=name, linewidth=1.4)
    ax.set_xlabel("calls to the teacher (%)")
    ax.set_ylabel("mean quality (%)")
    ax.set_title(f"{data.teacher} vs {data.student} ({len(data)} prompts, out-of-fold)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def table(report: dict[str, Any]) -> Table:
    """The report as a rich table (the CLI prints it): one row per scorer."""
    from rich.table import Table

    split = report.get("split", "random")
    how = {"cross-dataset": f"trained on {report.get('n_train')} other prompts",
           "grouped": f"{report['folds']}-fold means, whole groups held out"}.get(
               split, f"{report['folds']}-fold means")
    table = Table(title=f"{report['n']} prompts: teacher {report['r_teacher']:.1%}, student "
                        f"{report['r_student']:.1%} ({how})")
    cost = any("apgr_cost" in m for m in report["scorers"].values())
    cols = ["APGR", "95% CI", "APGR(10pt)", "CPT50", "CPT80", "CPT90", "CPT95", "AUC"]
    cols += ["APGR(cost)", "CPT50(cost)"] if cost else []
    table.add_column("scorer")
    for c in cols:
        table.add_column(c, justify="right")
    for name, m in report["scorers"].items():
        ci = f"{m['apgr_lo']:.3f}-{m['apgr_hi']:.3f}" if "apgr_lo" in m else ""
        row = [f"{m['apgr']:.3f}", ci, f"{m['apgr_10pt']:.3f}"]
        row += [f"{m[f'cpt{x}']:.1%}" for x in (50, 80, 90, 95)]
        row += [f"{m['auc']:.3f}"]
        if cost:
            row += [f"{m['apgr_cost']:.3f}", f"{m['cpt50_cost']:.1%}"]
        table.add_row(name, *row)
    return table
