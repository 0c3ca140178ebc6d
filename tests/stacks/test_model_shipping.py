"""Models ship with the deploy: the stacks' plans put the model objects before the services that load them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inferstack.cli.main import main
from inferstack.components.platform import InferencePlatform
from inferstack.components.platform_config import parse_config
from inferstack.infra.model_cache import MANIFEST
from inferstack.stacks import offline
from tests.conftest import ROOT
from tests.harness import DEPLOYER_ARGS, Recording, run_invalid, run_program
from tests.stacks.test_failover_stack import STANDBY
from tests.stacks.test_stacks import engine_form

OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def depends_on(steps: dict[str, dict[str, Any]], urn: str) -> set[str]:
    """Every URN ``urn`` waits for, through the plan's dependency edges."""
    found: set[str] = set()
    todo = [urn]
    while todo:
        for dependency in steps[todo.pop()]["newState"].get("dependencies", []):
            if dependency not in found:
                found.add(dependency)
                todo.append(dependency)
    return found


def test_plan_json_of_prod_creates_the_model_objects_before_the_deployment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    arguments = ["plan", "-s", "prod", "--stacks-dir", str(ROOT / "stacks"), "--out", str(tmp_path), "--json"]
    assert main([*arguments, *DEPLOYER_ARGS]) == 0
    plan = json.loads(capsys.readouterr().out)
    steps = {step["urn"]: step for step in plan["steps"]}
    objects = {urn: s for urn, s in steps.items() if s["newState"]["type"] == OBJECT}
    (deployment,) = (u for u, s in steps.items() if s["newState"]["type"] == DEPLOYMENT and "ranker" in u)
    assert objects and set(objects) <= depends_on(steps, deployment)
    order = list(steps)
    assert max(order.index(u) for u in objects) < order.index(deployment)
    # Within the model: its version files, then config.pbtxt, then the manifest.
    by_key = {s["newState"]["inputs"]["key"]: urn for urn, s in objects.items()}
    manifest, config, version = (
        by_key[f"ranker/ranker/{k}"] for k in (MANIFEST, "config.pbtxt", "1/model.py")
    )
    assert config in steps[manifest]["newState"]["dependencies"]
    assert version in steps[config]["newState"]["dependencies"]
    assert manifest not in depends_on(steps, config) and config not in depends_on(steps, version)
    # And every object after the bucket's settings (its encryption among them).
    bucket_settings = {
        u
        for u, s in steps.items()
        if s["newState"]["type"].startswith("aws:s3/bucket") and s["newState"]["type"] != OBJECT
    }
    assert bucket_settings and all(bucket_settings <= depends_on(steps, u) for u in objects)


def test_the_standby_ships_its_models_into_its_own_bucket() -> None:
    """prod-dr does not hope replication has run: its own deploy puts the models in its own bucket."""
    recording = offline.run_stack(ROOT / "stacks", "prod-dr", STANDBY)
    standby_bucket = recording.one("aws:s3/bucket:Bucket").inputs["bucketPrefix"].rstrip("-")
    buckets = {o.inputs["bucket"] for o in recording.of_type(OBJECT)}
    assert buckets and all(b.startswith(standby_bucket) for b in buckets), buckets
    deployment = recording.one(DEPLOYMENT, "ranker-deployment")
    assert {o.urn for o in recording.of_type(OBJECT)} <= set(deployment.dependencies)


def pod(recording: Recording) -> dict[str, Any]:
    spec: dict[str, Any] = recording.one(DEPLOYMENT, "demo-deployment").inputs["spec"]["template"]["spec"]
    return spec


def dev(**service: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "environment": "dev",
        "cluster": {"publicAccessCidrs": ["198.51.100.7/32"]},
        "network": {"zones": 2, "nat": "single"},
        "services": [{"name": "demo", "models": ["demo"], "prefix": "demo", "minReplicas": 1, **service}],
    }
    return raw


def platform(raw: dict[str, Any]) -> Any:
    return lambda: InferencePlatform("ml-dev", parse_config(engine_form(raw)), stack_dir=ROOT / "stacks")


def cache(recording: Recording) -> tuple[str, str]:
    spec = pod(recording)
    limit = next(v for v in spec["volumes"] if v["name"] == "model-repository")["emptyDir"]["sizeLimit"]
    triton = next(c for c in spec["containers"] if c["name"] == "triton")
    return limit, triton["resources"]["requests"]["ephemeral-storage"]


def test_the_cache_is_sized_from_what_the_service_downloads() -> None:
    shipped, _ = run_program(platform(dev(repository="demo-repository")))
    assert cache(shipped) == ("1Gi", "5Gi")  # twice a few KiB, in whole GiB, plus 4 GiB of scratch
    fill = pod(shipped)["initContainers"][0]
    assert fill["name"] == "model-cache" and "--models=demo:1" in fill["args"]
    explicit, _ = run_program(platform(dev(repository="demo-repository", modelCacheGib=12)))
    assert cache(explicit) == ("12Gi", "16Gi")
    out_of_band, _ = run_program(platform(dev()))
    assert cache(out_of_band) == ("40Gi", "44Gi")  # unknown size: the old default
    assert "--models=demo" in pod(out_of_band)["initContainers"][0]["args"]
    assert not out_of_band.of_type(OBJECT)


@pytest.mark.parametrize(
    ("service", "key", "says"),
    [
        ({"repository": "no-such-folder"}, "inferstack:services[0].repository", "existing folder"),
        (
            {"repository": "demo-repository", "models": ["absent"]},
            "inferstack:services[0].models",
            "models of the repository",
        ),
        (
            {"repository": "demo-repository", "modelCacheGib": 1e-9},
            "inferstack:services[0].modelCacheGib",
            "the fill places",
        ),
    ],
)
def test_what_cannot_ship_is_named_by_its_stack_key_before_anything_is_registered(
    service: dict[str, Any], key: str, says: str
) -> None:
    recording, error = run_invalid(platform(dev(**service)))
    assert error.field == key and says in error.allowed, error
    assert "\n" not in str(error)
    assert not [r for r in recording if r.type != "pulumi:providers:aws"]


def test_a_canary_needs_both_versions_among_those_shipped() -> None:
    """The demo repository serves version 1 only: a canary of versions 1 and 2 would split requests to a
    version no pod loads."""
    canary = {"model": "demo", "stableVersion": 1, "canaryVersion": 2}
    _, error = run_invalid(platform(dev(repository="demo-repository", canary=canary)))
    assert error.field == "inferstack:services[0].canary.canaryVersion" and "[1]" in error.allowed, error


def test_the_request_front_is_sized_from_the_stack_keys() -> None:
    """A service's usual body and rate size its front; a JSON size one nginx worker cannot read at that
    rate is refused by its key, and the front's own trigger is a key too."""
    sized, _ = run_program(platform(dev(expectedRequestBytes=100_000, expectedRequestsPerSecond=200)))
    front = pod(sized)["initContainers"][1]  # after the model-cache fill
    assert front["name"] == "request-front" and front["resources"]["limits"]["cpu"] == "0.5"
    _, error = run_invalid(platform(dev(expectedRequestBytes=1_000_000)))
    assert error.field == "inferstack:services[0].expectedRequestBytes" and "binary tensors" in error.allowed
    scaled, _ = run_program(platform(dev(frontTimeTargetMs=20)))
    (scaler,) = scaled.of_type("kubernetes:keda.sh/v1alpha1:ScaledObject")
    assert "front-time" in {t["name"] for t in scaler.inputs["spec"]["triggers"]}
