"""The TritonModelService resource: a thin shell that registers the manifests of its sibling modules."""

from __future__ import annotations

import dataclasses

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from inferstack.components.alerts import prometheus_rule, service_rule_group
from inferstack.components.autoscaling import Autoscaling
from inferstack.components.awaits import create_timeout_s, duration
from inferstack.components.canary import canary_rule_group, traffic_config_map
from inferstack.components.manifests import custom_resource, namespace
from inferstack.components.model_service.args import (
    TritonModelServiceArgs,
    await_timeouts_s,
    namespace_of,
    progress_deadline_s,
)
from inferstack.components.model_service.checks import validate
from inferstack.components.model_service.endpoints import headless_service, service
from inferstack.components.model_service.pod import (
    ADMIN_KEY_LENGTH,
    GRPC_PORT,
    HTTP_PORT,
    admin_key_secret,
    admin_key_secret_name,
    deployment,
    front_config_map,
    model_cache_config_map,
    service_account,
)
from inferstack.components.model_service.scaling import pod_disruption_budget, scaled_object, service_monitor
from inferstack.components.monitoring import Monitoring
from inferstack.infra.children import child_options
from inferstack.infra.errors import InvalidInput


def check_prerequisites(args: TritonModelServiceArgs, opts: pulumi.ResourceOptions | None) -> None:
    """The custom resources' CRDs come from components the service waits for: without them the API
    server refuses the ServiceMonitor, PrometheusRule and ScaledObject mid-`up`."""
    if args.cluster_has_crds:
        return
    after = opts.depends_on if opts is not None else None
    waits_for = after if isinstance(after, list | tuple) else [after] if after is not None else []
    missing = [
        f"{component.__name__} ({what})"
        for component, what in (
            (Monitoring, "ServiceMonitor and PrometheusRule CRDs"),
            (Autoscaling, "KEDA's ScaledObject CRD"),
        )
        if not any(isinstance(resource, component) for resource in waits_for)
    ]
    if missing:
        raise InvalidInput(
            "opts.depends_on",
            [type(resource).__name__ for resource in waits_for],
            f"the components that install this service's CRDs: add {' and '.join(missing)} to depends_on, "
            "or set cluster_has_crds=True where the cluster got them outside this program",
        )


