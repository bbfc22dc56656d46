"""The Ray engine on a real local Ray cluster (started once for this file) with the bundled
MNIST CNN on real MNIST digits: rows equal to the local engine, an actor process killed
mid-run (SIGKILL) is survived with no lost and no duplicate rows, a killed driver resumes,
and user mistakes are one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ray = pytest.importorskip(
    "ray",
    reason="ray is not installed; the Ray engine tests need pip install 'weakspot[ray]' (in the dev extra)",
)

from weakspot.cli import main  # noqa: E402
from weakspot.errors import ConfigError  # noqa: E402
from weakspot.evaluate import ResultsStore, run_sweep  # noqa: E402
from weakspot.evaluate.ray_engine import actor_pid, run_sweep_ray  # noqa: E402

N_IMAGES, SHARD = 400, 50
N_UNITS = (N_IMAGES // SHARD) * 6  # 8 shards × (clean + 5 conditions)
CFG = {
    "model": {"name": "mnist_cnn"},
    "data": {"kind": "mnist_5k", "limit": N_IMAGES},
    "seed": 11,
    "batch_size": 32,
    "shard_size": SHARD,
    "workers": 0,
    "threads": 1,  # like each actor (one CPU each): same arithmetic, same probabilities
    "store_probs": True,
    "conditions": [
        {"degradation": "gaussian_noise", "grid": {"variance": [0.05, 0.3]}},
        {"degradation": "gaussian_blur", "severities": [2, 5]},
        {
            "compose": [
                {"name": "gaussian_blur", "sigma_px": 1.0},
                {"name": "gaussian_noise", "variance": 0.1},
            ],
            "id": "blur1+noise",
        },
    ],
    "ray": {"actors": 2, "num_cpus": 1},
}
KEY = ["condition_id", "image_index"]


@pytest.fixture(scope="module")
def cluster():
    """A local 2-CPU Ray cluster for this module; yields its GCS address."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    summary = run_sweep(CFG, out, progress=False)
    assert summary.units_run == N_UNITS
    return ResultsStore(out)


def _assert_same_rows(store: ResultsStore, ref: ResultsStore) -> None:
    a, b = store.predictions(), ref.predictions()
    assert len(a) == N_IMAGES * 6 and not a.duplicated(KEY).any()
    assert a[KEY].equals(b[KEY])
    for col in ("top1", "label", "clean_top1", "correct1", "correct5"):
        assert a[col].tolist() == b[col].tolist(), col
    assert a.top5.map(list).tolist() == b.top5.map(list).tolist()
    for col in ("top1_prob", "p_label", "p_clean_top1"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=0, atol=1e-5, err_msg=col)
    for cid in sorted(set(a.condition_id)):
        np.testing.assert_allclose(store.probs(cid), ref.probs(cid), rtol=0, atol=2e-3)  # float16 storage
    assert store.images().equals(ref.images())
    assert store.conditions().equals(ref.conditions())


def _units(out: Path) -> int:
    return len(list((out / "predictions").glob("*/shard-*.parquet")))


# ----------------------------------------------------------------------------- same results
@pytest.mark.slow
def test_ray_rows_equal_the_local_engine(cluster, local_ref, tmp_path):
    out = tmp_path / "ray"
    summary = run_sweep_ray(CFG, out, progress=False)
    assert summary.units_run == summary.units_total == N_UNITS and summary.images_evaluated == N_IMAGES * 6
    store = ResultsStore(out)
    _assert_same_rows(store, local_ref)
    m = store.manifest()
    assert m["status"] == "complete" and m["units_done"] == N_UNITS
    s = m["sessions"][-1]
    assert s["engine"] == "ray" and len(s["ray"]["actors"]) == 2 and 1 <= s["ray"]["tasks"] <= N_UNITS
    # the driver evaluated nothing: every unit came from one of the two actor processes
    assert s["ray"]["actor_processes_seen"] == 2
    assert {a["pid"] for a in s["ray"]["actors"]}.isdisjoint({os.getpid()})
    # a second run finds everything done and changes nothing
    again = run_sweep_ray(CFG, out, progress=False)
    assert again.resumed and again.units_run == 0
    _assert_same_rows(store, local_ref)


