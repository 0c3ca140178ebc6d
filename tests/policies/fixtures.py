"""Pass and fail fixtures for every policy of the pack, made from the prod stack as the engine records it.

Each case changes the recorded prod stack twice: once into a shape the policy must accept, once into
one it must refuse. Both are explicit, so a case keeps its meaning whatever the stacks look like.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from inferstack.components.karpenter import KarpenterArgs, NodePoolPlan, ec2_node_class, node_pool
from inferstack.infra.karpenter import queue_policy
from inferstack.stacks.offline import Recorded

Stack = list[Recorded]
Change = Callable[[Stack], Stack]

CIDR = "203.0.113.0/24"
EPHEMERAL_TAG = "node-template/resources/ephemeral-storage"
FAKE_KEY_ID = "AKIA" + "TESTONLYNOTAKEY0"  # the shape of an access key id, split so scanners skip it


@dataclass(frozen=True)
class Case:
    policy: str
    fail: Change
    expected: str  # a phrase of the violation's message
    good: Change = field(default=lambda stack: stack)
    config: dict[str, Any] = field(default_factory=dict)  # the pack config both runs use
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.policy}-{self.label}" if self.label else self.policy


# --- changes to a recorded stack ---------------------------------------------------------------------


def is_(resource: Recorded, wanted: str) -> bool:
    """Whether ``resource`` is the one a fixture calls ``"Kind name"``: names alone repeat across
    types, and a stack may prefix them (``inferstack-prod-...``)."""
    kind, _, name = wanted.partition(" ")
    return resource.type.rsplit(":", 1)[-1] == kind and (
        resource.name == name or resource.name.endswith(f"-{name}")
    )


def is_any(resource: Recorded, wanted: tuple[str, ...]) -> bool:
    return any(is_(resource, w) for w in wanted)


def edit(name: str, change: Callable[[dict[str, Any]], Any]) -> Change:
    """Change the inputs of the resource ``name`` (``"Kind name"``)."""

    def apply(stack: Stack) -> Stack:
        found = [r for r in stack if is_(r, name)]
        assert len(found) == 1, f"expected one resource {name!r}, found {len(found)}"
        result = []
        for resource in stack:
            if is_(resource, name):
                inputs = copy.deepcopy(resource.inputs)
                change(inputs)
                resource = replace(resource, inputs=inputs)
            result.append(resource)
        return result

    return apply


def edit_type(resource_type: str, change: Callable[[dict[str, Any]], Any]) -> Change:
    """Change the inputs of every resource of ``resource_type``."""

    def apply(stack: Stack) -> Stack:
        names = [f"{r.type.rsplit(':', 1)[-1]} {r.name}" for r in stack if r.type == resource_type]
        for name in names:
            stack = edit(name, change)(stack)
        return stack

    return apply


def drop(*names: str) -> Change:
    def apply(stack: Stack) -> Stack:
        missing = [n for n in names if not any(is_(r, n) for r in stack)]
        assert not missing, f"not in the stack: {missing}"
        return [r for r in stack if not is_any(r, names)]

    return apply


def without_ephemeral_storage_tags(stack: Stack, group: str = "") -> Stack:
    """The node groups (or the one whose name ends with ``group``) as main left them: no node-template
    ephemeral-storage tag on the Auto Scaling group or on the managed group."""
    urns = {r.urn for r in stack if r.type == "aws:eks/nodeGroup:NodeGroup" and r.name.endswith(group)}
    result = []
    for resource in stack:
        if (
            resource.type == "aws:autoscaling/tag:Tag"
            and resource.inputs["tag"]["key"].endswith(EPHEMERAL_TAG)
            and urns & set(resource.property_dependencies.get("autoscalingGroupName", ()))
        ):
            continue
        if resource.urn in urns:
            inputs = copy.deepcopy(resource.inputs)
            inputs["tags"] = {k: v for k, v in inputs["tags"].items() if not k.endswith(EPHEMERAL_TAG)}
            resource = replace(resource, inputs=inputs)
        result.append(resource)
    return result


def timeouts(name: str, **given: float) -> Change:
    """The resource ``name`` with these customTimeouts (in seconds) only: none given, none set."""

    def apply(stack: Stack) -> Stack:
        assert any(is_(r, name) for r in stack), f"not in the stack: {name}"
        return [replace(r, custom_timeouts=dict(given)) if is_(r, name) else r for r in stack]

    return apply


def add(resource: Recorded) -> Change:
    return lambda stack: [*stack, resource]


def ordered_after(name: str, *after: str) -> Change:
    """``name`` depends on the resources called ``after`` too."""

    def apply(stack: Stack) -> Stack:
        urns = [r.urn for r in stack if is_any(r, after)]
        assert len(urns) == len(after), after
        return [replace(r, dependencies=(*r.dependencies, *urns)) if is_(r, name) else r for r in stack]

    return apply


def not_after(name: str, *others: str) -> Change:
    """``name`` no longer depends on the resources ``others`` (``"Kind name"`` each)."""

    def apply(stack: Stack) -> Stack:
        urns = {r.urn for r in stack if is_any(r, others)}
        assert len(urns) == len(others), others

        def kept(found: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(u for u in found if u not in urns)

        return [
            replace(
                r,
                dependencies=kept(r.dependencies),
                property_dependencies={k: kept(v) for k, v in r.property_dependencies.items()},
            )
            if is_(r, name)
            else r
            for r in stack
        ]

    return apply


def only_after(name: str, *others: str) -> Change:
    """``name`` depends on the resources ``others`` and nothing else (as before issue 9's fix)."""

    def apply(stack: Stack) -> Stack:
        urns = tuple(r.urn for r in stack if is_any(r, others))
        assert len(urns) == len(others), others
        return [replace(r, dependencies=urns, property_dependencies={}) if is_(r, name) else r for r in stack]

    return apply


def then(*changes: Change) -> Change:
    def apply(stack: Stack) -> Stack:
        for change in changes:
            stack = change(stack)
        return stack

    return apply


def resource(resource_type: str, name: str, inputs: dict[str, Any]) -> Recorded:
    urn = f"urn:pulumi:prod::inferstack::{resource_type}::{name}"
    return Recorded(type=resource_type, name=name, inputs=inputs, parent_urn="", custom=True, urn=urn)


# --- reading the prod stack's Triton Deployment -----------------------------------------------------


def pod(inputs: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = inputs["spec"]["template"]["spec"]
    return spec


def triton(inputs: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod(inputs)["containers"][0]
    assert container["name"] == "triton"
    return container


def set_args(inputs: dict[str, Any], change: Callable[[str], str | None]) -> None:
    """Each Triton argument replaced by ``change``'s answer, or dropped where it answers None."""
    container = triton(inputs)
    container["args"] = [new for arg in container["args"] if (new := change(arg)) is not None]


def statements(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(inputs["policy"])["Statement"]
    return found


def set_statements(inputs: dict[str, Any], change: Callable[[list[dict[str, Any]]], Any]) -> None:
    document = json.loads(inputs["policy"])
    change(document["Statement"])
    inputs["policy"] = json.dumps(document)


# --- what makes a stack deployable and ordered, as changes: each case's passing shape ---------------

CLUSTER = "Cluster inferstack-prod-eks"
PROVIDER = "kubernetes inferstack-prod-k8s"
ADMIN = "AccessPolicyAssociation inferstack-prod-deployer"


def reachable(inputs: dict[str, Any]) -> None:
    inputs["vpcConfig"].update(endpointPublicAccess=True, publicAccessCidrs=[CIDR])


deployable_fixed = then(edit(CLUSTER, reachable), ordered_after(PROVIDER, ADMIN))

FLUENT_BIT = "telemetry-fluent-bit"

CUSTOM_RESOURCES = {
    "ServiceMonitor ranker-monitor": "Release monitoring-kube-prometheus-stack",
    "PrometheusRule ranker-alerts": "Release monitoring-kube-prometheus-stack",
    "ScaledObject ranker-scaler": "Release autoscaling-keda",
}
crds_ordered = then(*(ordered_after(cr, release) for cr, release in CUSTOM_RESOURCES.items()))


def _aws_secret_literal() -> Recorded:
    credentials = f"[default]\naws_access_key_id = {FAKE_KEY_ID}\naws_secret_access_key = x\n"
    return resource(
        "kubernetes:core/v1:Secret",
        "aws-credentials",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "aws-credentials", "namespace": "ranker"},
            "data": {"credentials": base64.b64encode(credentials.encode()).decode()},
        },
    )


def _workload(kind: str, name: str, image: str) -> Recorded:
    """A pod controller of ``kind`` running ``image``: the stacks run none of these kinds first-party."""
    labels = {"app": name}
    spec = {"containers": [{"name": name, "image": image}]}
    template = {"metadata": {"labels": labels}, "spec": spec}
    body: dict[str, Any] = {"selector": {"matchLabels": labels}, "template": template}
    if kind == "StatefulSet":
        body["serviceName"] = name
    inputs = {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "ranker"},
        "spec": body,
    }
    return resource(f"kubernetes:apps/v1:{kind}", name, inputs)


def _key_in_helm_values(inputs: dict[str, Any]) -> None:
    inputs["values"]["awsSecretAccessKey"] = "not-a-real-secret"


# --- Karpenter's objects, from the builders `capacity: karpenter` uses ----------------------------------

QUEUE = "aws:sqs/queue:Queue"
PROD_BUDGETS = {"karpenter-disruption-bounded": {"enforcementLevel": "mandatory", "maxNodes": 1}}
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")


def pool_resource(
    *,
    prod: bool,
    types: tuple[str, ...] = ("g5.xlarge", "g6.xlarge", "g4dn.xlarge"),
    expire: str | None = None,
    change: Callable[[dict[str, Any]], Any] = lambda pool: None,
) -> Recorded:
    manifest = node_pool(NodePoolPlan("gpu-spot", "spot", types, ZONES, 18), prod=prod)
    if expire is not None:
        manifest["spec"]["template"]["spec"]["expireAfter"] = expire
    change(manifest)
    return resource("kubernetes:karpenter.sh/v1:NodePool", "karpenter-gpu-spot", manifest)


def node_class_resource(change: Callable[[dict[str, Any]], Any]) -> Recorded:
    volume_key = "arn:aws:kms:us-east-1:123456789012:key/volumes"  # the stack's
    # Cluster "c" on Kubernetes 1.35 with instance profile "p"; the controller's fields reach no node class.
    cluster = KarpenterArgs("c", "1.35", "https://c", "arn", "c", "p", [], volume_kms_key_arn=volume_key)
    manifest = ec2_node_class("gpu", cluster)
    change(manifest["spec"])
    return resource("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", "karpenter-gpu", manifest)


def karpenter_release(settings: dict[str, Any]) -> Recorded:
    values = {"settings": settings}
    inputs = {"chart": "oci://public.ecr.aws/karpenter/karpenter", "values": values}
    return resource("kubernetes:helm.sh/v3:Release", "karpenter-controller", inputs)


def queue_policy_resource(principal: Any) -> Recorded:
    document = queue_policy("arn:aws:sqs:us-east-1:123456789012:c")
    document["Statement"][0]["Principal"] = principal
    return resource("aws:sqs/queuePolicy:QueuePolicy", "interruptions", {"policy": json.dumps(document)})


def node_pool_case(policy: str, expected: str, **pool: Any) -> Case:
    """The prod GPU NodePool passes; built with ``pool`` (``types``, ``change``) it is refused."""
    return Case(
        policy,
        add(pool_resource(prod=True, **pool)),
        expected,
        good=add(pool_resource(prod=True)),
        label="node-pool",
    )


def node_class_case(policy: str, change: Callable[[dict[str, Any]], Any], expected: str, label: str) -> Case:
    """The GPU EC2NodeClass passes as built; with ``change`` to its spec it is refused."""
    return Case(
        policy,
        add(node_class_resource(change)),
        expected,
        good=add(node_class_resource(lambda spec: None)),
        label=label,
    )


DEPLOYMENT = "Deployment ranker-deployment"
LAUNCH_TEMPLATE = "LaunchTemplate nodes-gpu-us-east-1a-lt"
SPOT_GROUP = "NodeGroup nodes-gpu-spot-us-east-1a-ng"
SCALER = "ScaledObject ranker-scaler"
READER = "RolePolicy ranker-models-reader"
AUTOSCALER = "Release autoscaling-cluster-autoscaler"
Edit = Callable[[dict[str, Any]], Any]


def in_triton(change: Edit) -> Change:
    """The prod Deployment with ``change`` made to its Triton container."""
    return edit(DEPLOYMENT, lambda i: change(triton(i)))


def in_pod(change: Edit) -> Change:
    """The prod Deployment with ``change`` made to its pod spec."""
    return edit(DEPLOYMENT, lambda i: change(pod(i)))


def in_statements(name: str, change: Callable[[list[dict[str, Any]]], Any]) -> Change:
    """The IAM policy document of ``name`` with ``change`` made to its statements."""
    return edit(name, lambda i: set_statements(i, change))


def in_args(change: Callable[[str], str | None]) -> Change:
    """The prod Triton's arguments, each replaced by ``change``'s answer (None drops it)."""
    return edit(DEPLOYMENT, lambda i: set_args(i, change))


def ebs(change: Edit) -> Change:
    """The GPU launch template's root volume with ``change`` made to its EBS settings."""
    return edit(LAUNCH_TEMPLATE, lambda i: change(i["blockDeviceMappings"][0]["ebs"]))


def hop_limit_one(inputs: dict[str, Any]) -> None:
    inputs["metadataOptions"].update(httpPutResponseHopLimit=1)


def poll_without_repository_api(arg: str) -> str:
    """Triton polling its repository, with the model-repository API left unrestricted."""
    if arg.startswith("--model-control-mode"):
        return "--model-control-mode=poll"
    if arg.startswith("--http-restricted-api="):
        return arg.replace("model-repository,", "")
    return arg


# --- the cases: each policy's failing change (and passing shape, where the prod stack is not one) -------

CASES: list[Case] = [
    Case(
        "pinned-images",
        in_triton(lambda c: c.update(image="nvcr.io/nvidia/tritonserver:latest")),
        "latest",
        label="deployment",
    ),
    Case(
        "pinned-images",
        edit("Release autoscaling-keda", lambda i: i["values"]["image"]["keda"].update(tag="latest")),
        "latest",
        label="helm",
    ),
    Case(
        "pinned-images",
        add(_workload("DaemonSet", "node-agent", "fluent/fluent-bit")),
        "has no tag",
        label="daemonset",
    ),
    Case(
        "pinned-images",
        add(_workload("StatefulSet", "store", "jaegertracing/jaeger:latest")),
        "latest",
        label="statefulset",
    ),
    Case(
        "pinned-images",
        edit(f"Release {FLUENT_BIT}", lambda i: i["values"]["image"].update(tag="latest")),
        "latest",
        label="telemetry-chart",
    ),
    Case(
        "image-registries",
        in_pod(lambda p: p["initContainers"][0].update(image="nginx:1.28.0")),
        "comes from docker.io (Docker Hub",
    ),
    Case(
        "image-registries",
        edit(
            "Release monitoring-kube-prometheus-stack",
            lambda i: i["values"]["grafana"]["image"].update(registry="docker.io"),
        ),
        "Helm value grafana.image: image 'docker.io/grafana/grafana'",
        label="helm",
    ),
    Case("pinned-charts", edit(AUTOSCALER, lambda i: i.update(version="^9.59.0")), "exact"),
    Case("eks-secrets-kms", edit(CLUSTER, lambda i: i.pop("encryptionConfig")), "KMS"),
    Case(
        "eks-endpoint-restricted",
        edit(
            CLUSTER,
            lambda i: i["vpcConfig"].update(endpointPublicAccess=True, publicAccessCidrs=["0.0.0.0/0"]),
        ),
        "whole internet",
        good=edit(CLUSTER, reachable),
    ),
    Case("eks-audit-logs", edit(CLUSTER, lambda i: i.update(enabledClusterLogTypes=["api"])), "audit"),
    Case(
        "imds-v2-hop-limit-1",
        edit(LAUNCH_TEMPLATE, lambda i: i["metadataOptions"].update(httpPutResponseHopLimit=2)),
        "hop limit is 2",
        good=edit_type("aws:ec2/launchTemplate:LaunchTemplate", hop_limit_one),
    ),
    Case(
        "imds-v2-hop-limit-1",
        edit(
            LAUNCH_TEMPLATE,
            lambda i: i["metadataOptions"].update(httpTokens="optional", httpPutResponseHopLimit=1),
        ),
        "IMDSv1",
        good=edit_type("aws:ec2/launchTemplate:LaunchTemplate", hop_limit_one),
        label="v1",
    ),
    Case("encrypted-volumes", ebs(lambda e: e.update(encrypted="false")), "not encrypted"),
    Case("encrypted-volumes", ebs(lambda e: e.pop("kmsKeyId")), "default EBS key", label="default-key"),
    Case(
        "encrypted-volumes",
        edit("StorageClass storage-gp3", lambda i: i["parameters"].pop("kmsKeyId")),
        "no parameters.kmsKeyId",
        label="storage-class",
    ),
    Case("gpu-nodes-tainted", edit(SPOT_GROUP, lambda i: i.update(taints=[])), "taint"),
    Case(
        "spot-diversified",
        edit(SPOT_GROUP, lambda i: i.update(instanceTypes=["g5.xlarge", "g6.xlarge"])),
        "at least 3",
    ),
    Case(
        "gpu-max-bounded",
        edit("NodeGroup nodes-gpu-us-east-1a-ng", lambda i: i["scalingConfig"].update(maxSize=40)),
        "40 GPUs",
    ),
    Case(
        "gpu-min-zero",
        edit("NodeGroup nodes-gpu-us-east-1a-ng", lambda i: i["scalingConfig"].update(minSize=1)),
        "minSize must be 0",
        config={"gpu-min-zero": "mandatory"},
    ),
    Case(
        "no-static-aws-keys",
        in_triton(lambda c: c["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "x"})),
        "environment variable AWS_SECRET_ACCESS_KEY",
        label="env",
    ),
    Case(
        "no-static-aws-keys",
        edit(AUTOSCALER, _key_in_helm_values),
        "awsSecretAccessKey",
        label="helm",
    ),
    Case("no-static-aws-keys", add(_aws_secret_literal()), "credentials", label="secret"),
    Case(
        "no-static-aws-keys",
        edit(
            f"Release {FLUENT_BIT}",
            lambda i: i["values"].update(env=[{"name": "AWS_ACCESS_KEY_ID", "value": FAKE_KEY_ID}]),
        ),
        "AWS_ACCESS_KEY_ID",
        label="log-shipper",
    ),
    Case(
        "logs-scoped",
        in_statements(f"RolePolicy {FLUENT_BIT}", lambda s: s[0].update(Resource="*")),
        "'*' is not a log group",
    ),
    Case(
        "logs-scoped",
        in_statements(
            f"RolePolicy {FLUENT_BIT}",
            lambda s: s[0].update(
                Action="logs:*", Resource="arn:aws:logs:us-east-1:123456789012:log-group:*"
            ),
        ),
        "more than one log group",
        label="wildcard-group",
    ),
    Case("triton-probes", in_triton(lambda c: c.pop("readinessProbe")), "readinessProbe"),
    Case(
        "triton-non-root-read-only",
        in_triton(lambda c: c["securityContext"].update(readOnlyRootFilesystem=False)),
        "writable root filesystem",
    ),
    Case("gpu-workloads-scheduled", in_pod(lambda p: p.pop("tolerations")), "tolerate", label="toleration"),
    Case(
        "gpu-workloads-scheduled",
        in_triton(lambda c: c["resources"]["limits"].pop("nvidia.com/gpu")),
        "without an nvidia.com/gpu limit",
        label="limit",
    ),
    Case(
        "triton-admin-restricted",
        in_args(lambda a: None if a.startswith("--grpc-restricted-protocol=") else a),
        "without --grpc-restricted-protocol",
    ),
    Case(
        "triton-admin-restricted",
        in_args(poll_without_repository_api),
        "--model-control-mode=poll without --http-restricted-api",
        label="poll",
    ),
    Case(
        "triton-admin-restricted",
        in_args(lambda a: a.replace("$(INFERSTACK_ADMIN_KEY)", "hunter2")),
        "writes the key of --http-restricted-api into the pod spec",
        label="literal-key",
    ),
    Case("spot-safe-drain", in_pod(lambda p: p.update(terminationGracePeriodSeconds=300)), "spot notice"),
    # --- stack policies ---
    Case(
        "deployable",
        edit(CLUSTER, lambda i: i["vpcConfig"].update(endpointPublicAccess=False)),
        "private only",
        good=deployable_fixed,
    ),
    Case(
        "deployable",
        edit(CLUSTER, lambda i: i["vpcConfig"].update(endpointPublicAccess=True, publicAccessCidrs=[])),
        "names no CIDRs",
        good=deployable_fixed,
        label="no-cidrs",
    ),
    Case(
        "deployable",
        drop("AccessEntry inferstack-prod-deployer", ADMIN),
        "no identity can administer",
        good=deployable_fixed,
        label="no-admin",
    ),
    Case(
        "deployable",
        not_after(PROVIDER, ADMIN),
        "does not wait for the cluster-admin",
        good=deployable_fixed,
        label="provider-order",
    ),
    Case("crd-ordered", only_after(SCALER), "not ordered after keda", good=crds_ordered),
    Case(
        "crd-ordered",
        only_after("ServiceMonitor ranker-monitor"),
        "not ordered after kube-prometheus-stack",
        good=crds_ordered,
        label="monitoring",
    ),
    Case(
        "crd-ordered",
        drop("Release autoscaling-keda"),
        "no release in this stack installs",
        good=crds_ordered,
        label="missing",
    ),
    Case("gpu-capacity", edit(SCALER, lambda i: i["spec"].update(minReplicaCount=25)), "losing us-east-1"),
    Case(
        "gpu-capacity",
        edit(SCALER, lambda i: i["spec"].update(maxReplicaCount=31)),
        "reach only 30",
        label="max",
    ),
    Case("zone-loss", in_pod(lambda p: p.pop("topologySpreadConstraints")), "spread"),
    Case(
        "zone-loss",
        in_pod(lambda p: p["topologySpreadConstraints"][0].update(minDomains=3)),
        "minDomains 3",
        label="min-domains",
    ),
    Case(
        "zone-loss",
        in_pod(lambda p: p["topologySpreadConstraints"][0].pop("nodeTaintsPolicy")),
        "nodeTaintsPolicy: Honor",
        label="taints",
    ),
    Case(
        "zone-loss",
        edit(SPOT_GROUP, lambda i: i["scalingConfig"].update(maxSize=30)),
        "losing us-east-1a leaves",
        label="capacity",
    ),
    Case(
        "await-covers-wait", timeouts("Service ranker-svc"), "waits for a ready pod, up to 2100 s on create"
    ),
    Case(
        "await-covers-wait",
        timeouts(DEPLOYMENT, create=2160, update=2160),
        "up to 26460 s on update",
        label="rollout",
    ),
    Case(
        "await-covers-wait",
        edit("Release monitoring-kube-prometheus-stack", lambda i: i.update(timeout=300)),
        "helm gives up after 300 s",
        label="release",
    ),
    Case(
        "pods-wait-for-references",
        not_after(DEPLOYMENT, "ServiceAccount ranker-sa"),
        "names ServiceAccount ranker",
    ),
    Case("node-template-fits", without_ephemeral_storage_tags, "but the autoscaler's template offers 0.00Gi"),
    Case(
        "node-template-fits",
        in_triton(lambda c: c["resources"]["requests"].update(cpu="3.5")),
        "cpu: needs",
        label="cpu",
    ),
    Case(
        "zones",
        edit("Subnet network-private-us-east-1c", lambda i: i.update(availabilityZone="us-east-1a")),
        "2 zone(s)",
        config={"zones": {"minimum": 3}},
    ),
    Case(
        "scaled-object-covers-zones",
        edit(SCALER, lambda i: i["spec"].update(minReplicaCount=2)),
        "below the 3 GPU zones",
        config={"scaled-object-covers-zones": "mandatory"},
    ),
    Case("model-service-complete", drop("PodDisruptionBudget ranker-pdb"), "no PodDisruptionBudget"),
    Case("model-service-complete", drop(SCALER), "no ScaledObject", label="scaler"),
    Case(
        "s3-public-access-blocked",
        edit("BucketPublicAccessBlock models-public-access", lambda i: i.update(restrictPublicBuckets=False)),
        "restrictPublicBuckets",
    ),
    Case(
        "s3-public-access-blocked",
        drop("BucketPublicAccessBlock models-public-access"),
        "no public access block",
        label="missing",
    ),
    Case(
        "s3-tls-only",
        in_statements("BucketPolicy models-tls-only", lambda s: s[0].update(Effect="Allow")),
        "without TLS",
    ),
    Case(
        "irsa-one-prefix",
        in_statements(READER, lambda s: s[1].update(Resource=s[1]["Resource"].rsplit("/", 2)[0] + "/*")),
        "single prefix",
    ),
    Case(
        "irsa-one-prefix",
        in_statements(READER, lambda s: s[1].update(Action="s3:*")),
        "every S3 action",
        label="wildcard",
    ),
    Case(
        "irsa-one-prefix",
        in_statements(READER, lambda s: s[0].update(Resource="arn:aws:s3:::*")),
        "not one bucket",
        label="list",
    ),
    # Karpenter's objects, added to the prod stack as `capacity: karpenter` registers them.
    Case(
        "karpenter-disruption-bounded",
        add(pool_resource(prod=False)),
        "lets 10% node(s) be disrupted at once",
        good=add(pool_resource(prod=True)),
        config=PROD_BUDGETS,
    ),
    Case(
        "karpenter-disruption-bounded",
        add(pool_resource(prod=True, expire="Never")),
        "never expire",
        config=PROD_BUDGETS,
        label="expiry",
    ),
    Case(
        "interruption-queue-scoped",
        add(queue_policy_resource({"AWS": "*"})),
        "only ['events.amazonaws.com', 'sqs.amazonaws.com'] may",
        good=add(queue_policy_resource({"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]})),
    ),
    Case(
        "interruption-queue-scoped",
        add(resource(QUEUE, "interruptions", {"name": "c", "messageRetentionSeconds": 300})),
        "not encrypted",
        good=add(resource(QUEUE, "interruptions", {"name": "c", "sqsManagedSseEnabled": True})),
        label="sse",
    ),
    node_pool_case(
        "gpu-nodes-tainted",
        "GPU NodePool lacks",
        change=lambda p: p["spec"]["template"]["spec"].update(taints=[]),
    ),
    node_pool_case("spot-diversified", "spot NodePool draws from 2", types=("g5.xlarge", "g6.xlarge")),
    node_pool_case("gpu-max-bounded", "unbounded", change=lambda p: p["spec"].pop("limits")),
    node_class_case(
        "imds-v2-hop-limit-1",
        lambda spec: spec["metadataOptions"].update(httpPutResponseHopLimit=2),
        "hop limit is 2",
        "node-class",
    ),
    node_class_case(
        "encrypted-volumes",
        lambda spec: spec["blockDeviceMappings"][0]["ebs"].pop("kmsKeyID"),
        "no ebs.kmsKeyID",
        "node-class-default-key",
    ),
    node_class_case(
        "encrypted-volumes",
        lambda spec: spec["blockDeviceMappings"][0]["ebs"].update(encrypted=False),
        "not encrypted",
        "node-class",
    ),
    Case(
        "karpenter-interruptions",
        add(karpenter_release({"clusterName": "c"})),
        "has no interruption queue",
    ),
    Case(
        "karpenter-interruptions",
        add(karpenter_release({"interruptionQueue": "q"})),
        "which this stack does not create",
        label="queue",
    ),
]
