"""Load a finished run once into the tidy frames every analysis shares.

:class:`RunData` joins the predictions of every condition with the condition
table and with the clean prediction of the same image, so that each row carries

* ``ref_class`` – the class an image *is*: its label when labelled, else the
  clean top-1 (unlabelled data: the clean prediction is the reference);
* ``p_clean`` – probability of the clean top-1 class on the clean image;
* ``drop`` – ``p_clean − p_clean_top1``: how much probability the clean top-1
  class lost under this condition (the per-class damage method);
* ``agree`` – degraded top-1 equals clean top-1;
* ``hit`` – top-1 correct for labelled images, ``agree`` for unlabelled ones;
* ``x`` – the level on the degradation's x-axis (``axis_value`` in
  ``axis_unit``, else the severity), ``order`` – mild → severe rank, and (in
  ``conditions``) ``direction`` – +1 when larger x is more damage, −1 when smaller x is
  (shorter exposure, lower JPEG quality: read from the degradation registry's severity table).

Analyses never call a model: everything here comes from the results store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from weakspot.errors import DataError
from weakspot.evaluate.store import CLEAN, ResultsStore

__all__ = ["RunData", "StoreLike", "load_run", "level_label", "CAMERA_REFERENCE"]

#: the condition id of the camera's reference rendering (the camera pipeline at its neutral
#: setting); it is a reference like clean, not a degradation level
CAMERA_REFERENCE = "camera_reference"


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def level_label(x: float, unit: str | None, severity=None, axis: str | None = None) -> str:
    """Human label of a level: ``'2.5 D'``, ``'8 µm'``, ``'variance=0.05'`` (unitless axis),
    ``'sev 3'`` (severity only)."""
    if _missing(x):
        return "clean"
    if _missing(axis) or axis == "severity":
        if not _missing(severity) and float(severity) == float(x):
            return f"sev {int(severity)}"
        return f"{x:g}"
    if _missing(unit) or unit == "":
        return f"{axis}={x:g}"
    return f"{x:g} {unit}"


def _direction(degradation: str, axis: str | None, xs: np.ndarray) -> int:
    """+1 when larger axis values are more severe, -1 when smaller are (e.g. exposure_s)."""
    if axis:
        try:
            from weakspot.degrade import get_spec

            spec = get_spec(degradation)
            levels = sorted(spec.severities)
            if axis in spec.severities[levels[0]] and axis in spec.severities[levels[-1]]:
                a = float(spec.severities[levels[0]][axis])
                b = float(spec.severities[levels[-1]][axis])
                if a != b:
                    return 1 if b > a else -1
        except Exception:  # unknown degradation (other registry, renamed): fall back
            pass
    return 1


@dataclass
class RunData:
    """A run loaded once; the analyses take this or anything :func:`load_run` accepts.

    ``conditions`` holds the conditions that have predictions; ``pending`` lists the ids of
    those that have none yet (a partial run), which every analysis leaves out."""

    store: ResultsStore
    classes: list[str]
    images: pd.DataFrame
    conditions: pd.DataFrame
    rows: pd.DataFrame
    manifest: dict = field(default_factory=dict)
    pending: list = field(default_factory=list)
    _probs: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ properties
    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def labelled(self) -> bool:
        """True when at least one image has a label."""
        return bool((self.images["label"] >= 0).any())

    @cached_property
    def degraded(self) -> pd.DataFrame:
        """Conditions other than clean, ordered by degradation then mild → severe."""
        c = self.conditions[~self.conditions.condition_id.isin([CLEAN, CAMERA_REFERENCE])]
        return c.sort_values(["degradation", "order"], kind="stable").reset_index(drop=True)

    @property
    def has_camera_reference(self) -> bool:
        """True when the run has the ``camera_reference`` condition (camera runs)."""
        return CAMERA_REFERENCE in set(self.conditions.condition_id)

    @cached_property
    def degraded_rows(self) -> pd.DataFrame:
        """The prediction rows of the degraded conditions (neither clean nor a reference)."""
        return self.rows[self.rows.condition_id.isin(set(self.degraded.condition_id))]

    @property
    def degradations(self) -> list[str]:
        return list(dict.fromkeys(self.degraded.degradation))

    def class_name(self, k: int) -> str:
        k = int(k)
        return self.classes[k] if 0 <= k < len(self.classes) else f"class {k}"

    def has_probs(self, condition_id: str = CLEAN) -> bool:
        return self.store.has_probs(condition_id)

    def probs(self, condition_id: str) -> np.ndarray:
        """Full probabilities ``(N_images, K)`` of one condition (cached)."""
        if condition_id not in self._probs:
            self._probs[condition_id] = self.store.probs(condition_id)
        return self._probs[condition_id]

    @cached_property
    def all_probs(self) -> bool:
        """True when full probabilities were stored for every condition."""
        return all(self.store.has_probs(c) for c in self.conditions.condition_id)


StoreLike = str | Path | ResultsStore | RunData


def load_run(store: StoreLike) -> RunData:
    """Load a run directory (path, :class:`ResultsStore` or an already loaded :class:`RunData`)."""
    if isinstance(store, RunData):
        return store
    if not isinstance(store, ResultsStore):
        p = Path(store)
        if not p.is_dir():
            raise DataError(f"run directory {p} does not exist; pass the --out DIR of a 'weakspot run'")
        store = ResultsStore(p)
    manifest = store.manifest() if store.exists() else {}
    classes = store.classes()
    images = store.images()
    conds = store.conditions().copy()
    preds = store.predictions()
    if preds.empty:
        raise DataError(f"{store.root} has no finished predictions yet; run 'weakspot run' first")
    if CLEAN not in set(preds.condition_id):
        raise DataError(
            f"{store.root} has no predictions for the clean condition; every analysis compares "
            "against it: finish the run ('weakspot run CONFIG --out DIR' resumes)"
        )
    if CLEAN not in set(conds.condition_id):
        conds = pd.concat(
            [
                pd.DataFrame(
                    {
                        "condition_id": [CLEAN],
                        "degradation": [CLEAN],
                        "family": [CLEAN],
                        "params_json": ["{}"],
                    }
                ),
                conds,
            ],
            ignore_index=True,
        )

    # a partial run (killed or still running): analyse the conditions that have predictions
    evaluated = set(preds.condition_id)
    pending = sorted(set(conds.condition_id) - evaluated)
    conds = conds[conds.condition_id.isin(evaluated)].reset_index(drop=True)

    # level on the x-axis and mild -> severe order, per degradation
    conds["x"] = conds["axis_value"].astype(float)
    sev = conds["severity"].astype(float)
    conds.loc[conds["x"].isna(), "x"] = sev[conds["x"].isna()]
    conds["order"] = np.nan
    conds["direction"] = 1
    for deg, g in conds[conds.condition_id != CLEAN].groupby("degradation", sort=False):
        # the x-axis direction always follows the axis (ImageNet-C jpeg: severity up, quality down)
        d = _direction(
            deg, g["axis"].dropna().iloc[0] if g["axis"].notna().any() else None, g["x"].to_numpy()
        )
        conds.loc[g.index, "direction"] = d
        if g["severity"].notna().all():
            key = g["severity"].astype(float)
        else:
            key = d * g["x"].fillna(0.0)
        conds.loc[g.index, "order"] = key.rank(method="first").astype(int)
    conds.loc[conds.condition_id == CLEAN, ["order", "x"]] = [0, np.nan]
    conds["level"] = [
        "clean" if cid == CLEAN else level_label(x, u, s, None if _missing(av) else ax)
        for cid, x, u, s, ax, av in zip(
            conds.condition_id,
            conds.x,
            conds.axis_unit,
            conds.severity,
            conds.axis,
            conds.axis_value,
            strict=True,
        )
    ]

    clean = preds[preds.condition_id == CLEAN].set_index("image_index")
    rows = preds.merge(
        conds[
            [
                "condition_id",
                "degradation",
                "family",
                "severity",
                "axis",
                "axis_value",
                "axis_unit",
                "x",
                "order",
                "level",
            ]
        ],
        on="condition_id",
        how="left",
    )
    rows["p_clean"] = clean["top1_prob"].reindex(rows.image_index).to_numpy()
    rows["clean_correct1"] = clean["correct1"].reindex(rows.image_index).to_numpy()
    rows["drop"] = rows["p_clean"] - rows["p_clean_top1"]
    rows["ref_class"] = np.where(rows["label"] >= 0, rows["label"], rows["clean_top1"]).astype(np.int64)
    rows["labelled"] = rows["label"] >= 0
    rows["agree"] = rows["top1"] == rows["clean_top1"]
    rows["hit"] = np.where(rows["labelled"], rows["correct1"], rows["agree"])
    return RunData(
        store=store,
        classes=classes,
        images=images,
        conditions=conds,
        rows=rows,
        manifest=manifest,
        pending=pending,
    )
