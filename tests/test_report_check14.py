"""Bugs found by looking at a real report (issue 14's user-level check): each has a test here."""

from __future__ import annotations

import numpy as np
from test_analysis_synth import make_store

from weakspot import analysis as A


def _jpeg_store(root):
    """An ImageNet-C-style jpeg sweep: severities 1, 3, 5 AND a quality axis that falls with them."""
    levels = [(25, 0.5), (15, 1.0), (7, 2.0)]
    store, _raw = make_store(root, physical=("jpeg", "imagenet_c", "quality", "", levels))
    c = store.conditions()
    c.loc[c.degradation == "jpeg", "degradation"] = "imagenet_c/jpeg_compression"  # ids may not hold '/'
    for (q, _), sev in zip(levels, (1, 3, 5), strict=True):
        c.loc[c.axis_value == q, "severity"] = float(sev)
    store.write_conditions(
        {
            k: [None if isinstance(v, float) and np.isnan(v) else v for v in c[k].tolist()]
            for k in (
                "condition_id",
                "degradation",
                "family",
                "params_json",
                "severity",
                "axis",
                "axis_value",
                "axis_unit",
            )
        }
    )
    return store


def test_imagenet_c_jpeg_axis_points_to_more_damage(tmp_path):
    """Seen: the jpeg_compression panel ran quality 7 → 25 left to right, i.e. damage grew to the
    LEFT, because a degradation with severities always got direction +1."""
    import matplotlib.pyplot as plt

    from weakspot.report.figures import accuracy_figure

    store = _jpeg_store(tmp_path / "run")
    run = A.load_run(store)
    c = run.conditions[run.conditions.degradation == "imagenet_c/jpeg_compression"].sort_values("order")
    assert (c.direction == -1).all()
    assert c.x.tolist() == [25, 15, 7] and c.order.tolist() == [1, 2, 3]  # order still from severity
    assert (run.conditions[run.conditions.degradation == "contrast_drop"].direction == 1).all()
    a = A.analyze(store, n_boot=20)
    d = a.run.conditions.groupby("degradation")["direction"].first().to_dict()
    fig = accuracy_figure(a.accuracy, ["imagenet_c/jpeg_compression"], {}, True, direction=d)
    left, right = fig.axes[0].get_xlim()
    assert left > right  # quality 25 (mild) left, 7 (severe) right
    plt.close(fig)
    bp = a.breaking[
        (a.breaking.degradation == "imagenet_c/jpeg_compression") & a.breaking.label.str.contains("not")
    ]
    assert not bp.label.str.contains(">").any()


def test_exposure_panel_labels_every_level_and_legend_avoids_the_curve(tmp_path):
    """Seen: the exposure panel showed one tick ('1/1000 s') for three exposures, and the
    pixel_size legend (fixed lower left) sat on the curve."""
    import matplotlib.pyplot as plt

    from weakspot.report.figures import accuracy_figure

    levels = [(0.004, 0.3), (0.001, 1.0), (0.00025, 2.0)]
    store, _ = make_store(tmp_path / "exp", physical=("exposure", "camera", "exposure_s", "s", levels))
    a = A.analyze(store, n_boot=20)
    d = a.run.conditions.groupby("degradation")["direction"].first().to_dict()
    fig = accuracy_figure(a.accuracy, ["exposure"], {}, True, direction=d)
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert {"1/250 s", "1/1000 s", "1/4000 s"} <= set(labels)
    assert ax.get_legend()._loc != 3  # not pinned to 'lower left'
    plt.close(fig)


def test_accuracy_table_shows_per_level_flip_counts(tmp_path):
    """Seen: the accuracy table gave the McNemar p but not the flips it counts (lost / gained per
    level); they are now a column, equal to a direct count over the store."""
    from weakspot.report import write_report

    store, _raw = make_store(tmp_path / "run", n_classes=3, per_class=5)
    html = write_report(tmp_path / "run", tmp_path / "r", n_boot=20, max_examples=0).read_text()
    assert "<th>flips vs clean</th>" in html
    p = store.predictions()
    clean = p[p.condition_id == "clean"].set_index("image_index").correct1
    for cid, g in p[p.condition_id != "clean"].groupby("condition_id"):
        now = g.set_index("image_index").correct1
        lost = int((clean & ~now).sum())
        gained = int((~clean & now).sum())
        assert f"{lost} lost / {gained} gained" in html, cid


def test_per_class_note_does_not_call_500_images_few(tmp_path):
    """Seen on the MNIST demo: 'rest on few images (about 500 per class here): with ~10 images
    per class z-scores and ranks are noisy' — self-contradictory; the note now follows n."""
    from weakspot.report import write_report
    from weakspot.report.sections import per_class_note

    assert "few images" in per_class_note(10) and "noisy" in per_class_note(10)
    assert "few" not in per_class_note(500) and "noisy" not in per_class_note(500)
    assert "about 500 images per class" in per_class_note(500)
    make_store(tmp_path / "big", n_classes=3, per_class=40)
    html = write_report(tmp_path / "big", tmp_path / "r", n_boot=20, max_examples=0).read_text()
    assert "about 40 images per class" in html and "~10 images" not in html


def test_near_one_intervals_never_print_as_zero_width(tmp_path):
    """Seen on the MNIST demo: 'clean top-1 accuracy [1.00, 1.00]' under a 99.7% card — a Wilson
    interval of width 0.003 rounded to two decimals. Decimals are now added until it shows."""
    from weakspot.analysis.paired import wilson_interval
    from weakspot.report import write_report
    from weakspot.report.sections import _interval

    lo, hi = (float(v) for v in np.ravel(wilson_interval(4985, 5000)))
    assert hi - lo > 0.001
    text = _interval(lo, hi)
    a, b = text.strip("[]").split(", ")
    assert a != b and float(a) <= 4985 / 5000 <= float(b)
    p = _interval(lo, hi, pct=True, digits=1)
    assert p.count("%") == 2 and p.split(", ")[0] != p.split(", ")[1]
    assert _interval(0.25, 0.75) == "[0.25, 0.75]" and _interval(1.0, 1.0) == "[1.00, 1.00]"
    # on a page: a run whose clean accuracy is 100% on most classes
    make_store(tmp_path / "run", n_classes=3, per_class=200)
    html = write_report(tmp_path / "run", tmp_path / "r", n_boot=20, max_examples=0).read_text()
    import re

    for lo_s, hi_s in re.findall(r"\[(\d\.\d+), (\d\.\d+)\]", html):
        assert lo_s != hi_s or lo_s in ("1.00", "0.00")  # only true zero-width (all right / all wrong) may
