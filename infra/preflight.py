"""Read-only checks of an AWS account before a stack's first `pulumi up` (`inferstack preflight`).

Each check asks AWS one question with the deployer's own credentials and answers pass, warn or fail
with a one-line reason and the fix: GPU vCPU quotas against what the node groups start with and
can scale to, the default EBS key, the service-linked role the volume key names, the pinned add-on
and AMI releases for the Kubernetes version, the zones' instance type offerings and the failover
hosted zone. Nothing here writes to the account. Pure logic over boto3-style clients, which the CLI
makes from the stack's AWS identity and the tests from moto (stubbing what moto does not answer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

from inferstack.infra.errors import InvalidInput
from inferstack.infra.instance_types import lookup
from inferstack.infra.node_plans import NodeGroupPlan
from inferstack.infra.zones import Zone, choose_zones

Verdict = Literal["pass", "warn", "fail"]
QuotaCapacity = Literal["ON_DEMAND", "SPOT"]
# boto3.Session.client, or a test's: the service name in, a client out.
Clients = Callable[[str], Any]

# EC2's vCPU quotas (Service Quotas, service code ec2), by instance class and capacity type.
VCPU_QUOTAS: dict[tuple[str, QuotaCapacity], tuple[str, str]] = {
    ("G", "ON_DEMAND"): ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("G", "SPOT"): ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("P", "ON_DEMAND"): ("L-417A185B", "Running On-Demand P instances"),
    ("P", "SPOT"): ("L-7212CCBC", "All P Spot Instance Requests"),
    ("Standard", "ON_DEMAND"): (
        "L-1216C47A",
        "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    ),
    ("Standard", "SPOT"): ("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
}
# Launches an Auto Scaling group's instances: a customer-managed key must let it use the key.
AUTOSCALING_ROLE = "AWSServiceRoleForAutoScaling"


@dataclass(frozen=True)
class Check:
    """One preflight answer: what was checked, the verdict, why, and how to fix it."""

    name: str
    verdict: Verdict
    reason: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """What a stack will ask of the account, read from its config."""

    region: str
    kubernetes_version: str
    zones: int | tuple[str, ...]  # as the stack asks: how many, or which
    gpu_types: tuple[str, ...]  # every zone used must offer each of them
    # The node groups for a number of zones: the quotas depend on how many the stack spreads over.
    groups: Callable[[int], Sequence[NodeGroupPlan]]
    addons: Mapping[str, str]  # EKS add-on -> pinned version
    ami_release: str  # the AL2023 release, e.g. 1.35.2-20260304
    ami_flavours: tuple[str, ...]  # AL2023 variants the groups run: standard, nvidia
    hosted_zone: str | None = None  # a standby stack's failover zone


def instance_class(instance_type: str) -> str:
    """The vCPU quota class of an instance type: G (and VT), P, or Standard."""
    family = lookup(instance_type, field="instance_type").family
    if family.startswith(("g", "vt")):
        return "G"
    if family.startswith("p"):
        return "P"
    return "Standard"


def vcpu_needs(groups: Sequence[NodeGroupPlan]) -> dict[tuple[str, QuotaCapacity], tuple[int, int]]:
    """(class, capacity type) -> (vCPUs at the first `up`, vCPUs at every group's max size).

    A spot group's types share one shape (node_plans.check_spot_types), so any of them gives its vCPUs.
    """
    needs: dict[tuple[str, QuotaCapacity], tuple[int, int]] = {}
    for group in groups:
        if group.capacity_type == "CAPACITY_BLOCK":
            continue  # bought whole: it counts against no vCPU quota
        vcpus = max(lookup(t, field=f"{group.name}.instance_types").vcpus for t in group.instance_types)
        for quota_class in sorted({instance_class(t) for t in group.instance_types}):
            start, most = needs.get((quota_class, group.capacity_type), (0, 0))
            needs[(quota_class, group.capacity_type)] = (
                start + group.desired_size * vcpus,
                most + group.max_size * vcpus,
            )
    return needs


def quota_verdict(name: str, code: str, region: str, value: float, start: int, most: int) -> Check:
    fix = (
        f"aws service-quotas request-service-quota-increase --region {region} --service-code ec2 "
        f"--quota-code {code} --desired-value {most}"
    )
    if value < start:
        return Check(name, "fail", f"the first `up` starts {start} vCPUs; the quota is {value:g}", fix)
    if value < most:
        return Check(
            name, "warn", f"the groups scale to {most} vCPUs; the quota stops them at {value:g}", fix
        )
    return Check(name, "pass", f"{most} vCPUs at full scale; the quota is {value:g}")


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _denied(name: str, error: ClientError, permission: str) -> Check:
    return Check(name, "warn", f"could not check: {_code(error)}", f"allow {permission} to the deployer")


def check_quotas(groups: Sequence[NodeGroupPlan], region: str, clients: Clients) -> list[Check]:
    quotas = clients("service-quotas")
    checks = []
    for (quota_class, capacity), (start, most) in sorted(vcpu_needs(groups).items()):
        code, title = VCPU_QUOTAS[(quota_class, capacity)]
        name = f"quota {code}"
        try:
            try:
                value = quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]
            except ClientError as error:
                if _code(error) != "NoSuchResourceException":
                    raise
                # No applied value in this account: AWS's default holds.
                value = quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"][
                    "Value"
                ]
        except ClientError as error:
            checks.append(_denied(name, error, "servicequotas:GetServiceQuota"))
            continue
        verdict = quota_verdict(name, code, region, float(value), start, most)
        checks.append(Check(verdict.name, verdict.verdict, f"{title}: {verdict.reason}", verdict.fix))
    return checks


def check_default_ebs_key(clients: Clients) -> Check:
    """The account's default EBS key encrypts every volume launched without a key of its own."""
    name = "default EBS key"
    ec2, kms = clients("ec2"), clients("kms")
    try:
        by_default = ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"]
        key_id = ec2.get_ebs_default_kms_key_id()["KmsKeyId"]
        key = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    except ClientError as error:
        return _denied(
            name, error, "ec2:GetEbsDefaultKmsKeyId, ec2:GetEbsEncryptionByDefault, kms:DescribeKey"
        )
    if key["KeyManager"] == "AWS":
        return Check(name, "pass", f"AWS-managed {key_id}: usable by every service role without grants")
    if key.get("KeyState") != "Enabled":
        return Check(
            name,
            "fail",
            f"customer-managed {key['Arn']} is {key.get('KeyState')}: "
            "volumes encrypted by default cannot launch",
            f"enable the key, or `aws ec2 reset-ebs-default-kms-key-id --region {key['Arn'].split(':')[3]}`",
        )
    if not by_default:
        return Check(name, "pass", f"customer-managed {key['Arn']}, but encryption by default is off")
    return Check(
        name,
        "warn",
        f"customer-managed {key['Arn']}: node and gp3 volumes use the stack's own key; any volume "
        "made without one (another StorageClass, a tool) needs this key granted",
        f"grant it to {AUTOSCALING_ROLE} and the EBS CSI role (docs/operations/first-deploy.md), "
        "or name the stack's key (`kmsKeyId`) in that StorageClass",
    )


def check_autoscaling_role(clients: Clients) -> Check:
    """The volume key's policy names the Auto Scaling service-linked role: KMS refuses a policy whose
    principal does not exist, and AWS creates the role only with an account's first Auto Scaling group."""
    name = "autoscaling service-linked role"
    try:
        role = clients("iam").get_role(RoleName=AUTOSCALING_ROLE)["Role"]
    except ClientError as error:
        if _code(error) == "NoSuchEntity":
            return Check(
                name,
                "fail",
                f"{AUTOSCALING_ROLE} does not exist yet: the volume key's policy cannot name it",
                "aws iam create-service-linked-role --aws-service-name autoscaling.amazonaws.com",
            )
        return _denied(name, error, "iam:GetRole")
    return Check(name, "pass", f"{role['Arn']} exists")


def check_addons(target: Target, clients: Clients) -> list[Check]:
    eks = clients("eks")
    checks = []
    for addon, version in sorted(target.addons.items()):
        name = f"add-on {addon}"
        try:
            found = eks.describe_addon_versions(kubernetesVersion=target.kubernetes_version, addonName=addon)
        except ClientError as error:
            checks.append(_denied(name, error, "eks:DescribeAddonVersions"))
            continue
        offered = [v["addonVersion"] for a in found.get("addons", []) for v in a.get("addonVersions", [])]
        if version in offered:
            checks.append(
                Check(name, "pass", f"{version} is offered for Kubernetes {target.kubernetes_version}")
            )
        else:
            newest = ", ".join(offered[:3]) or "none"
            checks.append(
                Check(
                    name,
                    "fail",
                    f"{version} is not offered for Kubernetes {target.kubernetes_version} here "
                    f"(newest: {newest})",
                    "pin an offered version in infra/versions.py",
                )
            )
    return checks


def ami_parameter(kubernetes_version: str, release: str, flavour: str) -> str:
    """The SSM parameter EKS publishes for one AL2023 release (``1.35.2-20260304``) and variant."""
    date = release.rsplit("-", 1)[-1]
    image = f"amazon-eks-node-al2023-x86_64-{flavour}-{kubernetes_version}-v{date}"
    folder = f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/x86_64/{flavour}"
    return f"{folder}/{image}/image_id"


def check_ami_release(target: Target, clients: Clients) -> list[Check]:
    ssm = clients("ssm")
    checks = []
    for flavour in target.ami_flavours:
        name = f"AMI {flavour} {target.ami_release}"
        parameter = ami_parameter(target.kubernetes_version, target.ami_release, flavour)
        try:
            image = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
        except ClientError as error:
            if _code(error) != "ParameterNotFound":
                checks.append(_denied(name, error, "ssm:GetParameter on /aws/service/eks/*"))
                continue
            checks.append(
                Check(
                    name,
                    "fail",
                    f"no release {target.ami_release} in {target.region} ({parameter})",
                    "pin a published release in infra/versions.py (AL2023_RELEASE_VERSIONS): "
                    f"aws ssm get-parameter --name /aws/service/eks/optimized-ami/{target.kubernetes_version}"
                    f"/amazon-linux-2023/x86_64/{flavour}/recommended/release_version",
                )
            )
            continue
        checks.append(Check(name, "pass", f"published in {target.region} as {image}"))
    return checks


def check_zones(target: Target, clients: Clients) -> tuple[Check, int]:
    """Whether the region has the zones the stack asks for, offering every GPU type; and how many zones
    the stack will spread over (the quotas multiply per-zone groups by it)."""
    name = "zones"
    wanted = target.zones if isinstance(target.zones, int) else list(target.zones)
    count = wanted if isinstance(wanted, int) else len(wanted)
    ec2 = clients("ec2")
    try:
        found = ec2.describe_availability_zones(
            Filters=[
                {"Name": "zone-type", "Values": ["availability-zone"]},
                {"Name": "state", "Values": ["available"]},
            ]
        )["AvailabilityZones"]
        offered: dict[str, set[str]] = {t: set() for t in target.gpu_types}
        pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": list(target.gpu_types)}],
        )
        for page in pages:
            for offering in page["InstanceTypeOfferings"]:
                offered.setdefault(offering["InstanceType"], set()).add(offering["Location"])
    except ClientError as error:
        return _denied(name, error, "ec2:DescribeAvailabilityZones, ec2:DescribeInstanceTypeOfferings"), count
    zones = [Zone(z["ZoneName"], z["ZoneId"]) for z in found]
    try:
        chosen = choose_zones("inferstack:network.zones", wanted, zones, offered, target.gpu_types)
    except InvalidInput as error:
        return Check(
            name, "fail", error.allowed, "set inferstack:network.zones to usable zones, or fewer"
        ), count
    return Check(name, "pass", f"{', '.join(chosen)} offer {', '.join(target.gpu_types)}"), count


