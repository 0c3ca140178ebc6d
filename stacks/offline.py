"""Run a Pulumi program offline: the SDK's mock monitor, deterministic answers for invokes, and a
record of every registered resource.

Inputs are recorded in engine form (camelCase keys, nested outputs resolved), the same form a policy
pack's Analyzer receives: ``inferstack policy check`` feeds exactly these to the pack, and the tests
assert on them. Provider-computed outputs are plausible stand-ins (ARNs, ids, endpoints).
"""

from __future__ import annotations

import json
import re
import runpy
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.sync_await import _sync_await

from inferstack.infra.errors import InvalidInput

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
# Zone ids EKS supports (use1-az3 is one it does not: the zone tests use it).
ZONE_IDS = ("use1-az1", "use1-az2", "use1-az4")

Invoke = Callable[[dict[str, Any]], dict[str, Any]]

DEFAULT_INVOKES: dict[str, Invoke] = {
    # The offline caller is an IAM user: a user's session is issued by the user itself.
    "aws:iam/getSessionContext:getSessionContext": lambda args: {
        "arn": args["arn"],
        "issuerArn": args["arn"],
        "id": args["arn"],
    },
    "aws:route53/getZone:getZone": lambda args: {
        "name": args["name"],
        "zoneId": "Z0OFFLINE0000000000",
        "id": "Z0OFFLINE0000000000",
        "privateZone": False,
    },
    # Route 53's health checkers, a few of AWS's published ROUTE53_HEALTHCHECKS ranges.
    "aws:index/getIpRanges:getIpRanges": lambda args: {
        "cidrBlocks": ["15.177.0.0/18", "54.243.31.192/26", "54.244.52.192/26"],
        "ipv6CidrBlocks": [],
        "services": args.get("services", []),
        "id": "ip-ranges",
        "createDate": "2026-12-01-00-00-00",
        "syncToken": 1764547200,
    },
}


def partition_of(region: str) -> tuple[str, str]:
    """The partition a region belongs to and its DNS suffix, as ``aws.get_partition`` answers there."""
    if region.startswith("us-gov-"):
        return "aws-us-gov", "amazonaws.com"
    if region.startswith("cn-"):
        return "aws-cn", "amazonaws.com.cn"
    return "aws", "amazonaws.com"


def regional_invokes(region: str) -> dict[str, Invoke]:
    """What the region's own invokes answer: its name and three zones (``<region>a`` to ``c``),
    every one offering every instance type asked about (tests narrow this to check zone choice)."""
    zones = [f"{region}{letter}" for letter in "abc"]
    zone_ids = list(ZONE_IDS) if region == REGION else [f"{region}-az{i}" for i in (1, 2, 4)]

    def offerings(args: dict[str, Any]) -> dict[str, Any]:
        types = [v for f in args.get("filters", []) if f["name"] == "instance-type" for v in f["values"]]
        pairs = [(t, zone) for t in types for zone in zones]
        return {
            "instanceTypes": [t for t, _ in pairs],
            "locations": [z for _, z in pairs],
            "locationTypes": ["availability-zone"] * len(pairs),
            "id": "offerings",
            "locationType": "availability-zone",
        }

    partition, dns_suffix = partition_of(region)
    return {
        "aws:index/getRegion:getRegion": lambda _args: {"name": region, "region": region, "id": region},
        "aws:index/getPartition:getPartition": lambda _args: {
            "partition": partition,
            "dnsSuffix": dns_suffix,
            "id": partition,
        },
        "aws:index/getCallerIdentity:getCallerIdentity": lambda _args: {
            "accountId": ACCOUNT_ID,
            "arn": f"arn:{partition}:iam::{ACCOUNT_ID}:user/ci",
            "userId": "AIDATEST",
            "id": ACCOUNT_ID,
        },
        "aws:index/getAvailabilityZones:getAvailabilityZones": lambda _args: {
            "names": zones,
            "zoneIds": zone_ids,
            "state": "available",
        },
        "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": offerings,
    }


def _aws_managed_key(region: str) -> dict[str, Any]:
    key_id = f"aws-s3-{region}"
    arn = f"arn:{partition_of(region)[0]}:kms:{region}:{ACCOUNT_ID}:key/{key_id}"
    return {"arn": arn, "id": key_id, "keyManager": "AWS"}