# ----------------------------------------------------------------------------- fault tolerance
@pytest.mark.slow
def test_an_actor_killed_mid_run_is_restarted_and_nothing_is_lost(cluster, local_ref, tmp_path):
    out = tmp_path / "killed-actor"
    killed: list[int] = []

    def killer(handles):
        deadline = time.monotonic() + 60
        while _units(out) < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        pid = actor_pid(handles[0])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    threads = []

    def on_actors(handles):
        t = threading.Thread(target=killer, args=(handles,), daemon=True)
        t.start()
        threads.append(t)

    summary = run_sweep_ray(CFG, out, progress=False, on_actors=on_actors)
    threads[0].join(5)
    assert killed, "the actor was not killed"
    assert summary.units_run == N_UNITS
    store = ResultsStore(out)
    s = store.manifest()["sessions"][-1]["ray"]
    # the killed actor was restarted as a new process and its retried units came from it
    assert s["actor_processes_seen"] == 3
    assert killed[0] in {a["pid"] for a in s["actors"]}
    _assert_same_rows(store, local_ref)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_a_killed_driver_resumes_without_loss_or_duplicates(cluster, local_ref, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(CFG))
    out = tmp_path / "killed-driver"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weakspot.cli",
            "run",
            str(path),
            "--out",
            str(out),
            "--engine",
            "ray",
            "--address",
            cluster,
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and _units(out) < 6 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = ResultsStore(out)
    done_before = store.done_units()
    assert 6 <= len(done_before) < N_UNITS
    before = store.predictions()
    summary = run_sweep_ray(path, out, progress=False)
    assert summary.resumed and summary.units_run == N_UNITS - len(done_before)
    _assert_same_rows(store, local_ref)
    after = store.predictions().merge(before[KEY], on=KEY)
    assert after.top1.tolist() == before.top1.tolist()  # finished work was kept as it was
    assert not list(out.rglob("*.tmp"))
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


# ----------------------------------------------------------------------------- user mistakes
def _small_cfg(tmp_path: Path, **over) -> Path:
    cfg = {**CFG, "data": {"kind": "mnist_5k", "limit": 40}, **over}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_ray_not_installed_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["run", str(_small_cfg(tmp_path)), "--out", str(tmp_path / "o"), "--engine", "ray"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "pip install 'weakspot[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # starts the module's Ray cluster (≈ 8 s)
def test_bad_address_and_engine_are_one_line_errors(cluster, tmp_path, capsys):
    cfg = str(_small_cfg(tmp_path))
    for args, words in [
        (["--engine", "ray", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
        (["--engine", "ray", "--address", "head-node"], "is not HOST:PORT"),
        (["--address", "127.0.0.1:6379"], "add --engine ray"),
        (["--engine", "spark"], "unknown --engine"),
    ]:
        assert main(["run", cfg, "--out", str(tmp_path / "o"), "--no-progress", *args]) == 2, args
        err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines at the terminal width
        assert err.startswith("error: ") and words in err and "Traceback" not in err, err
    # one writer per run directory: a run holding it (local or Ray) refuses a second one
    from weakspot.evaluate.engine import lock_run_dir

    held = lock_run_dir(tmp_path / "busy")
    try:
        with pytest.raises(ConfigError, match="being written by another weakspot run"):
            run_sweep_ray(_small_cfg(tmp_path), tmp_path / "busy", progress=False)
    finally:
        held.close()
    with pytest.raises(ConfigError, match="no GPU"):
        run_sweep_ray(
            _small_cfg(tmp_path, model={"name": "mnist_cnn", "device": "cuda"}),
            tmp_path / "g",
            progress=False,
        )


@pytest.mark.slow
def test_the_local_engine_does_not_import_ray(tmp_path):
    code = (
        "import sys; from weakspot.cli import main; "
        f"rc = main(['run', {str(_small_cfg(tmp_path))!r}, '--out', {str(tmp_path / 'o')!r}, '--no-progress']); "
        "assert rc == 0, rc; assert 'ray' not in sys.modules, 'ray was imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
