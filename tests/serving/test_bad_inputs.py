"""Bad input, table-driven, across the stack config, the CLI and the local runtime's HTTP and gRPC.

Each row is one bad input and the outcome class it must get: a clear refusal in one line naming the
key or flag (and, where it is printable, the value), with no traceback and no silent acceptance. The
CLI rows run ``inferstack`` in-process, exactly as the console script does; the HTTP and gRPC rows
go to a real Triton behind the local gateway.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from inferstack.cli.main import main
from inferstack.serving.local.demo import build_demo_repository
from inferstack.serving.local.runtime import LocalRuntime
from tests.conftest import ROOT
from tests.serving.test_admin_apis import ADMIN_HTTP
from tests.serving.test_faults import ready
from tests.serving.test_gateway import BAD_BODIES, RAW_TRICKS, call

STACKS = str(ROOT / "stacks")
DEPLOYER = 'inferstack:cluster.publicAccessCidrs=["198.51.100.7/32"]'
FAILOVER = {
    "primaryStack": "prod",
    "primaryRegion": "us-west-2",
    "service": "demo",
    "zone": "example.com",
    "sourceRanges": ["198.51.100.0/24"],
    "certificateArns": [
        "arn:aws:acm:us-east-1:123456789012:certificate/a",
        "arn:aws:acm:us-west-2:123456789012:certificate/b",
    ],
}


@dataclass(frozen=True)
class Bad:
    """One bad input: the command line (or the setting) and what its refusal must name."""

    label: str
    names: str  # the key, flag or field the one line names
    args: tuple[str, ...] = ()
    setting: str | None = None  # a `-c KEY=VALUE` on the dev stack's plan
    value: str | None = None  # printed in the line too, where given


def setting(key: str, value: object, names: str | None = None, shown: str | None = None) -> Bad:
    text = value if isinstance(value, str) else json.dumps(value)
    return Bad(f"{key}={text}"[:70], names or key, setting=f"{key}={text}", value=shown)


def failover(names: str | None = None, **changes: object) -> Bad:
    key = f"inferstack:failover.{next(iter(changes))}"
    case = setting("inferstack:failover", {**FAILOVER, **changes}, names or key)
    return Bad(f"failover {changes}", case.names, setting=case.setting)


def service(key: str, value: object, names: str | None = None, shown: str | None = None) -> Bad:
    return setting(f"inferstack:services[0].{key}", value, names, shown)


STACK_CONFIG = [
    # Names the platform or Kubernetes already use for namespaces.
    *(
        service("name", n, shown=n)
        for n in ("monitoring", "kube-system", "telemetry", "gpu-operators", "keda", "default")
    ),
    service("name", "Demo", shown="Demo"),
    service("name", "demo_1", shown="demo_1"),
    service("name", "d" * 60),
    service("minReplicas", "yes", shown="yes"),
    service("minReplicas", 1.5, shown="1.5"),
    service("minReplicas", 0),
    service("maxReplicas", -1),
    service("placement", "spot-only", shown="spot-only"),
    service("models", "demo"),
    service("models", []),
    service("models", ["demo", "demo"]),
    service("models", ["a/b"], "inferstack:services[0].models"),
    service("prefix", "../x", shown="../x"),
    service("prefix", "/abs"),
    service("queueTimeTargetMs", "inf"),
    service("queueTimeTargetMs", "nan"),
    service("queueTimeTargetMs", 0),
    service("gpuUtilizationTarget", 101),
    service("requestLog", "yes", shown="yes"),
    service("requestLog", 0),
    service("replicas", 3),
    setting("inferstack:services[3].name", "x", "--config"),
    # YAML and -c turning values into another type.
    setting("inferstack:cluster.kubernetesVersion", 1.30, shown="1.3"),
    setting("inferstack:cluster.kubernetesVersion", 1.35, shown="1.35"),
    setting("inferstack:cluster.kubernetesVersion", "yes", shown="yes"),
    setting("inferstack:cluster.kubernetesVersion", '"1.20"', shown="1.20"),
    setting("inferstack:telemetry.enabled", "yes", shown="yes"),
    setting("inferstack:telemetry.enabled", 1),
    setting("inferstack:telemetry.enabled", "on", shown="on"),
    setting("inferstack:environment", "yes", shown="yes"),
    setting("inferstack:environment", "production", shown="production"),
    setting("inferstack:network.nat", "yes", shown="yes"),
    setting("inferstack:network.zones", "yes", shown="yes"),
    setting("inferstack:gpu.minSurvivingShare", "yes", shown="yes"),
    setting("inferstack:gpu.maxPerZone", True),
    # Names that become AWS names: the S3 bucket prefix, IAM roles.
    setting("inferstack:cluster.name", "My_Cluster", shown="My_Cluster"),
    setting("inferstack:cluster.name", "a..b", shown="a..b"),
    setting("inferstack:cluster.name", "x" * 50),
    setting("inferstack:cluster.name", "-lead", shown="-lead"),
    # CIDRs: public where private is needed, private or malformed where public is.
    setting("inferstack:cluster.publicAccessCidrs", ["0.0.0.0/0"], "inferstack:cluster.publicAccessCidrs[0]"),
    setting(
        "inferstack:cluster.publicAccessCidrs", ["10.0.0.0/8"], "inferstack:cluster.publicAccessCidrs[0]"
    ),
    setting(
        "inferstack:cluster.publicAccessCidrs", ["198.51.100.7"], "inferstack:cluster.publicAccessCidrs[0]"
    ),
    setting(
        "inferstack:cluster.publicAccessCidrs", ["198.51.100.7/33"], "inferstack:cluster.publicAccessCidrs[0]"
    ),
    setting(
        "inferstack:cluster.publicAccessCidrs", ["198.51.100.7/24"], "inferstack:cluster.publicAccessCidrs[0]"
    ),
    setting("inferstack:cluster.publicAccessCidrs", ["fe80::/64"], "inferstack:cluster.publicAccessCidrs[0]"),
    setting(
        "inferstack:cluster.publicAccessCidrs", ["not-a-cidr"], "inferstack:cluster.publicAccessCidrs[0]"
    ),
    setting("inferstack:cluster.publicAccessCidrs", "198.51.100.7/32"),
    setting(
        "inferstack:cluster.adminPrincipalArns", ["not-an-arn"], "inferstack:cluster.adminPrincipalArns[0]"
    ),
    setting("inferstack:network.vpcCidr", "8.8.0.0/16", shown="8.8.0.0/16"),
    setting("inferstack:network.vpcCidr", "11.0.0.0/16", shown="11.0.0.0/16"),
    setting("inferstack:network.vpcCidr", "10.0.0.1/16", shown="10.0.0.1/16"),
    setting("inferstack:network.vpcCidr", "10.0.0.0/33"),
    setting("inferstack:network.vpcCidr", "10.0.0.0/8"),
    setting("inferstack:network.zones", 0),
    setting("inferstack:network.zones", ["us-east-1a", "us-east-1a"]),
    setting("inferstack:network.zones", ["eu-west-1a", "eu-west-1b"], "inferstack:network.zones[0]"),
    setting("inferstack:network.nat", "none"),
    setting("inferstack:gpu.instanceType", "m5.large", shown="m5.large"),
    setting("inferstack:gpu.instanceType", "g5.huge", shown="g5.huge"),
    setting("inferstack:gpu.maxPerZone", 0),
    setting("inferstack:gpu.minSurvivingShare", 1.5),
    setting("inferstack:gpu.minSurvivingShare", "nan"),
    setting("inferstack:telemetry.sampleRate", 0),
    setting("inferstack:telemetry.sampleRate", 2),
    setting("inferstack:telemetry.logRetentionDays", 2),
    setting("inferstack:telemetry.traceRetentionHours", 0),
    # Regions nobody has, a standby paired with itself.
    setting("aws:region", "us-east-9", shown="us-east-9"),
    setting("aws:region", "mars", shown="mars"),
    failover(primaryStack="dev"),
    failover(primaryStack="acme/inferstack/dev"),
    failover(primaryRegion="us-east-9"),
    failover("aws:region", primaryRegion="us-east-1"),  # the standby's own region is the one named
    failover(service="ranker"),
    failover(healthCheckInterval=20),
    failover(replicationTimeControl="yes"),
    # Keys nothing reads.
    setting("inferstack:foo", 1),
    setting("inferstack:network.foo", 1),
    Bad(
        "a setting without '='",
        "--config",
        ("plan", "-s", "dev", "--stacks-dir", STACKS, "-c", "inferstack:cluster"),
    ),
    Bad(
        "a setting without a namespace",
        "--config",
        ("plan", "-s", "dev", "--stacks-dir", STACKS, "-c", "cluster.name=x"),
    ),
]


def cli_cases(scratch: Path) -> list[Bad]:
    """Command lines whose files and folders live under ``scratch`` (made by the fixture)."""
    file, junk_repo, lacking_repo = scratch / "a-file", scratch / "junk-repo", scratch / "lacking-repo"
    plan = ("plan", "-s", "dev", "--stacks-dir", STACKS, "-c", DEPLOYER)
    cost = ("cost", "-s", "dev", "--stacks-dir", STACKS, "-c", DEPLOYER)
    up = ("local", "up", "--once", "--no-prometheus")
    build = ("models", "build", "--name", "m", "--input", "x:FP32:4", "--output", "y:FP32:4")
    offline_s3 = ("--endpoint-url", "http://127.0.0.1:9")  # nothing listens: refused before any call

    def publish(
        label: str,
        names: str,
        repository: Path,
        destination: str = "s3://bucket/p",
        endpoint: tuple[str, ...] = offline_s3,
    ) -> Bad:
        return Bad(
            f"models publish {label}", names, ("models", "publish", str(repository), destination, *endpoint)
        )

    return [
        Bad("plan --out onto a file", "--out", (*plan, "--out", str(file))),
        Bad("plan --out onto a full disk's device", "--out", (*plan, "--out", "/dev/full")),
        Bad("plan --out where nothing can be made", "--out", (*plan, "--out", "/proc/inferstack")),
        Bad("plan --json --out onto a file", "--out", (*plan, "--json", "--out", str(file))),
        Bad(
            "plan of a stack with no file",
            "stack",
            ("plan", "-s", "nope", "--stacks-dir", STACKS),
            value="nope",
        ),
        Bad(
            "plan of a folder with no program",
            "--stacks-dir",
            ("plan", "-s", "dev", "--stacks-dir", str(scratch)),
        ),
        Bad(
            "cost in a region nobody has",
            "aws:region",
            (*cost, "-c", "aws:region=us-east-9"),
            value="us-east-9",
        ),
        Bad("cost --plot onto a full disk's device", "--plot", (*cost, "--plot", "/dev/full/cost.png")),
        Bad("cost --plot onto a folder", "--plot", (*cost, "--plot", str(scratch))),
        Bad("cost --plot under a file", "--plot", (*cost, "--plot", f"{file}/cost.png")),
        Bad("cost --prices that is no JSON", "--prices", (*cost, "--prices", str(file))),
        Bad("cost --prices missing", "--prices", (*cost, "--prices", str(scratch / "none.json"))),
        Bad("cost --model-gb not a number", "--model-gb", (*cost, "--model-gb", "lots")),
        Bad("local up --work-dir onto a file", "--work-dir", (*up, "--work-dir", str(file))),
        Bad("local up --work-dir onto a device", "--work-dir", (*up, "--work-dir", "/dev/full")),
        Bad("local up --repository missing", "--repository", (*up, "--repository", str(scratch / "none"))),
        Bad("local up --repository with no model", "--repository", (*up, "--repository", str(scratch))),
        Bad("local up --replicas 0", "replicas", (*up, "--replicas", "0")),
        Bad("local up --replicas 9", "replicas", (*up, "--replicas", "9")),
        Bad("local up --replicas two", "--replicas", (*up, "--replicas", "two")),
        Bad("local up --http-port 70000", "http_port", (*up, "--http-port", "70000")),
        Bad("local up --http-port 0", "http_port", (*up, "--http-port", "0")),
        Bad("local up --http-port = --s3-port", "ports", (*up, "--http-port", "8123", "--s3-port", "8123")),
        Bad("local up --canary without versions", "--canary", (*up, "--canary", "demo:x")),
        Bad("local up --canary-weight 150", "weight_percent", (*up, "--canary", "--canary-weight", "150")),
        Bad("local up --mirror -1", "mirror_percent", (*up, "--canary", "--mirror", "-1")),
        Bad("local up --canary-requests 0", "--canary-requests", (*up, "--canary", "--canary-requests", "0")),
        Bad(
            "models build --torchscript missing",
            "--torchscript",
            (*build, "--torchscript", str(scratch / "m.pt"), "--out", str(scratch / "r")),
        ),
        Bad(
            "models build --out onto a file",
            "--out",
            (*build, "--torchscript", str(file), "--out", str(file)),
        ),
        Bad(
            "models build --max-batch-size -1",
            "max_batch_size",
            (*build, "--torchscript", str(file), "--out", str(scratch / "r"), "--max-batch-size", "-1"),
        ),
        publish("a file", "repository", file),
        publish("to a bucket S3 refuses", "destination", scratch, "s3://Bad_Bucket/p"),
        publish("a junk model.pt", "demo/1/model.pt", junk_repo),
        publish("a policy naming a missing version", "version_policy", lacking_repo),
        publish("--endpoint-url ftp://", "--endpoint-url", junk_repo, endpoint=("--endpoint-url", "ftp://x")),
        Bad("models verify a bucket S3 refuses", "location", ("models", "verify", "s3://B", *offline_s3)),
        Bad("bench --out onto a device", "--out", ("bench", "--out", "/dev/full")),
        Bad("bench --out under a file", "--out", ("bench", "--out", f"{file}/bench")),
        Bad("bench --concurrency 0", "concurrency", ("bench", "--concurrency", "0")),
        Bad("bench --repository missing", "--repository", ("bench", "--repository", str(scratch / "none"))),
    ]


def run(args: tuple[str, ...]) -> tuple[str, str]:
    """(outcome class, what it printed): clear, traceback, accepted or unclear."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    except BaseException as escaped:  # what the console script would print as a traceback
        return "traceback", f"{type(escaped).__name__}: {escaped}"
    printed = out.getvalue() + err.getvalue()
    if "Traceback" in printed:
        return "traceback", printed
    if code == 0:
        return "accepted", printed[-300:]
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if len(lines) == 1 and lines[0].startswith("inferstack: "):
        return "clear", lines[0]
    return "unclear", err.getvalue()


