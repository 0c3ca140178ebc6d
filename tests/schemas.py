"""Validate manifests the way the API server would: built-in kinds against the Kubernetes OpenAPI
schemas (kubernetes-validate, offline), custom resources against the vendored CRD schemas.

CRD schemas are made strict here (unknown fields rejected) because the API server would silently
prune a misspelled field, and a pruned field is a bug we want to see.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from inferstack.components.charts import KARPENTER
from inferstack.infra.versions import DEFAULT_KUBERNETES_VERSION
from tests.cel import cel_errors

# Where the vendored CRDs are, under the vendor folder: the plain files, and the Karpenter chart's
# crds/ folder (the CRD chart holds the same CRDs as Helm templates).
CRD_DIRS = ("crds", f"charts-src/{KARPENTER.vendored}/crds")


def validate_k8s(manifest: dict[str, Any], version: str = DEFAULT_KUBERNETES_VERSION) -> None:
    """Raise if a built-in kind does not validate (strict: unknown fields are errors)."""
    kubernetes_validate.validate(manifest, f"{version}.0", strict=True)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            pattern = node.get("pattern")
            if isinstance(pattern, str) and pattern.startswith("^(?i)"):
                # Go's RE2 takes inline flags anywhere; Python only at the very start.
                node["pattern"] = "(?i)^" + pattern.removeprefix("^(?i)")
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_schemas(crds: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict openAPIV3Schema, for every CustomResourceDefinition in ``crds``."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in crds:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            found[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return found


@cache
def _crd_schemas(vendor_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return crd_schemas(
        crd
        for folder in CRD_DIRS
        for path in sorted((vendor_dir / folder).glob("*.yaml"))
        for crd in yaml.safe_load_all(path.read_text())
        if crd
    )


def validate_custom_resource(
    manifest: dict[str, Any], vendor_dir: Path, schemas: dict[tuple[str, str], dict[str, Any]] | None = None
) -> None:
    """Raise if a custom resource does not validate against its CRD schema (vendored, or ``schemas``):
    its OpenAPI schema, then its CEL rules."""
    key = (manifest["apiVersion"], manifest["kind"])
    schemas = {**_crd_schemas(vendor_dir), **(schemas or {})}
    if key not in schemas:
        raise AssertionError(f"no vendored CRD for {key}; have {sorted(schemas)}")
    body = {k: v for k, v in manifest.items() if k != "metadata"}
    jsonschema.Draft7Validator(schemas[key]).validate(body)
    errors = cel_errors(schemas[key], body)
    if errors:
        raise AssertionError(f"{manifest['kind']} breaks its CRD's rules: " + "; ".join(errors))


BUILT_IN_API_VERSIONS = {"v1", "apps/v1", "policy/v1", "storage.k8s.io/v1", "rbac.authorization.k8s.io/v1"}


def validate_manifest(manifest: dict[str, Any], vendor_dir: Path) -> None:
    """A built-in kind against the Kubernetes schemas, anything else against its vendored CRD."""
    if manifest["apiVersion"] in BUILT_IN_API_VERSIONS:
        validate_k8s(manifest)
    else:
        validate_custom_resource(manifest, vendor_dir)


def validate_recorded_manifests(recording: Any) -> None:
    """Every first-party Kubernetes object a recorded program would create validates (some must exist).

    The vendored CRDs are found as the ``vendor_dir`` fixture finds them; skipped (failed in CI)
    where they are absent.
    """
    import os

    from inferstack.stacks.plan import manifest
    from tests.conftest import ROOT, unavailable

    documents = [d for d in (manifest(r) for r in recording) if d is not None]
    assert documents, "no Kubernetes objects were registered"
    vendor = Path(os.environ.get("INFERSTACK_VENDOR_DIR", ROOT.parent / "shared" / "vendor"))
    if not (vendor / "crds").is_dir():
        unavailable(f"vendored CRD schemas not found at {vendor} (set INFERSTACK_VENDOR_DIR)")
    for document in documents:
        validate_manifest(document, vendor)
