"""Every workload of every stack is ordered after the ServiceAccounts, ConfigMaps and Secrets it names."""

from __future__ import annotations

import pytest

from inferstack.policies.pod_references import named, pods_wait_for_references
from inferstack.stacks import offline
from tests.conftest import ROOT
from tests.harness import DEPLOYER
from tests.policies.test_scale_from_zero import STACKS, as_stack


def test_every_way_a_pod_names_an_object_is_found() -> None:
    spec = {
        "serviceAccountName": "sa",
        "imagePullSecrets": [{"name": "pull"}],
        "volumes": [
            {"name": "a", "configMap": {"name": "cm"}},
            {"name": "b", "secret": {"secretName": "s"}},
            {
                "name": "c",
                "projected": {"sources": [{"configMap": {"name": "cm2"}}, {"secret": {"name": "s2"}}]},
            },
        ],
        "containers": [
            {
                "env": [
                    {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}}},
                    {
                        "name": "Y",
                        "valueFrom": {"configMapKeyRef": {"name": "opt", "key": "k", "optional": True}},
                    },
                ],
                "envFrom": [{"configMapRef": {"name": "cm3"}}],
            }
        ],
    }
    assert sorted(named(spec)) == sorted(
        [
            ("ServiceAccount", "sa"),
            ("Secret", "pull"),
            ("ConfigMap", "cm"),
            ("Secret", "s"),
            ("ConfigMap", "cm2"),
            ("Secret", "s2"),
            ("Secret", "s3"),
            ("ConfigMap", "cm3"),
        ]
    )


@pytest.mark.parametrize("stack", ["dev", "staging", *sorted(STACKS)])
def test_every_stack_orders_its_workloads_after_what_they_name(stack: str) -> None:
    recording = offline.run_stack(ROOT / "stacks", stack, STACKS.get(stack, DEPLOYER))
    assert pods_wait_for_references(as_stack(recording.resources), {}) == []
    # Each Triton Deployment names its ServiceAccount, the front's ConfigMap and the admin key Secret.
    tritons = [
        r
        for r in recording.of_type("kubernetes:apps/v1:Deployment")
        if r.inputs["spec"]["template"]["spec"]["containers"][0]["name"] == "triton"
    ]
    assert tritons
    for triton in tritons:
        name = triton.inputs["metadata"]["name"]
        expected = {
            ("ServiceAccount", name),
            ("ConfigMap", f"{name}-request-front"),
            ("Secret", f"{name}-admin-key"),
        }
        assert expected <= set(named(triton.inputs["spec"]["template"]["spec"]))
