"""The examples people copy from the docs run as written."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest
import torch

import weakspot
import weakspot.cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["weakspot.degrade.registry", "weakspot.degrade.compose"])
def test_docstring_examples_run(module):
    result = doctest.testmod(
        importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0 and result.failed == 0


def test_readme_python_api_block_runs():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    api = [b for b in blocks if "get_degradation" in b]
    assert api, "README lost its Python API example"
    scope: dict = {}
    exec(compile(api[0], "README.md", "exec"), scope)
    out = scope["out"]
    assert isinstance(out, torch.Tensor) and out.shape == (8, 3, 224, 224)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_readme_names_every_cli_command():
    """Every `weakspot` sub-command is documented in the README."""
    from typer.main import get_command

    text = (ROOT / "README.md").read_text()
    commands = sorted(get_command(weakspot.cli.app).commands)
    missing = [c for c in commands if f"weakspot {c}" not in text]
    assert not missing, f"README does not mention: {missing}"