def check_clear(case: Bad, args: tuple[str, ...]) -> None:
    outcome, printed = run(args)
    assert outcome == "clear", (case.label, outcome, printed)
    assert case.names in printed, (case.label, printed)
    if case.value is not None:
        assert case.value in printed, (case.label, printed)


@pytest.mark.parametrize("case", STACK_CONFIG, ids=lambda case: case.label)
def test_a_bad_stack_setting_is_refused_in_one_line_naming_its_key(case: Bad, tmp_path: Path) -> None:
    args = case.args or ("plan", "-s", "dev", "--stacks-dir", STACKS, "--out", str(tmp_path), "-c", DEPLOYER)
    if case.setting is not None:
        args = (*args, "-c", case.setting)
    check_clear(case, args)
    assert not any(tmp_path.iterdir()), "a manifest was written for a refused stack"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad-inputs")
    (folder / "a-file").write_text("not json, not TorchScript")
    junk = build_demo_repository(folder / "junk-repo")
    (junk / "demo" / "1" / "model.pt").write_bytes(b"PK\x03\x04 junk that only looks like a zip")
    lacking = build_demo_repository(folder / "lacking-repo")
    config = lacking / "demo" / "config.pbtxt"
    config.write_text(config.read_text() + "\nversion_policy: { specific: { versions: [1, 3] } }\n")
    return folder


