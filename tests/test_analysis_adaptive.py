"""Adaptive breaking points: bisection against analytic curves and against a fine fixed grid
evaluated on the real MNIST CNN with real digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weakspot import analysis as A
from weakspot.errors import InvalidParameterError
from weakspot.evaluate.adaptive import adaptive_breaking_points, bisect_breaking_point


def test_bisection_finds_the_analytic_half_point():
    tau = 1.3
    r = bisect_breaking_point(lambda x: math.exp(-x / tau), 0.0, 5.0, 1.0, tol=1e-3)
    assert r.status == "interpolated" and r.x == pytest.approx(tau * math.log(2), abs=1e-3)
    assert r.n_evals == 2 + math.ceil(math.log2(5.0 / 1e-3))
    # an exposure-like axis: shorter is worse (mild > severe); v(x) = 1 - exp(-x), clean 1 - e^-10
    v0 = 1 - math.exp(-10)
    r = bisect_breaking_point(lambda x: 1 - math.exp(-x), 10.0, 0.01, v0, tol=1e-4)
    assert r.x == pytest.approx(-math.log(1 - v0 / 2), abs=1e-4)
    assert bisect_breaking_point(lambda x: 0.9, 0, 1, 1.0, tol=0.1).status == "not_reached"
    assert bisect_breaking_point(lambda x: 0.1, 0.5, 1, 1.0, tol=0.1).status == "before_first_level"
    with pytest.raises(InvalidParameterError, match="tol"):
        bisect_breaking_point(lambda x: 0.1, 0, 1, 1.0, tol=0)


@pytest.mark.slow
def test_adaptive_matches_a_fine_grid_on_the_real_mnist_cnn():
    from weakspot.data import open_dataset
    from weakspot.degrade import get_degradation
    from weakspot.models import load_model

    model = load_model("mnist_cnn")
    ds = open_dataset(kind="mnist_5k", per_class=4, seed=0)
    ds = ds.subset([i for i, lab in enumerate(ds.labels) if lab in (0, 1, 7)])
    tol = 0.1
    df = adaptive_breaking_points(model, ds, "gaussian_blur", mild=0.0, severe=4.0, tol=tol, metric="p_clean")
    assert sorted(df["class"]) == [0, 1, 7] and (df.n_images == 4).all()

    # reference: every image at every grid point (step tol), straight through the registry and the model
    imgs = torch.stack([ds.load(i) for i in range(len(ds))])
    labels = np.asarray(ds.labels)
    xs = np.round(np.arange(0.0, 4.0 + 1e-9, tol), 6)
    with torch.inference_mode():
        clean_p = torch.softmax(model.module(model.preprocess(imgs)), 1).numpy()
        batch = torch.cat([get_degradation("gaussian_blur", sigma_px=float(x))(imgs) for x in xs])
        p = torch.softmax(model.module(model.preprocess(batch)), 1).numpy().reshape(len(xs), len(ds), -1)
    c = clean_p.argmax(1)
    for row in df.itertuples():
        m = labels == df.loc[row.Index, "class"]
        curve = p[:, m, :][:, np.arange(m.sum()), c[m]].mean(1)
        v0 = clean_p[m][np.arange(m.sum()), c[m]].mean()
        assert row.clean_value == pytest.approx(v0, abs=1e-5)
        gx, gst = A.breaking_point(xs[1:], curve[1:], v0, clean_x=0.0)
        assert row.status == gst
        if gst == "interpolated":
            assert abs(row.breaking_x - gx) <= 2 * tol, (row.class_name, row.breaking_x, gx)
    att = df.attrs
    assert att["grid_points"] == len(xs) and att["grid_image_evaluations"] == len(xs) * len(ds)
    assert att["adaptive_image_evaluations"] == int((df.n_evals * df.n_images).sum())
    assert att["saved"] > att["adaptive_image_evaluations"]  # bisection needs < half the evaluations here
