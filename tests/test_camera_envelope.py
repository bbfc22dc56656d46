"""The camera's operating envelope: computed from a stored 2-D camera grid against independent
computations on the designed accuracy table, and refined by bisection with a model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import weakspot
from weakspot.analysis.envelope import REFINED_FILE, format_value, operating_envelope, refine_envelope
from weakspot.evaluate.store import ResultsStore

PIXELS = [2.8, 5.0, 8.0, 11.0]
EXPOSURES = [0.00025, 0.001, 0.004, 0.0125]
# correct images out of 40 per (pixel size, exposure): longer exposures and smaller pixels help
CORRECT = np.array([[30, 37, 39, 40], [26, 36, 38, 40], [22, 34, 37, 39], [18, 30, 33, 36]])
N, K = 40, 4


def write_run(
    root,
    correct=CORRECT,
    reference_correct=40,
    labelled=True,
    extra_params=None,
    pixels=PIXELS,
    exposures=EXPOSURES,
):
    labels = np.arange(N) % K
    conds = [("clean", "clean", "clean", {}, N)]
    for i, p in enumerate(pixels):
        for j, e in enumerate(exposures):
            params = {**(extra_params or {}), "pixel_size_um": p, "exposure_s": e, "read_noise_e": 10.0}
            conds.append(
                (f"camera.pixel_size_um={p},exposure_s={e}", "camera", "camera", params, int(correct[i, j]))
            )
    conds.append(
        (
            "camera_reference",
            "camera",
            "camera",
            {**(extra_params or {}), "pixel_size_um": 2.8, "exposure_s": 0.0125, "read_noise_e": 10.0},
            reference_correct,
        )
    )
    store = ResultsStore(root)
    store.write_classes([f"c{k}" for k in range(K)])
    store.write_images(
        {
            "image_index": list(range(N)),
            "image_id": [f"i{k}" for k in range(N)],
            "path": [f"/x/{k}.png" for k in range(N)],
            "label": (labels if labelled else np.full(N, -1)).tolist(),
            "height": [8] * N,
            "width": [8] * N,
        }
    )
    store.write_conditions(
        {
            "condition_id": [c[0] for c in conds],
            "degradation": [c[1] for c in conds],
            "family": [c[2] for c in conds],
            "params_json": [json.dumps(c[3]) for c in conds],
            "severity": [None] * len(conds),
            "axis": [None] * len(conds),
            "axis_value": [None] * len(conds),
            "axis_unit": [None] * len(conds),
        }
    )
    store.write_manifest({"seed": 0, "model": {"name": "synthetic"}})
    for cid, _, _, _, n_ok in conds:
        top1 = np.where(np.arange(N) < n_ok, labels, (labels + 1) % K)
        lab = labels if labelled else np.full(N, -1)
        clean_top1 = labels
        rows = {
            "image_index": list(range(N)),
            "top1": top1.tolist(),
            "top1_prob": [0.9] * N,
            "top5": [[int(t)] + [int((t + m) % K) for m in range(1, K)] + [0] for t in top1],
            "top5_prob": [[0.9, 0.05, 0.03, 0.02, 0.0]] * N,
            "label": lab.tolist(),
            "p_label": [0.9 if y >= 0 else float("nan") for y in lab],
            "clean_top1": clean_top1.tolist(),
            "p_clean_top1": [0.9] * N,
            "correct1": ((lab >= 0) & (top1 == lab)).tolist(),
            "correct5": (lab >= 0).tolist(),
        }
        store.write_unit(cid, 0, rows)
    return root


def test_envelope_accuracy_keep_and_contour_match_the_designed_table(tmp_path):
    env = operating_envelope(write_run(tmp_path / "run"))
    assert env is not None and (env.x, env.y) in {
        ("exposure_s", "pixel_size_um"),
        ("pixel_size_um", "exposure_s"),
    }
    acc = CORRECT / N if env.y == "pixel_size_um" else (CORRECT / N).T
    np.testing.assert_allclose(env.accuracy, acc)
    assert (
        env.reference == "camera_reference"
        and env.reference_accuracy == 1.0
        and env.threshold == pytest.approx(0.9)
    )
    np.testing.assert_array_equal(env.keep, acc >= 0.9)
    # every crossing along exposure is the linear interpolation of accuracy at 0.9
    along_e = [c for c in env.contour if c["param"] == "exposure_s"]
    expect = {}
    for i, p in enumerate(PIXELS):
        row = CORRECT[i] / N
        for j in range(3):
            if (row[j] >= 0.9) != (row[j + 1] >= 0.9):
                expect[p] = EXPOSURES[j] + (0.9 - row[j]) * (EXPOSURES[j + 1] - EXPOSURES[j]) / (
                    row[j + 1] - row[j]
                )
    assert {c["fixed"]: c["crossing"] for c in along_e} == pytest.approx(expect)
    assert not any(c["refined"] for c in env.contour)
    assert env.better_high == {"exposure_s": True, "pixel_size_um": False}
    # the largest all-keeping block: pixel sizes 2.8–5 µm × exposures 1/1000–1/80 s (6 points; the
    # 2.8–8 µm × 1/250–1/80 s block also has 6 and is found later)
    assert env.corner["n_points"] == 6
    assert env.sentence == (
        "The model keeps 90% of the default camera's accuracy for exposures ≥ 1/1000 s at pixel sizes ≤ 5 µm."
    )


@pytest.mark.slow
def test_envelope_share_reference_and_unlabelled_wording(tmp_path):
    env = operating_envelope(write_run(tmp_path / "a", reference_correct=38, labelled=False), share=0.8)
    assert env.metric == "agreement" and env.reference_accuracy == pytest.approx(0.95)
    assert env.threshold == pytest.approx(0.76)
    assert "80% of the default camera's agreement with its clean predictions" in env.sentence
    everything = operating_envelope(write_run(tmp_path / "b", correct=np.full((4, 4), 40)))
    assert everything.sentence.endswith(
        "for all tested exposures (1/4000 s to 1/80 s) at all tested pixel sizes (2.8 µm to 11 µm)."
    )
    nowhere = operating_envelope(write_run(tmp_path / "c", correct=np.full((4, 4), 10)))
    assert "nowhere" in nowhere.sentence and nowhere.corner is None
    with pytest.raises(weakspot.errors.InvalidParameterError, match="share"):
        operating_envelope(tmp_path / "a", share=1.5)


def test_envelope_sentence_for_an_interior_block(tmp_path):
    # over- and under-exposure both hurt: only the middle exposures keep, at every pixel size
    correct = np.array([[30, 38, 38, 30]] * 4)
    env = operating_envelope(write_run(tmp_path / "run", correct=correct))
    assert env.better_high["pixel_size_um"] is True  # flat in pixel size (ties read as "higher is fine")
    assert env.sentence == (
        "The model keeps 90% of the default camera's accuracy for exposures from 1/1000 s "
        "to 1/250 s at all tested pixel sizes (2.8 µm to 11 µm)."
    )


def test_format_value():
    assert format_value("exposure_s", 0.001) == "1/1000 s" and format_value("exposure_s", 0.0125) == "1/80 s"
    assert format_value("pixel_size_um", 8.0) == "8 µm" and format_value("defocus_diopters", 0.5) == "0.5 D"


class BrightEnough:
    """A stand-in classifier: class 0 when the image's mean exceeds 0.3, else class 1."""

    class_names = ("bright", "dark", "c2", "c3")

    @staticmethod
    def preprocess(batch):
        return torch.stack(batch)

    @staticmethod
    def module(x):
        dark = (x.mean(dim=(1, 2, 3)) <= 0.3).long()
        return torch.nn.functional.one_hot(dark, K).float() * 10