def test_the_cli_table_holds_its_share(scratch: Path) -> None:
    assert len(STACK_CONFIG) + len(cli_cases(scratch)) + len(HTTP_CASES) + len(GRPC_CASES) >= 100


@pytest.mark.parametrize("number", range(40))
def test_a_bad_command_line_is_refused_in_one_line_naming_its_flag(number: int, scratch: Path) -> None:
    cases = cli_cases(scratch)
    assert len(cases) == 40, "keep the parametrisation's range equal to the table"
    case = cases[number]
    check_clear(case, case.args)


def test_json_prints_an_error_object_on_failure(scratch: Path) -> None:
    for args in (
        ("local", "up", "--once", "--json", "--replicas", "0"),
        ("local", "up", "--once", "--json", "--work-dir", str(scratch / "a-file")),
        ("plan", "-s", "dev", "--stacks-dir", STACKS, "--json", "-c", "aws:region=us-east-9"),
    ):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert main(list(args)) == 2
        answer = json.loads(out.getvalue())
        assert answer["ok"] is False and answer["exit_code"] == 2 and "not valid for" in answer["error"]


# --- HTTP and gRPC, against the real Triton behind the local gateway --------------------------------

HTTP_CASES = [
    *((f"body: {label}", "POST", "/v2/models/demo/infer", body) for label, body in BAD_BODIES.items()),
    *(
        (f"admin: {method} {path}", method, path, b"{}" if method == "POST" else None)
        for method, path in ADMIN_HTTP
    ),
    *(
        (f"raw path: {path}", method, path, b"{}" if method == "POST" else None)
        for method, path in RAW_TRICKS
    ),
    ("unknown model", "POST", "/v2/models/nope/infer", BAD_BODIES["NaN"]),
    (
        "the crashing shape",
        "POST",
        "/v2/models/demo/infer",
        json.dumps(
            {"inputs": [{"name": "features", "shape": [8, 2**40], "datatype": "FP32", "data": [1.0]}]}
        ).encode(),
    ),
]


