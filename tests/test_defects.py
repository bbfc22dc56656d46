"""Sensor defects: persistent maps, counts/densities, values, errors."""

import pytest
import torch

import weakspot
from weakspot.degrade.defects import defect_count
from weakspot.errors import InvalidParameterError


def changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Boolean (B, H, W) map of pixels where any channel differs."""
    return (a != b).any(dim=1)


@pytest.fixture(scope="module")
def mid():
    # strictly inside (0.05, 0.95): every dead/hot/stuck pixel visibly changes
    g = torch.Generator().manual_seed(0)
    return 0.05 + 0.9 * torch.rand(3, 3, 40, 50, generator=g)


def test_dead_hot_stuck_values(mid):
    dead = weakspot.get_degradation("dead_pixels", count=12)(mid)
    m = changed(dead, mid)
    assert m.sum((1, 2)).tolist() == [12, 12, 12]
    assert float(dead.permute(1, 0, 2, 3)[:, m].abs().max()) == 0.0  # all channels 0
    hot = weakspot.get_degradation("hot_pixels", count=12)(mid)
    assert float(hot.permute(1, 0, 2, 3)[:, changed(hot, mid)].min()) == 1.0
    half = weakspot.get_degradation("hot_pixels", count=12, level=0.02)(mid)
    mh = changed(half, mid)
    diff = (half - mid).permute(1, 0, 2, 3)[:, mh]
    assert torch.allclose(diff, torch.full_like(diff, 0.02), atol=1e-6)  # additive dark signal
    stuck = weakspot.get_degradation("stuck_pixels", count=12)(mid)
    ms = changed(stuck, mid)
    vals = stuck.permute(0, 2, 3, 1)[ms].view(3, 12, 3)
    assert torch.equal(vals[0], vals[1]) and torch.equal(vals[0], vals[2])  # same value in every image
    assert float(vals[0].std(0).min()) > 0  # values differ from pixel to pixel
    # the unaffected pixels are untouched
    for out, mask in ((dead, m), (hot, changed(hot, mid)), (stuck, ms)):
        assert torch.equal(out.permute(0, 2, 3, 1)[~mask], mid.permute(0, 2, 3, 1)[~mask])


def test_defect_map_persists_across_images_calls_and_generators(mid):
    deg = weakspot.get_degradation("dead_pixels", count=20, map_seed=5)
    a = changed(deg(mid, generator=1), mid)
    b = changed(deg(mid.flip(-1), generator=999), mid.flip(-1))
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], a[2])  # every image of the batch
    assert torch.equal(a[0], b[0])  # other images, other generator: same sensor, same defects
    c = changed(weakspot.get_degradation("dead_pixels", count=20, map_seed=6)(mid), mid)
    assert int((a[0] & c[0]).sum()) < 5  # another sensor: other positions
    # nested maps: more defects keep the positions of fewer
    few = changed(weakspot.get_degradation("dead_pixels", count=5, map_seed=5)(mid), mid)[0]
    assert bool((few & ~a[0]).sum() == 0)


def test_count_and_density_design():
    assert defect_count(28, 28, 7, 0.0) == 7
    assert defect_count(28, 28, 7, 0.002) == 2  # density wins when > 0
    assert defect_count(28, 28, 0, 1e-6) == 1  # a positive density gives at least one defect
    assert defect_count(4, 4, 100, 0.0) == 16
    mnist = torch.full((2, 1, 28, 28), 0.5)
    for n in (1, 5, 10):
        out = weakspot.get_degradation("hot_pixels", count=n)(mnist)
        assert int((out != mnist).sum()) == 2 * n
    sev = [
        int((weakspot.get_degradation("dead_pixels", severity=s)(mnist) != mnist).sum()) // 2
        for s in range(1, 6)
    ]
    assert sev == [1, 1, 2, 4, 8]
    big = torch.full((1, 3, 224, 224), 0.5)
    assert int(changed(weakspot.get_degradation("dead_pixels", severity=5)(big), big).sum()) == round(
        0.01 * 224 * 224
    )


def test_defects_keep_gradients_for_unaffected_pixels(mid):
    x = mid[:1].clone().requires_grad_(True)
    weakspot.get_degradation("stuck_pixels", count=30)(x).sum().backward()
    g = x.grad[0].sum(0)
    assert int((g == 0).sum()) == 30 and int((g == 3).sum()) == 40 * 50 - 30


def test_bad_defect_parameters():
    with pytest.raises(InvalidParameterError, match="count"):
        weakspot.get_degradation("dead_pixels", count=-1)
    with pytest.raises(InvalidParameterError, match="count"):
        weakspot.get_degradation("dead_pixels", count=2.5)
    with pytest.raises(InvalidParameterError, match="density"):
        weakspot.get_degradation("hot_pixels", density=1.5)
    with pytest.raises(InvalidParameterError, match="level"):
        weakspot.get_degradation("hot_pixels", level=0)
    assert weakspot.get_spec("stuck_pixels").family == "sensor_defect"
    assert weakspot.get_spec("stuck_pixels").random is False
