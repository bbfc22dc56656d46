"""Evaluation: sweep configs, conditions, the unit engine and the results store.

Typical use::

    from weakspot.evaluate import run_sweep, ResultsStore
    summary = run_sweep("examples/mnist_defects.yaml", "runs/mnist")
    ResultsStore("runs/mnist").predictions()
"""

from weakspot.evaluate.conditions import (  # noqa: F401
    CLEAN_CONDITION,
    Condition,
    Step,
    apply_condition,
    degrade_images,
    make_condition_id,
)
from weakspot.evaluate.config import (  # noqa: F401
    DataConfig,
    ModelConfig,
    RunConfig,
    SweepSpec,
    expand_conditions,
    load_config,
    parse_config,
)
from weakspot.evaluate.engine import (  # noqa: F401
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
from weakspot.evaluate.store import CLEAN, ResultsStore  # noqa: F401


def load_run_conditions(run_dir) -> dict[str, Condition]:
    """The :class:`Condition` of every condition of a finished run, by condition_id, so that
    others can regenerate exactly the degraded images the run evaluated::

        conds = load_run_conditions(run_dir)
        seed = ResultsStore(run_dir).manifest()["seed"]
        degraded = apply_condition(conds[cid], images, image_ids, seed)
    """
    import json

    import pyarrow.parquet as pq

    store = ResultsStore(run_dir)
    path = store._require(store.root / "conditions.parquet")
    out: dict[str, Condition] = {}
    for r in pq.read_table(path).to_pylist():
        if r["condition_id"] == CLEAN:
            out[CLEAN] = CLEAN_CONDITION
            continue
        params = json.loads(r["params_json"])
        if isinstance(params, list):
            steps = tuple(Step(name=p.pop("name"), params=p) for p in params)
        else:
            steps = (Step(name=r["degradation"].split("+")[0], params=params, severity=r["severity"]),)
        out[r["condition_id"]] = Condition(
            condition_id=r["condition_id"], steps=steps, family=r["family"], severity=r["severity"],
            axis=r["axis"], axis_value=r["axis_value"], axis_unit=r["axis_unit"])
    return out


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
]