def check_hosted_zone(zone: str, clients: Clients) -> Check:
    name = f"hosted zone {zone}"
    wanted = zone.rstrip(".") + "."
    try:
        found = clients("route53").list_hosted_zones_by_name(DNSName=wanted, MaxItems="10")["HostedZones"]
    except ClientError as error:
        return _denied(name, error, "route53:ListHostedZonesByName")
    public = [z for z in found if z["Name"] == wanted and not z.get("Config", {}).get("PrivateZone", False)]
    if public:
        return Check(name, "pass", f"public zone {public[0]['Id'].rsplit('/', 1)[-1]}")
    return Check(
        name,
        "fail",
        f"no public hosted zone {wanted} in this account",
        "create it (aws route53 create-hosted-zone) and delegate it, or set inferstack:failover.zone",
    )


def check_identity(clients: Clients) -> Check:
    """Who the checks (and `pulumi up`) run as: this identity becomes the cluster's first admin."""
    caller = clients("sts").get_caller_identity()
    return Check("identity", "pass", f"{caller['Arn']} in account {caller['Account']}")


def run(target: Target, clients: Clients) -> list[Check]:
    """Every check, in the order a deploy meets them."""
    checks = [check_identity(clients)]
    zones, count = check_zones(target, clients)
    checks.append(zones)
    checks += check_quotas(target.groups(count), target.region, clients)
    checks += [check_default_ebs_key(clients), check_autoscaling_role(clients)]
    checks += check_addons(target, clients)
    checks += check_ami_release(target, clients)
    if target.hosted_zone:
        checks.append(check_hosted_zone(target.hosted_zone, clients))
    return checks