@pytest.mark.slow
def test_refine_envelope_bisects_each_crossing_with_the_model(tmp_path):
    from weakspot.evaluate.adaptive import _probs
    from weakspot.evaluate.conditions import Condition, Step, degrade_images

    # 40 flat grey 8 × 8 scenes of graded brightness on a 22.4 µm field (8 default pixels); the
    # "model" is right (class 0 = every label) when the captured image is bright enough, so its
    # accuracy grows with exposure and with pixel area (the fixed well brightens bigger pixels)
    field = {"field_width_mm": 0.0224, "read_noise_e": 10.0}
    imgs = [torch.full((3, 8, 8), float(g)) for g in np.linspace(0.35, 0.95, N)]
    ids = [f"i{k}" for k in range(N)]
    labels = np.zeros(N, dtype=np.int64)

    def accuracy(params):
        cond = Condition(condition_id="probe", steps=(Step(name="camera", params=params),), family="camera")
        top1 = _probs(BrightEnough, degrade_images(cond, imgs, ids, 0), N).argmax(1)
        return float((top1 == labels).mean())

    pixels, exposures = [2.8, 5.0], [0.001, 0.004, 0.0125]
    correct = np.array(
        [
            [round(N * accuracy({**field, "pixel_size_um": p, "exposure_s": e})) for e in exposures]
            for p in pixels
        ]
    )
    root = tmp_path / "run"
    write_run(
        root, correct=correct, reference_correct=N, extra_params=field, pixels=pixels, exposures=exposures
    )
    # the store keeps the model's counts; the images' labels (all class 0) come with the dataset
    dataset = type(
        "D",
        (),
        {
            "load": staticmethod(lambda i: imgs[i]),
            "image_ids": ids,
            "labels": labels,
            "__len__": lambda self: N,
        },
    )()
    before = operating_envelope(root)
    assert before.contour, "the designed grid must cross 90 % somewhere"
    env = refine_envelope(root, BrightEnough, dataset, batch_size=N, tol_fraction=0.125)
    assert (root / REFINED_FILE).is_file()
    assert len(env.contour) == len(before.contour) and all(c["refined"] for c in env.contour)
    # brute-force reference: scan the model's accuracy along each crossed grid line
    for c in env.contour:
        lo, hi = c["between"]
        tol = abs(hi - lo) * 0.125
        base = {**field, c["fixed_param"]: c["fixed"]}
        xs = np.linspace(lo, hi, 33)
        acc = np.array([accuracy({**base, c["param"]: float(v)}) for v in xs])
        keep = acc >= 0.9 * env.reference_accuracy
        # first point (from the keeping end) that no longer keeps
        order = np.arange(len(xs)) if keep[0] else np.arange(len(xs))[::-1]
        first_fail = xs[order[np.argmax(~keep[order])]]
        assert abs(c["crossing"] - first_fail) <= tol + (hi - lo) / 32, (c, first_fail)


