"""Render a pinned chart with the real helm binary, offline, from the vendored chart sources.

The bootstrap puts helm v4 in the venv's bin folder (from a PyPI wheel); it is looked up there and on
PATH. ``helm template`` runs with the stacks' Kubernetes version and the API groups the cluster has by
the time the release installs (the vendored CRDs), so ``.Capabilities`` checks in templates answer as
they would on the cluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from inferstack.components.charts import CHARTS, KARPENTER_CHARTS, Chart
from inferstack.infra.versions import DEFAULT_KUBERNETES_VERSION
from tests.conftest import unavailable


def helm() -> str:
    """The helm binary: the venv's (as the bootstrap installs it) or one on PATH; skip/fail if none."""
    found = shutil.which("helm", path=str(Path(sys.executable).parent)) or shutil.which("helm")
    if found is None:
        unavailable("`helm` is not in the venv or on PATH (bash .ci/bootstrap installs it)")
    assert found is not None
    return found


def chart_of(name: str, version: str) -> Chart:
    """The pinned chart a release names (by name, or by its ``oci://`` reference)."""
    (chart,) = [
        c for c in (*CHARTS, *KARPENTER_CHARTS) if name in (c.name, c.reference) and c.version == version
    ]
    return chart


def chart_source(vendor_dir: Path, chart: Chart) -> Path:
    path = vendor_dir / "charts-src" / chart.vendored
    if not (path / "Chart.yaml").is_file():
        unavailable(f"the chart source of {chart.vendored} is not vendored at {path}")
    return path


class HelmLoader(yaml.SafeLoader):
    """YAML 1.2 as helm writes it: a bare ``=`` (in CRD descriptions) is a string, not YAML 1.1's value tag."""


HelmLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@cache
def _render(
    source: Path,
    release: str,
    namespace: str,
    values_json: str,
    api_versions: tuple[str, ...],
    include_crds: bool = True,
) -> tuple[dict[str, Any], ...]:
    command = [
        helm(),
        "template",
        release,
        str(source),
        "--namespace",
        namespace,
        "--kube-version",
        f"v{DEFAULT_KUBERNETES_VERSION}.0",
        *(["--include-crds"] if include_crds else []),
        "--values",
        "-",
        *(f"--api-versions={v}" for v in api_versions),
    ]
    done = subprocess.run(command, input=values_json, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"helm template {source.name} failed:\n{done.stderr}")
    return tuple(doc for doc in yaml.load_all(done.stdout, Loader=HelmLoader) if doc)


def render(
    vendor_dir: Path,
    chart: Chart,
    *,
    release: str,
    namespace: str,
    values: dict[str, Any],
    api_versions: tuple[str, ...] = (),
    include_crds: bool = True,
) -> list[dict[str, Any]]:
    """Every object ``helm template`` renders for ``values`` (CRDs included, unless the release skips them)."""
    source = chart_source(vendor_dir, chart)
    values_json = json.dumps(values, sort_keys=True)
    return list(_render(source, release, namespace, values_json, api_versions, include_crds))


def render_release(
    vendor_dir: Path, inputs: dict[str, Any], api_versions: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """What helm renders for a recorded Release: its chart, version, name, namespace and values."""
    return render(
        vendor_dir,
        chart_of(inputs["chart"], inputs["version"]),
        release=inputs["name"],
        namespace=inputs["namespace"],
        values=inputs["values"],
        api_versions=api_versions,
        include_crds=not inputs.get("skipCrds"),
    )


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one rendered object of ``kind`` (and ``name``)."""
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    if len(found) != 1:
        names = [o["metadata"]["name"] for o in objects if o["kind"] == kind]
        raise AssertionError(f"expected one {kind} named {name!r}, rendered {names}")
    return found[0]
