"""Analyses of a finished run, all from the results store (no model is called).

Every function takes a run directory, a :class:`~weakspot.evaluate.store.ResultsStore`
or a loaded :class:`RunData` and returns a pandas DataFrame::

    from weakspot import analysis as A

    run = A.load_run("runs/demo")  # load once, reuse
    A.accuracy_table(run)  # top-1/top-5 per condition, Wilson CIs, McNemar vs clean (Holm)
    A.corruption_errors(run)  # CE / relative CE (AlexNet or a baseline run)
    A.class_damage(run)  # per-class drops, z-scores, ranks
    A.confusion_auc(run)  # AUC-vs-level of the most confused pairs
    A.breaking_points(run)  # where each class loses half its accuracy
    A.findings(run)  # plain-language findings
    A.what_broke(run)  # ranked: degradation, level, effect, significance, classes
    a = A.analyze(run)  # everything at once (what the report uses)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from weakspot.analysis._data import CAMERA_REFERENCE, RunData, StoreLike, level_label, load_run
from weakspot.analysis.accuracy import (
    ALEXNET_CLEAN_ERR,
    ALEXNET_ERR,
    accuracy_table,
    corruption_errors,
    mean_corruption_error,
)
from weakspot.analysis.breaking import ALL_CLASSES, breaking_point, breaking_points
from weakspot.analysis.broke import what_broke
from weakspot.analysis.confusion import confusion_auc, flip_matrix, flips, top_confused_pairs
from weakspot.analysis.damage import (
    class_damage,
    damage_matrix,
    degradation_damage,
    image_damage,
    rank_classes,
)
from weakspot.analysis.findings import findings
from weakspot.analysis.paired import (
    MIN_IMAGES_FOR_CLAIM,
    compare_paired,
    holm,
    mcnemar_exact,
    wilson_interval,
)
from weakspot.analysis.stats import bootstrap_mean_ci

__all__ = [
    "Analysis",
    "analyze",
    "RunData",
    "load_run",
    "level_label",
    "accuracy_table",
    "corruption_errors",
    "mean_corruption_error",
    "ALEXNET_ERR",
    "ALEXNET_CLEAN_ERR",
    "image_damage",
    "class_damage",
    "degradation_damage",
    "damage_matrix",
    "rank_classes",
    "flips",
    "flip_matrix",
    "top_confused_pairs",
    "confusion_auc",
    "breaking_point",
    "breaking_points",
    "ALL_CLASSES",
    "findings",
    "what_broke",
    "bootstrap_mean_ci",
    "MIN_IMAGES_FOR_CLAIM",
    "CAMERA_REFERENCE",
    "wilson_interval",
    "mcnemar_exact",
    "holm",
    "compare_paired",
]


@dataclass
class Analysis:
    """Every analysis of one run (what the report renders; see each function for columns)."""

    run: RunData
    accuracy: pd.DataFrame
    corruption_errors: pd.DataFrame
    mce: dict
    damage: pd.DataFrame
    damage_by_degradation: pd.DataFrame
    flips: pd.DataFrame
    confused_pairs: pd.DataFrame
    auc: pd.DataFrame
    breaking: pd.DataFrame
    breaking_p: pd.DataFrame
    findings: pd.DataFrame = field(default_factory=pd.DataFrame)
    baseline: str | None = None
    min_per_class: int = MIN_IMAGES_FOR_CLAIM
    broke: pd.DataFrame = field(default_factory=pd.DataFrame)


def analyze(
    store: StoreLike,
    *,
    baseline: StoreLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    k_pairs: int = 5,
    min_per_class: int = MIN_IMAGES_FOR_CLAIM,
) -> Analysis:
    """Run every analysis once. ``baseline``: a run directory to normalise corruption
    errors by (needed for non-ImageNet models). ``min_per_class``: fewest images a class needs
    for per-class rankings, intervals and findings (default :data:`MIN_IMAGES_FOR_CLAIM`).
    ``n_boot``/``seed``: bootstrap of the (continuous) class mean probability drops."""
    from weakspot.errors import InvalidParameterError

    if int(min_per_class) < 1:
        raise InvalidParameterError("min_per_class", min_per_class, "an integer >= 1 (default 5)")
    run = load_run(store)
    ce = corruption_errors(run, baseline)
    dmg = class_damage(run, n_boot=max(100, n_boot // 2), seed=seed, min_images=int(min_per_class))
    pairs = top_confused_pairs(run, k=k_pairs)
    a = Analysis(
        run=run,
        accuracy=accuracy_table(run),
        corruption_errors=ce,
        mce=mean_corruption_error(ce),
        damage=dmg,
        damage_by_degradation=degradation_damage(dmg),
        flips=flips(run),
        confused_pairs=pairs,
        auc=confusion_auc(run, pairs=pairs),
        breaking=breaking_points(run, metric="accuracy"),
        breaking_p=breaking_points(run, metric="p_clean"),
        baseline=None if baseline is None else str(getattr(baseline, "root", baseline)),
        min_per_class=int(min_per_class),
    )
    a.broke = what_broke(run, a.accuracy)
    a.findings = findings(a)
    return a