def _stack_reference_outputs(name: str) -> dict[str, Any]:
    """Stand-ins for a referenced stack's outputs (what a standby reads of its primary)."""
    stack = name.rsplit("/", 1)[-1]
    issuer = f"oidc.eks.{REGION}.amazonaws.com/id/{stack.upper()}"
    return {
        "model_bucket": f"models-{stack}-offline",
        "cluster_name": f"inferstack-{stack}",
        "oidc_provider_arn": f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{issuer}",
        "oidc_issuer_url": f"https://{issuer}",
        "kubeconfig": json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": []}),
    }


@dataclass(frozen=True)
class Recorded:
    """One registered resource as the engine saw it."""

    type: str
    name: str
    inputs: dict[str, Any]
    parent_urn: str
    custom: bool
    urn: str
    # What the engine orders this resource after: depends_on (components expanded to their
    # resources) and every resource whose outputs its inputs use.
    dependencies: tuple[str, ...] = ()
    property_dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    provider: str = ""  # "<provider urn>::<id>", empty for the default provider
    # The customTimeouts option in seconds, as the engine keeps it in the state (create, update, delete).
    custom_timeouts: dict[str, float] = field(default_factory=dict)

    @property
    def parent_type(self) -> str:
        """The type token of the parent (the last segment of the parent URN's type chain)."""
        if not self.parent_urn:
            return ""
        return self.parent_urn.split("::")[2].split("$")[-1]

    @property
    def parent_name(self) -> str:
        return self.parent_urn.split("::")[-1] if self.parent_urn else ""


@dataclass
class Recording:
    """Every resource a program registered, in order, with lookups by type and name."""

    resources: list[Recorded] = field(default_factory=list)

    def of_type(self, type_token: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> Recorded:
        found = [r for r in self.of_type(type_token) if name is None or r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_token)]
            raise AssertionError(f"expected one {type_token} named {name!r}, found {names}")
        return found[0]

    def named(self, name: str) -> Recorded:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one resource named {name!r}, found {len(found)}")
        return found[0]

    def children_of(self, parent_name: str) -> list[Recorded]:
        return [r for r in self.resources if r.parent_name == parent_name]

    def __iter__(self) -> Iterator[Recorded]:
        return iter(self.resources)


def _synthetic_outputs(typ: str, name: str, inputs: dict[str, Any], region: str) -> dict[str, Any]:
    """Plausible provider-computed outputs, so dependent resources get concrete values."""
    service = typ.split(":")[1].split("/")[0] if ":" in typ else "x"
    partition, dns_suffix = partition_of(region)
    out: dict[str, Any] = {"arn": f"arn:{partition}:{service}:{region}:{ACCOUNT_ID}:{name}"}
    if typ == "aws:eks/cluster:Cluster":
        out |= {
            "endpoint": f"https://{name}.eks.{region}.{dns_suffix}",
            "certificateAuthority": {"data": "Y2VydA=="},
            "identities": [
                {"oidcs": [{"issuer": f"https://oidc.eks.{region}.{dns_suffix}/id/{name.upper()}"}]}
            ],
            "name": inputs.get("name", name),
        }
    if typ in ("aws:iam/role:Role", "aws:cloudwatch/eventRule:EventRule"):
        out["name"] = inputs.get("name", name)  # what attachments, profiles and event targets refer to
    if typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
        out["url"] = inputs.get("url", "")
    if typ == "aws:s3/bucket:Bucket" or typ.startswith("aws:s3/bucketV2"):
        out["bucket"] = inputs.get("bucket", name)
    if typ == "aws:ec2/launchTemplate:LaunchTemplate":
        out["latestVersion"] = 1
    if typ == "aws:eks/nodeGroup:NodeGroup":
        out["resources"] = [{"autoscalingGroups": [{"name": f"eks-{name}-asg"}]}]
        out["nodeGroupName"] = name
    if typ == "aws:kms/key:Key":
        out["keyId"] = f"{name}-key-id"
    if typ == "random:index/randomPassword:RandomPassword":
        out["result"] = "mock-password"
    if typ == "pulumi:pulumi:StackReference":
        out["outputs"] = _stack_reference_outputs(inputs["name"])
    if typ == "kubernetes:core/v1:Service" and inputs.get("spec", {}).get("type") == "LoadBalancer":
        out["status"] = {"loadBalancer": {"ingress": [{"hostname": f"{name}-0123456789.elb.amazonaws.com"}]}}
    return out


