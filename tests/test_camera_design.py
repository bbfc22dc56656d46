"""Camera design choices that follow ISETCam: a fixed well (bigger pixels brighten and clip),
a scene of fixed physical width (pixel size independent of the file's resolution), the joint
``camera`` degradation and the ``camera_reference`` condition."""

import pytest
import torch

import weakspot
from weakspot.camera import Camera, Scene
from weakspot.camera.scene import DEFAULT_FIELD_WIDTH_MM, linear_to_srgb
from weakspot.degrade.camera_ops import DEFAULT_CAMERA, camera_from_params


def flat(linear_rgb, size=224):
    lin = torch.tensor(linear_rgb, dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, size, size)
    return linear_to_srgb(lin.clone()).float()


def electrons_by_channel(cap, cfa="RGGB"):
    e = cap.electrons[0, 0]
    return {"R": e[0::2, 0::2], "G": e[0::2, 1::2], "B": e[1::2, 1::2]}


@pytest.mark.parametrize("well", ["fixed", "area"])
def test_mean_signal_grows_with_pixel_area_and_the_fixed_well_renders_brighter(well):
    x = flat((0.02, 0.02, 0.02))
    quiet = {"read_noise_e": 0.0, "dark_current_e_per_s": 0.0}
    base = camera_from_params(**quiet)
    e0 = float(base.capture(x, generator=0).electrons.mean())
    grey0 = float(weakspot.get_degradation("camera", well=well, **quiet)(x, generator=0).mean())
    for p in (5.0, 8.0, 11.0):
        cam = camera_from_params(pixel_size_um=p, well=well, **quiet)
        cap = cam.capture(x, generator=0)
        ratio = float(cap.electrons.mean()) / e0
        assert ratio == pytest.approx((p / 2.8) ** 2, rel=0.01)  # collected charge ∝ photodiode area
        assert cam.sensor.full_well_e == pytest.approx(10_000.0 * ((p / 2.8) ** 2 if well == "area" else 1.0))
        grey = float(
            weakspot.get_degradation("camera", pixel_size_um=p, well=well, **quiet)(x, generator=0).mean()
        )
        if well == "area":
            assert grey == pytest.approx(grey0, abs=0.01)  # constant charge density: same brightness
        else:
            assert grey > grey0 + 0.1  # ISETCam: same well, more light ⇒ brighter


def test_fixed_well_clips_per_channel_and_tints():
    # a reddish patch: at 8 µm the red channel overflows the 10 000 e⁻ well, green and blue do not
    x = flat((0.5, 0.05, 0.02))
    quiet = {"read_noise_e": 0.0, "dark_current_e_per_s": 0.0}
    ref = electrons_by_channel(camera_from_params(**quiet).capture(x, generator=0))
    big = camera_from_params(pixel_size_um=8.0, **quiet)
    got = electrons_by_channel(big.capture(x, generator=0))
    ratio = (8.0 / 2.8) ** 2
    assert float(ref["R"].mean()) * ratio > 1.5 * big.sensor.full_well_e  # would overflow
    assert torch.all(got["R"] == big.sensor.full_well_e)  # clipped at the fixed well
    for c in ("G", "B"):
        assert float(got[c].mean()) == pytest.approx(float(ref[c].mean()) * ratio, rel=0.01)
        assert float(got[c].max()) < big.sensor.full_well_e
    # the rendered patch loses its red-to-green ratio (the tint of clipping) with the fixed well only
    img_fixed = weakspot.get_degradation("camera", pixel_size_um=8.0, **quiet)(x, generator=0).mean((0, 2, 3))
    img_area = weakspot.get_degradation("camera", pixel_size_um=8.0, well="area", **quiet)(
        x, generator=0
    ).mean((0, 2, 3))
    assert float(img_fixed[0] / img_fixed[1]) < float(img_area[0] / img_area[1]) - 0.2


def test_auto_exposure_undoes_the_area_gain():
    x = flat((0.02, 0.02, 0.02))
    quiet = {"read_noise_e": 0.0, "dark_current_e_per_s": 0.0}
    e0 = float(camera_from_params(**quiet).capture(x, generator=0).electrons.mean())
    e = float(
        camera_from_params(pixel_size_um=8.0, auto_exposure=True, **quiet)
        .capture(x, generator=0)
        .electrons.mean()
    )
    assert e == pytest.approx(e0, rel=0.01)