@pytest.mark.real_server
@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda case: case[0])
def test_a_bad_http_request_gets_a_4xx_in_tritons_format(
    case: tuple[str, str, str, bytes | None], served: LocalRuntime
) -> None:
    label, method, path, body = case
    status, _, answer = call(served.front_url, method, path, body)
    assert 400 <= status < 500, (label, status, answer[:300])
    message = json.loads(answer)["error"]
    assert isinstance(message, str) and "\n" not in message and "Traceback" not in message, message
    assert ready(served.http_url)


def grpc_request(
    shape: list[int], datatype: str = "FP32", model: str = "demo", name: str = "features"
) -> service_pb2.ModelInferRequest:
    count = int(np.prod(shape)) if all(d < 64 for d in shape) else 16
    tensor = service_pb2.ModelInferRequest().InferInputTensor(name=name, datatype=datatype, shape=shape)
    request = service_pb2.ModelInferRequest(model_name=model, inputs=[tensor])
    request.raw_input_contents.append(np.zeros(count, np.float32).tobytes())
    return request


GRPC_CASES: list[tuple[str, Callable[[], service_pb2.ModelInferRequest], str]] = [
    ("unknown model", lambda: grpc_request([1, 16], model="nope"), "nope"),
    ("the crashing shape", lambda: grpc_request([8, 2**40]), "features"),
    ("a batch over max_batch_size", lambda: grpc_request([9, 16]), "batch-size must be <= 8"),
    ("a fixed dimension changed", lambda: grpc_request([1, 17]), "features"),
    ("another datatype", lambda: grpc_request([1, 16], "FP64"), "FP64"),
    ("an input the model lacks", lambda: grpc_request([1, 16], name="extra"), "extra"),
    ("data shorter than the shape", lambda: _short(), "features"),
]


def _short() -> service_pb2.ModelInferRequest:
    request = grpc_request([2, 16])
    request.raw_input_contents[0] = request.raw_input_contents[0][:64]
    return request


@pytest.mark.real_server
@pytest.mark.parametrize("case", GRPC_CASES, ids=lambda case: case[0])
def test_a_bad_grpc_request_is_refused_in_one_line_naming_it(
    case: tuple[str, Callable[[], service_pb2.ModelInferRequest], str], served: LocalRuntime
) -> None:
    label, request, named = case
    with grpc.insecure_channel(served.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request(), timeout=30)
    assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), label
    details = caught.value.details() or ""
    assert named in details and "\n" not in details, (label, details)
    assert ready(served.http_url)