class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that answer every invoke the components make, for the region of the provider an invoke
    goes through, and give resources the outputs later resources read."""

    def __init__(self, invokes: dict[str, Invoke] | None = None, region: str = REGION) -> None:
        self.given = invokes or {}
        self.invokes = DEFAULT_INVOKES | regional_invokes(region) | self.given
        self.region = region
        self.provider_regions: dict[str, str] = {}  # explicit AWS providers' ids -> their region

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        outputs = _synthetic_outputs(args.typ, args.name, args.inputs, self.region) | dict(args.inputs)
        if args.typ == "pulumi:providers:aws":
            self.provider_regions[f"{args.name}-id"] = args.inputs.get("region", self.region)
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == "aws:kms/getKey:getKey" and args.token not in self.invokes:
            # The region's key: the region of the provider the invoke went through.
            provider_id = (args.provider or "").rsplit("::", 1)[-1]
            return _aws_managed_key(self.provider_regions.get(provider_id, self.region)), []
        if args.token not in self.invokes:
            raise KeyError(f"no offline answer for invoke {args.token}; add one to inferstack.stacks.offline")
        # An invoke through an explicit provider answers for that provider's region.
        region = self.provider_regions.get((args.provider or "").rsplit("::", 1)[-1], self.region)
        if region != self.region and args.token not in self.given:
            return regional_invokes(region).get(args.token, self.invokes[args.token])(dict(args.args)), []
        return self.invokes[args.token](dict(args.args)), []


_ASSET_SIG = ("4dabf18193072939515e22adb298388d", "c44067f5952c0a294b673a41bacd8c17")


def _engine_form(value: Any) -> Any:
    """What json cannot encode, as the engine's state holds it: a file asset by its path."""
    if isinstance(value, pulumi.FileAsset):
        return {_ASSET_SIG[0]: _ASSET_SIG[1], "path": value.path}
    return str(value)


_DURATION = re.compile(r"([0-9.]+)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def duration_s(text: str) -> float:
    """A Go duration string ("26m", "1h30m", "1560s"), as the SDK sends customTimeouts, in seconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def custom_timeouts(request: Any) -> dict[str, float]:
    """The request's customTimeouts as the engine's state holds them: seconds, the unset ones left out."""
    return {op: duration_s(text) for op in ("create", "update", "delete") if (text := getattr(request, op))}


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: RecordingMocks, recording: Recording) -> None:
        super().__init__(mocks)
        self.recording = recording

    def RegisterResource(self, request: Any) -> Any:
        if request.type != "pulumi:pulumi:Stack":
            inputs = pulumi.runtime.rpc.deserialize_properties(request.object)
            self.recording.resources.append(
                Recorded(
                    type=request.type,
                    name=request.name,
                    inputs=json.loads(json.dumps(inputs, default=_engine_form)),
                    parent_urn=request.parent,
                    custom=bool(request.custom),
                    urn=self.make_urn(request.parent, request.type, request.name),
                    dependencies=tuple(request.dependencies),
                    property_dependencies={
                        key: tuple(deps.urns) for key, deps in request.propertyDependencies.items()
                    },
                    provider=request.provider,
                    custom_timeouts=custom_timeouts(request.customTimeouts),
                )
            )
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]


def run_program(
    program: Callable[[], Any],
    *,
    invokes: dict[str, Invoke] | None = None,
    config: dict[str, str] | None = None,
    stack: str = "test",
    preview: bool = False,
    project: str = "inferstack",
    secret_keys: Sequence[str] = (),
) -> tuple[Recording, Any]:
    """Run ``program`` under mocks; return what it registered and its (resolved) return value."""
    recording = Recording()
    mocks = RecordingMocks(invokes, region=(config or {}).get("aws:region", REGION))
    pulumi.runtime.set_all_config(config or {}, list(secret_keys))
    # set_mocks keeps an earlier run's Stack resource as the root: each run must get its own, or
    # its top-level resources would be parented to the stack that ran first in this process.
    pulumi.runtime.settings.ROOT.set(None)
    pulumi.runtime.set_mocks(
        mocks, project=project, stack=stack, preview=preview, monitor=_RecordingMonitor(mocks, recording)
    )
    pulumi.runtime.settings.SETTINGS.rpc_manager.clear()
    pulumi.runtime.settings.SETTINGS.outputs.clear()
    result: list[Any] = []

    def body() -> Any:
        value = program()
        resolved = _sync_await(pulumi.Output.from_input(value).future(with_unknowns=True))
        result.append(resolved)
        return resolved

    _sync_await(pulumi.runtime.stack.run_pulumi_func(body))
    return recording, result[0] if result else None


def stack_config(stacks_dir: Path, stack: str) -> dict[str, str]:
    """A stack file's config in the form the engine hands a program (objects as JSON strings)."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(
            p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in stacks_dir.glob("Pulumi.*.yaml")
        )
        raise InvalidInput(
            "stack", stack, f"one of the stack files in {stacks_dir}: {', '.join(known) or 'none'}"
        )
    raw = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()}


