"""pyproject.toml lists every package, so that a wheel (``pip install .``, not ``-e``) has them all."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_package_is_listed():
    """The package list is explicit (examples/ ships as dtrain.examples, which package discovery
    cannot map): it names every folder under dtrain/ with an __init__.py, and dtrain.examples."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        config = tomllib.load(f)["tool"]["setuptools"]
    found = {os.path.relpath(folder, ROOT).replace(os.sep, ".")
             for folder, _, files in os.walk(os.path.join(ROOT, "dtrain")) if "__init__.py" in files}
    listed = set(config["packages"])
    assert not found - listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == {"dtrain.examples"}, f"listed, but no such package: {sorted(listed - found)}"
    assert config["package-dir"] == {"dtrain.examples": "examples"}
    assert os.path.isfile(os.path.join(ROOT, "examples", "__init__.py"))
