"""Every example in examples/ runs under ``inferstack.testing`` as a user would run it, and the README's
library snippet runs in a user's own pytest file set up as Pulumi's testing guide sets up mocks."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

from inferstack.testing import Recording, record
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
EKS = "aws:eks/cluster:Cluster"
SERVICE = "inferstack:model_service:TritonModelService"


def run_example(folder: str, config: dict[str, str] | None = None, region: str = "us-east-1") -> Recording:
    path = EXAMPLES / folder
    recording, _ = record(
        lambda: runpy.run_path(str(path), run_name="__main__"),
        region=region,
        config={f"{folder}:{key}": value for key, value in (config or {}).items()},
        project=folder,
    )
    return recording


def test_the_examples_folder_holds_what_the_docs_list() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()) == [
        "add-service-python",
        "byo-cluster-python",
        "platform-python",
        "platform-yaml",
        "second-region-python",
    ]
    for folder in EXAMPLES.glob("*-python"):
        assert (folder / "Pulumi.yaml").read_text().startswith(f"name: {folder.name}\n")


def test_the_whole_platform_in_one_component() -> None:
    recording = run_example("platform-python")
    assert len(recording.of_type(EKS)) == 1
    assert [r.name for r in recording.of_type(SERVICE)] == ["ranker"]


def test_bring_your_own_cluster_composes_the_lower_level_components() -> None:
    recording = run_example(
        "byo-cluster-python",
        {
            "kubeconfig": "{}",
            "clusterName": "theirs",
            "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/X",
            "oidcIssuerUrl": "https://oidc.eks.us-east-1.amazonaws.com/id/X",
        },
    )
    assert recording.of_type(EKS) == []  # theirs, not ours
    types = {r.type for r in recording}
    assert {
        "inferstack:monitoring:Monitoring",
        "inferstack:autoscaling:Autoscaling",
        "inferstack:gpu:GpuOperators",
        SERVICE,
    } <= types
    reader = recording.one("aws:iam/role:Role", "ranker-models-reader")
    assert "oidc.eks.us-east-1.amazonaws.com/id/X:sub" in reader.inputs["assumeRolePolicy"]


def test_a_second_region_goes_through_its_own_provider() -> None:
    recording = run_example("second-region-python")
    provider = recording.one("pulumi:providers:aws", "eu-west-1")
    subnets = recording.of_type("aws:ec2/subnet:Subnet")
    assert subnets and all(s.provider.startswith(provider.urn) for s in subnets)
    assert {s.inputs["availabilityZone"] for s in subnets} == {"eu-west-1a", "eu-west-1b", "eu-west-1c"}


def test_a_service_added_to_a_platform_stack_reads_it_by_reference() -> None:
    recording = run_example("add-service-python", {"platformStack": "my-org/inferstack/prod"})
    policy = recording.one("aws:iam/rolePolicy:RolePolicy", "reranker-models").inputs["policy"]
    assert "arn:aws:s3:::models-prod-offline/reranker/*" in policy  # the referenced stack's bucket
    assert [r.name for r in recording.of_type(SERVICE)] == ["reranker"]


def test_the_readme_snippet_runs_in_a_users_own_test_file(tmp_path: Path) -> None:
    """Pulumi's testing guide: set mocks, import the program, assert on outputs with @pulumi.runtime.test."""
    readme = (ROOT / "README.md").read_text()
    snippet = next(
        block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "InferencePlatform(" in block
    )
    (tmp_path / "program.py").write_text(snippet)
    (tmp_path / "test_program.py").write_text(
        "import pulumi\n"
        "import inferstack.testing\n"
        "inferstack.testing.set_mocks()\n"
        "import program\n\n"
        "@pulumi.runtime.test\n"
        "def test_the_service_has_an_endpoint():\n"
        "    assert program.platform.services['ranker'].http_endpoint.startswith('http://ranker.')\n"
        "    return program.platform.cluster_name.apply(lambda name: name == 'ml-prod' or None)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_program.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