def with_settings(config: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    """``config`` with ``settings`` applied as ``pulumi config set --path`` would apply them.

    A setting's key is ``namespace:key`` or ``namespace:key.sub.path``; its value is read as JSON
    where it parses (``["198.51.100.7/32"]``, ``3``) and as a string otherwise.
    """
    merged = dict(config)
    for path, text in settings.items():
        key, parts = setting_path(path)
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if not parts:
            merged[key] = text if isinstance(value, str) else json.dumps(value)
            continue
        document = json.loads(merged[key]) if key in merged else ([] if isinstance(parts[0], int) else {})
        merged[key] = json.dumps(_set_path(document, parts, value, path))
    return merged


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]")


def setting_path(path: str) -> tuple[str, list[str | int]]:
    """``inferstack:services[0].name`` -> (``inferstack:services``, [0, "name"]), as ``--path`` reads it."""
    found = re.match(r"^([A-Za-z0-9_-]+:[A-Za-z_][A-Za-z0-9_]*)", path)
    allowed = "namespace:key, then .name or [index] steps, such as inferstack:services[0].name"
    if found is None:
        raise InvalidInput("--config", path, allowed)
    parts: list[str | int] = []
    position = found.end()
    while position < len(path):
        step = _PATH_PART.match(path, position)
        if step is None:
            raise InvalidInput("--config", path, allowed)
        parts.append(step[1] if step[1] is not None else int(step[2]))
        position = step.end()
    return found[1], parts


def _set_path(document: Any, parts: Sequence[str | int], value: Any, path: str) -> Any:
    """``document`` with ``value`` at ``parts``; a list index may append (the next index) or replace."""
    node = document
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        fresh: Any = value if last else ([] if isinstance(parts[depth + 1], int) else {})
        if isinstance(part, int):
            if not isinstance(node, list) or part > len(node):
                raise InvalidInput(
                    "--config", path, f"an index up to {len(node) if isinstance(node, list) else 0}"
                )
            if part == len(node):
                node.append(fresh)
            elif last:
                node[part] = value
        else:
            if not isinstance(node, dict):
                raise InvalidInput("--config", path, "a path into an object; this step is not one")
            if last:
                node[part] = value
            else:
                node.setdefault(part, fresh)
        if not last:
            node = node[part]
    return document


def run_stack(
    stacks_dir: Path, stack: str, settings: Mapping[str, str] | None = None, secret_keys: Sequence[str] = ()
) -> Recording:
    """Run the program folder with a stack's config, as the Pulumi language host does (runpy on it).

    ``settings`` are applied over the stack file as ``pulumi config set --path`` would (see
    ``with_settings``): what a deployer sets for their own account and network. ``secret_keys``
    are the keys ``pulumi config set --secret`` would have marked.
    """
    config = with_settings(stack_config(stacks_dir, stack), settings or {})
    before_path, before_modules = list(sys.path), set(sys.modules)

    def program() -> None:
        runpy.run_path(str(stacks_dir), run_name="__main__")

    try:
        recording, _ = run_program(program, config=config, stack=stack, secret_keys=secret_keys)
    finally:
        sys.path[:] = before_path
        for name in set(sys.modules) - before_modules:
            if not name.startswith(("inferstack", "pulumi")):
                sys.modules.pop(name)  # the program's own modules: a next run must load them afresh
    return recording
