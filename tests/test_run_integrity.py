"""The run directory as one object (``Run``) and a store that never trusts a damaged file.

Real runs of the bundled MNIST CNN on real MNIST digits, filed under WRONG labels (label =
true digit + 1), so that the clean prediction differs from the label and a mix-up of the
clean-reference columns (``clean_top1``, ``p_clean_top1``) with the label columns shows.
The references are an uninterrupted run, the model run directly, and the files' own bytes.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from weakspot.data import open_dataset
from weakspot.errors import DataError
from weakspot.evaluate import ResultsStore, Run, RunConfig, run_sweep
from weakspot.models import bundled

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_IMAGES, SHARD = 48, 16  # 3 shards × 3 conditions = 9 units
BLUR, NOISE = "gaussian_blur.sigma_px=2", "gaussian_noise.variance=0.1"


@pytest.fixture(scope="module")
def wrong_digits(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """An imagenetv2-style folder of real MNIST digits, each filed under (digit + 1) mod 10."""
    root = tmp_path_factory.mktemp("wrong") / "digits"
    ds = open_dataset(kind="mnist_5k", limit=N_IMAGES, seed=3)
    true = np.asarray(ds.labels[:N_IMAGES])
    for i in range(N_IMAGES):
        img, y = ds.load(i), ds.labels[i]
        d = root / str((int(y) + 1) % 10)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255 + 0.5).astype(np.uint8)).save(d / f"d{i:03d}.png")
    return root, true


def _cfg(root: Path) -> dict:
    return {
        "model": {"name": "mnist_cnn"},
        "data": {"kind": "imagenetv2", "root": str(root)},
        "seed": 11,
        "batch_size": 16,
        "shard_size": SHARD,
        "workers": 0,
        "store_probs": True,
        "conditions": [
            {"degradation": "gaussian_blur", "grid": {"sigma_px": [2.0]}},
            {"degradation": "gaussian_noise", "grid": {"variance": [0.1]}},
        ],
    }


@pytest.fixture(scope="module")
def ref_run(wrong_digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    summary = run_sweep(_cfg(wrong_digits[0]), out, progress=False)
    assert summary.units_run == 9
    return out


def _flat(text: str) -> str:
    """``text`` without white space (rich wraps long lines, even inside words)."""
    return "".join(text.split())


def _copy(ref_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(ref_run, dst)
    return dst


def _all_probs(out: Path) -> dict[str, np.ndarray]:
    s = ResultsStore(out)
    return {c: s.probs(c) for c in ("clean", BLUR, NOISE)}


# ----------------------------------------------------------------------------- resume
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one_in_every_column(
    ref_run, wrong_digits, tmp_path
):
    cfg = _cfg(wrong_digits[0])
    out = tmp_path / "resumed"
    first = run_sweep(cfg, out, progress=False, max_units=4)  # shard 0 (3 units) + clean of shard 1
    assert first.units_run == 4 and Run.open(out).manifest.status == "partial"
    second = run_sweep(cfg, out, progress=False)
    assert second.resumed and second.units_run == 5
    ref = ResultsStore(ref_run).predictions()
    got = ResultsStore(out).predictions()
    # the test means something: the clean predictions disagree with the (wrong) labels
    clean = ref[ref.condition_id == "clean"]
    assert (clean.clean_top1 != clean.label).mean() > 0.8
    assert (clean.clean_top1 == (clean.label - 1) % 10).mean() > 0.8  # the model sees the true digit
    pd.testing.assert_frame_equal(got, ref)  # every column, bit for bit
    for cid, p in _all_probs(ref_run).items():
        np.testing.assert_array_equal(_all_probs(out)[cid], p)
    assert Run.open(out).manifest.status == "complete"


# ----------------------------------------------------------------------------- damaged units
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


@pytest.mark.parametrize(
    "what, damage, reason",
    [
        ("parquet", _truncate, "truncated parquet"),
        ("parquet", _empty, "empty parquet"),
        ("parquet", _flip, "parquet does not match its checksum"),
        ("probs", _truncate, "truncated probabilities (.npy)"),
        ("probs", _empty, "empty probabilities (.npy)"),
    ],
)
def test_a_damaged_unit_is_refused_on_read_and_recomputed_by_run(
    ref_run, wrong_digits, tmp_path, what, damage, reason
):
    out = _copy(ref_run, tmp_path)
    store = ResultsStore(out)
    path = store.unit_path(BLUR, 1) if what == "parquet" else store.probs_path(BLUR, 1)
    damage(path)
    assert store.check_unit(BLUR, 1) == reason and store.check_unit(NOISE, 1) is None
    reads = [lambda: store.probs(BLUR)]
    if what == "parquet":
        reads += [store.predictions, lambda: store.sql("select count(*) from predictions")]
    else:  # the predictions themselves are intact and stay readable
        assert len(store.predictions()) == 3 * N_IMAGES
    for read in reads:
        with pytest.raises(DataError) as exc:
            read()
        assert f"{path} is damaged ({reason})" in str(exc.value)
        assert f"weakspot run CONFIG --out {out}" in str(exc.value)
    assert Run.open(out).pending_units()[0].condition_id == BLUR
    summary = run_sweep(_cfg(wrong_digits[0]), out, progress=False)
    assert summary.repaired == [f"unit {BLUR}/shard 1: {reason}, recomputing"] and summary.units_run == 1
    pd.testing.assert_frame_equal(ResultsStore(out).predictions(), ResultsStore(ref_run).predictions())
    np.testing.assert_array_equal(ResultsStore(out).probs(BLUR), ResultsStore(ref_run).probs(BLUR))
    assert ResultsStore(out).damaged_units() == {} and Run.open(out).manifest.status == "complete"


def test_report_and_run_commands_on_a_truncated_unit(ref_run, wrong_digits, tmp_path, capsys):
    import yaml

    from weakspot.cli import main

    out = _copy(ref_run, tmp_path)
    _truncate(ResultsStore(out).unit_path(NOISE, 2))
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 2
    err = _flat(capsys.readouterr().err)
    assert "Traceback" not in err and _flat(f"predictions/{NOISE}/shard-00002.parquet is damaged") in err
    assert _flat("(truncated parquet)") in err and _flat(f"weakspot run CONFIG --out {out}") in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(wrong_digits[0])))
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert _flat(f"unit {NOISE}/shard 2: truncated parquet, recomputing") in _flat(capsys.readouterr().err)
    pd.testing.assert_frame_equal(ResultsStore(out).predictions(), ResultsStore(ref_run).predictions())


def test_a_killed_write_of_a_redone_unit_is_not_trusted(ref_run, tmp_path):
    """Kill between the checksum record and the Parquet rename of a redone unit: the old
    Parquet no longer matches the new record, so the unit is redone again."""
    out = _copy(ref_run, tmp_path)
    store = ResultsStore(out)
    rec = store.checksum_path("clean", 0)
    import json

    r = json.loads(rec.read_text())
    r["parquet"]["sha256"] = "0" * 64
    rec.write_text(json.dumps(r))
    assert store.check_unit("clean", 0) == "parquet does not match its checksum"


# ----------------------------------------------------------------------------- probabilities
def test_probabilities_are_stored_in_float32(ref_run, wrong_digits):
    store = ResultsStore(ref_run)
    assert np.load(store.probs_path("clean", 0)).dtype == np.float32
    assert Run.open(ref_run).manifest.schema_version >= 2  # float32 probabilities since 2
    ds = open_dataset(str(wrong_digits[0]), "imagenetv2")
    order = {iid: i for i, iid in enumerate(ds.image_ids)}
    x = torch.stack([ds.load(order[i]) for i in store.images().image_id])
    p = bundled("mnist_cnn").predict_proba(x).numpy()
    stored = store.probs("clean")
    np.testing.assert_allclose(stored, p, rtol=1e-5, atol=1e-9)
    # most probabilities of a confident MNIST model are below float16's smallest subnormal
    tiny = (p > 0) & (p < float(np.finfo(np.float16).smallest_subnormal) / 2)
    assert tiny.mean() > 0.3
    assert (stored[tiny] > 0).all()  # float32 keeps them (float16 stored 0)


def test_an_old_float16_unit_without_checksums_is_still_read(ref_run, tmp_path):
    out = _copy(ref_run, tmp_path)
    store = ResultsStore(out)
    want = store.probs(NOISE)
    p = store.probs_path(NOISE, 1)
    np.save(p, np.load(p).astype(np.float16))  # as schema version 1 wrote it
    store.checksum_path(NOISE, 1).unlink()
    assert store.check_unit(NOISE, 1) is None
    np.testing.assert_allclose(store.probs(NOISE), want, atol=1e-3)
    _truncate(store.unit_path(NOISE, 1))
    assert store.check_unit(NOISE, 1) == "unreadable parquet (no checksum record)"


@pytest.mark.parametrize("older", [2, None])  # None: a schema-1 manifest, which had no schema_version
def test_a_run_of_an_older_store_schema_is_read_but_not_resumed(ref_run, cfg_path, tmp_path, capsys, older):
    """Resuming a run an older weakspot wrote would mix its random draws with this one's:
    refused with one line that says to rerun into a new directory, before anything is written;
    reading it and reporting on it keep working."""
    import json

    from weakspot.cli import main
    from weakspot.errors import ConfigError
    from weakspot.evaluate.store import SCHEMA_VERSION

    out = _copy(ref_run, tmp_path)
    store = ResultsStore(out)
    m = json.loads(store.manifest_path.read_text())
    assert m["schema_version"] == SCHEMA_VERSION == 3  # what this weakspot writes
    if older is None:
        del m["schema_version"]
    else:
        m["schema_version"] = older
    store.manifest_path.write_text(json.dumps(m))
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    store.unit_path(NOISE, 2).unlink()  # a unit left to do: a resume would compute it
    del before[store.unit_path(NOISE, 2)]
    with pytest.raises(
        ConfigError, match=r"older weakspot \(store schema [12], now 3\).*new --out directory"
    ):
        run_sweep(_cfg_from(cfg_path), out, progress=False)
    assert main(["run", str(cfg_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and _flat("was made by an older weakspot") in _flat(err)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before  # nothing written
    # reading and reporting stay possible
    run = Run.open(out)
    assert run.manifest.schema_version == (older or 1)
    assert {c.condition_id for c in run.conditions()} == {"clean", BLUR, NOISE}
    pd.testing.assert_frame_equal(store.predictions(["clean"]), ResultsStore(ref_run).predictions(["clean"]))
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").is_file()


def _cfg_from(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


# ----------------------------------------------------------------------------- files and directories
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_honour_the_umask(tmp_path, umask):
    from weakspot.evaluate.store import atomic_write_bytes

    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a" / "x.bin", b"abc")
        (tmp_path / "plain.bin").write_bytes(b"abc")  # what an ordinary open() gives
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a" / "x.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o666 & ~umask


def test_a_run_directory_is_readable_by_others_under_umask_022(ref_run):
    current = os.umask(0)
    os.umask(current)
    files = [p for p in ref_run.rglob("*") if p.is_file()]
    assert len(files) > 20
    modes = {stat.S_IMODE(p.stat().st_mode) for p in files}
    assert modes == {0o666 & ~current}


def _run_cli(cfg_path: Path, out: str, capsys) -> tuple[int, str]:
    from weakspot.cli import main

    code = main(["run", str(cfg_path), "--out", out, "--no-progress"])
    return code, capsys.readouterr().err


@pytest.fixture()
def cfg_path(wrong_digits, tmp_path) -> Path:
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_cfg(wrong_digits[0])))
    return p


def test_unusable_out_directories_are_one_line_errors(cfg_path, tmp_path, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    cases = {
        "": "(--out) is empty",
        str(a_file): "is a file, not a directory",
        str(a_file / "sub"): "a part of the path is a file",
        str(tmp_path / ("x" * 300)): "name is too long",
        "/sys/weakspot-test-run": "cannot create the run directory",  # EPERM even for root
    }
    for out, message in cases.items():
        code, err = _run_cli(cfg_path, out, capsys)
        assert code == 2 and "Traceback" not in err, (out, err)
        assert _flat(message) in _flat(err), (out, err)
        assert err.strip().startswith("error:")
    assert a_file.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_a_read_only_out_directory_is_a_one_line_error(cfg_path, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = _run_cli(cfg_path, str(ro), capsys)
    finally:
        ro.chmod(0o755)
    assert code == 2 and "notwritable" in _flat(err) and "Traceback" not in err


# ----------------------------------------------------------------------------- the Run object
def test_run_open_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Run.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a weakspot run directory"):
        Run.open(tmp_path / "empty")


def test_run_rebuilds_model_data_conditions_and_the_degraded_images(ref_run):
    run = Run.open(ref_run)
    m = run.manifest
    assert isinstance(m.config, RunConfig) and m.seed == 11 and m.shard_size == SHARD and m.store_probs
    assert m.status == "complete" and m.units_done == m.units_total == 9 and m.data.n_valid == N_IMAGES
    assert [c.condition_id for c in run.conditions()] == ["clean", BLUR, NOISE]
    assert run.condition(BLUR).axis == "sigma_px" and run.condition(BLUR).axis_value == 2.0
    model = run.load_model()
    assert model.weights_sha256 == m.model["weights_sha256"]
    data = run.open_data()
    images = run.images()
    assert data.image_ids == images.image_id.tolist() and data.labels == images.label.tolist()
    preds = run.store.predictions()
    idx = [0, 7, 20, 47]
    for cid in (BLUR, NOISE):
        deg = run.degraded_images(cid, idx)
        assert len(deg) == 4 and deg[0].shape == data.load(0).shape
        p = model.predict_proba(torch.stack(deg)).numpy()
        rows = preds[preds.condition_id == cid].set_index("image_index").loc[idx]
        assert rows.top1.tolist() == p.argmax(1).tolist()
        np.testing.assert_allclose(rows.p_label, p[np.arange(4), rows.label], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(rows.p_clean_top1, p[np.arange(4), rows.clean_top1], rtol=1e-5, atol=1e-7)
    # the noise is keyed by (seed, image, condition): another image's noise differs
    a = run.degraded_images(NOISE, [0, 1])
    b = run.degraded_images(NOISE, [1, 0])
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    assert run.pending_units() == []


def test_pending_units_are_the_missing_ones(ref_run, wrong_digits, tmp_path):
    from weakspot.errors import ConfigError

    run = Run.open(_copy(ref_run, tmp_path))
    held = run.lock()
    try:
        with pytest.raises(ConfigError, match="being written by another weakspot run"):
            run_sweep(_cfg(wrong_digits[0]), run.root, progress=False)
    finally:
        held.close()
    run.store.unit_path(NOISE, 2).unlink()
    assert [(u.condition_id, u.shard) for u in run.pending_units()] == [(NOISE, 2)]
