"""Paired tests of a robust-training grid: where a test level sits against the training range,
"within 3 points" verdicts with a paired interval, and strategy-against-strategy McNemar tests.

Every model is evaluated on the very same degraded test images (:func:`degrade_test_set`), so
each comparison is paired:

* **Verdict per model and test level** — the model's degraded accuracy against its *own* clean
  accuracy on the same images, with Newcombe's paired-difference interval
  (:func:`weakspot.analysis.paired.paired_difference_ci`). ``"within 3 points"`` only when the
  whole interval lies above −3 points; ``"not shown"`` otherwise (the point estimate alone is
  never enough).
* **Strategy against strategy** — exact McNemar per test level for every pair of models
  (:func:`weakspot.analysis.paired.compare_paired`), Holm-corrected over the whole family
  (all pairs × all levels).
* **Where a level sits** — :func:`level_kind`: ``within range`` (a value the training mix draws:
  a point of its level grid, the ends included), ``between levels`` (inside the training range
  but between two grid values), ``beyond range`` (outside it), ``not trained`` (no training range
  for that degradation), with ``", other <param>"`` appended when a fixed parameter differs
  from training (e.g. another sensor's defect map, ``map_seed``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
import torch
from torch import nn

from weakspot.analysis.paired import compare_paired, holm, wilson_interval
from weakspot.robustify.grid import degrade_test_set, predict
from weakspot.robustify.mix import Condition, LevelRange, SeverityRange

__all__ = [
    "MARGIN_POINTS",
    "STUDY_TESTS",
    "STUDY_TRAIN",
    "correctness",
    "grid_from_correctness",
    "level_kind",
    "pairwise_table",
    "study_markdown",
    "verdict_table",
]

#: "within this many points of its own clean accuracy" (the robust-training study's claim)
MARGIN_POINTS = 3.0

#: Training degradations of the robust-training study (noise, blur, dead / hot / stuck pixels).
STUDY_TRAIN = (
    "gaussian_noise:variance=0.001..0.05",
    "gaussian_blur:sigma_px=0.4..1.0",
    "dead_pixels:density=0.005..0.05",
    "hot_pixels:density=0.005..0.05",
    "stuck_pixels:density=0.005..0.05",
)
#: Test levels: the top training level, between two training levels, beyond the range, and the
#: top defect level on a sensor whose defect map was never seen (``map_seed=9``).
STUDY_TESTS = (
    "clean",
    "gaussian_noise:variance=0.05",
    "gaussian_blur:sigma_px=1.0",
    "dead_pixels:density=0.05",
    "hot_pixels:density=0.05",
    "stuck_pixels:density=0.05",
    "gaussian_noise:variance=0.025",
    "gaussian_blur:sigma_px=0.7",
    "dead_pixels:density=0.025",
    "hot_pixels:density=0.025",
    "stuck_pixels:density=0.025",
    "gaussian_noise:variance=0.1",
    "gaussian_blur:sigma_px=2.0",
    "gaussian_blur:sigma_px=3.0",
    "dead_pixels:density=0.1",
    "hot_pixels:density=0.1",
    "stuck_pixels:density=0.1",
    "dead_pixels:density=0.05,map_seed=9",
    "hot_pixels:density=0.05,map_seed=9",
    "stuck_pixels:density=0.05,map_seed=9",
)


def _fixed_differs(test: LevelRange, train: LevelRange) -> list[str]:
    keys = sorted(set(test.fixed) | set(train.fixed))
    return [k for k in keys if str(test.fixed.get(k, "")) != str(train.fixed.get(k, ""))]


def level_kind(
    condition: Condition, train_ranges: Sequence[LevelRange | SeverityRange], levels: int = 16
) -> str:
    """Where a test condition sits against the training degradations.

    ``"clean"``; ``"within range"`` — its value is one the training mix draws (a point of the
    range's level grid of ``levels`` values, the ends included); ``"between levels"`` — inside
    ``[low, high]`` but not on the grid; ``"beyond range"``; ``"not trained"``. A differing fixed
    parameter (say ``map_seed``) appends ``", other map_seed"``. A test at a registry severity
    (``imagenet_c/fog@3``) against a trained severity range (``imagenet_c/fog@1..5``) is within or
    beyond that range of severities; a test severity range (``imagenet_c/fog@0..3``) is within if
    it lies inside the trained severity range, beyond if not, and not trained without one.
    """
    r = condition.range
    if r is None:
        return "clean"
    sev_ranges = [t for t in train_ranges if isinstance(t, SeverityRange) and t.name == r.name]
    if sev_ranges and "@" in condition.spec:  # a registry severity against a trained severity range
        try:
            sev = int(condition.spec.rsplit("@", 1)[1])
        except ValueError:
            sev = None
        if sev is not None:
            ts = sev_ranges[0]
            return "within range" if ts.low <= sev <= ts.high else "beyond range"
    if isinstance(r, SeverityRange):  # a range of severities: inside the trained one, or not
        if not sev_ranges:
            return "not trained"
        ts = sev_ranges[0]
        return "within range" if ts.low <= r.low and r.high <= ts.high else "beyond range"
    same = [t for t in train_ranges if isinstance(t, LevelRange) and t.name == r.name and t.param == r.param]
    if not same:
        return "not trained"
    t = same[0]
    assert r.low is not None and t.low is not None and t.high is not None  # set by LevelRange.__post_init__
    v = float(r.low)
    if v < float(t.low) - 1e-12 or v > float(t.high) + 1e-12:
        kind = "beyond range"
    else:
        grid = t.grid(levels).numpy()
        on_grid = np.any(np.isclose(grid, v, rtol=1e-9, atol=1e-12))
        kind = "within range" if on_grid else "between levels"
    other = _fixed_differs(r, t)
    return kind + "".join(f", other {k}" for k in other)


@torch.inference_mode()
def correctness(
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    conditions: Sequence[Condition],
    *,
    seed: int = 0,
    device="cpu",
) -> dict[str, dict[str, np.ndarray]]:
    """``{test spec: {model: (N,) bool}}`` — image i classified right — on the same degraded pixels."""
    out: dict[str, dict[str, np.ndarray]] = {}
    lab = labels.cpu()
    for cond in conditions:
        x = degrade_test_set(images, cond, seed)
        out[cond.spec] = {m: (predict(model, x, device=device) == lab).numpy() for m, model in models.items()}
    return out


def grid_from_correctness(
    correct: Mapping[str, Mapping[str, np.ndarray]], labels: torch.Tensor, class_names: Sequence[str]
) -> pd.DataFrame:
    """The long table of :func:`weakspot.robustify.grid.evaluate_grid` (model, test, cls, n, correct,
    accuracy, ci95) counted from per-image correctness, without predicting again."""
    lab = labels.cpu().numpy()
    rows = []
    for test, per_model in correct.items():
        for model, ok in per_model.items():
            groups = [("all", np.ones_like(ok, dtype=bool))] + [
                (str(n), lab == c) for c, n in enumerate(class_names)
            ]
            for cname, sel in groups:
                n = int(sel.sum())
                if n == 0:
                    continue
                acc = float(ok[sel].mean())
                rows.append(
                    {
                        "model": model,
                        "test": test,
                        "cls": cname,
                        "n": n,
                        "correct": int(ok[sel].sum()),
                        "accuracy": acc,
                        "ci95": 1.96 * (acc * (1 - acc) / n) ** 0.5,
                    }
                )
    df = pd.DataFrame(rows)
    return df


def verdict_table(
    correct: Mapping[str, Mapping[str, np.ndarray]],
    kinds: Mapping[str, str],
    *,
    clean: str = "clean",
    margin_points: float = MARGIN_POINTS,
    ci: float = 0.95,
) -> pd.DataFrame:
    """One row per (model, degraded test): accuracy with its Wilson interval, the paired change
    against the model's own clean accuracy with Newcombe's interval (points), and the verdict
    ``"within 3 points"`` (whole interval above −``margin_points``) or ``"not shown"``."""
    rows = []
    for test, per_model in correct.items():
        if test == clean:
            continue
        for model, ok in per_model.items():
            c = compare_paired(correct[clean][model], ok, ci=ci)
            lo_acc, hi_acc = wilson_interval(int(ok.sum()), ok.size, ci)
            rows.append(
                {
                    "model": model,
                    "test": test,
                    "kind": kinds.get(test, ""),
                    "n": c["n"],
                    "clean_acc": 100 * c["acc_a"],
                    "acc": 100 * c["acc_b"],
                    "acc_lo": 100 * float(lo_acc),
                    "acc_hi": 100 * float(hi_acc),
                    "change": 100 * c["diff"],
                    "change_lo": 100 * c["diff_lo"],
                    "change_hi": 100 * c["diff_hi"],
                    "verdict": f"within {margin_points:g} points"
                    if 100 * c["diff_lo"] > -margin_points
                    else "not shown",
                }
            )
    return pd.DataFrame(rows)


def pairwise_table(
    correct: Mapping[str, Mapping[str, np.ndarray]],
    kinds: Mapping[str, str],
    *,
    models: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every pair of models on every test level: exact McNemar on the same images, Holm-adjusted
    over the whole family (pairs × levels). ``diff`` is B − A in points with Newcombe's interval;
    ``verdict`` says which is better when the Holm-adjusted p is below ``alpha``."""
    rows = []
    for test, per_model in correct.items():
        names = list(models) if models is not None else list(per_model)
        for a, b in combinations(names, 2):
            c = compare_paired(per_model[a], per_model[b])
            rows.append(
                {
                    "test": test,
                    "kind": kinds.get(test, ""),
                    "A": a,
                    "B": b,
                    "n": c["n"],
                    "acc_A": 100 * c["acc_a"],
                    "acc_B": 100 * c["acc_b"],
                    "diff": 100 * c["diff"],
                    "diff_lo": 100 * c["diff_lo"],
                    "diff_hi": 100 * c["diff_hi"],
                    "only_A": c["b"],
                    "only_B": c["c"],
                    "p": c["p"],
                }
            )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["p_holm"] = holm(df["p"].to_numpy())
    df["verdict"] = np.where(
        df["p_holm"] >= alpha,
        "no significant difference",
        np.where(df["only_B"] > df["only_A"], "B better", "A better"),
    )
    return df


def _md(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "\n".join(
        "| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)
    )


def study_markdown(
    verdicts: pd.DataFrame, pairs: pd.DataFrame, *, margin_points: float = MARGIN_POINTS
) -> str:
    """The verdict table (accuracy %, paired change vs own clean with its interval, verdict) grouped by
    level kind, then the strategy-vs-strategy tests with Holm-adjusted p-values."""
    order = {"within range": 0, "between levels": 1, "beyond range": 2}
    v = verdicts.copy()
    v["_k"] = v["kind"].map(lambda k: order.get(k, 3))
    v = v.sort_values(["_k", "test", "model"], kind="stable")
    show = pd.DataFrame(
        {
            "level": v["kind"],
            "test": v["test"],
            "model": v["model"],
            "clean %": v["clean_acc"].map("{:.1f}".format),
            "degraded % [95% CI]": [
                f"{a:.1f} [{lo:.1f}, {hi:.1f}]"
                for a, lo, hi in zip(v["acc"], v["acc_lo"], v["acc_hi"], strict=True)
            ],
            "change, points [95% CI]": [
                f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"
                for d, lo, hi in zip(v["change"], v["change_lo"], v["change_hi"], strict=True)
            ],
            "verdict": v["verdict"],
        }
    )
    parts = [
        (
            f"Verdict per model and test level: the degraded accuracy against the model's own clean accuracy on the "
            f'same images, Newcombe\'s paired 95% interval; "within {margin_points:g} points" only if the whole '
            f"interval is above −{margin_points:g} points.\n"
        ),
        _md(show),
    ]
    if not pairs.empty:
        p = pairs.copy()
        p["_k"] = p["kind"].map(lambda k: order.get(k, 3) if k != "clean" else -1)
        p = p.sort_values(["_k", "test"], kind="stable")
        showp = pd.DataFrame(
            {
                "level": p["kind"],
                "test": p["test"],
                "A": p["A"],
                "B": p["B"],
                "A %": p["acc_A"].map("{:.1f}".format),
                "B %": p["acc_B"].map("{:.1f}".format),
                "B − A, points [95% CI]": [
                    f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]"
                    for d, lo, hi in zip(p["diff"], p["diff_lo"], p["diff_hi"], strict=True)
                ],
                "only A / only B": [f"{a} / {b}" for a, b in zip(p["only_A"], p["only_B"], strict=True)],
                "McNemar p": p["p"].map("{:.2g}".format),
                "Holm p": p["p_holm"].map("{:.2g}".format),
                "verdict": p["verdict"],
            }
        )
        parts += [
            (
                f"\nStrategy against strategy on the same test images: exact McNemar, Holm-adjusted over all "
                f"{len(p)} comparisons (pairs × test levels).\n"
            ),
            _md(showp),
        ]
    return "\n".join(parts) + "\n"
