"""Install shape: the Pythons the package claims, the stubs the local runtime needs for them, and a
light core install."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

from inferstack.serving.local import find_triton
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def supported_pythons() -> list[str]:
    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    return [f"3.{minor}" for minor in range(8, 20) if f"3.{minor}" in spec]


def test_every_supported_python_has_a_triton_python_backend_stub() -> None:
    stubs = find_triton().python_stub.parents[1]
    assert supported_pythons() == ["3.11", "3.12", "3.13"]
    for version in supported_pythons():
        assert (stubs / version / "triton_python_backend_stub").is_file(), version


def test_the_runtime_picks_the_stub_of_the_running_python() -> None:
    stub = find_triton().python_stub
    assert stub.parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_the_core_install_pulls_in_neither_torch_nor_pulumi_policy() -> None:
    core = " ".join(PYPROJECT["project"]["dependencies"])
    for heavy in ("torch", "tritonclient", "moto", "pulumi-policy", "boto3"):
        assert heavy not in core
    code = (
        "import sys\n"
        "import inferstack.components.platform, inferstack.infra.cluster, inferstack.components.model_service\n"
        "print(sorted(m for m in ('torch', 'tritonclient', 'moto', 'pulumi_policy', 'boto3') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_pulumi_programs_requirements_are_the_core_install() -> None:
    """`pulumi up` installs stacks/requirements.txt into the program's virtualenv: components only."""
    lines = [
        line.strip()
        for line in (ROOT / "stacks" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["-e .."] or all("torch" not in line and "[" not in line for line in lines)
    assert Path(ROOT / "Pulumi.yaml").read_text().count("virtualenv") == 1
