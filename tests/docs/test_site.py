"""The documentation site builds with the real MkDocs in strict mode, its reference pages are what the
code says, and the README stays a front door whose links all lead somewhere."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from inferstack.components.config_keys import reference_table
from inferstack.policies.pack import policies
from inferstack.provider.reference import schema
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


def page(site: Path, path: str) -> str:
    return (site / path / "index.html").read_text()


def test_the_config_reference_lists_every_key(site: Path) -> None:
    html = page(site, "reference/config")
    keys = re.findall(r"^\| `([^`]+)` \|", reference_table(), re.M)
    assert len(keys) > 40
    assert [key for key in keys if f"<code>{key}</code>" not in html] == []


def test_the_policy_reference_lists_every_policy_the_pack_serves(site: Path) -> None:
    html = page(site, "reference/policies")
    names = [policy.name for policy in policies()]
    assert [name for name in names if f"<code>{name}</code>" not in html] == []
    assert f"{len(names)} policies:" in html


def test_the_component_reference_lists_every_input_of_every_component(site: Path) -> None:
    html = page(site, "reference/components")
    for token, resource in schema()["resources"].items():
        assert token in html
        assert [p for p in resource["inputProperties"] if f"<code>{p}</code>" not in html] == []


def test_the_changelog_and_the_plot_are_part_of_the_site(site: Path) -> None:
    assert "Keep a Changelog" in page(site, "changelog")
    assert (site / "assets" / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_readme_is_a_front_door_whose_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith("http")]
    assert local and [link for link in local if not (ROOT / link).exists()] == []


def test_the_package_the_cli_the_schema_and_the_changelog_agree_on_the_version() -> None:
    version = metadata.version("inferstack")
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == version
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert released and released[0] == version
    shown = subprocess.run(
        [sys.executable, "-m", "inferstack.cli.main", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.stdout.strip() == f"inferstack {version}"
    assert schema()["version"] == version
