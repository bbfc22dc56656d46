"""Fixes that are proven: robust training and a learned enhancement front-end.

* :func:`train_classifier` with the ``clean`` / ``constant`` / ``incremental`` /
  ``transfer`` strategies on any registry degradation mix (:class:`RandomDegradation`),
  resumable checkpoints and progress bars; :class:`SmallCNN` is the built-in model.
* :func:`evaluate_grid` – the train × test accuracy grid, overall and per class.
* :class:`EnhanceNet` / :func:`train_enhancer` – a per-image colour matrix, shift
  and k×k kernel predicted by a small CNN and trained through a frozen classifier.
* :func:`robustify_job` / :func:`enhance_job` – the ``weakspot robustify`` /
  ``weakspot enhance`` jobs; :mod:`weakspot.robustify.fix` – ``weakspot fix``.
"""

from weakspot.robustify.data import Split, load_split
from weakspot.robustify.enhance import (
    EnhanceConfig,
    EnhancedClassifier,
    EnhanceNet,
    apply_enhancement,
    count_flops,
    estimate_noise_sigma,
    train_enhancer,
)
from weakspot.robustify.grid import degrade_test_set, evaluate_grid, grid_table, markdown_table, predict
from weakspot.robustify.mix import (
    Condition,
    LevelRange,
    RandomDegradation,
    SeverityRange,
    parse_condition,
    parse_spec,
    parse_specs,
)
from weakspot.robustify.nets import SmallCNN, replace_head
from weakspot.robustify.run import enhance_job, robustify_job
from weakspot.robustify.train import (
    STRATEGIES,
    TrainConfig,
    degraded_share,
    load_checkpoint,
    train_classifier,
)

__all__ = [
    "Split",
    "load_split",
    "EnhanceConfig",
    "EnhancedClassifier",
    "EnhanceNet",
    "apply_enhancement",
    "count_flops",
    "estimate_noise_sigma",
    "train_enhancer",
    "degrade_test_set",
    "evaluate_grid",
    "grid_table",
    "markdown_table",
    "predict",
    "Condition",
    "LevelRange",
    "RandomDegradation",
    "parse_condition",
    "parse_spec",
    "parse_specs",
    "SeverityRange",
    "SmallCNN",
    "replace_head",
    "enhance_job",
    "robustify_job",
    "STRATEGIES",
    "TrainConfig",
    "degraded_share",
    "load_checkpoint",
    "train_classifier",
]