@pytest.mark.slow
def test_report_section_envelope_in_summary_json(tmp_path):
    from weakspot.report import write_report

    root = write_run(tmp_path / "run")
    html = write_report(root, n_boot=10)  # the default registry carries the envelope section
    summary = json.loads((html.parent / "summary.json").read_text())
    env = summary["sections"]["envelope"]
    assert env["sentence"] == operating_envelope(root).sentence
    assert env["threshold"] == pytest.approx(0.9) and env["x"] == "exposure_s"
    assert "keeps 90% of the default camera" in html.read_text()
    # a run without a 2-D camera grid has no envelope section
    from test_analysis_synth import make_store

    make_store(tmp_path / "plain")
    html2 = write_report(tmp_path / "plain", n_boot=10)
    assert "envelope" not in json.loads((html2.parent / "summary.json").read_text())["sections"]


def test_envelope_command_prints_the_sentence(tmp_path, capsys):
    from weakspot.cli import main

    root = write_run(tmp_path / "run")
    assert main(["envelope", str(root), "--share", "0.9"]) == 0
    out = capsys.readouterr().out
    assert operating_envelope(root).sentence.split(" for ")[0] in " ".join(out.split())
    from test_analysis_synth import make_store

    make_store(tmp_path / "plain")
    assert main(["envelope", str(tmp_path / "plain")]) == 2
    assert "no 2-D camera grid" in capsys.readouterr().err
