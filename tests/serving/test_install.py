"""Install shape: the Pythons the package claims, the stubs the local runtime needs for them, and a
light core install."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from inferstack.serving.local.processes import find_triton
from tests.conftest import ROOT, unavailable

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


def interpreter(version: str) -> str | None:
    """A working ``python<version>``: on PATH, or one of pyenv's installed versions."""
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [
        shutil.which(f"python{version}"),
        *sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"), reverse=True),
    ]
    for candidate in filter(None, candidates):
        # a pyenv shim is on PATH for versions pyenv has but does not select: it fails when run
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in the source folder's build/: a copy keeps the checkout clean, and a stale
    # build/lib (a module since removed) out of the wheel.
    source = tmp_path_factory.mktemp("source") / "inferstack"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("inferstack-*.whl"))


@pytest.mark.real_server
@pytest.mark.parametrize("version", supported_pythons())
def test_pip_install_without_extras_imports_the_components_on_each_supported_python(
    version: str, wheel: Path, tmp_path: Path
) -> None:
    """The wheel with its core dependencies alone, in a fresh virtualenv of each Python it claims: the
    components import without torch or pulumi-policy, and the CLI names the extra a command needs."""
    python = interpreter(version)
    if python is None:
        unavailable(f"no Python {version} here to install into")
        return
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    imported = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sys, inferstack.components.platform, inferstack.components.model_service, "
            "inferstack.infra.cluster, inferstack.stacks.offline\n"
            "print(sys.version_info[:2], sorted(m for m in "
            "('torch', 'numpy', 'tritonclient', 'moto', 'pulumi_policy', 'boto3') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    major, minor = version.split(".")
    assert imported.stdout.strip() == f"({major}, {minor}) []"  # that Python, and none of the extras
    cli = venv / "bin" / "inferstack"
    for arguments, extra in (
        (["local", "up", "--once"], "local"),
        (["policy", "check", "-s", "dev"], "policy"),
    ):
        result = subprocess.run([str(cli), *arguments], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        assert f"pip install 'inferstack[{extra}]'" in result.stderr and "Traceback" not in result.stderr
    # The program and its stack files ship in the wheel: a plan from an empty folder, no checkout.
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    plan = subprocess.run(
        [str(cli), "plan", "-s", "dev", "-c", 'inferstack:cluster.publicAccessCidrs=["198.51.100.7/32"]'],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=empty,
    )
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "inferstack:platform:InferencePlatform" in plan.stdout
    assert list((empty / "out" / "plan" / "dev").rglob("*.yaml"))


def test_the_bootstraps_python_check_takes_every_supported_python_and_no_other() -> None:
    """The bootstrap's first check, run by each Python found here: the declared ones pass."""
    check = next(
        line for line in (ROOT / ".ci" / "bootstrap").read_text().splitlines() if "version_info" in line
    )
    code = check.split("-c '", 1)[1].rsplit("'", 1)[0]
    found = {version: interpreter(version) for version in supported_pythons()}
    if not all(found.values()):
        unavailable(f"no interpreter here for {[v for v, path in found.items() if path is None]}")
    for version, path in found.items():
        assert subprocess.run([str(path), "-c", code], capture_output=True).returncode == 0, version
    # What a Python outside the range would be told (version_info faked: no such Python is installed).
    refused = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.version_info = (3, 10, 0); {code}"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "3.11 to 3.13" in refused.stderr


def other_supported_pythons() -> list[str]:
    """The declared Pythons besides the one running the suite, whose `local up --once` the serving
    tests already run (tests/serving/test_cli.py)."""
    return [v for v in supported_pythons() if v != f"{sys.version_info.major}.{sys.version_info.minor}"]


def working_tree_copy(target: Path) -> Path:
    """The checkout as it is (tracked and new files, uncommitted edits included), without its .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.real_server
@pytest.mark.parametrize("version", other_supported_pythons())
def test_the_readme_bootstrap_and_local_up_once_on_each_other_supported_python(
    version: str, tmp_path: Path
) -> None:
    """The README's set-up on a machine whose Python is 3.12 or 3.13 (Ubuntu 24.04, Debian 13): the
    bootstrap with PYTHON=<it> in a fresh copy, then `local up --once --json` serves the demo through
    Triton's python backend stub of that version, over HTTP and gRPC."""
    python = interpreter(version)
    if python is None:
        unavailable(f"no Python {version} here to bootstrap with")
        return
    checkout = working_tree_copy(tmp_path / "inferstack")
    try:
        boot = subprocess.run(
            ["bash", ".ci/bootstrap"],
            cwd=checkout,
            env={**os.environ, "PYTHON": python},
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert boot.returncode == 0, boot.stdout[-3000:] + boot.stderr[-3000:]
        served = subprocess.run(
            [str(checkout / ".venv" / "bin" / "inferstack"), "local", "up", "--once", "--json"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert served.returncode == 0, served.stdout[-2000:] + served.stderr[-3000:]
        report = json.loads(served.stdout)
        assert report["ok"] is True
        assert {(s["model"], s["protocol"], s["ok"]) for s in report["smoke"]} == {
            ("demo", "http", True),
            ("demo", "grpc", True),
        }
        ran = subprocess.run(
            [str(checkout / ".venv" / "bin" / "python"), "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        )
        major, minor = version.split(".")
        assert ran.stdout.strip() == f"({major}, {minor})"
    finally:
        # A CUDA build of torch (no CPU wheel of it for this Python on PyPI): several GB.
        shutil.rmtree(checkout, ignore_errors=True)
