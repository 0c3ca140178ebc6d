"""Stack policy: a workload waits for every ServiceAccount, ConfigMap and Secret its pods name.

The API server refuses a pod whose ServiceAccount does not exist yet; a pod that mounts a missing
ConfigMap or Secret, or reads one into its environment, stays in ContainerCreating until it appears.
Whatever of these the stack itself creates must come before the workload in the engine's order
(a dependency path, direct or through other resources).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from inferstack.policies.rules import POD_CONTROLLERS, Config, namespace_of, pod_spec

if TYPE_CHECKING:
    from inferstack.policies.stack_rules import Stack, StackResource

KINDS = {
    "ServiceAccount": "kubernetes:core/v1:ServiceAccount",
    "ConfigMap": "kubernetes:core/v1:ConfigMap",
    "Secret": "kubernetes:core/v1:Secret",
}
Violation = tuple[str, str]


def named(spec: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(kind, name) of every ServiceAccount, ConfigMap and Secret a pod spec names."""
    account = spec.get("serviceAccountName")
    if account:
        yield "ServiceAccount", str(account)
    for volume in spec.get("volumes") or []:
        if "configMap" in volume:
            yield "ConfigMap", str(volume["configMap"].get("name"))
        if "secret" in volume:
            yield "Secret", str(volume["secret"].get("secretName"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if key in source:
                    yield kind, str(source[key].get("name"))
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for env in container.get("env") or []:
            ref = env.get("valueFrom") or {}
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in ref and not ref[key].get("optional"):
                    yield kind, str(ref[key].get("name"))
        for source in container.get("envFrom") or []:
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source and not source[key].get("optional"):
                    yield kind, str(source[key].get("name"))
    for secret in spec.get("imagePullSecrets") or []:
        yield "Secret", str(secret.get("name"))


def _find(stack: Stack, kind: str, namespace: str, name: str) -> list[StackResource]:
    return [
        r
        for r in stack.of_type(KINDS[kind])
        if namespace_of(r.props) == namespace and (r.props.get("metadata") or {}).get("name") == name
    ]


def pods_wait_for_references(stack: Stack, config: Config) -> list[Violation]:
    """Every ServiceAccount, ConfigMap and Secret of the stack a workload's pods name comes before it."""
    problems: list[Violation] = []
    for workload in stack.of_type(*POD_CONTROLLERS):
        before = stack.after(workload)
        for kind, name in dict.fromkeys(named(pod_spec(workload.props))):
            for found in _find(stack, kind, namespace_of(workload.props), name):
                if found.urn not in before:
                    problems.append(
                        (
                            f"{workload.type.rsplit(':', 1)[-1]} {workload.name} names {kind} {name}, which "
                            "this stack creates, but is not ordered after it: its pods can start first and "
                            "be refused or stuck",
                            workload.urn,
                        )
                    )
    return problems