@pytest.mark.parametrize("p_um", [2.8, 5.0, 11.0])
def test_pixel_size_samples_the_scene_the_same_at_any_input_resolution(p_um, photos):
    x224 = photos[:1]
    x448 = x224.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)  # the same scene, 2× the samples
    cam = DEFAULT_CAMERA.replace(pixel_size_um=p_um, read_noise_e=0.0)
    a, b = cam.capture(x224, generator=0), cam.capture(x448, generator=0)
    n = int(DEFAULT_FIELD_WIDTH_MM * 1000 / p_um + 1e-9)
    assert a.image.shape[-2:] == b.image.shape[-2:] == (n, n)
    # the same scene integrated over the same photodiodes: the same mean photon counts
    torch.testing.assert_close(b.photons, a.photons, rtol=1e-4, atol=1e-3)
    # and the degradation's output at 224² equals the 448² output downsampled (up to noise)
    out224 = weakspot.get_degradation("pixel_size", pixel_size_um=p_um)(x224, generator=0)
    out448 = weakspot.get_degradation("pixel_size", pixel_size_um=p_um)(x448, generator=0)
    assert out448.shape[-1] == 448 and out224.shape[-1] == 224


def test_non_square_input_keeps_the_pixel_pitch():
    x = torch.rand(1, 3, 683, 1024, generator=torch.Generator().manual_seed(0))
    cam = DEFAULT_CAMERA.replace(pixel_size_um=11.0)
    pitch = DEFAULT_FIELD_WIDTH_MM * 1000 / 1024
    assert cam.capture(x, generator=0).image.shape[-2:] == (int(683 * pitch / 11.0), int(627.2 / 11.0))
    # the plain Camera() keeps 2.8 µm per input pixel (1:1 sampling) unless given a field width
    assert Camera().scene.pitch_um(1024) == 2.8 and Scene(field_width_mm=1.0).pitch_um(500) == 2.0


def test_camera_degradation_reproduces_the_single_parameter_ones(photos):
    x = photos[:2, :, :96, :128]
    cases = [
        ({}, "exposure", {}),
        ({"exposure_s": 0.001}, "exposure", {"exposure_s": 0.001}),
        ({"pixel_size_um": 8.0}, "pixel_size", {"pixel_size_um": 8.0}),
        ({"pixel_size_um": 8.0, "well": "area"}, "pixel_size", {"pixel_size_um": 8.0, "well": "area"}),
        ({"defocus_diopters": 1.0}, "defocus", {"defocus_diopters": 1.0}),
    ]
    for cam_params, name, params in cases:
        a = weakspot.get_degradation("camera", **cam_params)(x, generator=3)
        b = weakspot.get_degradation(name, **params)(x, generator=3)
        assert torch.equal(a, b), (cam_params, name)


def test_camera_degradation_registers_units_and_ranges():
    spec = weakspot.degrade.get_spec("camera")
    units = {p.name: p.unit for p in spec.params}
    for name, unit in (
        ("pixel_size_um", "µm"),
        ("exposure_s", "s"),
        ("defocus_diopters", "D"),
        ("focal_length_mm", "mm"),
        ("mean_luminance_cd_m2", "cd/m²"),
        ("read_noise_e", "e⁻"),
    ):
        assert units[name] == unit
    from weakspot.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="fill_factor"):
        weakspot.get_degradation("camera", fill_factor=1.5)
    with pytest.raises(InvalidParameterError, match="well"):
        weakspot.get_degradation("camera", well="huge")


