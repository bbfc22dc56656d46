"""The command line never shows a traceback for a user mistake: usage mistakes and
WeakspotErrors print one line (plus where the help is) and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from weakspot.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_version(capsys):
    import weakspot

    rc, out, _ = _run(capsys, "--version")
    assert rc == 0 and out.strip() == f"weakspot {weakspot.__version__}"


@pytest.mark.parametrize(
    "argv, says",
    [
        (["raport", "runs/x"], "No such command 'raport'. Did you mean 'report'?"),
        (["perceiv", "runs/x"], "Did you mean 'perceive'?"),
        (["run", "--bogus", "x.yaml"], "No such option: --bogus"),
        (["run"], "Missing argument 'config'"),
        (["perceive"], "Missing argument 'run_dir'"),
        (["perceive", "x", "--max-images", "many"], "Invalid value for '--max-images'"),
        (["breaking", "x", "gaussian_blur", "--per-class", "0"], "Invalid value for '--per-class'"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(capsys, argv, says):
    rc, out, err = _run(capsys, *argv)
    assert rc == 2 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and says in lines[0], err
    assert lines[1].startswith("Try 'weakspot") and lines[1].endswith("--help' for help.")


def test_user_mistakes_raise_one_line_weakspot_errors(tmp_path, capsys):
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    cases = [
        (["run", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")], "config file not found"),
        (["perceive", str(tmp_path)], "is not a weakspot run"),
        (["report", str(tmp_path)], "is not a complete weakspot run"),
        (
            ["degrade", str(img), str(tmp_path / "b.png"), "--op", "gaussian_blur", "--param", "sigma_px"],
            "invalid value for '--param'",
        ),
        (
            [
                "degrade",
                str(img),
                str(tmp_path / "b.png"),
                "--op",
                "gaussian_blur",
                "--param",
                "sigma_px=abc",
            ],
            "invalid value for 'gaussian_blur.sigma_px'",
        ),
        (
            ["degrade", str(img), str(tmp_path / "b.png"), "--op", "gausian_blur"],
            "did you mean: gaussian_blur",
        ),
        (
            ["degrade", str(tmp_path / "nope.png"), str(tmp_path / "b.png"), "--op", "gaussian_blur"],
            "image file not found",
        ),
    ]
    for argv, says in cases:
        rc, out, err = _run(capsys, *argv)
        assert rc == 2 and "Traceback" not in out + err, argv
        assert err.startswith("error: ") and says in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_exit_codes_of_commands_that_exit_themselves(capsys):
    rc, _, err = _run(capsys, "list", "no_such_degradation_*")
    assert rc == 1 and "no degradation matches" in err


def test_help_shows_brackets_literally(capsys):
    """`run --help` names the extra as `weakspot[ray]` (rich markup used to eat "[ray]")."""
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "weakspot[ray]" in " ".join(out.split()) and "--engine" in out


@pytest.mark.slow
def test_console_script_in_a_subprocess(tmp_path):
    """The installed entry point, as a user runs it: exit 2, no traceback, and --version."""
    code = "import sys; from weakspot.cli import main; sys.exit(main())"
    p = subprocess.run([sys.executable, "-c", code, "raport"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "Did you mean 'report'?" in p.stderr
    p = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("weakspot ")
