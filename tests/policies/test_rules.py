"""What the rules rely on, checked against the real things: pulumi-policy's proxies, the charts' CRDs,
and the Analyzer process's imports. (Every rule's pass and fail fixture runs in test_analyzer.py.)"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from pulumi_policy.proxy import unknown_checking_proxy

from inferstack.policies import rule_base, rules, rules_workloads
from inferstack.policies.plain import plain
from inferstack.policies.stack import CRD_CHARTS
from inferstack.policies.stack_access import _api_group
from inferstack.stacks.offline import run_stack
from tests.conftest import ROOT
from tests.harness import DEPLOYER

DEPLOYMENT = {
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "example/app:1.0",
                        "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}],
                    }
                ]
            }
        }
    }
}


def test_plain_turns_pulumi_policys_proxies_into_plain_data() -> None:
    proxied = unknown_checking_proxy(DEPLOYMENT)
    assert not isinstance(proxied, dict)  # what the Analyzer hands a rule
    assert (
        plain(proxied) == DEPLOYMENT
        and type(plain(proxied)["spec"]["template"]["spec"]["containers"]) is list
    )


def test_rules_see_through_proxies() -> None:
    """The bug of issue 11: a rule given the proxy (not plain data) found no key."""
    found = rules_workloads.no_static_aws_keys(
        rule_base.DEPLOYMENT, plain(unknown_checking_proxy(DEPLOYMENT)), {}
    )
    assert found and "AWS_SECRET_ACCESS_KEY" in found[0]


@pytest.mark.parametrize(
    "values",
    [
        {"awsAccessKeyID": "", "awsSecretAccessKey": ""},  # the cluster-autoscaler chart's empty defaults
        {"env": [{"name": "AWS_REGION", "value": "us-east-1"}]},
        {"image": {"tag": "v1"}},
    ],
)
def test_static_keys_ignore_what_is_not_a_key(values: dict[str, object]) -> None:
    assert rules_workloads.no_static_aws_keys(rule_base.RELEASE, {"values": values}, {}) == []


def test_every_rule_ignores_other_types() -> None:
    for rule in rules.RULES:
        assert rule.check("aws:iam/role:Role", {"name": "x"}, rule.defaults) == []


def test_crd_charts_install_the_groups_they_are_said_to(vendor_dir: Path) -> None:
    """crd-ordered trusts CRD_CHARTS: each chart's vendored source must define CRDs of that group."""
    for group, chart in CRD_CHARTS.items():
        (source,) = [p for p in (vendor_dir / "charts-src").iterdir() if p.name.rsplit("-", 1)[0] == chart]
        defining = [
            p
            for p in source.rglob("*.yaml")
            if "kind: CustomResourceDefinition" in (text := p.read_text()) and f"group: {group}" in text
        ]
        assert defining, f"{source.name} defines no CRD of {group}"


def test_every_custom_kind_of_the_stacks_has_its_crd_chart() -> None:
    """Otherwise crd-ordered would skip it as a kind whose CRD the stack does not manage."""
    groups = {
        _api_group(r.type)
        for capacity in ("managed-node-groups", "karpenter")
        for r in run_stack(ROOT / "stacks", "prod", {**DEPLOYER, "inferstack:capacity": capacity})
        if r.type.startswith("kubernetes:") and not r.type.startswith("kubernetes:helm.sh/")
    }
    assert {"karpenter.sh", "karpenter.k8s.aws"} <= groups
    custom = {g for g in groups if "." in g and not g.endswith("k8s.io")}
    assert custom and custom <= set(CRD_CHARTS)


def test_the_analyzer_process_imports_no_resource_module() -> None:
    code = "import sys, inferstack.policies.pack as p; print(sorted(m for m in sys.modules if m.startswith('inferstack')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(ast.literal_eval(out))
    # The pure tables of the components layer (the await budget, the node agents) are allowed.
    pure = {"inferstack.components", "inferstack.components.awaits", "inferstack.components.node_agents"}
    forbidden = (
        "inferstack.components.",
        "inferstack.serving",
        "inferstack.stacks",
        "inferstack.infra.cluster",
        "inferstack.infra.network",
        "inferstack.infra.nodegroups",
        "inferstack.infra.model_store",
    )
    assert sorted(m for m in loaded - pure if m.startswith(forbidden)) == []
    assert "inferstack.policies.rules_workloads" in loaded  # the check reads what it must


def test_a_gpu_pod_may_have_sidecars_without_gpus() -> None:
    gpu = {"name": "triton", "image": "t:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    spec = {
        "containers": [gpu, {"name": "logs", "image": "l:1"}],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    deployment = {"spec": {"template": {"spec": spec}}}
    assert rules_workloads.gpu_workloads_scheduled(rule_base.DEPLOYMENT, deployment, {}) == []
    gpu["resources"] = {"requests": {"nvidia.com/gpu": "1"}}
    assert rules_workloads.gpu_workloads_scheduled(rule_base.DEPLOYMENT, deployment, {}) == [
        "container 'triton' requests GPUs without an nvidia.com/gpu limit",
        "the pod runs on GPU nodes without an nvidia.com/gpu limit",
    ]


def test_a_step_borrowing_tritons_image_is_not_triton() -> None:
    """The model-cache fill runs Triton's image's python3 and exits: no probes, no Triton flags to check."""
    image = "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert not rule_base.is_triton(
        {"name": "model-cache", "image": image, "command": ["python3", "/opt/fill.py"]}
    )
    assert rule_base.is_triton({"name": "server", "image": image, "command": ["tritonserver"]})
    assert rule_base.is_triton({"name": "server", "image": image})  # the image's own entrypoint
    assert rule_base.is_triton({"name": "triton", "image": "example.com/custom:1", "command": ["/bin/serve"]})