def test_config_grid_over_two_camera_parameters_and_the_camera_reference():
    from weakspot.evaluate.config import SweepSpec, expand_conditions

    conds, _ = expand_conditions(
        [
            SweepSpec(
                degradation="camera", grid={"pixel_size_um": [5.0, 8.0, 11.0], "exposure_s": [0.001, 0.0125]}
            )
        ]
    )
    ids = [c.condition_id for c in conds]
    assert len(conds) == 3 * 2 + 1 and ids[-1] == "camera_reference"
    ref = conds[-1]
    assert ref.family == "camera" and ref.steps[0].name == "camera"
    assert ref.steps[0].params["pixel_size_um"] == 2.8 and ref.steps[0].params["exposure_s"] == 0.0125
    points = {(c.steps[0].params["pixel_size_um"], c.steps[0].params["exposure_s"]) for c in conds[:-1]}
    assert points == {(p, e) for p in (5.0, 8.0, 11.0) for e in (0.001, 0.0125)}
    # no camera condition, no reference
    other, _ = expand_conditions([SweepSpec(degradation="gaussian_blur", grid={"sigma_px": [1.0]})])
    assert all(c.condition_id != "camera_reference" for c in other)
    # the reference renders exactly what the default camera does
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    step = ref.steps[0]
    a = weakspot.get_degradation(step.name, **step.params)(x, generator=0)
    b = weakspot.get_degradation("exposure")(x, generator=0)
    assert torch.equal(a, b)


def test_camera_per_sample_parameters_equal_single_captures(photos):
    from weakspot.degrade.camera_ops import camera
    from weakspot.random import keyed_generator

    x = photos[:4, :, :64, :64]
    exposures = torch.tensor([0.001, 0.0125, 0.001, 0.004])
    pixels = [2.8, 5.0, 2.8, 8.0]

    def gens():
        return [keyed_generator(0, f"img{i}", "camera") for i in range(4)]

    batched = camera(x, generator=gens(), exposure_s=exposures, pixel_size_um=pixels, defocus_diopters=0.5)
    g = gens()
    for i in range(4):
        alone = camera(
            x[i : i + 1],
            generator=[g[i]],
            exposure_s=float(exposures[i]),
            pixel_size_um=pixels[i],
            defocus_diopters=0.5,
        )
        assert torch.equal(batched[i : i + 1], alone), i
    with pytest.raises(weakspot.errors.InvalidParameterError, match="exposure_s"):
        camera(x, generator=0, exposure_s=[0.001, 0.002])


@pytest.mark.parametrize("defocus", [0.0, 1.0])  # the in-focus fast path and the blur + collect path
def test_per_sample_exposures_are_one_capture_equal_to_scalar_captures(photos, defocus):
    """Different exposures in one batch are (B, 1, 1, 1) factors of one capture, bit for bit what
    each image gets alone with its scalar exposure (photons ∝ t, dark charge ∝ t, DSNU on top);
    the capture's ops do not grow with the batch (no grouping by value)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from weakspot.degrade.camera_ops import camera
    from weakspot.random import KeyedBatch

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    x = torch.cat([photos[:, :, :48, :56]] * 2)  # 8 images
    t = [0.001, 0.0125, 0.004, 0.0005, 0.05, 0.002, 0.0125, 0.0003]
    ids = [f"img{i}" for i in range(8)]
    kw = dict(defocus_diopters=defocus, dsnu_e=3.0, dark_current_e_per_s=400.0)
    batched = camera(
        x, generator=KeyedBatch.from_ids(0, ids, "c"), exposure_s=torch.tensor(t, dtype=torch.float64), **kw
    )
    for i in range(8):
        alone = camera(x[i : i + 1], generator=KeyedBatch.from_ids(0, [ids[i]], "c"), exposure_s=t[i], **kw)
        assert torch.equal(batched[i : i + 1], alone), i
    counts = []
    for n in (2, 8):
        Count.n = 0
        with Count():
            camera(x[:n], generator=KeyedBatch.from_ids(0, ids[:n], "c"), exposure_s=t[:n], **kw)
        counts.append(Count.n)
    assert counts[0] == counts[1]
    cap = camera_from_params(**kw).capture(x[:3], generator=0, exposure_s=torch.tensor(t[:3]))
    expected = torch.stack(
        [
            camera_from_params(**kw, exposure_s=float(torch.tensor(v)))
            .capture(x[i : i + 1], generator=0)
            .photons_rgb[0]
            for i, v in enumerate(t[:3])
        ]
    )
    torch.testing.assert_close(
        cap.photons_rgb, expected, rtol=1e-6, atol=0
    )  # the lazy intermediate uses them too
    with pytest.raises(weakspot.errors.InvalidParameterError, match="exposure_s"):
        DEFAULT_CAMERA.capture(x[:2], exposure_s=torch.tensor([0.001, -1.0]))
