"""Evaluation: sweep configs, conditions, the unit engine and the results store.

Typical use::

    from weakspot.evaluate import run_sweep, ResultsStore, Run

    summary = run_sweep("examples/mnist_defects.yaml", "runs/mnist")
    ResultsStore("runs/mnist").predictions()
    run = Run.open("runs/mnist")  # conditions, model, data, degraded images of the run
"""

from weakspot.evaluate.conditions import (
    CLEAN_CONDITION,
    Condition,
    Step,
    apply_condition,
    degrade_images,
    make_condition_id,
)
from weakspot.evaluate.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    SweepSpec,
    expand_conditions,
    load_config,
    parse_config,
)
from weakspot.evaluate.engine import (
    RunSummary,
    ShardImages,
    Unit,
    UnitResult,
    auto_batch_size,
    evaluate_unit,
    plan_units,
    rows_from_probs,
    run_sweep,
    write_unit,
)
from weakspot.evaluate.run import Run, RunImages, RunManifest
from weakspot.evaluate.store import CLEAN, ResultsStore


def load_run_conditions(run_dir) -> dict[str, Condition]:
    """The :class:`Condition` of every condition of a run, by condition_id (``Run.open(run_dir)
    .conditions()`` as a dict), so that others can regenerate exactly the degraded images::

        conds = load_run_conditions(run_dir)
        degraded = apply_condition(conds[cid], images, image_ids, Run.open(run_dir).seed)
    """
    return {c.condition_id: c for c in Run(run_dir).conditions()}


__all__ = [
    "CLEAN",
    "CLEAN_CONDITION",
    "Condition",
    "Step",
    "apply_condition",
    "degrade_images",
    "make_condition_id",
    "load_run_conditions",
    "RunConfig",
    "ModelConfig",
    "DataConfig",
    "SweepSpec",
    "load_config",
    "parse_config",
    "expand_conditions",
    "Unit",
    "ShardImages",
    "UnitResult",
    "RunSummary",
    "plan_units",
    "evaluate_unit",
    "rows_from_probs",
    "write_unit",
    "run_sweep",
    "auto_batch_size",
    "ResultsStore",
    "Run",
    "RunManifest",
    "RunImages",
]