class TritonModelService(pulumi.ComponentResource):
    """One Triton deployment serving ``args.models`` from S3; see the module docstring."""

    namespace: str
    service_name: str
    http_endpoint: str
    grpc_endpoint: str
    role_arn: pulumi.Output[str]
    admin_key_secret: str  # the Secret (in ``namespace``) whose ``admin-key`` opens Triton's admin APIs

    def __init__(
        self, name: str, args: TritonModelServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        validate(name, args)
        check_prerequisites(args, opts)
        super().__init__("inferstack:model_service:TritonModelService", name, None, opts)
        if args.region is None:
            region = aws.get_region(opts=pulumi.InvokeOptions(parent=self)).region
            args = dataclasses.replace(args, region=region)
        ns = namespace_of(name, args)
        source = args.source
        if source.model_store is not None:
            assert (
                source.prefix and source.oidc_provider_arn is not None and source.oidc_issuer_url is not None
            )
            role = source.model_store.reader_role(
                f"{name}-models",
                namespace=ns,
                service_account=name,
                prefix=source.prefix,
                oidc_provider_arn=source.oidc_provider_arn,
                oidc_issuer_url=source.oidc_issuer_url,
                opts=child_options(self, opts),
            )
            role_arn: pulumi.Input[str] = role.arn
            repository_uri: pulumi.Input[str] = source.model_store.uri(source.prefix)
        else:
            assert source.role_arn is not None and source.repository_uri is not None
            role_arn, repository_uri = source.role_arn, source.repository_uri

        dependencies: list[pulumi.Resource] = []
        if args.create_namespace:
            ns_opts = child_options(self, opts)
            dependencies.append(namespace(f"{name}-ns", ns, ns_opts))
        # Whatever the service was told to wait for (the releases that install the ServiceMonitor,
        # PrometheusRule and ScaledObject CRDs), its children wait for too.
        in_namespace = child_options(self, opts, after=dependencies)

        front = front_config_map(name, args)
        front_files = k8s.core.v1.ConfigMap(
            f"{name}-request-front", metadata=front["metadata"], data=front["data"], opts=in_namespace
        )
        script = model_cache_config_map(name, args)
        cache_script = k8s.core.v1.ConfigMap(
            f"{name}-model-cache", metadata=script["metadata"], data=script["data"], opts=in_namespace
        )
        password = random.RandomPassword(
            f"{name}-admin-key",
            length=ADMIN_KEY_LENGTH,
            special=False,
            opts=child_options(self, opts),
        )
        secret = admin_key_secret(name, args, pulumi.Output.secret(password.result))
        admin_key = k8s.core.v1.Secret(
            f"{name}-admin-key",
            metadata=secret["metadata"],
            type=secret["type"],
            string_data=secret["stringData"],
            opts=in_namespace,
        )
        account = service_account(name, args, role_arn)
        sa = k8s.core.v1.ServiceAccount(f"{name}-sa", metadata=account["metadata"], opts=in_namespace)
        manifest = deployment(name, args, repository_uri)
        # Pulumi waits for one pod start on create and a whole one-at-a-time rollout on update, not
        # its default 10 minutes.
        create, update = await_timeouts_s(args)
        pods = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions.merge(
                in_namespace,
                pulumi.ResourceOptions(
                    # Pods mount the front's files and the fill script, read the admin key and run as
                    # the IRSA account: without any of them they would not start (or lack S3 credentials).
                    # With models shipped by the deploy, they are there first.
                    depends_on=[
                        front_files,
                        cache_script,
                        admin_key,
                        sa,
                        *([source.shipped_by] if source.shipped_by is not None else []),
                    ],
                    # KEDA's HPA owns the replica count once the service runs.
                    ignore_changes=["spec.replicas"],
                    custom_timeouts=pulumi.CustomTimeouts(create=duration(create), update=duration(update)),
                ),
            ),
        )
        # The ClusterIP Service waits for one ready endpoint: one pod start, whatever the rollout.
        # The headless one is not awaited (no cluster IP, nothing to wait for).
        endpoint = duration(create_timeout_s(progress_deadline_s(args)))
        endpoint_wait = pulumi.CustomTimeouts(create=endpoint, update=endpoint)
        for key, built, timeouts in (
            ("svc", service(name, args), endpoint_wait),
            ("headless", headless_service(name, args), None),
        ):
            k8s.core.v1.Service(
                f"{name}-{key}",
                metadata=built["metadata"],
                spec=built["spec"],
                opts=pulumi.ResourceOptions.merge(
                    in_namespace, pulumi.ResourceOptions(custom_timeouts=timeouts)
                ),
            )
        budget = pod_disruption_budget(name, args)
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb", metadata=budget["metadata"], spec=budget["spec"], opts=in_namespace
        )
        rules = prometheus_rule(
            f"{name}-alerts",
            ns,
            [
                service_rule_group(
                    service=name,
                    namespace=ns,
                    models=args.models,
                    queue_time_target_ms=args.queue_time_target_ms,
                )
            ],
        )
        for key, custom in (
            ("monitor", service_monitor(name, args)),
            ("scaler", scaled_object(name, args)),
            ("alerts", rules),
        ):
            custom_resource(f"{name}-{key}", custom, in_namespace)
        if args.canary is not None:
            split = traffic_config_map(service=name, namespace=ns, canary=args.canary)
            # Clients send to a new version only once every pod serves it: Pulumi updates the split
            # after the rollout the served versions started has finished.
            k8s.core.v1.ConfigMap(
                f"{name}-traffic",
                metadata=split["metadata"],
                data=split["data"],
                opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=[pods])),
            )
            group = canary_rule_group(service=name, namespace=ns, canary=args.canary)
            custom_resource(
                f"{name}-canary-alerts", prometheus_rule(f"{name}-canary", ns, [group]), in_namespace
            )

        self.namespace = ns
        self.service_name = name
        self.http_endpoint = f"http://{name}.{ns}.svc:{HTTP_PORT}"
        self.grpc_endpoint = f"dns:///{name}-headless.{ns}.svc:{GRPC_PORT}"
        self.role_arn = pulumi.Output.from_input(role_arn)
        self.admin_key_secret = admin_key_secret_name(name)
        self.register_outputs(
            {
                "namespace": self.namespace,
                "admin_key_secret": self.admin_key_secret,
                "http_endpoint": self.http_endpoint,
                "grpc_endpoint": self.grpc_endpoint,
                "role_arn": self.role_arn,
            }
        )
